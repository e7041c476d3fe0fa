//! The lab's layout as plain data: names, addresses and ranges of every node, namespace and route it owns.
use std::net::Ipv4Addr;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

/// How ClusterIP traffic is served on the nodes (`skiff-agent node --mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Dataplane {
    Socket,
    Tc,
    Both,
}

impl Dataplane {
    pub fn as_str(self) -> &'static str {
        match self {
            Dataplane::Socket => "socket",
            Dataplane::Tc => "tc",
            Dataplane::Both => "both",
        }
    }
}

/// Where skiff-control keeps its objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Embedded,
    Etcd,
}

/// An IPv4 network `addr/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr> {
        let (a, l) = s
            .split_once('/')
            .with_context(|| format!("{s}: expected ADDRESS/LENGTH"))?;
        let addr: Ipv4Addr = a.parse().with_context(|| format!("{s}: bad address"))?;
        let len: u8 = l.parse().with_context(|| format!("{s}: bad prefix length"))?;
        ensure!(len <= 32, "{s}: prefix length above 32");
        let mask = mask(len);
        ensure!(u32::from(addr) & !mask == 0, "{s}: host bits set");
        Ok(Cidr { addr, len })
    }

    /// The `i`-th address of the network.
    pub fn host(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + i)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.len) == u32::from(self.addr)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 { 0 } else { u32::MAX << (32 - len) }
}

/// Everything that fixes the lab's shape; saved as `lab.json` in the lab directory so every later command (and
/// `lab up` after `lab down`) sees the same lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabPlan {
    /// Prefix of every namespace and node name (`skiff-lab-`).
    pub prefix: String,
    /// Node numbers in use (1-based; stable when nodes are added).
    pub nodes: Vec<u32>,
    pub dataplane: Dataplane,
    pub store: StoreKind,
    pub api_port: u16,
    /// First kubelet (log endpoint) port; node `i` uses `kubelet_port + i`.
    pub kubelet_port: u16,
    pub pod_cidr: String,
    pub service_cidr: String,
    pub underlay: String,
    pub lb_pool: String,
    /// Seconds without a node heartbeat before the node is Unknown (short, so node failure is quick to see).
    #[serde(default = "default_node_grace")]
    pub node_grace_seconds: u32,
    /// Seconds an unreachable node's pods are tolerated before they are evicted.
    #[serde(default = "default_eviction")]
    pub eviction_seconds: u32,
}

pub const fn default_node_grace() -> u32 {
    10
}

pub const fn default_eviction() -> u32 {
    10
}

/// One node of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    /// Node name and network namespace name (the same, so `ip netns exec NAME` enters the node).
    pub name: String,
    pub ip: Ipv4Addr,
    pub pod_cidr: String,
    pub kubelet_port: u16,
    /// The bridge-side end of the node's uplink veth (inside the wire namespace).
    pub wire_port: String,
}

/// The largest node count: node addresses are `.11 ..` of the underlay and pod CIDRs `/24`s of the pod range.
pub const MAX_NODES: u32 = 200;

impl LabPlan {
    /// Checks that the ranges parse, fit the layout and do not overlap.
    pub fn validate(&self) -> Result<()> {
        let pods = Cidr::parse(&self.pod_cidr)?;
        let svc = Cidr::parse(&self.service_cidr)?;
        let under = Cidr::parse(&self.underlay)?;
        let lb = Cidr::parse(&self.lb_pool)?;
        ensure!(
            pods.len <= 16,
            "pod CIDR {pods} must be a /16 or larger (a /24 per node)"
        );
        ensure!(under.len <= 24, "underlay {under} must be a /24 or larger");
        ensure!(
            under.contains(lb.addr) && lb.len >= under.len,
            "LoadBalancer pool {lb} must lie inside the underlay {under} (it is served on the lab bridge)"
        );
        for (a, b) in [(pods, svc), (pods, under), (svc, under)] {
            ensure!(
                !a.contains(b.addr) && !b.contains(a.addr),
                "lab ranges {a} and {b} overlap"
            );
        }
        ensure!(!self.nodes.is_empty(), "a lab needs at least one node");
        if let Some(n) = self.nodes.iter().find(|n| **n == 0 || **n > MAX_NODES) {
            bail!("node number {n} outside 1..={MAX_NODES}");
        }
        Ok(())
    }

    pub fn wire_netns(&self) -> String {
        format!("{}wire", self.prefix)
    }

    pub fn client_netns(&self) -> String {
        format!("{}client", self.prefix)
    }

    /// The client namespace's address on the lab bridge.
    pub fn client_ip(&self) -> Ipv4Addr {
        self.underlay_cidr().host(250)
    }

    fn underlay_cidr(&self) -> Cidr {
        Cidr::parse(&self.underlay).expect("validated underlay")
    }

    pub fn underlay_len(&self) -> u8 {
        self.underlay_cidr().len
    }

    pub fn node(&self, n: u32) -> NodePlan {
        let pods = Cidr::parse(&self.pod_cidr).expect("validated pod CIDR");
        NodePlan {
            name: format!("{}node{n}", self.prefix),
            ip: self.underlay_cidr().host(10 + n),
            pod_cidr: format!("{}/24", Ipv4Addr::from(u32::from(pods.addr) + (n << 8))),
            kubelet_port: self.kubelet_port + n as u16,
            wire_port: format!("v-node{n}"),
        }
    }

    pub fn all_nodes(&self) -> Vec<NodePlan> {
        self.nodes.iter().map(|n| self.node(*n)).collect()
    }

    /// Finds a node by its name, or by its number (`2`) or short name (`node2`).
    pub fn find(&self, name: &str) -> Option<NodePlan> {
        self.all_nodes().into_iter().find(|n| {
            n.name == name
                || n.name.strip_prefix(&self.prefix) == Some(name)
                || format!("node{name}") == n.name[self.prefix.len()..]
        })
    }

    /// The next free node number.
    pub fn next_node(&self) -> u32 {
        self.nodes.iter().max().copied().unwrap_or(0) + 1
    }

    /// Ranges that must never leave the machine: routed `unreachable` in the root namespace while the lab exists.
    pub fn guarded_ranges(&self) -> Vec<String> {
        vec![
            self.pod_cidr.clone(),
            self.service_cidr.clone(),
            self.underlay.clone(),
        ]
    }

    /// Every network namespace the lab creates.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v = vec![self.wire_netns(), self.client_netns()];
        v.extend(self.all_nodes().into_iter().map(|n| n.name));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> LabPlan {
        LabPlan {
            prefix: "skiff-lab-".into(),
            nodes: vec![1, 2, 3],
            dataplane: Dataplane::Both,
            store: StoreKind::Embedded,
            api_port: 6443,
            kubelet_port: 10250,
            pod_cidr: "10.244.0.0/16".into(),
            service_cidr: "10.96.0.0/16".into(),
            underlay: "10.99.0.0/24".into(),
            lb_pool: "10.99.0.192/27".into(),
            node_grace_seconds: 10,
            eviction_seconds: 10,
        }
    }

    #[test]
    fn nodes_get_names_addresses_and_pod_ranges() {
        let p = plan();
        p.validate().unwrap();
        let n2 = p.node(2);
        assert_eq!(n2.name, "skiff-lab-node2");
        assert_eq!(n2.ip, Ipv4Addr::new(10, 99, 0, 12));
        assert_eq!(n2.pod_cidr, "10.244.2.0/24");
        assert_eq!(n2.kubelet_port, 10252);
        assert_eq!(p.client_ip(), Ipv4Addr::new(10, 99, 0, 250));
        assert_eq!(p.next_node(), 4);
        assert_eq!(
            p.namespaces(),
            [
                "skiff-lab-wire",
                "skiff-lab-client",
                "skiff-lab-node1",
                "skiff-lab-node2",
                "skiff-lab-node3"
            ]
        );
    }

    #[test]
    fn nodes_are_found_by_name_number_or_short_name() {
        let p = plan();
        for q in ["skiff-lab-node3", "node3", "3"] {
            assert_eq!(p.find(q).map(|n| n.name), Some("skiff-lab-node3".into()), "{q}");
        }
        assert!(p.find("node9").is_none());
    }

    #[test]
    fn overlapping_or_misplaced_ranges_are_refused() {
        let mut p = plan();
        p.service_cidr = "10.244.128.0/20".into();
        assert!(format!("{:#}", p.validate().unwrap_err()).contains("overlap"));
        let mut p = plan();
        p.lb_pool = "192.168.7.0/27".into();
        assert!(format!("{:#}", p.validate().unwrap_err()).contains("inside the underlay"));
        let mut p = plan();
        p.pod_cidr = "10.244.0.1/16".into();
        assert!(p.validate().is_err());
        let mut p = plan();
        p.nodes = vec![];
        assert!(p.validate().is_err());
    }

    #[test]
    fn cidr_membership() {
        let c = Cidr::parse("10.96.0.0/16").unwrap();
        assert!(c.contains(Ipv4Addr::new(10, 96, 200, 1)));
        assert!(!c.contains(Ipv4Addr::new(10, 97, 0, 1)));
        assert_eq!(c.to_string(), "10.96.0.0/16");
    }
}
