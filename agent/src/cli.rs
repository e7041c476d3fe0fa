//! The `skiff-agent` command line (clap): `proxy`, `inspect`, `cleanup`, `xdp-pass`.
use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::PathBuf,
};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::bpf::attach::{Mode, XdpAttachMode};

/// Skiff's per-node agent: an eBPF Service dataplane (kube-proxy replacement).
///
/// Maps and links are pinned under /sys/fs/bpf/skiff/<node-name>/, so the datapath keeps working while the agent
/// restarts, and several agents (one per lab node) share one kernel without touching each other.
#[derive(Debug, Parser)]
#[command(name = "skiff-agent", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch Services and EndpointSlices and program the eBPF dataplane (runs until SIGINT/SIGTERM).
    Proxy(Box<ProxyArgs>),
    /// Show what the pinned maps of a node hold (works without a running agent).
    Inspect(InspectArgs),
    /// Detach and remove every link, program and map Skiff pinned for a node (or for all nodes).
    Cleanup(CleanupArgs),
    /// Attach an XDP_PASS program to IFACE (the peer of a veth that receives XDP_TX/REDIRECT frames), then exit.
    XdpPass(XdpPassArgs),
}

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Read Services, EndpointSlices and Nodes from YAML/JSON manifests in DIR (watched for changes) instead of an
    /// API server.
    #[arg(long, value_name = "DIR", conflicts_with = "kubeconfig")]
    pub manifests: Option<PathBuf>,
    /// Kubeconfig of the API server to watch. Without it and without --manifests: in-cluster config.
    #[arg(long, value_name = "FILE", env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name (selects the pin directory, node-local endpoints and the Node object).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Node uplink: XDP (NodePort / LoadBalancer / ExternalIP from outside) and TC egress are attached here.
    #[arg(long, value_name = "IFACE")]
    pub uplink: Option<String>,
    /// Pod-facing interfaces for the TC hooks, as a glob (repeatable). New matches are attached within seconds.
    #[arg(long = "pod-iface", value_name = "GLOB")]
    pub pod_ifaces: Vec<String>,
    /// cgroup v2 directory for the socket hooks [default: the cgroup2 mount, /sys/fs/cgroup/unified on hybrid hosts].
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// Which hooks serve ClusterIP traffic.
    #[arg(long, value_enum, default_value_t = Mode::Both)]
    pub mode: Mode,
    /// XDP attach mode on the uplink.
    #[arg(long, value_enum, default_value_t = XdpAttachMode::Native)]
    pub xdp_mode: XdpAttachMode,
    /// Network namespace (/run/netns/NAME) holding the uplink and pod interfaces. The agent stays in the host mount
    /// namespace; do not run it under `ip netns exec` (that hides /sys/fs/bpf).
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    /// Node address for NodePort and SNAT [default: the first IPv4 address of --uplink].
    #[arg(long, value_name = "IP")]
    pub node_ip: Option<Ipv4Addr>,
    /// Source address for hairpin flows (a pod reaching itself through its Service).
    #[arg(long, value_name = "IP", default_value = "169.254.42.1")]
    pub hairpin_ip: Ipv4Addr,
    /// Source port range for SNAT of remote-backend NodePort flows.
    #[arg(long, value_name = "MIN-MAX", default_value = "40000-60999", value_parser = parse_port_range)]
    pub snat_ports: (u16, u16),
    /// Prometheus /metrics listen address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9965")]
    pub metrics_addr: SocketAddr,
    #[command(flatten)]
    pub sizes: SizeArgs,
    #[command(flatten)]
    pub gc: GcArgs,
}

/// Map sizes; they apply when a map is created (a pinned map keeps its size until `cleanup`).
#[derive(Debug, Args)]
pub struct SizeArgs {
    /// Conntrack entries (LRU).
    #[arg(long, default_value_t = skiff_common::sizes::CONNTRACK)]
    pub ct_size: u32,
    /// Backends.
    #[arg(long, default_value_t = skiff_common::sizes::BACKENDS)]
    pub backends_size: u32,
    /// Service frontends.
    #[arg(long, default_value_t = skiff_common::sizes::SERVICES)]
    pub services_size: u32,
    /// Backend selection slots over all services.
    #[arg(long, default_value_t = skiff_common::sizes::SLOTS)]
    pub slots_size: u32,
    /// Session-affinity entries (LRU).
    #[arg(long, default_value_t = skiff_common::sizes::AFFINITY)]
    pub affinity_size: u32,
}

/// Conntrack garbage collection.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Idle timeout of established TCP flows, seconds.
    #[arg(long, default_value_t = 6 * 3600)]
    pub ct_tcp_timeout: u64,
    /// Idle timeout of closing TCP flows (FIN/RST seen), seconds.
    #[arg(long, default_value_t = 10)]
    pub ct_tcp_closing_timeout: u64,
    /// Idle timeout of UDP (and other) flows, seconds.
    #[arg(long, default_value_t = 60)]
    pub ct_udp_timeout: u64,
    /// Seconds between GC passes.
    #[arg(long, default_value_t = 10)]
    pub ct_gc_interval: u64,
    /// Most entries one GC pass deletes.
    #[arg(long, default_value_t = 50_000)]
    pub ct_gc_batch: usize,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(subcommand)]
    pub what: InspectWhat,
    /// Node whose pins to read.
    #[arg(long, env = "NODE_NAME", global = true)]
    pub node_name: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum InspectWhat {
    /// Service frontends: scope, flags, backend counts, backends, service name.
    Services,
    /// Backends and the services using them.
    Backends,
    /// Conntrack entries, newest first.
    Conntrack,
    /// Session-affinity (ClientIP) entries.
    Affinity,
    /// Explain which backend a flow has or would get, and why.
    Flow {
        /// Client address, e.g. 10.244.1.5:40000.
        src: SocketAddrV4,
        /// Destination the client uses, e.g. 10.96.0.10:80.
        dst: SocketAddrV4,
        /// tcp or udp.
        #[arg(value_enum)]
        proto: Proto,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => skiff_common::PROTO_TCP,
            Proto::Udp => skiff_common::PROTO_UDP,
        }
    }
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Node whose pins to remove.
    #[arg(
        long,
        env = "NODE_NAME",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub node_name: Option<String>,
    /// Remove the pins of every node on this machine.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct XdpPassArgs {
    /// Interface to attach to.
    #[arg(long, value_name = "IF")]
    pub iface: String,
    /// Network namespace of the interface (/run/netns/NAME).
    #[arg(long, value_name = "NS")]
    pub netns: Option<String>,
    /// Node whose pin directory keeps the link (`cleanup` for that node removes it).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
}

/// Parses `MIN-MAX` (inclusive, MIN <= MAX, MIN > 0).
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("expected MIN-MAX, got {s:?}"))?;
    let a: u16 = a.trim().parse().map_err(|e| format!("{a:?}: {e}"))?;
    let b: u16 = b.trim().parse().map_err(|e| format!("{b:?}: {e}"))?;
    if a == 0 || a > b {
        return Err(format!("invalid range {a}-{b}: need 0 < MIN <= MAX"));
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn proxy_flags_parse() {
        let cli = Cli::try_parse_from([
            "skiff-agent",
            "proxy",
            "--manifests",
            "/m",
            "--node-name",
            "n1",
            "--uplink",
            "eth0",
            "--pod-iface",
            "veth*",
            "--pod-iface",
            "skp-*",
            "--mode",
            "tc",
            "--netns",
            "lab-n1",
            "--ct-size",
            "1024",
        ])
        .unwrap();
        let Command::Proxy(p) = cli.command else {
            panic!("not proxy")
        };
        assert_eq!(p.pod_ifaces, ["veth*", "skp-*"]);
        assert_eq!(p.mode, Mode::Tc);
        assert_eq!(p.sizes.ct_size, 1024);
        assert_eq!(p.snat_ports, (40000, 60999));
        assert_eq!(p.metrics_addr.to_string(), "127.0.0.1:9965");
    }

    #[test]
    fn inspect_flow_parses() {
        let cli = Cli::try_parse_from([
            "skiff-agent",
            "inspect",
            "flow",
            "10.0.0.1:1234",
            "10.96.0.1:80",
            "tcp",
            "--node-name",
            "n",
        ])
        .unwrap();
        let Command::Inspect(i) = cli.command else {
            panic!("not inspect")
        };
        assert_eq!(i.node_name.as_deref(), Some("n"));
        assert!(matches!(
            i.what,
            InspectWhat::Flow {
                proto: Proto::Tcp,
                ..
            }
        ));
    }

    #[test]
    fn cleanup_needs_a_node_or_all() {
        assert!(Cli::try_parse_from(["skiff-agent", "cleanup"]).is_err());
        assert!(Cli::try_parse_from(["skiff-agent", "cleanup", "--all"]).is_ok());
        assert!(Cli::try_parse_from(["skiff-agent", "cleanup", "--all", "--node-name", "x"]).is_err());
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("40000-60999"), Ok((40000, 60999)));
        assert!(parse_port_range("5-1").is_err());
        assert!(parse_port_range("0-10").is_err());
        assert!(parse_port_range("abc").is_err());
    }
}
