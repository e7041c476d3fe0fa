//! Routes between nodes: each node's podCIDR via that node's IP (pure), and the diff against what is installed.
use std::{collections::BTreeSet, net::Ipv4Addr};

use super::cidr::Ipv4Cidr;

/// What the agent knows about a node (from its Node object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerNode {
    pub name: String,
    pub ip: Option<Ipv4Addr>,
    pub pod_cidr: Option<Ipv4Cidr>,
}

/// A route to another node's pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeRoute {
    pub dst: Ipv4Cidr,
    pub via: Ipv4Addr,
}

/// Routes this node needs: every other node's podCIDR via its IP. Nodes without an IP or podCIDR are skipped, as
/// are podCIDRs overlapping our own; a podCIDR claimed by two nodes goes via the first by name (deterministic).
pub fn desired_routes(me: &str, my_cidr: Option<Ipv4Cidr>, nodes: &[PeerNode]) -> Vec<NodeRoute> {
    let mut sorted: Vec<&PeerNode> = nodes.iter().filter(|n| n.name != me).collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for n in sorted {
        let (Some(ip), Some(dst)) = (n.ip, n.pod_cidr) else {
            continue;
        };
        let overlaps_mine = my_cidr.is_some_and(|m| m.contains(dst.network()) || dst.contains(m.network()));
        if overlaps_mine || !seen.insert(dst) {
            continue;
        }
        out.push(NodeRoute { dst, via: ip });
    }
    out.sort();
    out
}

/// Routes to add and to remove to get from `current` to `desired` (a changed gateway is a remove plus an add).
pub fn diff(current: &[NodeRoute], desired: &[NodeRoute]) -> (Vec<NodeRoute>, Vec<NodeRoute>) {
    let cur: BTreeSet<_> = current.iter().copied().collect();
    let want: BTreeSet<_> = desired.iter().copied().collect();
    (
        want.difference(&cur).copied().collect(),
        cur.difference(&want).copied().collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ip: Option<&str>, cidr: Option<&str>) -> PeerNode {
        PeerNode {
            name: name.into(),
            ip: ip.map(|i| i.parse().unwrap()),
            pod_cidr: cidr.map(|c| c.parse().unwrap()),
        }
    }

    fn route(dst: &str, via: &str) -> NodeRoute {
        NodeRoute {
            dst: dst.parse().unwrap(),
            via: via.parse().unwrap(),
        }
    }

    #[test]
    fn routes_other_nodes_only_and_skips_incomplete_ones() {
        let nodes = [
            node("n1", Some("172.30.0.11"), Some("10.244.1.0/24")),
            node("n2", Some("172.30.0.12"), Some("10.244.2.0/24")),
            node("n3", None, Some("10.244.3.0/24")),
            node("n4", Some("172.30.0.14"), None),
            node("n5", Some("172.30.0.15"), Some("10.244.1.0/25")),
        ];
        assert_eq!(
            desired_routes("n1", Some("10.244.1.0/24".parse().unwrap()), &nodes),
            vec![route("10.244.2.0/24", "172.30.0.12")]
        );
    }

    #[test]
    fn duplicate_cidrs_resolve_by_node_name() {
        let nodes = [
            node("b", Some("172.30.0.2"), Some("10.244.9.0/24")),
            node("a", Some("172.30.0.1"), Some("10.244.9.0/24")),
        ];
        assert_eq!(
            desired_routes("me", None, &nodes),
            vec![route("10.244.9.0/24", "172.30.0.1")]
        );
    }

    #[test]
    fn diff_replaces_changed_gateways() {
        let cur = [
            route("10.244.2.0/24", "172.30.0.12"),
            route("10.244.3.0/24", "172.30.0.13"),
        ];
        let want = [
            route("10.244.2.0/24", "172.30.0.99"),
            route("10.244.3.0/24", "172.30.0.13"),
        ];
        let (add, del) = diff(&cur, &want);
        assert_eq!(add, vec![route("10.244.2.0/24", "172.30.0.99")]);
        assert_eq!(del, vec![route("10.244.2.0/24", "172.30.0.12")]);
        assert_eq!(diff(&want, &want), (vec![], vec![]));
    }
}
