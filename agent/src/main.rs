//! `skiff-agent`: command-line entry point.
use std::time::Duration;

use anyhow::{Context, Result};
use skiff_agent::{
    bpf::{
        attach::{AttachConfig, attach_xdp_pass},
        cleanup::{Removed, cleanup_all},
        ct_gc::CtTimeouts,
        explain::FlowQuery,
        inspect::{What, inspect},
        loader::{MapSizes, load_standalone},
        netns, object_bytes,
        pins::PinDir,
    },
    cli::{self, CleanupArgs, Command, InspectArgs, InspectWhat, ProxyArgs, UplinkChoice, XdpPassArgs},
    incluster, kube_proxy_cleanup,
    net::teardown,
    node_env, preflight,
    proxy::SourceConfig,
    run::{ProxyConfig, run},
};

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // The workspace enables more than one rustls crypto backend, so rustls cannot pick one by itself: kube's TLS
    // client would panic without this.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Hidden entry points re-executed by the pod runtime (before clap: they take agnhost's own flags).
    let argv: Vec<String> = std::env::args().collect();
    match argv.get(1).map(String::as_str) {
        Some("__enter-pod") => return skiff_agent::pods::enter::main(argv[2..].to_vec()),
        Some("agnhost") => return skiff_agent::agnhost::main(argv[2..].to_vec()),
        _ => {}
    }
    match cli::parse().command {
        Command::Proxy(a) => proxy(*a),
        Command::Inspect(a) => inspect_cmd(a),
        Command::Cleanup(a) => cleanup_cmd(a),
        Command::CleanupKubeProxy => cleanup_kube_proxy_cmd(),
        Command::XdpPass(a) => xdp_pass(a),
        Command::Node(a) => skiff_agent::node::daemon::main(*a),
    }
}

fn proxy(a: ProxyArgs) -> Result<()> {
    let uplink = match a.uplink_choice() {
        UplinkChoice::None => None,
        UplinkChoice::Iface(i) => Some(i),
        UplinkChoice::Auto => {
            let up = node_env::detect_uplink(a.netns.clone())?;
            tracing::info!(uplink = %up, "uplink from the default route");
            Some(up)
        }
    };
    let cgroup_base = a.cgroup.clone().unwrap_or_else(|| "/sys/fs/cgroup".into());
    let cgroup = node_env::cgroup2_dir(&cgroup_base, node_env::is_cgroup2)?;
    let attach = AttachConfig {
        mode: a.mode,
        cgroup,
        pod_ifaces: a.pod_iface_globs(),
        uplink,
        xdp_mode: a.xdp_mode,
        netns: a.netns.clone(),
        rescan: Duration::from_secs(2),
    };
    let sizes = MapSizes {
        services: a.sizes.services_size,
        backends: a.sizes.backends_size,
        slots: a.sizes.slots_size,
        conntrack: a.sizes.ct_size,
        affinity: a.sizes.affinity_size,
        ..MapSizes::default()
    };
    let ct_timeouts = CtTimeouts {
        tcp_established: Duration::from_secs(a.gc.ct_tcp_timeout),
        tcp_closing: Duration::from_secs(a.gc.ct_tcp_closing_timeout),
        udp: Duration::from_secs(a.gc.ct_udp_timeout),
    };
    let healthz_addr = a.healthz();
    // The runtime is built only now: netns work happens on dedicated threads, never on runtime workers.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let source = match (a.manifests, a.kubeconfig) {
            (Some(dir), _) => SourceConfig::Manifests(dir),
            (None, kubeconfig) => {
                let client = kube_client(kubeconfig, &a.serviceaccount_dir).await?;
                preflight::check_permissions(&client).await?;
                SourceConfig::Kube(client)
            }
        };
        run(ProxyConfig {
            node_name: a.node_name,
            source,
            attach,
            node_ip: a.node_ip,
            hairpin_ip: a.hairpin_ip,
            snat_ports: a.snat_ports,
            sizes,
            metrics_addr: a.metrics_addr,
            ct_timeouts,
            ct_gc_interval: Duration::from_secs(a.gc.ct_gc_interval.max(1)),
            ct_gc_batch: a.gc.ct_gc_batch,
            healthz_addr,
            cleanup_kube_proxy: a.cleanup_kube_proxy,
        })
        .await
    })
}

/// A client from a kubeconfig file, or the in-cluster config when none is given.
async fn kube_client(
    kubeconfig: Option<std::path::PathBuf>,
    sa_dir: &std::path::Path,
) -> Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(&path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?
        }
        None => incluster::config(sa_dir).await?,
    };
    Ok(kube::Client::try_from(config)?)
}

fn cleanup_kube_proxy_cmd() -> Result<()> {
    let r = kube_proxy_cleanup::cleanup()?;
    for (tool, table, chains, jumps) in &r.iptables {
        println!("{tool} {table}: removed {chains} chains and {jumps} jump rules");
    }
    for t in &r.nft {
        println!("nft: deleted table {t}");
    }
    if r.is_empty() {
        println!("no kube-proxy rules found");
    }
    for t in &r.missing_tools {
        tracing::debug!(tool = %t, "not installed; skipped");
    }
    Ok(())
}

fn node_pin(node: &str) -> Result<PinDir> {
    anyhow::ensure!(
        !node.is_empty(),
        "which node? pass --node-name (or set NODE_NAME)"
    );
    Ok(PinDir::for_node(node)?)
}

fn inspect_cmd(a: InspectArgs) -> Result<()> {
    let node = a
        .node_name
        .context("which node? pass --node-name NODE (or set NODE_NAME)")?;
    let pin = node_pin(&node)?;
    anyhow::ensure!(
        pin.path().exists(),
        "nothing pinned for node {} ({} does not exist): is its agent running?",
        node,
        pin.path().display()
    );
    let what = match a.what {
        InspectWhat::Services => What::Services,
        InspectWhat::Backends => What::Backends,
        InspectWhat::Conntrack => What::Conntrack,
        InspectWhat::Affinity => What::Affinity,
        InspectWhat::Maps => What::Maps,
        InspectWhat::Flow { src, dst, proto } => What::Flow(FlowQuery {
            src,
            dst,
            proto: proto.number(),
        }),
    };
    print!("{}", inspect(&pin, &what)?);
    Ok(())
}

fn report(r: &Removed) {
    if r.is_empty() {
        println!("nothing to remove");
        return;
    }
    for p in &r.links {
        println!("detached link {}", p.display());
    }
    for p in r.maps.iter().chain(&r.other) {
        println!("removed {}", p.display());
    }
    println!(
        "removed {} links, {} maps, {} other files",
        r.links.len(),
        r.maps.len(),
        r.other.len()
    );
}

fn cleanup_cmd(a: CleanupArgs) -> Result<()> {
    let node = match (a.all, a.node_name) {
        (true, _) => {
            report(&cleanup_all()?);
            return Ok(());
        }
        (false, Some(node)) => node,
        (false, None) => anyhow::bail!("pass --node-name NODE or --all"),
    };
    let state_dir = a
        .state_dir
        .unwrap_or_else(|| node_pin(&node).map(|p| p.state_dir()).unwrap_or_default());
    let record = teardown::NodeRecord::load(&state_dir);
    let network = record.is_some() || a.netns.is_some();
    let record = record.unwrap_or_default();
    let cgroup2 = match (a.cgroup, record.cgroup2) {
        (Some(c), _) => node_env::cgroup2_dir(&c, node_env::is_cgroup2)?,
        (None, Some(c)) => c,
        (None, None) => skiff_agent::bpf::attach::default_cgroup(),
    };
    let target = teardown::Target {
        node,
        state_dir,
        netns: a.netns.or(record.netns),
        cgroup2,
        network,
    };
    let r = teardown::teardown(&target);
    for l in r.lines() {
        println!("{l}");
    }
    if r.is_empty() {
        println!("nothing to remove for node {}", target.node);
    }
    anyhow::ensure!(
        r.errors.is_empty(),
        "cleanup of node {} was incomplete:\n  {}",
        target.node,
        r.errors.join("\n  ")
    );
    Ok(())
}

fn xdp_pass(a: XdpPassArgs) -> Result<()> {
    let pin = node_pin(&a.node_name)?;
    let iface = a.iface.clone();
    let h = netns::spawn_in(a.netns, "skiff-xdp-pass", move || -> Result<_> {
        let mut ebpf = load_standalone(object_bytes(), &pin, &[skiff_common::programs::XDP_PASS])?;
        Ok(attach_xdp_pass(&mut ebpf, &pin, &iface)?)
    })?;
    let outcome = h
        .join()
        .map_err(|_| anyhow::anyhow!("xdp-pass thread panicked"))???;
    println!("{} on {}: {outcome:?}", skiff_common::programs::XDP_PASS, a.iface);
    Ok(())
}
