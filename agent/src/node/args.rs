//! Command-line flags of `skiff-agent node`.
use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
};

use clap::Args;

use super::capacity::{self, Capacity};
use crate::{
    bpf::attach::{Mode, XdpAttachMode},
    net::cidr::Ipv4Cidr,
};

/// Run a lab node: register the Node, run the pods bound to it, and serve its Services with the eBPF dataplane.
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// Kubeconfig of the apiserver (skiff-control's `--kubeconfig-out`).
    #[arg(long, value_name = "FILE", env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// Name of this node (its Node object, Lease, pin directory and cgroup).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Node address (InternalIP; other nodes route this node's pods through it) [default: the uplink's address].
    #[arg(long, value_name = "IP")]
    pub node_ip: Option<Ipv4Addr>,
    /// Network namespace (/run/netns/NAME) that is this node: pod veths, routes and the uplink live there. The agent
    /// itself stays in the host namespaces.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    /// Resources advertised as capacity and allocatable [default: this machine's CPUs and memory, pods=110].
    #[arg(long, value_name = "cpu=N,memory=Q,pods=N", value_parser = capacity::parse, default_value = "")]
    pub capacity: Capacity,
    /// podCIDR to use when the control plane assigns none (node IPAM off) [default: wait for the assigned one].
    #[arg(long, value_name = "CIDR")]
    pub pod_cidr: Option<Ipv4Cidr>,
    /// Seconds between Lease renewals and status posts; keep it well under the control plane's node grace period.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub node_status_update_frequency: u64,
    /// Where pod state (sandboxes, logs, IPAM) is kept [default: /run/skiff/<node-name>].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Node uplink: XDP for NodePort / LoadBalancer / ExternalIP traffic (none without it).
    #[arg(long, value_name = "IFACE")]
    pub uplink: Option<String>,
    /// Port of the kubelet endpoint (HTTPS) the apiserver proxies `kubectl logs` to (published in the Node status).
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,
    /// An address in the host namespace where the kubelet endpoint is served too, published in the Node's
    /// `skiff.dev/kubelet-address` annotation for an apiserver that cannot reach the node address (a lab on one
    /// machine: 127.0.0.1).
    #[arg(long, value_name = "IP")]
    pub kubelet_address: Option<Ipv4Addr>,
    /// Serving certificate (PEM) of the kubelet endpoint [default: a self-signed one for the node's addresses,
    /// kept in <state-dir>/pki].
    #[arg(long, value_name = "FILE", requires = "tls_private_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) of `--tls-cert-file`.
    #[arg(long, value_name = "FILE", requires = "tls_cert_file")]
    pub tls_private_key_file: Option<PathBuf>,
    /// CA bundle (PEM) that client certificates of the kubelet endpoint must chain to [default: the
    /// certificate authority of the kubeconfig].
    #[arg(long, value_name = "FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// cgroup v2 mount (hybrid-layout roots are accepted) [default: /sys/fs/cgroup/unified or /sys/fs/cgroup].
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// Which hooks serve ClusterIP traffic.
    #[arg(long, value_enum, default_value_t = Mode::Both)]
    pub mode: Mode,
    /// XDP attach mode on the uplink.
    #[arg(long, value_enum, default_value_t = XdpAttachMode::Native)]
    pub xdp_mode: XdpAttachMode,
    /// Prometheus /metrics listen address (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub metrics_addr: SocketAddr,
    /// Source address for hairpin flows.
    #[arg(long, value_name = "IP", default_value = "169.254.42.1")]
    pub hairpin_ip: Ipv4Addr,
    /// Source port range for SNAT of remote-backend NodePort flows.
    #[arg(long, value_name = "MIN-MAX", default_value = "40000-60999", value_parser = crate::cli::parse_port_range)]
    pub snat_ports: (u16, u16),
    #[command(flatten)]
    pub masquerade: crate::net::masquerade::MasqueradeArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: NodeArgs,
    }

    #[test]
    fn flags_parse() {
        let t = T::try_parse_from([
            "x",
            "--kubeconfig",
            "/k",
            "--node-name",
            "n1",
            "--capacity",
            "cpu=2,memory=4Gi,pods=110",
            "--pod-cidr",
            "10.244.1.0/24",
            "--kubelet-address",
            "127.0.0.1",
        ])
        .unwrap();
        assert_eq!(t.a.capacity["memory"], "4Gi");
        assert_eq!(t.a.pod_cidr.unwrap().to_string(), "10.244.1.0/24");
        assert_eq!(t.a.kubelet_port, 10250);
        assert!(t.a.tls_cert_file.is_none() && t.a.client_ca_file.is_none());
        assert!(
            T::try_parse_from([
                "x",
                "--kubeconfig",
                "/k",
                "--node-name",
                "n",
                "--tls-cert-file",
                "/c"
            ])
            .is_err(),
            "a serving certificate needs its key"
        );
        assert!(
            T::try_parse_from(["x", "--kubeconfig", "/k", "--node-name", "n", "--capacity", "cpu"]).is_err()
        );
    }
}
