//! `skiff-agent node`: wires registration, heartbeats, node routes, the pod manager, the log endpoint and the
//! eBPF dataplane (with the apiserver as its source) into one process.
use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener as StdListener},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use tokio::sync::watch;

use super::{
    args::NodeArgs,
    capacity, heartbeat,
    kubelet_server::{self, KubeletServer, auth::Gate, tls},
    logs_http, node_list,
    node_status::NodeFacts,
    peers, pod_manager,
    pod_worker::NodeCtx,
};
use crate::{
    bpf::{attach::AttachConfig, ct_gc::CtTimeouts, loader::MapSizes, netns::spawn_in},
    net::{
        cidr::Ipv4Cidr,
        ipam::IpamStore,
        names::HOST_VETH_PREFIX,
        nl::{self, Netns},
    },
    node_env,
    pods::{
        cgroup,
        runtime::{PodRuntime, RuntimeConfig},
    },
    proxy::SourceConfig,
    run::{ProxyConfig, run},
};

/// First IPv4 address of `iface` inside `netns`.
fn iface_ipv4(netns: Option<String>, iface: String) -> Result<Option<Ipv4Addr>> {
    let h = spawn_in(netns, "skiff-addr", move || -> Result<Option<Ipv4Addr>> {
        let addrs = nix::ifaddrs::getifaddrs().context("listing interface addresses")?;
        Ok(addrs
            .filter(|a| a.interface_name == iface)
            .find_map(|a| a.address.and_then(|s| s.as_sockaddr_in().map(|s| s.ip()))))
    })?;
    h.join()
        .map_err(|_| anyhow::anyhow!("address lookup thread panicked"))??
}

/// A listening socket bound inside `netns` (sockets keep the namespace they were made in).
fn bind_in(netns: Option<String>, addr: SocketAddr) -> Result<StdListener> {
    let h = spawn_in(netns.clone(), "skiff-bind", move || StdListener::bind(addr))?;
    let l = h
        .join()
        .map_err(|_| anyhow::anyhow!("bind thread panicked"))??
        .with_context(|| format!("binding the log endpoint {addr} in netns {netns:?}"))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

fn machine_id() -> String {
    std::fs::read_to_string("/etc/machine-id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

async fn kube_config(path: &Path) -> Result<kube::Config> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    Ok(kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?)
}

/// TLS of the kubelet endpoint: `--tls-cert-file` or a self-signed certificate for the node's addresses;
/// client certificates verified against `--client-ca-file`, else the kubeconfig's CA.
fn kubelet_tls(
    a: &NodeArgs,
    state_dir: &Path,
    addresses: &[std::net::IpAddr],
    kubeconfig_ca: Option<Vec<Vec<u8>>>,
) -> Result<Arc<rustls::ServerConfig>> {
    let serving = match (&a.tls_cert_file, &a.tls_private_key_file) {
        (Some(c), Some(k)) => tls::from_files(c, k)?,
        _ => tls::self_signed(
            &state_dir.join("pki"),
            &a.node_name,
            &tls::serving_names(&a.node_name, addresses),
        )?,
    };
    let cas = match &a.client_ca_file {
        Some(f) => tls::ca_file(f)?,
        None => kubeconfig_ca.unwrap_or_default(),
    };
    if cas.is_empty() {
        tracing::warn!(
            "no client CA (no --client-ca-file and no certificate authority in the kubeconfig): the kubelet \
             endpoint accepts bearer tokens only"
        );
    }
    Ok(tls::server_config(&serving, &cas)?)
}

/// Registers the Node, retrying with backoff until the apiserver answers (or SIGINT/SIGTERM).
async fn register_with_retry(
    client: &kube::Client,
    facts: &NodeFacts,
) -> Result<k8s_openapi::api::core::v1::Node> {
    let mut failures = 0;
    loop {
        match heartbeat::register(client, facts).await {
            Ok(n) => return Ok(n),
            Err(e) => {
                failures += 1;
                let d = heartbeat::retry_delay(failures, heartbeat::INTERVAL);
                tracing::warn!(error = %e, retry_in = ?d, "registering the Node failed");
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => bail!("interrupted before the Node was registered"),
                    _ = tokio::time::sleep(d) => {}
                }
            }
        }
    }
}

/// How long a node without `--pod-cidr` waits for the control plane's node IPAM to assign a podCIDR.
const POD_CIDR_WAIT: Duration = Duration::from_secs(60);

/// The registered Node once it has a podCIDR (node IPAM assigns it shortly after registration); the Node as it is
/// when `--pod-cidr` is given (the flag is the fallback) or the wait ran out.
async fn wait_for_pod_cidr(
    client: &kube::Client,
    registered: k8s_openapi::api::core::v1::Node,
    flag: Option<Ipv4Cidr>,
) -> k8s_openapi::api::core::v1::Node {
    let has_cidr =
        |n: &k8s_openapi::api::core::v1::Node| n.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_some();
    if flag.is_some() || has_cidr(&registered) {
        return registered;
    }
    tracing::info!("waiting for the control plane to assign a podCIDR to this node");
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    let name = registered.metadata.name.clone().unwrap_or_default();
    let deadline = tokio::time::Instant::now() + POD_CIDR_WAIT;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Ok(node) = nodes.get(&name).await
            && has_cidr(&node)
        {
            return node;
        }
    }
    registered
}

/// The podCIDR: the one the control plane assigned, else `--pod-cidr`.
pub fn pick_pod_cidr(assigned: Option<&str>, flag: Option<Ipv4Cidr>) -> Result<Ipv4Cidr> {
    match (assigned.map(str::parse::<Ipv4Cidr>), flag) {
        (Some(Ok(c)), Some(f)) if c != f => {
            tracing::warn!(assigned = %c, flag = %f, "the Node already has a podCIDR; --pod-cidr is ignored");
            Ok(c)
        }
        (Some(Ok(c)), _) => Ok(c),
        (Some(Err(e)), _) => bail!("the Node's podCIDR {assigned:?} is invalid: {e}"),
        (None, Some(f)) => Ok(f),
        (None, None) => bail!(
            "the control plane assigned no podCIDR to this node within {}s (is node IPAM enabled in the control \
             plane?); pass --pod-cidr CIDR",
            POD_CIDR_WAIT.as_secs()
        ),
    }
}

/// Runs the node until SIGINT/SIGTERM. Pods keep running after the agent exits and are re-adopted by the next one.
pub fn main(a: NodeArgs) -> Result<()> {
    let node = a.node_name.clone();
    anyhow::ensure!(!node.is_empty(), "--node-name must not be empty");
    let node_ip = match (a.node_ip, &a.uplink) {
        (Some(ip), _) => ip,
        (None, Some(up)) => iface_ipv4(a.netns.clone(), up.clone())?
            .with_context(|| format!("uplink {up} has no IPv4 address; pass --node-ip"))?,
        (None, None) => bail!("no node address: pass --node-ip or --uplink"),
    };
    let state_dir = a
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/run/skiff").join(&node));
    std::fs::create_dir_all(&state_dir).with_context(|| format!("creating {}", state_dir.display()))?;
    let cg2 = node_env::cgroup2_dir(
        &a.cgroup.clone().unwrap_or_else(|| "/sys/fs/cgroup".into()),
        node_env::is_cgroup2,
    )?;
    let pods_cgroup = cgroup::default_root(&cg2, &node);
    std::fs::create_dir_all(&pods_cgroup)
        .with_context(|| format!("creating cgroup {}", pods_cgroup.display()))?;
    let node_ns = a.netns.as_deref().map(Netns::named).unwrap_or(Netns::Current);
    crate::net::teardown::NodeRecord {
        netns: a.netns.clone(),
        cgroup2: Some(cg2.clone()),
    }
    .save(&state_dir)
    .with_context(|| format!("recording the node in {}", state_dir.display()))?;
    nl::write_sysctl(&node_ns, "net/ipv4/ip_forward", "1").context("enabling IPv4 forwarding on the node")?;

    let mut rcfg = RuntimeConfig::for_node(&node)?;
    rcfg.state_root = state_dir.join("pods");
    rcfg.cgroup_root = Some(pods_cgroup.clone());
    rcfg.cluster_ca = crate::pods::sa_token::cluster_ca(&a.kubeconfig);
    let runtime = PodRuntime::new(rcfg);

    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut facts = NodeFacts {
        name: node.clone(),
        node_ip,
        kubelet_address: a.kubelet_address,
        kubelet_port: a.kubelet_port,
        pod_cidr: a.pod_cidr,
        capacity: capacity::effective(capacity::machine(cpus, &meminfo), &a.capacity),
        machine_id: machine_id(),
        kernel: kernel(),
    };
    // Log endpoint sockets are bound before the runtime starts (netns work on dedicated threads).
    let port_addr = |ip: Ipv4Addr| SocketAddr::from((ip, a.kubelet_port));
    let mut listeners = vec![bind_in(a.netns.clone(), port_addr(Ipv4Addr::UNSPECIFIED))?];
    if let Some(k) = a.kubelet_address {
        listeners.push(bind_in(None, port_addr(k))?);
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let config = kube_config(&a.kubeconfig).await?;
        let mut addresses = vec![std::net::IpAddr::V4(node_ip)];
        addresses.extend(a.kubelet_address.map(std::net::IpAddr::V4));
        let tls = kubelet_tls(&a, &state_dir, &addresses, config.root_cert.clone())?;
        let client = kube::Client::try_from(config)?;
        let registered = register_with_retry(&client, &facts).await?;
        let registered = wait_for_pod_cidr(&client, registered, a.pod_cidr).await;
        let assigned = registered.spec.as_ref().and_then(|s| s.pod_cidr.as_deref());
        let pod_cidr = pick_pod_cidr(assigned, a.pod_cidr)?;
        facts.pod_cidr = Some(pod_cidr);
        tracing::info!(%node, %node_ip, %pod_cidr, "node registered");

        let (stop_tx, stop_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = watch::channel(false);
        let hb = tokio::spawn(heartbeat::run(
            client.clone(),
            facts.clone(),
            Duration::from_secs(a.node_status_update_frequency),
            state_dir.clone(),
            ready_rx,
            stop_rx.clone(),
        ));
        // One watch of every Node feeds both the routes and the masquerade ranges.
        let (nodes, node_watch) = node_list::spawn(client.clone(), stop_rx.clone());
        let routes = tokio::spawn(peers::run(
            nodes.clone(),
            node.clone(),
            pod_cidr,
            node_ns.clone(),
            ready_tx,
            stop_rx.clone(),
        ));
        let masquerade = crate::net::masquerade_sync::start(
            nodes,
            &a.masquerade,
            a.netns.clone(),
            a.uplink.clone(),
            pod_cidr,
            stop_rx.clone(),
        )
        .await;
        let ctx = Arc::new(NodeCtx {
            client: client.clone(),
            node_name: node.clone(),
            node_ip,
            node_ns,
            runtime: runtime.clone(),
            ipam: Mutex::new(IpamStore::new(state_dir.join("ipam.json"))),
            pod_cidr,
            logs: logs_http::LogTargets::default(),
        });
        let kubelet = Arc::new(KubeletServer {
            node: node.clone(),
            tls,
            gate: Gate::new(client.clone()),
            logs: ctx.logs.clone(),
            pod_root: runtime.config().state_root.clone(),
            agent_exe: runtime.config().agent_exe.clone(),
        });
        let mut servers = Vec::new();
        for l in listeners {
            let l = tokio::net::TcpListener::from_std(l)?;
            tracing::info!(addr = %l.local_addr()?, "serving the kubelet endpoint (HTTPS)");
            servers.push(tokio::spawn(kubelet_server::serve(l, Arc::clone(&kubelet))));
        }
        let manager = tokio::spawn(pod_manager::run(ctx, stop_rx));

        let dataplane = run(ProxyConfig {
            node_name: node.clone(),
            source: SourceConfig::Kube(client),
            attach: AttachConfig {
                mode: a.mode,
                cgroup: pods_cgroup,
                pod_ifaces: vec![format!("{HOST_VETH_PREFIX}*")],
                uplink: a.uplink.clone(),
                xdp_mode: a.xdp_mode,
                netns: a.netns.clone(),
                rescan: Duration::from_secs(1),
            },
            node_ip: Some(node_ip),
            hairpin_ip: a.hairpin_ip,
            snat_ports: a.snat_ports,
            sizes: MapSizes::default(),
            metrics_addr: a.metrics_addr,
            ct_timeouts: CtTimeouts::default(),
            ct_gc_interval: Duration::from_secs(10),
            ct_gc_batch: 50_000,
            healthz_addr: None,
            cleanup_kube_proxy: false,
        })
        .await;
        if let Err(e) = &dataplane {
            tracing::error!(error = format!("{e:#}"), "the dataplane stopped");
        }
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(15), manager).await;
        for s in servers {
            s.abort();
        }
        hb.abort();
        routes.abort();
        node_watch.abort();
        if let Some(m) = masquerade {
            m.abort();
        }
        tracing::info!("node agent stopped; pods keep running");
        dataplane
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_assigned_pod_cidr_wins_over_the_flag() {
        let flag: Ipv4Cidr = "10.244.9.0/24".parse().unwrap();
        assert_eq!(
            pick_pod_cidr(Some("10.244.1.0/24"), Some(flag))
                .unwrap()
                .to_string(),
            "10.244.1.0/24"
        );
        assert_eq!(pick_pod_cidr(None, Some(flag)).unwrap(), flag);
        assert!(pick_pod_cidr(None, None).is_err());
        assert!(pick_pod_cidr(Some("nonsense"), Some(flag)).is_err());
    }
}
