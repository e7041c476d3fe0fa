//! The netns testbed of one variant: client, node, backend and external namespaces joined by veths to the node.
use anyhow::{Context, Result};

use super::sh;

/// Every namespace this tool creates starts with this prefix (and nothing else of ours exists).
pub const PREFIX: &str = "skb-";

/// Addresses shared by all testbeds (each testbed is its own set of namespaces, so they never clash).
pub mod addr {
    use std::net::Ipv4Addr;
    pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
    pub const CLIENT_GW: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
    pub const BACKEND_GW: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 1);
    pub const NODE_UPLINK: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
    pub const EXTERNAL: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
    pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
    pub const SERVICE_CIDR: &str = "10.96.0.0/16";
    /// Backend `i` (0-based): 10.244.2.10 + i.
    pub fn backend(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, 2, 10 + i as u8)
    }
}

/// Interface names inside the namespaces (the same in every testbed).
pub mod ifname {
    /// Node side of the client's veth (the "pod" interface Skiff's TC program sits on).
    pub const NODE_CLIENT: &str = "pod-c0";
    /// Node side of the backends' veth.
    pub const NODE_BACKEND: &str = "pod-b0";
    /// The node's uplink towards the external namespace (XDP NodePort).
    pub const NODE_UPLINK: &str = "up0";
    /// The interface in client, backend and external namespaces.
    pub const PEER: &str = "eth0";
}

/// One testbed; removes its namespaces when dropped.
#[derive(Debug)]
pub struct Testbed {
    pub client: String,
    pub node: String,
    pub backend: String,
    pub external: String,
    pub backends: usize,
}

impl Testbed {
    /// Builds the four namespaces of testbed `tag` with `backends` backend addresses.
    pub fn create(tag: &str, backends: usize) -> Result<Self> {
        let name = |r: &str| format!("{PREFIX}{tag}-{r}");
        let tb = Testbed {
            client: name("c"),
            node: name("n"),
            backend: name("b"),
            external: name("e"),
            backends,
        };
        for ns in tb.namespaces() {
            sh::run("ip", &["netns", "add", ns]).with_context(|| format!("creating netns {ns}"))?;
            sh::in_ns(ns, &["ip", "link", "set", "lo", "up"])?;
        }
        tb.wire().with_context(|| format!("wiring testbed {tag}"))?;
        Ok(tb)
    }

    pub fn namespaces(&self) -> [&str; 4] {
        [&self.client, &self.node, &self.backend, &self.external]
    }

    fn wire(&self) -> Result<()> {
        let n = &self.node;
        let peer = ifname::PEER;
        for (node_if, other, node_ip, other_ip) in [
            (ifname::NODE_CLIENT, &self.client, addr::CLIENT_GW, addr::CLIENT),
            (
                ifname::NODE_BACKEND,
                &self.backend,
                addr::BACKEND_GW,
                addr::backend(0),
            ),
            (
                ifname::NODE_UPLINK,
                &self.external,
                addr::NODE_UPLINK,
                addr::EXTERNAL,
            ),
        ] {
            sh::in_ns(
                n,
                &[
                    "ip", "link", "add", node_if, "type", "veth", "peer", "name", peer, "netns", other,
                ],
            )?;
            sh::in_ns(
                n,
                &["ip", "addr", "add", &format!("{node_ip}/24"), "dev", node_if],
            )?;
            sh::in_ns(n, &["ip", "link", "set", node_if, "up"])?;
            sh::in_ns(
                other,
                &["ip", "addr", "add", &format!("{other_ip}/24"), "dev", peer],
            )?;
            sh::in_ns(other, &["ip", "link", "set", peer, "up"])?;
            sh::in_ns(
                other,
                &["ip", "route", "add", "default", "via", &node_ip.to_string()],
            )?;
        }
        for i in 1..self.backends {
            sh::in_ns(
                &self.backend,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("{}/24", addr::backend(i)),
                    "dev",
                    peer,
                ],
            )?;
        }
        for kv in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ] {
            sh::in_ns(n, &["sysctl", "-qw", kv])?;
        }
        for ns in [&self.client, &self.external] {
            sh::in_ns(ns, &["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000"])?;
            sh::in_ns(ns, &["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"])?;
        }
        sh::in_ns(&self.backend, &["sysctl", "-qw", "net.core.somaxconn=8192"])?;
        Ok(())
    }

    /// Drops all conntrack entries in the node namespace (between trials).
    pub fn flush_conntrack(&self) -> Result<()> {
        // `conntrack -F` exits 0 also when the table is empty; it fails only if it cannot talk to the kernel.
        sh::in_ns(&self.node, &["conntrack", "-F"])
            .map(drop)
            .or_else(|e| {
                if e.to_string().contains("0 flow entries") {
                    Ok(())
                } else {
                    Err(e)
                }
            })
    }

    /// Turns TSO/GSO (and GRO, so the node forwards MTU-sized packets) on or off on every veth end.
    pub fn set_offloads(&self, on: bool) -> Result<()> {
        let v = if on { "on" } else { "off" };
        for (ns, dev) in [
            (&self.client, ifname::PEER),
            (&self.node, ifname::NODE_CLIENT),
            (&self.node, ifname::NODE_BACKEND),
            (&self.backend, ifname::PEER),
        ] {
            sh::in_ns(ns, &["ethtool", "-K", dev, "tso", v, "gso", v, "gro", v])?;
        }
        Ok(())
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for ns in self.namespaces() {
            let _ = sh::run("ip", &["netns", "del", ns]);
        }
    }
}

/// Deletes namespaces left behind by an interrupted run (only names with our prefix).
pub fn sweep_stale() -> Result<usize> {
    let list = sh::run("ip", &["netns", "list"])?;
    let stale: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .collect();
    for ns in &stale {
        sh::run("ip", &["netns", "del", ns]).with_context(|| format!("removing stale netns {ns}"))?;
    }
    Ok(stale.len())
}
