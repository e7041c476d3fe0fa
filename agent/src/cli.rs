//! The `skiff-agent` command line (clap): `--proxy-only` / `proxy`, `inspect`, `cleanup`, `cleanup-kube-proxy`,
//! `xdp-pass`.
use std::{
    ffi::OsString,
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
#[command(
    name = "skiff-agent",
    version,
    propagate_version = true,
    after_help = "On a node of a real cluster (what the DaemonSet in deploy/ runs):\n  \
                  skiff-agent --proxy-only [PROXY OPTIONS]    the same as `skiff-agent proxy --proxy-only`; \
                  see `skiff-agent proxy --help`"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch Services and EndpointSlices and program the eBPF dataplane (runs until SIGINT/SIGTERM).
    /// `skiff-agent --proxy-only ...` is `skiff-agent proxy --proxy-only ...`.
    Proxy(Box<ProxyArgs>),
    /// Show what the pinned maps of a node hold (works without a running agent).
    Inspect(InspectArgs),
    /// Remove everything Skiff made for a node: with --node, its pods (processes, network namespaces, veths,
    /// cgroups), its routes to other nodes, its masquerade table, its pins and its state directory's content;
    /// with --all, the pins of every node. Idempotent; prints what it removed.
    Cleanup(CleanupArgs),
    /// Remove kube-proxy's iptables chains (nat, filter, mangle; legacy and nft; IPv4 and IPv6) and its nftables
    /// tables from this node, then exit. Idempotent.
    CleanupKubeProxy,
    /// Attach an XDP_PASS program to IFACE (the peer of a veth that receives XDP_TX/REDIRECT frames), then exit.
    XdpPass(XdpPassArgs),
    /// Run a lab node: register the Node, run the pods bound to it, route to other nodes' pods and serve Services
    /// with the eBPF dataplane, all against the apiserver in --kubeconfig (runs until SIGINT/SIGTERM).
    Node(Box<crate::node::args::NodeArgs>),
}

/// Default `--pod-iface` globs of `--proxy-only`: the host side of pod veths of common CNIs (Cilium `lxc*`, Calico
/// `cali*`, AWS VPC CNI `eni*`, GKE `gke*`, Azure `azv*`, bridge and ptp plugins `veth*`). Bridges such as `cni0`
/// are not pod-facing: their pods' veths are.
pub const DEFAULT_POD_IFACES: &[&str] = &["lxc*", "cali*", "veth*", "eni*", "gke*", "azv*"];
/// Default `--healthz-addr` of `--proxy-only` (kube-proxy's).
pub const DEFAULT_HEALTHZ_ADDR: &str = "0.0.0.0:10256";

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Run as the kube-proxy replacement of a cluster node (what the DaemonSet runs): no pod runtime, no node
    /// registration; in-cluster API access unless --kubeconfig is given; --uplink auto; --pod-iface defaults to the
    /// pod interfaces of common CNIs; healthz on :10256 and healthCheckNodePort servers like kube-proxy.
    #[arg(long, env = "SKIFF_PROXY_ONLY")]
    pub proxy_only: bool,
    /// Read Services, EndpointSlices and Nodes from YAML/JSON manifests in DIR (watched for changes) instead of an
    /// API server.
    #[arg(long, value_name = "DIR", conflicts_with = "kubeconfig")]
    pub manifests: Option<PathBuf>,
    /// Kubeconfig of the API server to watch. Without it and without --manifests: in-cluster config
    /// (KUBERNETES_SERVICE_HOST/PORT and the mounted ServiceAccount token and CA).
    #[arg(long, value_name = "FILE", env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Directory with the ServiceAccount `token` and `ca.crt` for in-cluster access.
    #[arg(long, value_name = "DIR", env = "SKIFF_SERVICEACCOUNT_DIR", default_value = crate::incluster::SERVICEACCOUNT_DIR)]
    pub serviceaccount_dir: PathBuf,
    /// This node's name (selects the pin directory, node-local endpoints and the Node object).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Node uplink: XDP (NodePort / LoadBalancer / ExternalIP from outside) and TC egress are attached here.
    /// `auto`: the interface of the default route; `none`: no uplink hooks [default: auto with --proxy-only, else
    /// none].
    #[arg(long, value_name = "IFACE|auto|none", env = "SKIFF_UPLINK")]
    pub uplink: Option<String>,
    /// Pod-facing interfaces for the TC hooks, as a glob (repeatable, or comma-separated). New matches are attached
    /// within seconds [default with --proxy-only: lxc*,cali*,veth*,eni*,gke*,azv*].
    #[arg(
        long = "pod-iface",
        value_name = "GLOB",
        env = "SKIFF_POD_IFACES",
        value_delimiter = ','
    )]
    pub pod_ifaces: Vec<String>,
    /// cgroup v2 directory for the socket hooks; a hybrid-layout root (with the cgroup2 mount at `unified/`) is
    /// accepted too [default: /sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts].
    #[arg(long, value_name = "PATH", env = "SKIFF_CGROUP")]
    pub cgroup: Option<PathBuf>,
    /// Which hooks serve ClusterIP traffic.
    #[arg(long, value_enum, default_value_t = Mode::Both, env = "SKIFF_MODE")]
    pub mode: Mode,
    /// XDP attach mode on the uplink.
    #[arg(long, value_enum, default_value_t = XdpAttachMode::Native, env = "SKIFF_XDP_MODE")]
    pub xdp_mode: XdpAttachMode,
    /// Network namespace (/run/netns/NAME) holding the uplink and pod interfaces. The agent stays in the host mount
    /// namespace; do not run it under `ip netns exec` (that hides /sys/fs/bpf).
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    /// Node address for NodePort and SNAT [default: the first IPv4 address of the uplink].
    #[arg(long, value_name = "IP", env = "SKIFF_NODE_IP")]
    pub node_ip: Option<Ipv4Addr>,
    /// Source address for hairpin flows (a pod reaching itself through its Service).
    #[arg(long, value_name = "IP", default_value = "169.254.42.1")]
    pub hairpin_ip: Ipv4Addr,
    /// Source port range for SNAT of remote-backend NodePort flows.
    #[arg(long, value_name = "MIN-MAX", default_value = "40000-60999", value_parser = parse_port_range)]
    pub snat_ports: (u16, u16),
    /// Prometheus /metrics listen address.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:9965",
        env = "SKIFF_METRICS_ADDR"
    )]
    pub metrics_addr: SocketAddr,
    /// kube-proxy-compatible /healthz and /livez listen address, or `off`; its IP also serves the
    /// healthCheckNodePorts of externalTrafficPolicy Local Services [default: 0.0.0.0:10256 with --proxy-only,
    /// else off].
    #[arg(long, value_name = "ADDR|off", env = "SKIFF_HEALTHZ_ADDR", value_parser = parse_listen)]
    pub healthz_addr: Option<Listen>,
    /// After the first successful sync, remove kube-proxy's iptables chains and nftables tables (migration from
    /// kube-proxy; see also the `cleanup-kube-proxy` command).
    #[arg(long, env = "SKIFF_CLEANUP_KUBE_PROXY")]
    pub cleanup_kube_proxy: bool,
    #[command(flatten)]
    pub sizes: SizeArgs,
    #[command(flatten)]
    pub gc: GcArgs,
}

/// Map sizes; they apply when a map is created (a pinned map keeps its size until `cleanup`).
#[derive(Debug, Args)]
pub struct SizeArgs {
    /// Conntrack entries (LRU).
    #[arg(long, default_value_t = skiff_common::sizes::CONNTRACK, env = "SKIFF_CT_SIZE")]
    pub ct_size: u32,
    /// Backends.
    #[arg(long, default_value_t = skiff_common::sizes::BACKENDS, env = "SKIFF_BACKENDS_SIZE")]
    pub backends_size: u32,
    /// Service frontends.
    #[arg(long, default_value_t = skiff_common::sizes::SERVICES, env = "SKIFF_SERVICES_SIZE")]
    pub services_size: u32,
    /// Backend selection slots over all services.
    #[arg(long, default_value_t = skiff_common::sizes::SLOTS, env = "SKIFF_SLOTS_SIZE")]
    pub slots_size: u32,
    /// Session-affinity entries (LRU).
    #[arg(long, default_value_t = skiff_common::sizes::AFFINITY, env = "SKIFF_AFFINITY_SIZE")]
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
    /// Fill level of every map (entries / max entries), with a pressure line for full maps.
    Maps,
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
    /// Node whose things to remove.
    #[arg(
        long,
        visible_alias = "node",
        env = "NODE_NAME",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub node_name: Option<String>,
    /// Remove the pins of every node on this machine (pins only).
    #[arg(long)]
    pub all: bool,
    /// The node's state directory (`skiff-agent node --state-dir`) [default: /run/skiff/<node-name>].
    #[arg(long, value_name = "DIR", conflicts_with = "all")]
    pub state_dir: Option<PathBuf>,
    /// The node's network namespace (`skiff-agent node --netns`) [default: as the node's agent recorded it in the
    /// state directory; with neither, links, routes and the nat table are left alone].
    #[arg(long, value_name = "NAME", conflicts_with = "all")]
    pub netns: Option<String>,
    /// cgroup v2 mount of the node's cgroups [default: as recorded, else /sys/fs/cgroup/unified or /sys/fs/cgroup].
    #[arg(long, value_name = "PATH", conflicts_with = "all")]
    pub cgroup: Option<PathBuf>,
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

/// Where a server listens: an address, or nowhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    Off,
    At(SocketAddr),
}

/// Parses `ADDR` or `off`.
pub fn parse_listen(s: &str) -> Result<Listen, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(Listen::Off);
    }
    s.parse()
        .map(Listen::At)
        .map_err(|e| format!("{s:?}: {e} (expected IP:PORT or off)"))
}

/// What `--uplink` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UplinkChoice {
    None,
    Auto,
    Iface(String),
}

impl ProxyArgs {
    /// The uplink to use, with the `--proxy-only` default.
    pub fn uplink_choice(&self) -> UplinkChoice {
        match self.uplink.as_deref() {
            Some("auto") => UplinkChoice::Auto,
            Some("none") | Some("") => UplinkChoice::None,
            Some(iface) => UplinkChoice::Iface(iface.to_string()),
            None if self.proxy_only => UplinkChoice::Auto,
            None => UplinkChoice::None,
        }
    }

    /// The pod interface globs, with the `--proxy-only` default.
    pub fn pod_iface_globs(&self) -> Vec<String> {
        if self.pod_ifaces.is_empty() && self.proxy_only {
            DEFAULT_POD_IFACES.iter().map(|g| g.to_string()).collect()
        } else {
            self.pod_ifaces
                .iter()
                .filter(|g| !g.is_empty())
                .cloned()
                .collect()
        }
    }

    /// The healthz address, with the `--proxy-only` default.
    pub fn healthz(&self) -> Option<SocketAddr> {
        match self.healthz_addr {
            Some(Listen::At(a)) => Some(a),
            Some(Listen::Off) => None,
            None if self.proxy_only => DEFAULT_HEALTHZ_ADDR.parse().ok(),
            None => None,
        }
    }
}

/// Rewrites `skiff-agent --proxy-only ARGS` (the DaemonSet's command line, as kube-proxy-replacement agents are
/// usually invoked) into `skiff-agent proxy --proxy-only ARGS`; anything else is returned unchanged.
pub fn normalize_args(args: Vec<OsString>) -> Vec<OsString> {
    let first_is_flag = args
        .get(1)
        .and_then(|a| a.to_str())
        .is_some_and(|a| a.starts_with('-') && !matches!(a, "-h" | "--help" | "-V" | "--version"));
    let proxy_only = args.iter().skip(1).any(|a| a == "--proxy-only");
    if !(first_is_flag && proxy_only) {
        return args;
    }
    let mut out = Vec::with_capacity(args.len() + 1);
    let mut it = args.into_iter();
    out.extend(it.next());
    out.push("proxy".into());
    out.extend(it);
    out
}

/// Parses the process's command line (with [`normalize_args`]).
pub fn parse() -> Cli {
    Cli::parse_from(normalize_args(std::env::args_os().collect()))
}

/// Parses a `proxy` command line whose settings come as environment variables (the DaemonSet's ConfigMap), without
/// touching the process environment: each variable becomes the flag that reads it. Errors name unknown variables
/// and invalid values.
pub fn proxy_args_with_env(env: &[(&str, &str)], args: &[&str]) -> Result<ProxyArgs, String> {
    use clap::CommandFactory;
    let cli = Cli::command();
    let proxy = cli.find_subcommand("proxy").ok_or("no proxy command")?;
    let mut argv: Vec<String> = vec!["skiff-agent".into(), "proxy".into()];
    for (key, value) in env {
        let arg = proxy
            .get_arguments()
            .find(|a| a.get_env() == Some(std::ffi::OsStr::new(key)))
            .ok_or_else(|| format!("no skiff-agent flag reads {key}"))?;
        let long = arg
            .get_long()
            .ok_or_else(|| format!("{key}: flag without a long name"))?;
        if arg.get_action().takes_values() {
            argv.push(format!("--{long}={value}"));
        } else if !matches!(
            value.to_ascii_lowercase().as_str(),
            "false" | "0" | "no" | "off" | "n" | ""
        ) {
            argv.push(format!("--{long}"));
        }
    }
    argv.extend(args.iter().map(|a| a.to_string()));
    match Cli::try_parse_from(argv).map_err(|e| e.to_string())?.command {
        Command::Proxy(p) => Ok(*p),
        _ => Err("not the proxy command".into()),
    }
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

    fn parse_proxy(args: &[&str]) -> ProxyArgs {
        let argv: Vec<OsString> = args.iter().map(OsString::from).collect();
        let cli = Cli::try_parse_from(normalize_args(argv)).unwrap();
        let Command::Proxy(p) = cli.command else {
            panic!("not proxy")
        };
        *p
    }

    #[test]
    fn top_level_proxy_only_is_the_proxy_command_with_cluster_defaults() {
        let p = parse_proxy(&["skiff-agent", "--proxy-only", "--node-name", "n1"]);
        assert!(p.proxy_only);
        assert_eq!(p.uplink_choice(), UplinkChoice::Auto);
        assert_eq!(p.pod_iface_globs(), DEFAULT_POD_IFACES);
        assert_eq!(p.healthz(), Some("0.0.0.0:10256".parse().unwrap()));
        assert_eq!(
            p.serviceaccount_dir,
            PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount")
        );
        let q = parse_proxy(&[
            "skiff-agent",
            "--node-name",
            "n1",
            "--proxy-only",
            "--cleanup-kube-proxy",
        ]);
        assert!(q.proxy_only && q.cleanup_kube_proxy);
    }

    #[test]
    fn proxy_only_defaults_give_way_to_flags() {
        let p = parse_proxy(&[
            "skiff-agent",
            "--proxy-only",
            "--node-name",
            "n1",
            "--uplink",
            "none",
            "--pod-iface",
            "lxc*,tap*",
            "--healthz-addr",
            "off",
        ]);
        assert_eq!(p.uplink_choice(), UplinkChoice::None);
        assert_eq!(p.pod_iface_globs(), ["lxc*", "tap*"]);
        assert_eq!(p.healthz(), None);
        let p = parse_proxy(&[
            "skiff-agent",
            "--proxy-only",
            "--node-name",
            "n1",
            "--uplink",
            "ens5",
        ]);
        assert_eq!(p.uplink_choice(), UplinkChoice::Iface("ens5".into()));
    }

    #[test]
    fn plain_proxy_keeps_its_lab_defaults() {
        let p = parse_proxy(&["skiff-agent", "proxy", "--manifests", "/m", "--node-name", "n1"]);
        assert!(!p.proxy_only);
        assert_eq!(p.uplink_choice(), UplinkChoice::None);
        assert!(p.pod_iface_globs().is_empty());
        assert_eq!(p.healthz(), None);
        let p = parse_proxy(&[
            "skiff-agent",
            "proxy",
            "--manifests",
            "/m",
            "--node-name",
            "n",
            "--healthz-addr",
            "127.0.0.1:0",
        ]);
        assert_eq!(p.healthz(), Some("127.0.0.1:0".parse().unwrap()));
    }

    #[test]
    fn normalize_leaves_other_command_lines_alone() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        for line in [
            &["skiff-agent", "inspect", "services"][..],
            &["skiff-agent", "--help"],
            &["skiff-agent", "proxy", "--proxy-only", "--node-name", "x"],
            &["skiff-agent", "--node-name", "x"],
        ] {
            assert_eq!(normalize_args(args(line)), args(line), "{line:?}");
        }
        assert!(Cli::try_parse_from(["skiff-agent", "cleanup-kube-proxy"]).is_ok());
        assert!(parse_listen("nonsense").is_err());
    }

    #[test]
    fn settings_from_environment_variables() {
        let p = proxy_args_with_env(
            &[
                ("SKIFF_MODE", "tc"),
                ("SKIFF_POD_IFACES", "lxc*,cali*"),
                ("SKIFF_CLEANUP_KUBE_PROXY", "true"),
            ],
            &["--proxy-only", "--node-name", "n1"],
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Tc);
        assert_eq!(p.pod_iface_globs(), ["lxc*", "cali*"]);
        assert!(p.cleanup_kube_proxy);
        let off =
            proxy_args_with_env(&[("SKIFF_CLEANUP_KUBE_PROXY", "false")], &["--node-name", "n"]).unwrap();
        assert!(!off.cleanup_kube_proxy);
        assert!(proxy_args_with_env(&[("SKIFF_NOPE", "1")], &["--node-name", "n"]).is_err());
        assert!(proxy_args_with_env(&[("SKIFF_MODE", "fast")], &["--node-name", "n"]).is_err());
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
        let cli = Cli::try_parse_from([
            "skiff-agent",
            "cleanup",
            "--node",
            "n1",
            "--state-dir",
            "/s",
            "--netns",
            "n1",
        ])
        .unwrap();
        let Command::Cleanup(c) = cli.command else {
            panic!("not cleanup")
        };
        assert_eq!(c.node_name.as_deref(), Some("n1"));
        assert_eq!(c.state_dir, Some(PathBuf::from("/s")));
        assert!(Cli::try_parse_from(["skiff-agent", "cleanup", "--all", "--netns", "x"]).is_err());
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("40000-60999"), Ok((40000, 60999)));
        assert!(parse_port_range("5-1").is_err());
        assert!(parse_port_range("0-10").is_err());
        assert!(parse_port_range("abc").is_err());
    }
}
