//! `skiff-agent proxy`: load and attach, restore from the pinned maps, then sync every snapshot of Services and
//! EndpointSlices into the maps (plus conntrack GC and metrics) until SIGINT/SIGTERM.
use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use tokio::{signal::unix::SignalKind, sync::mpsc};

use crate::{
    bpf::{
        attach::{AttachConfig, Attacher},
        ct_gc::{CtTimeouts, Evictions, gc_pass_counting},
        loader::{MapSizes, load},
        maps::{FlowMaps, NodeConfig, ServiceMaps, fmt_service_key, write_config},
        names::{Names, split_service_name},
        netns, object_bytes,
        pins::PinDir,
        sys::monotonic_ns,
    },
    healthz::{self, Health},
    kube_proxy_cleanup,
    metrics::{self, Metrics, ServiceLabels},
    proxy::{Change, Desired, NodeInfo, Planner, SourceConfig, inputs::NodeInput, spawn_source},
    service_events::{self, ServiceEvents},
    service_health,
};

/// While a Service is refused for lack of map room, a sync runs at least this often to try it again.
const REFUSED_RETRY: Duration = Duration::from_secs(5);

/// Everything `proxy` needs.
pub struct ProxyConfig {
    pub node_name: String,
    pub source: SourceConfig,
    pub attach: AttachConfig,
    pub node_ip: Option<Ipv4Addr>,
    pub hairpin_ip: Ipv4Addr,
    pub snat_ports: (u16, u16),
    pub sizes: MapSizes,
    pub metrics_addr: SocketAddr,
    pub ct_timeouts: CtTimeouts,
    pub ct_gc_interval: Duration,
    pub ct_gc_batch: usize,
    /// kube-proxy-compatible /healthz and /livez; its IP also serves healthCheckNodePorts. `None`: neither.
    pub healthz_addr: Option<SocketAddr>,
    /// Remove kube-proxy's iptables chains and nftables tables after the first successful sync.
    pub cleanup_kube_proxy: bool,
}

/// First IPv4 address of `iface`, looked up inside `netns` (on a dedicated thread: setns is per thread).
fn iface_ipv4(netns_name: Option<String>, iface: String) -> Result<Option<Ipv4Addr>> {
    let h = netns::spawn_in(netns_name, "skiff-addr", move || -> Result<Option<Ipv4Addr>> {
        let addrs = nix::ifaddrs::getifaddrs().context("listing interface addresses")?;
        Ok(addrs
            .filter(|a| a.interface_name == iface)
            .find_map(|a| a.address.and_then(|s| s.as_sockaddr_in().map(|s| s.ip()))))
    })?;
    h.join()
        .map_err(|_| anyhow::anyhow!("address lookup thread panicked"))??
}

/// The node as `desired` sees it: the Node object if the source has it, with the configured node IP first.
fn node_info(name: &str, node_ip: Ipv4Addr, node: Option<&NodeInput>) -> NodeInfo {
    let mut info = node.map(|n| n.info.clone()).unwrap_or_else(|| NodeInfo {
        name: name.to_string(),
        addresses: Vec::new(),
        zone: None,
    });
    info.addresses.retain(|a| *a != node_ip);
    info.addresses.insert(0, node_ip);
    info
}

/// Owns the planner and the map handles; one `sync` per batch of changes.
struct Syncer {
    pin: PinDir,
    maps: ServiceMaps,
    planner: Planner,
    metrics: Metrics,
    node_name: String,
    node_ip: Ipv4Addr,
    /// Writes Events about refused Services (only when watching an apiserver).
    events: Option<ServiceEvents>,
}

impl Syncer {
    /// Recomputes the Services the changes touched and writes what differs (the whole state after a restore).
    fn sync(&mut self, desired: &mut Desired) -> Result<()> {
        let t0 = Instant::now();
        let cpu0 = thread_cpu_time();
        let node = node_info(&self.node_name, self.node_ip, desired.node(&self.node_name));
        let t_node = t0.elapsed();
        let delta = desired.update(&node);
        let t_desired = t0.elapsed();
        let full = self.planner.needs_full();
        // Service names (the names file and the metrics labels) change only when a frontend appears, goes, or
        // changes hands: an endpoint change leaves them alone.
        let names_changed = full
            || !delta.removed.is_empty()
            || delta.upserts.iter().any(|fe| {
                self.planner
                    .describe_service(&fe.key())
                    .is_none_or(|d| d != fe.origin.to_string())
            });
        let ops = if full {
            self.planner.plan(&desired.state())
        } else {
            self.planner.plan_delta(&delta.upserts, &delta.removed)
        };
        let t_plan = t0.elapsed();
        let res = self.maps.apply(&ops);
        let took = t0.elapsed();
        let cpu = thread_cpu_time().saturating_sub(cpu0);
        match res {
            Ok(stats) => {
                service_events::report(&mut self.planner, &self.metrics, self.events.as_ref());
                tracing::info!(
                    ops = stats.ops,
                    frontends = self.planner.contents().services.len(),
                    backends = self.planner.contents().backends.len(),
                    changed = delta.upserts.len() + delta.removed.len(),
                    recomputed = delta.recomputed,
                    udp_flows_purged = stats.udp_flows_purged,
                    node_ms = t_node.as_secs_f64() * 1000.0,
                    desired_ms = t_desired.as_secs_f64() * 1000.0,
                    plan_ms = (t_plan - t_desired).as_secs_f64() * 1000.0,
                    cpu_ms = cpu.as_secs_f64() * 1000.0,
                    took_ms = took.as_secs_f64() * 1000.0,
                    "synced"
                );
                self.publish(stats.ops, stats.udp_flows_purged, took, names_changed);
                Ok(())
            }
            Err(e) => {
                self.metrics.update(|s| s.sync_errors += 1);
                // The maps may hold part of the plan: start again from what they really hold.
                let current = self
                    .maps
                    .read_contents()
                    .context("re-reading maps after a failed sync")?;
                self.planner = Planner::restore_with_limits(current, self.maps.limits());
                Err(e).context("applying the plan")
            }
        }
    }

    /// Publishes the sync's figures; the per-Service names and labels (a pass over every frontend) only when
    /// `names_changed`.
    fn publish(&self, ops: usize, purged: usize, took: Duration, names_changed: bool) {
        let c = self.planner.contents();
        let services = names_changed.then(|| self.service_names());
        let backends = c
            .backends
            .iter()
            .map(|(id, b)| (*id, crate::bpf::table::addr_port(b.addr_be, b.port_be)))
            .collect();
        let (svc_cap, be_cap) = self.maps.capacities();
        let (n_svc, n_be) = (c.services.len() as u64, c.backends.len() as u64);
        self.metrics.observe_sync(took);
        self.metrics.update(|s| {
            if let Some(services) = services {
                s.services = services;
            }
            s.backends = backends;
            s.maps.insert("services", (n_svc, u64::from(svc_cap)));
            s.maps.insert("backends", (n_be, u64::from(be_cap)));
            s.syncs += 1;
            s.sync_ops += ops as u64;
            s.udp_flows_purged += purged as u64;
            s.last_sync_seconds = took.as_secs_f64();
        });
    }

    /// Writes the names file for `inspect` and returns the metrics labels of every service entry.
    fn service_names(&self) -> std::collections::BTreeMap<u32, ServiceLabels> {
        let mut names = Names::default();
        let mut services = std::collections::BTreeMap::new();
        for (k, v) in &self.planner.contents().services {
            let desc = self.planner.describe_service(k);
            if let Some(d) = &desc {
                names.insert(k, d.clone());
            }
            let (namespace, name, port) = desc.as_deref().map(split_service_name).unwrap_or_default();
            services.insert(
                u32::from(v.rev_nat_id),
                ServiceLabels {
                    namespace,
                    name,
                    port,
                    frontend: fmt_service_key(k),
                },
            );
        }
        if let Err(e) = names.store(&self.pin.names_file()) {
            tracing::warn!(error = %e, "writing the names file for inspect");
        }
        services
    }
}

/// CPU time the calling thread has used (zero if the clock cannot be read): next to a wall time, it tells work
/// from waiting for a CPU.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the valid pointer it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Conntrack GC, forever (runs the scans on the blocking pool).
async fn gc_loop(pin: PinDir, cfg: (CtTimeouts, Duration, usize), metrics: Metrics) {
    let (timeouts, every, batch) = cfg;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let evictions = Arc::new(std::sync::Mutex::new(Evictions::default()));
    loop {
        tick.tick().await;
        let (pin, evictions) = (pin.clone(), evictions.clone());
        let r = tokio::task::spawn_blocking(move || {
            let mut flows = FlowMaps::open(&pin)?;
            let cap = flows.conntrack_capacity();
            let affinity = (flows.affinity_entries().len(), flows.affinity_capacity());
            let mut evictions = evictions.lock().expect("evictions lock");
            gc_pass_counting(&mut flows, &timeouts, monotonic_ns(), batch, &mut evictions)
                .map(|s| (s, cap, affinity))
        })
        .await;
        match r {
            Ok(Ok((s, cap, (aff, aff_cap)))) => {
                if s.deleted > 0 {
                    tracing::debug!(deleted = s.deleted, remaining = s.remaining, "conntrack GC");
                }
                metrics.update(|m| {
                    m.ct_gc_deleted += s.deleted as u64;
                    m.ct_evictions += s.evicted as u64;
                    m.maps.insert("conntrack", (s.remaining as u64, u64::from(cap)));
                    m.maps.insert("affinity", (aff as u64, u64::from(aff_cap)));
                });
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "conntrack GC"),
            Err(e) => tracing::warn!(error = %e, "conntrack GC task"),
        }
    }
}

async fn shutdown_signal() -> Result<&'static str> {
    let mut term = tokio::signal::unix::signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => { r?; Ok("SIGINT") }
        _ = term.recv() => Ok("SIGTERM"),
    }
}

/// Removes kube-proxy's rules now that Skiff's maps serve every Service (a failure is logged, not fatal: the
/// dataplane works either way, and `skiff-agent cleanup-kube-proxy` can be run by hand).
async fn remove_kube_proxy_rules() {
    match tokio::task::spawn_blocking(kube_proxy_cleanup::cleanup).await {
        Ok(Ok(r)) if r.is_empty() => tracing::info!("no kube-proxy rules to remove"),
        Ok(Ok(r)) => tracing::info!(
            iptables_tables = r.iptables.len(),
            nft_tables = r.nft.len(),
            "removed kube-proxy's rules"
        ),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "removing kube-proxy's rules failed; run `skiff-agent cleanup-kube-proxy`")
        }
        Err(e) => tracing::error!(error = %e, "kube-proxy cleanup task"),
    }
}

/// Runs the proxy until SIGINT/SIGTERM. Maps and links stay pinned on exit.
pub async fn run(cfg: ProxyConfig) -> Result<()> {
    let pin = PinDir::for_node(&cfg.node_name)?;
    let node_ip = match (cfg.node_ip, &cfg.attach.uplink) {
        (Some(ip), _) => ip,
        (None, Some(up)) => iface_ipv4(cfg.attach.netns.clone(), up.clone())?
            .with_context(|| format!("uplink {up} has no IPv4 address; pass --node-ip"))?,
        (None, None) => bail!("no node address: pass --node-ip or --uplink"),
    };
    let ebpf = load(object_bytes(), &pin, &cfg.sizes)?;
    write_config(
        &pin,
        NodeConfig {
            node_addr: node_ip,
            hairpin_addr: cfg.hairpin_ip,
            snat_ports: cfg.snat_ports,
        },
    )?;
    let (attach_cfg, attach_pin) = (cfg.attach.clone(), pin.clone());
    let attacher =
        tokio::task::spawn_blocking(move || Attacher::start(ebpf, attach_pin, attach_cfg)).await??;
    tracing::info!(node = %cfg.node_name, %node_ip, pin = %pin.path().display(), "attached");

    let maps = ServiceMaps::open(&pin)?;
    let restored = maps.read_contents()?;
    tracing::info!(
        frontends = restored.services.len(),
        backends = restored.backends.len(),
        "restored from the pinned maps"
    );
    let metrics = Metrics::default();
    let limits = maps.limits();
    let events = match &cfg.source {
        SourceConfig::Kube(client) => Some(ServiceEvents::spawn(client.clone(), cfg.node_name.clone())),
        SourceConfig::Manifests(_) => None,
    };
    let mut syncer = Syncer {
        pin: pin.clone(),
        maps,
        planner: Planner::restore_with_limits(restored, limits),
        metrics: metrics.clone(),
        node_name: cfg.node_name.clone(),
        node_ip,
        events,
    };

    let listener = metrics::bind(cfg.metrics_addr)
        .await
        .with_context(|| format!("binding --metrics-addr {}", cfg.metrics_addr))?;
    let registry = Arc::new(metrics::registry(pin.clone(), metrics.clone()));
    let server = tokio::spawn(metrics::serve(listener, registry));
    let gc = tokio::spawn(gc_loop(
        pin.clone(),
        (cfg.ct_timeouts, cfg.ct_gc_interval, cfg.ct_gc_batch),
        metrics.clone(),
    ));

    let health = Health::new(healthz::DEFAULT_TIMEOUT);
    let mut health_ports = None;
    let mut healthz_server = None;
    if let Some(addr) = cfg.healthz_addr {
        let listener = healthz::bind(addr).await?;
        tracing::info!(%addr, "serving /healthz and /livez");
        healthz_server = Some(tokio::spawn(health.clone().serve(listener)));
        health_ports = Some(service_health::Servers::new(addr.ip(), health.clone()));
    }
    let mut kube_proxy_cleanup_pending = cfg.cleanup_kube_proxy;

    let mut rx: mpsc::UnboundedReceiver<Vec<Change>> = spawn_source(cfg.source)?;
    let mut desired = Desired::default();
    let mut received = 0usize;
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let mut retry: Option<tokio::time::Instant> = None;
    tracing::info!("waiting for the initial lists of Services, EndpointSlices and Nodes");
    let reason = loop {
        let retry_sleep = async {
            match retry {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = &mut stop => break r?,
            batch = rx.recv() => match batch {
                Some(b) => {
                    received += b.len();
                    b.into_iter().for_each(|c| desired.apply(c));
                }
                None => bail!("the Service/EndpointSlice source stopped"),
            },
            _ = retry_sleep => {}
        }
        // Everything already queued goes into this sync.
        while let Ok(b) = rx.try_recv() {
            received += b.len();
            b.into_iter().for_each(|c| desired.apply(c));
        }
        // No map write before every initial list is complete: never a moment with no services.
        if !desired.ready() {
            continue;
        }
        health.queued();
        retry = match syncer.sync(&mut desired) {
            Ok(()) => {
                health.updated();
                let node = desired.node(&cfg.node_name);
                health.set_node_eligible(node.is_none_or(|n| n.eligible));
                if let Some(ports) = health_ports.as_mut() {
                    ports.reconcile(desired.health_ports(&cfg.node_name)).await;
                }
                if std::mem::take(&mut kube_proxy_cleanup_pending) {
                    remove_kube_proxy_rules().await;
                }
                // After a burst (the initial lists, a relist, a large manifest edit) the parse and conversion
                // buffers are free again: give them back instead of keeping the burst's peak as RSS.
                if std::mem::take(&mut received) >= BURST_CHANGES {
                    release_spare_memory(&mut desired);
                }
                // A refused Service may fit once other Services freed room: try again even if nothing changes.
                (syncer.planner.refused().next().is_some())
                    .then(|| tokio::time::Instant::now() + REFUSED_RETRY)
            }
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "sync failed; retrying in 1s");
                Some(tokio::time::Instant::now() + Duration::from_secs(1))
            }
        };
    };
    tracing::info!(signal = reason, "shutting down; maps and links stay pinned");
    server.abort();
    gc.abort();
    if let Some(h) = healthz_server {
        h.abort();
    }
    drop(health_ports);
    tokio::task::spawn_blocking(move || drop(attacher)).await?;
    Ok(())
}

/// A sync that applied at least this many changes is followed by `release_spare_memory`.
const BURST_CHANGES: usize = 1000;

/// After a burst of changes: shrinks the proxy's tables and hands freed heap pages back to the kernel (the burst's
/// parse buffers would otherwise stay in the process's RSS).
fn release_spare_memory(desired: &mut Desired) {
    desired.shrink();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap memory to the kernel; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_cpu_time_counts_this_threads_work() {
        let before = thread_cpu_time();
        let mut x = 0u64;
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_millis(20) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let used = thread_cpu_time() - before;
        assert!(used >= Duration::from_millis(5), "busy 20 ms, counted {used:?}");
        // Sleeping uses no CPU.
        let before = thread_cpu_time();
        std::thread::sleep(Duration::from_millis(30));
        assert!(thread_cpu_time() - before < Duration::from_millis(10));
    }

    #[test]
    fn configured_node_ip_comes_first() {
        let n = node_info("n1", Ipv4Addr::new(10, 0, 0, 1), None);
        assert_eq!(n.name, "n1");
        assert_eq!(n.addresses, [Ipv4Addr::new(10, 0, 0, 1)]);
        let known = NodeInput {
            info: NodeInfo {
                name: "n1".into(),
                addresses: vec![Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1)],
                zone: None,
            },
            eligible: true,
        };
        let n = node_info("n1", Ipv4Addr::new(10, 0, 0, 1), Some(&known));
        assert_eq!(
            n.addresses,
            [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)]
        );
    }
}
