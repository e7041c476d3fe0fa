//! kube-proxy nftables-mode rule set, as the `nft -f` transaction kube-proxy sends for the same Services.
use std::fmt::Write as _;

use super::hash::nft_chain_base;
use super::model::{ClusterConfig, ServicePort};

const T: &str = "ip kube-proxy";

/// `service-…` chain of a service port.
pub fn service_chain(s: &ServicePort) -> String {
    format!("service-{}", base(s))
}

/// `external-…` chain of a service port.
pub fn external_chain(s: &ServicePort) -> String {
    format!("external-{}", base(s))
}

/// `endpoint-…` chain of endpoint `ip`/`port` of a service port.
pub fn endpoint_chain(s: &ServicePort, ip: &str, port: u16) -> String {
    let name = format!(
        "{}/{}/{}/{}__{ip}/{port}",
        s.namespace,
        s.name,
        s.proto.lower(),
        s.port_name
    );
    format!("endpoint-{}", nft_chain_base(&name))
}

fn base(s: &ServicePort) -> String {
    nft_chain_base(&format!(
        "{}/{}/{}/{}",
        s.namespace,
        s.name,
        s.proto.lower(),
        s.port_name
    ))
}

/// The table, sets, maps, base chains and their rules (kube-proxy's `setupNFTables`).
pub fn base_rules(cfg: &ClusterConfig) -> String {
    let mut o = String::new();
    let l = |o: &mut String, s: &str| {
        o.push_str(s);
        o.push('\n');
    };
    l(
        &mut o,
        &format!("add table {T} {{ comment \"rules for kube-proxy\" ; }}"),
    );
    l(
        &mut o,
        &format!("add set {T} cluster-ips {{ type ipv4_addr ; comment \"Active ClusterIPs\" ; }}"),
    );
    l(
        &mut o,
        &format!(
            "add set {T} nodeport-ips {{ type ipv4_addr ; comment \"IPs that accept NodePort traffic\" ; }}"
        ),
    );
    for (name, ty, c) in [
        (
            "firewall-ips",
            "ipv4_addr . inet_proto . inet_service",
            "destinations that are subject to LoadBalancerSourceRanges",
        ),
        (
            "no-endpoint-nodeports",
            "inet_proto . inet_service",
            "vmap to drop or reject packets to service nodeports with no endpoints",
        ),
        (
            "no-endpoint-services",
            "ipv4_addr . inet_proto . inet_service",
            "vmap to drop or reject packets to services with no endpoints",
        ),
        (
            "service-ips",
            "ipv4_addr . inet_proto . inet_service",
            "ClusterIP, ExternalIP and LoadBalancer IP traffic",
        ),
        (
            "service-nodeports",
            "inet_proto . inet_service",
            "NodePort traffic",
        ),
    ] {
        l(
            &mut o,
            &format!("add map {T} {name} {{ type {ty} : verdict ; comment \"{c}\" ; }}"),
        );
    }
    for c in [
        "cluster-ips-check",
        "filter-prerouting-pre-dnat { type filter hook prerouting priority -110 ; }",
        "filter-output-pre-dnat { type filter hook output priority -110 ; }",
        "filter-forward { type filter hook forward priority 0 ; }",
        "filter-input { type filter hook input priority 0 ; }",
        "filter-output { type filter hook output priority 0 ; }",
        "firewall-check",
        "mark-for-masquerade",
        "masquerading",
        "nat-output { type nat hook output priority -100 ; }",
        "nat-postrouting { type nat hook postrouting priority 100 ; }",
        "nat-prerouting { type nat hook prerouting priority -100 ; }",
        "nodeport-endpoints-check",
        "reject-chain { comment \"helper for @no-endpoint-services / @no-endpoint-nodeports\" ; }",
        "services",
        "service-endpoints-check",
    ] {
        l(&mut o, &format!("add chain {T} {c}"));
    }
    let svc_cidr = &cfg.service_cidr;
    for r in [
        "cluster-ips-check ip daddr @cluster-ips reject comment \"Reject traffic to invalid ports of ClusterIPs\"".to_string(),
        format!("cluster-ips-check ip daddr {{ {svc_cidr} }} drop comment \"Drop traffic to unallocated ClusterIPs\""),
        "filter-prerouting-pre-dnat ct state new jump firewall-check".into(),
        "filter-forward ct state new jump service-endpoints-check".into(),
        "filter-forward ct state new jump cluster-ips-check".into(),
        "filter-input ct state new jump nodeport-endpoints-check".into(),
        "filter-input ct state new jump service-endpoints-check".into(),
        "filter-output ct state new jump service-endpoints-check".into(),
        "filter-output-pre-dnat ct state new jump firewall-check".into(),
        "filter-output ct state new jump cluster-ips-check".into(),
        "firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips".into(),
        "mark-for-masquerade mark set mark or 0x4000".into(),
        "masquerading mark and 0x4000 == 0 return".into(),
        "masquerading mark set mark xor 0x4000".into(),
        "masquerading masquerade fully-random".into(),
        "nat-output jump services".into(),
        "nat-postrouting jump masquerading".into(),
        "nat-prerouting jump services".into(),
        "nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports".into(),
        "reject-chain reject".into(),
        "services ip daddr . meta l4proto . th dport vmap @service-ips".into(),
        "services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports".into(),
    ] {
        l(&mut o, &format!("add rule {T} {r}"));
    }
    for ip in &cfg.node_ips {
        l(&mut o, &format!("add element {T} nodeport-ips {{ {ip} }}"));
    }
    l(
        &mut o,
        &format!(
            "add rule {T} service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services"
        ),
    );
    o
}

/// The chains, rules and elements of one service port (kube-proxy's per-service block).
pub fn service_rules(s: &ServicePort, cfg: &ClusterConfig, o: &mut String) {
    let spn = s.port_name_string();
    let p = s.proto.lower();
    if s.endpoints.is_empty() {
        let _ = writeln!(o, "add element {T} cluster-ips {{ {} }}", s.cluster_ip);
        let _ = writeln!(
            o,
            "add element {T} no-endpoint-services {{ {} . {p} . {} comment \"{spn}\" : goto reject-chain }}",
            s.cluster_ip, s.port
        );
        if let Some(np) = s.node_port {
            let _ = writeln!(
                o,
                "add element {T} no-endpoint-nodeports {{ {p} . {np} comment \"{spn}\" : goto reject-chain }}"
            );
        }
        return;
    }
    let svc = service_chain(s);
    let eps: Vec<String> = s
        .endpoints
        .iter()
        .map(|e| endpoint_chain(s, &e.ip.to_string(), e.port))
        .collect();
    // Chains first: the service's verdict map jumps to endpoint chains, which must exist by then.
    let _ = writeln!(o, "add chain {T} {svc}");
    if s.node_port.is_some() {
        let _ = writeln!(o, "add chain {T} {}", external_chain(s));
    }
    for chain in &eps {
        let _ = writeln!(o, "add chain {T} {chain}");
    }
    let _ = writeln!(
        o,
        "add rule {T} {svc} ip daddr {} ip saddr != {} jump mark-for-masquerade",
        s.cluster_ip, cfg.cluster_cidr
    );
    let vmap: Vec<String> = eps
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{i} : goto {c}"))
        .collect();
    let _ = writeln!(
        o,
        "add rule {T} {svc} numgen random mod {} vmap {{ {} }}",
        eps.len(),
        vmap.join(" , ")
    );
    if s.node_port.is_some() {
        let ext = external_chain(s);
        let _ = writeln!(o, "add rule {T} {ext} jump mark-for-masquerade");
        let _ = writeln!(o, "add rule {T} {ext} goto {svc}");
    }
    for (e, chain) in s.endpoints.iter().zip(&eps) {
        endpoint_rules(s, e.ip, e.port, chain, false, o);
    }
    o.push('\n');
    let _ = writeln!(o, "add element {T} cluster-ips {{ {} }}", s.cluster_ip);
    let _ = writeln!(
        o,
        "add element {T} service-ips {{ {} . {p} . {} : goto {svc} }}",
        s.cluster_ip, s.port
    );
    if let Some(np) = s.node_port {
        let _ = writeln!(
            o,
            "add element {T} service-nodeports {{ {p} . {np} : goto {} }}",
            external_chain(s)
        );
    }
}

fn endpoint_rules(
    s: &ServicePort,
    ip: std::net::Ipv4Addr,
    port: u16,
    chain: &str,
    declare: bool,
    o: &mut String,
) {
    if declare {
        let _ = writeln!(o, "add chain {T} {chain}");
    }
    let _ = writeln!(o, "add rule {T} {chain} ip saddr {ip} jump mark-for-masquerade");
    let _ = writeln!(
        o,
        "add rule {T} {chain} meta l4proto {} dnat to {ip}:{port}",
        s.proto.lower()
    );
}

/// The whole transaction of a full sync.
pub fn full(services: &[ServicePort], cfg: &ClusterConfig) -> String {
    let mut o = base_rules(cfg);
    for s in services {
        let _ = writeln!(o, "\n# {}", s.name);
        service_rules(s, cfg, &mut o);
    }
    o
}

/// The transaction of a partial sync after `new`'s endpoints changed from `old`'s: the service chain is flushed
/// and rewritten, new endpoint chains added, vanished ones deleted (kube-proxy's incremental sync).
pub fn endpoint_change(old: &ServicePort, new: &ServicePort, cfg: &ClusterConfig) -> String {
    let svc = service_chain(new);
    let mut o = format!("flush chain {T} {svc}\n");
    let _ = writeln!(
        o,
        "add rule {T} {svc} ip daddr {} ip saddr != {} jump mark-for-masquerade",
        new.cluster_ip, cfg.cluster_cidr
    );
    let eps: Vec<String> = new
        .endpoints
        .iter()
        .map(|e| endpoint_chain(new, &e.ip.to_string(), e.port))
        .collect();
    let old_eps: Vec<String> = old
        .endpoints
        .iter()
        .map(|e| endpoint_chain(old, &e.ip.to_string(), e.port))
        .collect();
    for (e, chain) in new.endpoints.iter().zip(&eps) {
        if !old_eps.contains(chain) {
            endpoint_rules(new, e.ip, e.port, chain, true, &mut o);
        }
    }
    let vmap: Vec<String> = eps
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{i} : goto {c}"))
        .collect();
    let _ = writeln!(
        o,
        "add rule {T} {svc} numgen random mod {} vmap {{ {} }}",
        eps.len(),
        vmap.join(" , ")
    );
    for c in old_eps.iter().filter(|c| !eps.contains(c)) {
        let _ = writeln!(o, "delete chain {T} {c}");
    }
    o
}

/// Rules plus map/set elements in a transaction (the footprint figure for nftables).
pub fn object_count(tx: &str) -> usize {
    tx.lines()
        .filter(|l| l.starts_with("add rule") || l.starts_with("add element"))
        .count()
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

    #[test]
    fn base_rules_have_kube_proxy_layout() {
        let b = base_rules(&cfg());
        assert!(b.starts_with("add table ip kube-proxy { comment \"rules for kube-proxy\" ; }\n"));
        assert!(b.contains("add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }\n"));
        assert!(b.contains(
            "add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips\n"
        ));
        assert!(b.contains("add rule ip kube-proxy services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports\n"));
        assert!(b.contains("add rule ip kube-proxy cluster-ips-check ip daddr { 172.30.0.0/16 } drop comment \"Drop traffic to unallocated ClusterIPs\"\n"));
        assert!(b.contains("add element ip kube-proxy nodeport-ips { 192.168.0.2 }\n"));
        assert!(b.contains(
            "add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }\n"
        ));
    }

    #[test]
    fn services_match_kube_proxy_fixture() {
        let mut o = String::new();
        service_rules(
            &svc("ns1", "svc1", [172, 30, 0, 41], None, &[[10, 180, 0, 1]]),
            &cfg(),
            &mut o,
        );
        assert_eq!(
            o,
            "add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
add chain ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 }
add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 ip saddr 10.180.0.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 meta l4proto tcp dnat to 10.180.0.1:80

add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
"
        );
        let mut o = String::new();
        service_rules(
            &svc(
                "ns4",
                "svc4",
                [172, 30, 0, 44],
                Some(3004),
                &[[10, 180, 0, 4], [10, 180, 0, 5]],
            ),
            &cfg(),
            &mut o,
        );
        assert!(o.contains("add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 numgen random mod 2 vmap { 0 : goto endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 , 1 : goto endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 }\n"), "{o}");
        assert!(o.contains("add rule ip kube-proxy external-LAUZTJTB-ns4/svc4/tcp/p80 jump mark-for-masquerade\nadd rule ip kube-proxy external-LAUZTJTB-ns4/svc4/tcp/p80 goto service-LAUZTJTB-ns4/svc4/tcp/p80\n"));
        assert!(o.contains("add element ip kube-proxy service-nodeports { tcp . 3004 : goto external-LAUZTJTB-ns4/svc4/tcp/p80 }\n"));
        let mut o = String::new();
        service_rules(&svc("ns6", "svc6", [172, 30, 0, 46], None, &[]), &cfg(), &mut o);
        assert_eq!(
            o,
            "add element ip kube-proxy cluster-ips { 172.30.0.46 }\nadd element ip kube-proxy no-endpoint-services { 172.30.0.46 . tcp . 80 comment \"ns6/svc6:p80\" : goto reject-chain }\n"
        );
    }

    #[test]
    fn endpoint_change_replaces_one_endpoint_chain() {
        let old = svc(
            "ns4",
            "svc4",
            [172, 30, 0, 44],
            None,
            &[[10, 180, 0, 4], [10, 180, 0, 5]],
        );
        let mut new = old.clone();
        new.endpoints[1].ip = Ipv4Addr::new(10, 180, 0, 6);
        let tx = endpoint_change(&old, &new, &cfg());
        assert!(tx.starts_with("flush chain ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80\n"));
        assert!(tx.contains("dnat to 10.180.0.6:80"));
        assert!(
            !tx.contains("dnat to 10.180.0.4:80"),
            "unchanged endpoint chains are kept"
        );
        assert!(
            tx.ends_with("delete chain ip kube-proxy endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80\n")
        );
    }
}
