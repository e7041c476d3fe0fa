//! Masquerade for pod traffic leaving the cluster (pure): the node's nftables table as a function of its podCIDR
//! and the cluster ranges, plus the `node` flags that configure it.
//!
//! The table (family `ip`, name [`TABLE`]) holds one interval set of the ranges that stay un-NATed and one rule:
//!
//! ```text
//! table ip skiff-nat {
//!   set cluster-ranges { type ipv4_addr; flags interval; elements = { 10.244.0.0/16, 10.96.0.0/12, 10.98.0.0/24 } }
//!   chain postrouting {
//!     type nat hook postrouting priority srcnat; policy accept;
//!     ip saddr 10.244.1.0/24 ip daddr != @cluster-ranges counter masquerade
//!   }
//! }
//! ```
//!
//! Pod-to-pod traffic (also across nodes), traffic to Services and to the node underlay keep the pod's address;
//! anything else leaves with the address of the outgoing interface (the node IP on the uplink), so replies come back.
//!
//! How it reaches the kernel: as an nftables JSON batch fed to `nft -j -f -` ([`super::nft`]), what kube-proxy's
//! nftables mode does through knftables. The netlink crates were considered: `rustables` is GPL-3.0 (this project
//! is Apache-2.0) and `nftnl` binds the C libnftnl (a `-dev` package and unsafe batch building); the `nftables`
//! crate gives typed, serde-checked JSON and a ruleset the `nft` CLI shows exactly as written. Every write replaces
//! the whole table in one transaction (add, delete, add again), so a restart or a changed range set is atomic and
//! idempotent, and nothing outside the table is ever touched.
use std::{borrow::Cow, collections::HashSet};

use nftables::{
    batch::Batch,
    expr::{Expression, NamedExpression, Payload, PayloadField, Prefix},
    schema::{Chain, NfListObject, Nftables, Rule, Set, SetFlag, SetType, SetTypeValue, Table},
    stmt::{Counter, Match, Operator, Statement},
    types::{NfChainPolicy, NfChainType, NfFamily, NfHook},
};

use super::{cidr::Ipv4Cidr, routes::PeerNode};

/// The table Skiff owns in each node's network namespace.
pub const TABLE: &str = "skiff-nat";
/// The set of destination ranges that are not masqueraded.
pub const SET: &str = "cluster-ranges";
/// The chain hooked at postrouting.
pub const CHAIN: &str = "postrouting";
/// `srcnat` priority of the nat hook.
const SRCNAT_PRIORITY: i32 = 100;
/// Kubernetes' default service CIDR (kube-apiserver `--service-cluster-ip-range`): covers the lab's 10.96.0.0/16.
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";

/// Flags of `skiff-agent node` for masquerade.
#[derive(Debug, Clone, clap::Args)]
pub struct MasqueradeArgs {
    /// Masquerade pod traffic to destinations outside the cluster ranges (`--masquerade=false`: never; an existing
    /// Skiff nat table is removed).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub masquerade: bool,
    /// The cluster's pod range(s), never masqueraded (repeatable or comma-separated) [default: the podCIDRs of the
    /// Nodes, followed as they change].
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    pub cluster_cidr: Vec<Ipv4Cidr>,
    /// The Service range(s), never masqueraded (repeatable or comma-separated).
    #[arg(long, value_name = "CIDR", value_delimiter = ',', default_value = DEFAULT_SERVICE_CIDR)]
    pub service_cidr: Vec<Ipv4Cidr>,
    /// More destinations that keep pod addresses (repeatable or comma-separated) [always added: the uplink's
    /// subnet and every Node's address].
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    pub no_masquerade_cidr: Vec<Ipv4Cidr>,
}

impl MasqueradeArgs {
    /// The configured ranges (without the ones learnt from Nodes).
    pub fn static_ranges(&self, underlay: Option<Ipv4Cidr>) -> Vec<Ipv4Cidr> {
        let mut v: Vec<Ipv4Cidr> = self
            .cluster_cidr
            .iter()
            .chain(&self.service_cidr)
            .chain(&self.no_masquerade_cidr)
            .copied()
            .collect();
        v.extend(underlay);
        normalize(v)
    }
}

/// Sorted ranges with every range inside another one dropped (nftables refuses overlapping interval elements; two
/// prefixes either nest or are disjoint, so this leaves no overlap).
pub fn normalize(ranges: impl IntoIterator<Item = Ipv4Cidr>) -> Vec<Ipv4Cidr> {
    let mut v: Vec<Ipv4Cidr> = ranges.into_iter().collect();
    v.sort_by_key(|c| (c.prefix(), c.network()));
    v.dedup();
    let mut out: Vec<Ipv4Cidr> = Vec::with_capacity(v.len());
    for c in v {
        if !out.iter().any(|o| o.contains(c.network())) {
            out.push(c);
        }
    }
    out.sort_by_key(|c| (c.network(), c.prefix()));
    out
}

/// Every destination that keeps pod addresses: the static ranges, this node's podCIDR, and every Node's podCIDR
/// and address.
pub fn cluster_ranges(static_ranges: &[Ipv4Cidr], my_cidr: Ipv4Cidr, nodes: &[PeerNode]) -> Vec<Ipv4Cidr> {
    let learnt = nodes
        .iter()
        .flat_map(|n| n.pod_cidr.into_iter().chain(n.ip.map(Ipv4Cidr::host)));
    normalize(
        static_ranges
            .iter()
            .copied()
            .chain(std::iter::once(my_cidr))
            .chain(learnt),
    )
}

/// What the table says: masquerade traffic from `pod_cidr` to anything outside `keep`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasqueradeRules {
    pub pod_cidr: Ipv4Cidr,
    /// Normalised (see [`normalize`]) and never empty: it always holds `pod_cidr`.
    pub keep: Vec<Ipv4Cidr>,
}

impl MasqueradeRules {
    pub fn new(pod_cidr: Ipv4Cidr, keep: &[Ipv4Cidr]) -> Self {
        Self {
            pod_cidr,
            keep: normalize(keep.iter().copied().chain(std::iter::once(pod_cidr))),
        }
    }
}

fn table() -> NfListObject<'static> {
    NfListObject::Table(Table {
        family: NfFamily::IP,
        name: TABLE.into(),
        handle: None,
    })
}

fn prefix(c: Ipv4Cidr) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(Expression::String(c.network().to_string().into())),
        len: u32::from(c.prefix()),
    }))
}

fn ip_field(field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
        protocol: "ip".into(),
        field: field.into(),
    })))
}

/// The batch that replaces Skiff's table with `rules` in one transaction (also when the table does not exist).
pub fn replace_batch(rules: &MasqueradeRules) -> Nftables<'static> {
    let mut b = Batch::new();
    // `add` of an existing table is a no-op, so the `delete` that follows never fails: the table is then
    // recreated from scratch, all inside one atomic transaction.
    b.add(table());
    b.delete(table());
    b.add(table());
    b.add(NfListObject::Set(Box::new(Set {
        family: NfFamily::IP,
        table: TABLE.into(),
        name: SET.into(),
        handle: None,
        set_type: SetTypeValue::Single(SetType::Ipv4Addr),
        policy: None,
        flags: Some(HashSet::from([SetFlag::Interval])),
        elem: Some(Cow::Owned(rules.keep.iter().copied().map(prefix).collect())),
        timeout: None,
        gc_interval: None,
        size: None,
        comment: None,
    })));
    b.add(NfListObject::Chain(Chain {
        family: NfFamily::IP,
        table: TABLE.into(),
        name: CHAIN.into(),
        _type: Some(NfChainType::NAT),
        hook: Some(NfHook::Postrouting),
        prio: Some(SRCNAT_PRIORITY),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    }));
    let expr = vec![
        Statement::Match(Match {
            left: ip_field("saddr"),
            right: prefix(rules.pod_cidr),
            op: Operator::EQ,
        }),
        Statement::Match(Match {
            left: ip_field("daddr"),
            right: Expression::String(format!("@{SET}").into()),
            op: Operator::NEQ,
        }),
        Statement::Counter(Counter::Anonymous(None)),
        Statement::Masquerade(None),
    ];
    b.add(NfListObject::Rule(Rule {
        family: NfFamily::IP,
        table: TABLE.into(),
        chain: CHAIN.into(),
        expr: Cow::Owned(expr),
        handle: None,
        index: None,
        comment: Some("skiff: masquerade pod traffic leaving the cluster".into()),
    }));
    b.to_nftables()
}

/// The batch that removes Skiff's table, succeeding also when there is none.
pub fn delete_batch() -> Nftables<'static> {
    let mut b = Batch::new();
    b.add(table());
    b.delete(table());
    b.to_nftables()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    fn strs(v: &[Ipv4Cidr]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn normalize_drops_nested_ranges_and_duplicates() {
        let v = normalize([
            c("10.244.1.0/24"),
            c("10.96.0.0/12"),
            c("10.244.0.0/16"),
            c("10.98.0.11/32"),
            c("10.96.5.0/24"),
            c("10.244.0.0/16"),
        ]);
        assert_eq!(strs(&v), ["10.96.0.0/12", "10.244.0.0/16"]);
    }

    #[test]
    fn cluster_ranges_learn_node_cidrs_and_addresses() {
        let nodes = [
            PeerNode {
                name: "a".into(),
                ip: Some("192.168.7.11".parse().unwrap()),
                pod_cidr: Some(c("10.245.1.0/24")),
            },
            PeerNode {
                name: "b".into(),
                ip: Some("192.168.7.12".parse().unwrap()),
                pod_cidr: None,
            },
        ];
        let r = cluster_ranges(&[c("10.96.0.0/12")], c("10.245.2.0/24"), &nodes);
        assert_eq!(
            strs(&r),
            [
                "10.96.0.0/12",
                "10.245.1.0/24",
                "10.245.2.0/24",
                "192.168.7.11/32",
                "192.168.7.12/32"
            ]
        );
    }

    #[test]
    fn flags_parse_with_defaults_and_can_turn_masquerade_off() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            m: MasqueradeArgs,
        }
        let t = T::try_parse_from(["x"]).unwrap();
        assert!(t.m.masquerade);
        assert_eq!(strs(&t.m.static_ranges(None)), [DEFAULT_SERVICE_CIDR]);
        let t = T::try_parse_from([
            "x",
            "--masquerade=false",
            "--cluster-cidr",
            "10.244.0.0/16",
            "--service-cidr",
            "10.96.0.0/16",
            "--no-masquerade-cidr",
            "172.16.0.0/12,10.244.9.0/24",
        ])
        .unwrap();
        assert!(!t.m.masquerade);
        assert_eq!(
            strs(&t.m.static_ranges(Some(c("10.98.0.0/24")))),
            ["10.96.0.0/16", "10.98.0.0/24", "10.244.0.0/16", "172.16.0.0/12"]
        );
        assert!(T::try_parse_from(["x", "--cluster-cidr", "10.244.0.0"]).is_err());
    }

    #[test]
    fn replace_batch_is_one_atomic_table_swap_with_the_masquerade_rule() {
        let rules = MasqueradeRules::new(c("10.244.1.0/24"), &[c("10.96.0.0/12"), c("10.244.0.0/16")]);
        assert_eq!(strs(&rules.keep), ["10.96.0.0/12", "10.244.0.0/16"]);
        let json = serde_json::to_value(replace_batch(&rules)).unwrap();
        let cmds = json["nftables"].as_array().unwrap();
        let verbs: Vec<String> = cmds
            .iter()
            .map(|o| {
                let (verb, obj) = o.as_object().unwrap().iter().next().unwrap();
                format!("{verb} {}", obj.as_object().unwrap().keys().next().unwrap())
            })
            .collect();
        assert_eq!(
            verbs,
            [
                "add table",
                "delete table",
                "add table",
                "add set",
                "add chain",
                "add rule"
            ]
        );
        let set = &cmds[3]["add"]["set"];
        assert_eq!(set["name"], SET);
        assert_eq!(set["type"], "ipv4_addr");
        assert_eq!(set["flags"], serde_json::json!(["interval"]));
        assert_eq!(
            set["elem"],
            serde_json::json!([
                {"prefix": {"addr": "10.96.0.0", "len": 12}},
                {"prefix": {"addr": "10.244.0.0", "len": 16}}
            ])
        );
        let chain = &cmds[4]["add"]["chain"];
        assert_eq!(
            (&chain["type"], &chain["hook"], &chain["prio"], &chain["policy"]),
            (
                &serde_json::json!("nat"),
                &serde_json::json!("postrouting"),
                &serde_json::json!(100),
                &serde_json::json!("accept")
            )
        );
        let expr = &cmds[5]["add"]["rule"]["expr"];
        assert_eq!(
            expr[0]["match"],
            serde_json::json!({"left": {"payload": {"protocol": "ip", "field": "saddr"}},
                               "right": {"prefix": {"addr": "10.244.1.0", "len": 24}}, "op": "=="})
        );
        assert_eq!(expr[1]["match"]["right"], "@cluster-ranges");
        assert_eq!(expr[1]["match"]["op"], "!=");
        assert!(expr[3].get("masquerade").is_some(), "{expr}");
        for o in cmds {
            let obj = o.as_object().unwrap().values().next().unwrap();
            let obj = obj.as_object().unwrap().values().next().unwrap();
            assert_eq!(obj["family"], "ip");
            assert!(obj["table"] == TABLE || obj["name"] == TABLE, "{obj}");
        }
    }

    #[test]
    fn the_rule_keeps_the_own_pod_cidr_even_without_other_ranges() {
        let rules = MasqueradeRules::new(c("10.244.1.0/24"), &[]);
        assert_eq!(strs(&rules.keep), ["10.244.1.0/24"]);
        let json = serde_json::to_value(delete_batch()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"nftables": [
                {"add": {"table": {"family": "ip", "name": TABLE}}},
                {"delete": {"table": {"family": "ip", "name": TABLE}}}
            ]})
        );
    }
}
