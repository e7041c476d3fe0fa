//! kube-proxy iptables-mode rule set, as the `iptables-restore` input kube-proxy writes for the same Services.
use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::hash::{endpoint_hash, port_proto_hash};
use super::model::{ClusterConfig, ServicePort};

/// Above this many endpoints kube-proxy drops per-endpoint comments ("large cluster mode").
pub const LARGE_CLUSTER_ENDPOINTS: usize = 1000;
const MASQ_MARK: &str = "0x4000";

/// One table of the restore input: chain declarations and `-A`/`-X` lines in output order.
#[derive(Debug, Default, Clone)]
pub struct Table {
    pub chains: Vec<String>,
    /// (chain, full line) pairs; the chain decides what a partial restore keeps.
    pub rules: Vec<(String, String)>,
}

impl Table {
    fn chain(&mut self, name: &str) {
        self.chains.push(name.to_string());
    }

    fn rule(&mut self, chain: &str, args: &str) {
        self.rules.push((chain.to_string(), format!("-A {chain} {args}")));
    }

    fn render(&self, name: &str, keep: &dyn Fn(&str) -> bool, out: &mut String) {
        let _ = writeln!(out, "*{name}");
        for c in self.chains.iter().filter(|c| keep(c)) {
            let _ = writeln!(out, ":{c} - [0:0]");
        }
        for (_, line) in self.rules.iter().filter(|(c, _)| keep(c)) {
            let _ = writeln!(out, "{line}");
        }
        out.push_str("COMMIT\n");
    }
}

/// The filter and nat tables kube-proxy programs.
#[derive(Debug, Default, Clone)]
pub struct RuleSet {
    pub filter: Table,
    pub nat: Table,
}

/// A comment argument, quoted the way kube-proxy quotes comments that contain spaces.
fn comment(text: &str) -> String {
    if text.contains(' ') {
        format!("-m comment --comment \"{text}\"")
    } else {
        format!("-m comment --comment {text}")
    }
}

/// `KUBE-SVC-…` chain of a service port.
pub fn svc_chain(s: &ServicePort) -> String {
    format!(
        "KUBE-SVC-{}",
        port_proto_hash(&s.port_name_string(), s.proto.lower())
    )
}

/// `KUBE-EXT-…` chain of a service port.
pub fn ext_chain(s: &ServicePort) -> String {
    format!(
        "KUBE-EXT-{}",
        port_proto_hash(&s.port_name_string(), s.proto.lower())
    )
}

/// `KUBE-SEP-…` chain of endpoint `ep` (`ip:port`) of a service port.
pub fn sep_chain(s: &ServicePort, ep: &str) -> String {
    format!(
        "KUBE-SEP-{}",
        endpoint_hash(&s.port_name_string(), s.proto.lower(), ep)
    )
}

/// `1/(n-i)` formatted like kube-proxy's `%0.10f`.
pub fn probability(n: usize, i: usize) -> String {
    format!("{:.10}", 1.0 / (n - i) as f64)
}

/// Builds the full rule set kube-proxy's iptables proxier writes for `services`.
pub fn build(services: &[ServicePort], cfg: &ClusterConfig) -> RuleSet {
    let total_eps: usize = services.iter().map(|s| s.endpoints.len()).sum();
    let large = total_eps > LARGE_CLUSTER_ENDPOINTS;
    let mut rs = RuleSet::default();
    let (f, n) = (&mut rs.filter, &mut rs.nat);
    for c in [
        "KUBE-SERVICES",
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-FORWARD",
        "KUBE-NODEPORTS",
        "KUBE-PROXY-FIREWALL",
    ] {
        f.chain(c);
    }
    for c in [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
    ] {
        n.chain(c);
    }
    n.rule(
        "KUBE-POSTROUTING",
        &format!("-m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"),
    );
    n.rule("KUBE-POSTROUTING", &format!("-j MARK --xor-mark {MASQ_MARK}"));
    n.rule(
        "KUBE-POSTROUTING",
        &format!(
            "{} -j MASQUERADE",
            comment("kubernetes service traffic requiring SNAT")
        ),
    );
    n.rule("KUBE-MARK-MASQ", &format!("-j MARK --or-mark {MASQ_MARK}"));

    for s in services {
        let spn = s.port_name_string();
        let p = s.proto.lower();
        let (svc, ext) = (svc_chain(s), ext_chain(s));
        let vip_match = format!("-m {p} -p {p} -d {} --dport {}", s.cluster_ip, s.port);
        if s.endpoints.is_empty() {
            f.rule(
                "KUBE-SERVICES",
                &format!(
                    "{} {vip_match} -j REJECT",
                    comment(&format!("{spn} has no endpoints"))
                ),
            );
            if let Some(np) = s.node_port {
                f.rule(
                    "KUBE-EXTERNAL-SERVICES",
                    &format!(
                        "{} -m addrtype --dst-type LOCAL -m {p} -p {p} --dport {np} -j REJECT",
                        comment(&format!("{spn} has no endpoints"))
                    ),
                );
            }
            continue;
        }
        n.chain(&svc);
        n.rule(
            "KUBE-SERVICES",
            &format!("{} {vip_match} -j {svc}", comment(&format!("{spn} cluster IP"))),
        );
        if let Some(np) = s.node_port {
            n.chain(&ext);
            n.rule(
                "KUBE-NODEPORTS",
                &format!("{} -m {p} -p {p} --dport {np} -j {ext}", comment(&spn)),
            );
            n.rule(
                &ext,
                &format!(
                    "{} -j KUBE-MARK-MASQ",
                    comment(&format!("masquerade traffic for {spn} external destinations"))
                ),
            );
            n.rule(&ext, &format!("-j {svc}"));
        }
        n.rule(
            &svc,
            &format!(
                "{} {vip_match} ! -s {} -j KUBE-MARK-MASQ",
                comment(&format!("{spn} cluster IP")),
                cfg.cluster_cidr
            ),
        );
        let count = s.endpoints.len();
        for (i, ep) in s.endpoints.iter().enumerate() {
            let ep_str = format!("{}:{}", ep.ip, ep.port);
            let sep = sep_chain(s, &ep_str);
            let mut args = String::new();
            if !large {
                args.push_str(&comment(&format!("{spn} -> {ep_str}")));
                args.push(' ');
            }
            if i < count - 1 {
                let _ = write!(
                    args,
                    "-m statistic --mode random --probability {} ",
                    probability(count, i)
                );
            }
            let _ = write!(args, "-j {sep}");
            n.rule(&svc, &args);
        }
        for ep in &s.endpoints {
            let ep_str = format!("{}:{}", ep.ip, ep.port);
            let sep = sep_chain(s, &ep_str);
            n.chain(&sep);
            let c = if large {
                String::new()
            } else {
                format!("{} ", comment(&spn))
            };
            n.rule(&sep, &format!("{c}-s {} -j KUBE-MARK-MASQ", ep.ip));
            n.rule(
                &sep,
                &format!("{c}-m {p} -p {p} -j DNAT --to-destination {ep_str}"),
            );
        }
    }

    f.rule("KUBE-FORWARD", "-m conntrack --ctstate INVALID -j DROP");
    f.rule(
        "KUBE-FORWARD",
        &format!(
            "{} -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT",
            comment("kubernetes forwarding rules")
        ),
    );
    f.rule(
        "KUBE-FORWARD",
        &format!(
            "{} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            comment("kubernetes forwarding conntrack rule")
        ),
    );
    n.rule(
        "KUBE-SERVICES",
        &format!(
            "{} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS",
            comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain")
        ),
    );
    rs
}

impl RuleSet {
    /// The complete `iptables-restore --noflush` input of a full sync.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.filter.render("filter", &|_| true, &mut out);
        self.nat.render("nat", &|_| true, &mut out);
        out
    }

    /// The input of a partial sync after one service changed (kube-proxy's MinimizeIPTablesRestore): the filter
    /// table and the top-level nat chains in full, the changed service's chains, and `-X` for removed chains.
    pub fn render_partial(&self, changed: &BTreeSet<String>, removed: &[String]) -> String {
        let top = [
            "KUBE-SERVICES",
            "KUBE-NODEPORTS",
            "KUBE-POSTROUTING",
            "KUBE-MARK-MASQ",
        ];
        let mut out = String::new();
        self.filter.render("filter", &|_| true, &mut out);
        let keep = |c: &str| top.contains(&c) || changed.contains(c);
        let mut nat = String::new();
        self.nat.render("nat", &keep, &mut nat);
        let nat = nat.strip_suffix("COMMIT\n").unwrap_or(&nat).to_string();
        out.push_str(&nat);
        for c in removed {
            let _ = writeln!(out, ":{c} - [0:0]");
        }
        for c in removed {
            let _ = writeln!(out, "-X {c}");
        }
        out.push_str("COMMIT\n");
        out
    }

    /// Number of rules (the `-A` lines) in both tables.
    pub fn rule_count(&self) -> usize {
        self.filter.rules.len() + self.nat.rules.len()
    }
}

/// The chains of one service port (what a partial sync rewrites when its endpoints change).
pub fn service_chains(s: &ServicePort) -> BTreeSet<String> {
    let mut set: BTreeSet<String> = s
        .endpoints
        .iter()
        .map(|e| sep_chain(s, &format!("{}:{}", e.ip, e.port)))
        .collect();
    set.insert(svc_chain(s));
    if s.node_port.is_some() {
        set.insert(ext_chain(s));
    }
    set
}

/// Jumps from the built-in chains into kube-proxy's chains (kube-proxy adds these with `iptables -I` once at start).
pub fn jump_rules() -> String {
    let mut out = String::from("*filter\n");
    for c in [
        "KUBE-SERVICES",
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-FORWARD",
        "KUBE-NODEPORTS",
        "KUBE-PROXY-FIREWALL",
    ] {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    for (chain, args) in [
        (
            "INPUT",
            "-m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL",
        ),
        (
            "INPUT",
            "-m comment --comment \"kubernetes health check service ports\" -j KUBE-NODEPORTS",
        ),
        (
            "INPUT",
            "-m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES",
        ),
        (
            "FORWARD",
            "-m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL",
        ),
        (
            "FORWARD",
            "-m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD",
        ),
        (
            "FORWARD",
            "-m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        ),
        (
            "FORWARD",
            "-m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES",
        ),
        (
            "OUTPUT",
            "-m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL",
        ),
        (
            "OUTPUT",
            "-m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        ),
    ] {
        let _ = writeln!(out, "-A {chain} {args}");
    }
    out.push_str("COMMIT\n*nat\n");
    for c in ["KUBE-SERVICES", "KUBE-POSTROUTING"] {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    for (chain, args) in [
        (
            "OUTPUT",
            "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        ),
        (
            "PREROUTING",
            "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        ),
        (
            "POSTROUTING",
            "-m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING",
        ),
    ] {
        let _ = writeln!(out, "-A {chain} {args}");
    }
    out.push_str("COMMIT\n");
    out
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::bench::model::{Endpoint, Proto};

    fn cfg() -> ClusterConfig {
        ClusterConfig {
            cluster_cidr: "10.0.0.0/8".into(),
            service_cidr: "172.30.0.0/16".into(),
            node_ips: vec![Ipv4Addr::new(192, 168, 0, 2)],
        }
    }

    fn svc(ns: &str, name: &str, vip: [u8; 4], node_port: Option<u16>, eps: &[[u8; 4]]) -> ServicePort {
        ServicePort {
            namespace: ns.into(),
            name: name.into(),
            port_name: "p80".into(),
            proto: Proto::Tcp,
            cluster_ip: vip.into(),
            port: 80,
            target_port: 80,
            node_port,
            endpoints: eps
                .iter()
                .map(|ip| Endpoint {
                    ip: (*ip).into(),
                    port: 80,
                })
                .collect(),
        }
    }

    /// The input of kube-proxy's TestOverallIPTablesRules, reduced to what the replica supports (ClusterIP,
    /// NodePort with Cluster policy, several endpoints, no endpoints).
    fn fixture() -> Vec<ServicePort> {
        vec![
            svc("ns1", "svc1", [172, 30, 0, 41], None, &[[10, 180, 0, 1]]),
            svc("ns3", "svc3", [172, 30, 0, 43], Some(3003), &[[10, 180, 0, 3]]),
            svc(
                "ns4",
                "svc4",
                [172, 30, 0, 44],
                None,
                &[[10, 180, 0, 4], [10, 180, 0, 5]],
            ),
            svc("ns6", "svc6", [172, 30, 0, 46], None, &[]),
        ]
    }

    fn sorted_lines(s: &str) -> Vec<String> {
        let mut v: Vec<String> = s.lines().map(str::to_string).collect();
        v.sort();
        v
    }

    #[test]
    fn full_sync_matches_kube_proxy_fixture_layout() {
        let out = build(&fixture(), &cfg()).render();
        let (filter, nat) = out.split_once("COMMIT\n").expect("two tables");
        let expected_filter = r#"*filter
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
-A KUBE-SERVICES -m comment --comment "ns6/svc6:p80 has no endpoints" -m tcp -p tcp -d 172.30.0.46 --dport 80 -j REJECT
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
"#;
        assert_eq!(filter, expected_filter);
        let expected_nat = r#"*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
:KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]
:KUBE-SVC-X27LE4BHSL4DOUIK - [0:0]
:KUBE-EXT-X27LE4BHSL4DOUIK - [0:0]
:KUBE-SEP-OYPFS5VJICHGATKP - [0:0]
:KUBE-SVC-4SW47YFZTEDKD3PK - [0:0]
:KUBE-SEP-UKSFD7AGPMPPLUHC - [0:0]
:KUBE-SEP-C6EBXVWJJZMIWKLZ - [0:0]
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -j KUBE-SEP-SXIVWICOYRO3J4NJ
-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ
-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80
-A KUBE-SERVICES -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 -j KUBE-SVC-X27LE4BHSL4DOUIK
-A KUBE-NODEPORTS -m comment --comment ns3/svc3:p80 -m tcp -p tcp --dport 3003 -j KUBE-EXT-X27LE4BHSL4DOUIK
-A KUBE-EXT-X27LE4BHSL4DOUIK -m comment --comment "masquerade traffic for ns3/svc3:p80 external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-X27LE4BHSL4DOUIK -j KUBE-SVC-X27LE4BHSL4DOUIK
-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 -> 10.180.0.3:80" -j KUBE-SEP-OYPFS5VJICHGATKP
-A KUBE-SEP-OYPFS5VJICHGATKP -m comment --comment ns3/svc3:p80 -s 10.180.0.3 -j KUBE-MARK-MASQ
-A KUBE-SEP-OYPFS5VJICHGATKP -m comment --comment ns3/svc3:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80
-A KUBE-SERVICES -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 -j KUBE-SVC-4SW47YFZTEDKD3PK
-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 -> 10.180.0.4:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-UKSFD7AGPMPPLUHC
-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 -> 10.180.0.5:80" -j KUBE-SEP-C6EBXVWJJZMIWKLZ
-A KUBE-SEP-UKSFD7AGPMPPLUHC -m comment --comment ns4/svc4:p80 -s 10.180.0.4 -j KUBE-MARK-MASQ
-A KUBE-SEP-UKSFD7AGPMPPLUHC -m comment --comment ns4/svc4:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.4:80
-A KUBE-SEP-C6EBXVWJJZMIWKLZ -m comment --comment ns4/svc4:p80 -s 10.180.0.5 -j KUBE-MARK-MASQ
-A KUBE-SEP-C6EBXVWJJZMIWKLZ -m comment --comment ns4/svc4:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.5:80
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
COMMIT
"#;
        // kube-proxy's own tests compare sorted lines within each chain; we also fix the exact order.
        assert_eq!(sorted_lines(nat), sorted_lines(expected_nat));
        assert_eq!(nat, expected_nat);
    }

    #[test]
    fn probabilities_are_one_over_remaining() {
        assert_eq!(probability(3, 0), "0.3333333333");
        assert_eq!(probability(3, 1), "0.5000000000");
        assert_eq!(probability(10, 0), "0.1000000000");
        let s = svc(
            "ns",
            "s",
            [172, 30, 0, 1],
            None,
            &[[10, 0, 0, 1], [10, 0, 0, 2], [10, 0, 0, 3]],
        );
        let out = build(&[s], &cfg()).render();
        let stats: Vec<&str> = out.lines().filter(|l| l.contains("--probability")).collect();
        assert_eq!(stats.len(), 2, "the last endpoint is unconditional:\n{out}");
        assert!(stats[0].contains("--probability 0.3333333333"));
        assert!(stats[1].contains("--probability 0.5000000000"));
    }

    #[test]
    fn comments_dropped_over_1000_endpoints() {
        let eps: Vec<[u8; 4]> = (0..10).map(|i| [10, 0, 0, i + 1]).collect();
        let small: Vec<ServicePort> = (0..100)
            .map(|i| svc("ns", &format!("s{i}"), [172, 30, 0, i as u8], None, &eps))
            .collect();
        let out = build(&small, &cfg()).render();
        assert!(out.contains("-> 10.0.0.1:80\""), "1000 endpoints keep comments");
        let mut big = small.clone();
        big.push(svc("ns", "extra", [172, 30, 1, 1], None, &[[10, 0, 0, 1]]));
        let out = build(&big, &cfg()).render();
        assert!(!out.contains(" -> "), "1001 endpoints drop per-endpoint comments");
        let sep = out
            .lines()
            .find(|l| l.starts_with("-A KUBE-SEP-") && l.contains("DNAT"))
            .expect("a SEP rule");
        assert!(sep.contains(" -m tcp -p tcp -j DNAT"), "{sep}");
        assert!(!sep.contains("--comment"), "{sep}");
        assert!(out.contains("\"ns/s0:p80 cluster IP\""), "service comments stay");
    }

    #[test]
    fn partial_sync_rewrites_top_chains_and_the_changed_service_only() {
        let mut svcs = fixture();
        let rs_before = build(&svcs, &cfg());
        let old = service_chains(&svcs[2]);
        svcs[2].endpoints[1].ip = Ipv4Addr::new(10, 180, 0, 9);
        let new = service_chains(&svcs[2]);
        let removed: Vec<String> = old.difference(&new).cloned().collect();
        assert_eq!(removed, vec!["KUBE-SEP-C6EBXVWJJZMIWKLZ".to_string()]);
        let out = build(&svcs, &cfg()).render_partial(&new, &removed);
        assert!(out.contains("-A KUBE-SERVICES -m comment --comment \"ns1/svc1:p80 cluster IP\""));
        assert!(
            !out.contains(":KUBE-SVC-XPGD46QRK7WJZT7O"),
            "unchanged service chains are not rewritten"
        );
        assert!(out.contains("--to-destination 10.180.0.9:80"));
        assert!(out.contains("-X KUBE-SEP-C6EBXVWJJZMIWKLZ\nCOMMIT\n"));
        assert!(rs_before.rule_count() > 20);
    }
}
