//! Prometheus metrics: datapath counters read from the pinned maps at scrape time, map pressure and sync
//! statistics, served on `/metrics` by a small HTTP handler.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{
        MetricType,
        counter::ConstCounter,
        gauge::ConstGauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::bpf::{maps::StatsMaps, pins::PinDir};

/// Labels of one service port (from the planner's description `namespace/name:port`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceLabels {
    pub namespace: String,
    pub name: String,
    pub port: String,
    pub frontend: String,
}

/// What the run loop and the GC report for the next scrape.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Rev-NAT id -> service labels.
    pub services: BTreeMap<u32, ServiceLabels>,
    /// Backend id -> `addr:port`.
    pub backends: BTreeMap<u32, String>,
    /// Map name -> (entries, max entries).
    pub maps: BTreeMap<&'static str, (u64, u64)>,
    pub syncs: u64,
    pub sync_errors: u64,
    pub sync_ops: u64,
    pub last_sync_seconds: f64,
    pub ct_gc_deleted: u64,
    /// Conntrack entries the LRU evicted (seen by the GC passes; a lower bound).
    pub ct_evictions: u64,
    pub udp_flows_purged: u64,
    /// Services refused for lack of map room right now: (namespace, name, short resource).
    pub refused: Vec<(String, String, &'static str)>,
    /// Refusals so far (a Service refused again for the same reason counts once).
    pub refusals: u64,
}

/// Shared, cheaply cloneable handle the agent's tasks update.
#[derive(Clone, Debug)]
pub struct Metrics {
    state: Arc<Mutex<Snapshot>>,
    sync_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            // 100 us .. ~3.3 s.
            sync_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
        }
    }
}

impl Metrics {
    /// Records the duration of one sync.
    pub fn observe_sync(&self, took: Duration) {
        self.sync_seconds.observe(took.as_secs_f64());
    }

    pub fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        f(&mut self.state.lock().expect("metrics lock"));
    }

    fn snapshot(&self) -> Snapshot {
        self.state.lock().expect("metrics lock").clone()
    }
}

/// Reads the datapath counters on each scrape.
#[derive(Debug)]
struct DataplaneCollector {
    pin: PinDir,
    metrics: Metrics,
}

fn counter_family<L: prometheus_client::encoding::EncodeLabelSet>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: &[(L, u64)],
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge_family<L: prometheus_client::encoding::EncodeLabelSet>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: &[(L, f64)],
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

type Labels = Vec<(&'static str, String)>;

impl Collector for DataplaneCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let s = self.metrics.snapshot();
        // Maps are opened per scrape: a restarted agent or a re-created map is picked up without bookkeeping.
        if let Ok(stats) = StatsMaps::open(&self.pin) {
            let mut pk: Vec<(Labels, u64)> = Vec::new();
            let mut by: Vec<(Labels, u64)> = Vec::new();
            for (id, l) in &s.services {
                let c = stats.service(*id);
                let labels: Labels = vec![
                    ("namespace", l.namespace.clone()),
                    ("name", l.name.clone()),
                    ("port", l.port.clone()),
                    ("frontend", l.frontend.clone()),
                ];
                pk.push((labels.clone(), c.packets));
                by.push((labels, c.bytes));
            }
            counter_family(
                &mut enc,
                "skiff_service_packets",
                "Packets of new and established flows per service frontend",
                &pk,
            )?;
            counter_family(&mut enc, "skiff_service_bytes", "Bytes per service frontend", &by)?;
            let mut pk: Vec<(Labels, u64)> = Vec::new();
            let mut by: Vec<(Labels, u64)> = Vec::new();
            for (id, addr) in &s.backends {
                let c = stats.backend(*id);
                pk.push((vec![("backend", addr.clone())], c.packets));
                by.push((vec![("backend", addr.clone())], c.bytes));
            }
            counter_family(
                &mut enc,
                "skiff_backend_packets",
                "Packets sent to each backend",
                &pk,
            )?;
            counter_family(&mut enc, "skiff_backend_bytes", "Bytes sent to each backend", &by)?;
            let drops: Vec<(Labels, u64)> = stats
                .drops()
                .into_iter()
                .map(|(r, c)| (vec![("reason", r.name().to_string())], c.packets))
                .collect();
            counter_family(
                &mut enc,
                "skiff_drops",
                "Packets the datapath dropped or rejected, by reason",
                &drops,
            )?;
        }
        let entries: Vec<(Labels, f64)> = s
            .maps
            .iter()
            .map(|(m, (n, _))| (vec![("map", m.to_string())], *n as f64))
            .collect();
        let max: Vec<(Labels, f64)> = s
            .maps
            .iter()
            .map(|(m, (_, x))| (vec![("map", m.to_string())], *x as f64))
            .collect();
        gauge_family(
            &mut enc,
            "skiff_map_entries",
            "Entries in a datapath map",
            &entries,
        )?;
        gauge_family(
            &mut enc,
            "skiff_map_max_entries",
            "Capacity of a datapath map",
            &max,
        )?;
        let none: Labels = Vec::new();
        counter_family(
            &mut enc,
            "skiff_syncs",
            "Map syncs applied",
            &[(none.clone(), s.syncs)],
        )?;
        counter_family(
            &mut enc,
            "skiff_sync_errors",
            "Map syncs that failed",
            &[(none.clone(), s.sync_errors)],
        )?;
        counter_family(
            &mut enc,
            "skiff_sync_ops",
            "Map operations applied by syncs",
            &[(none.clone(), s.sync_ops)],
        )?;
        gauge_family(
            &mut enc,
            "skiff_last_sync_duration_seconds",
            "Duration of the last sync",
            &[(none.clone(), s.last_sync_seconds)],
        )?;
        counter_family(
            &mut enc,
            "skiff_conntrack_gc_deleted",
            "Conntrack entries removed by the idle GC",
            &[(none.clone(), s.ct_gc_deleted)],
        )?;
        counter_family(
            &mut enc,
            "skiff_conntrack_evictions",
            "Conntrack entries the LRU evicted under pressure after living through a GC pass (a lower bound)",
            &[(none.clone(), s.ct_evictions)],
        )?;
        counter_family(
            &mut enc,
            "skiff_udp_flows_purged",
            "UDP conntrack entries removed with their backend",
            &[(none.clone(), s.udp_flows_purged)],
        )?;
        gauge_family(
            &mut enc,
            "skiff_services_refused",
            "Services not programmed (or kept at their previous programming) because they do not fit the maps",
            &[(none.clone(), s.refused.len() as f64)],
        )?;
        let refused: Vec<(Labels, f64)> = s
            .refused
            .iter()
            .map(|(ns, name, res)| {
                let labels: Labels = vec![
                    ("namespace", ns.clone()),
                    ("name", name.clone()),
                    ("resource", res.to_string()),
                ];
                (labels, 1.0)
            })
            .collect();
        gauge_family(
            &mut enc,
            "skiff_service_refused",
            "1 for each Service refused for lack of room, labelled with the map it does not fit",
            &refused,
        )?;
        counter_family(
            &mut enc,
            "skiff_service_refusals",
            "Times a Service was refused for lack of map room",
            &[(none, s.refusals)],
        )?;
        Ok(())
    }
}

/// Builds the registry for a node.
pub fn registry(pin: PinDir, metrics: Metrics) -> Registry {
    let mut r = Registry::default();
    r.register(
        "skiff_sync_duration_seconds",
        "Time to plan and apply one sync",
        metrics.sync_seconds.clone(),
    );
    r.register_collector(Box::new(DataplaneCollector { pin, metrics }));
    r
}

/// Renders the registry in the text exposition format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::warn!(error = %e, "encoding metrics");
    }
    out
}

/// Serves `/metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    loop {
        let (conn, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            if let Err(e) = tokio::time::timeout(Duration::from_secs(10), handle(conn, &registry)).await {
                tracing::debug!(%peer, error = %e, "metrics request timed out");
            }
        });
    }
}

/// Binds the metrics address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// The request path of a request head, if it is a GET.
fn get_path(head: &str) -> Option<&str> {
    let mut parts = head.lines().next()?.split_whitespace();
    (parts.next()? == "GET").then_some(())?;
    parts.next()
}

async fn handle(mut conn: TcpStream, registry: &Registry) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let (status, ctype, body) = match get_path(&head) {
        Some("/metrics") => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(registry),
        ),
        Some("/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
        _ => ("404 Not Found", "text/plain", "try /metrics\n".to_string()),
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(resp.as_bytes()).await;
    let _ = conn.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_paths() {
        assert_eq!(
            get_path("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some("/metrics")
        );
        assert_eq!(get_path("POST /metrics HTTP/1.1\r\n\r\n"), None);
        assert_eq!(get_path(""), None);
    }

    #[test]
    fn sync_and_pressure_metrics_render_without_maps() {
        let pin = PinDir::under(std::path::Path::new("/nonexistent"), "n").unwrap();
        let m = Metrics::default();
        m.update(|s| {
            s.syncs = 3;
            s.maps.insert("affinity", (1, 65_536));
            s.maps.insert("conntrack", (10, 262_144));
            s.refused = vec![("default".into(), "big".into(), "backends")];
            s.refusals = 2;
            s.ct_evictions = 5;
        });
        m.observe_sync(Duration::from_millis(3));
        let out = render(&registry(pin, m));
        assert!(out.contains("skiff_sync_duration_seconds_count 1"), "{out}");
        assert!(out.contains("skiff_syncs_total 3"), "{out}");
        assert!(out.contains("skiff_map_entries{map=\"conntrack\"} 10"), "{out}");
        assert!(
            out.contains("skiff_map_max_entries{map=\"conntrack\"} 262144"),
            "{out}"
        );
        assert!(out.contains("skiff_services_refused 1"), "{out}");
        assert!(
            out.contains("skiff_service_refused{namespace=\"default\",name=\"big\",resource=\"backends\"} 1"),
            "{out}"
        );
        assert!(out.contains("skiff_service_refusals_total 2"), "{out}");
        assert!(out.contains("skiff_conntrack_evictions_total 5"), "{out}");
        assert!(
            !out.contains("skiff_service_packets"),
            "datapath counters need the maps: {out}"
        );
    }

    #[tokio::test]
    async fn serves_metrics_over_http() {
        let pin = PinDir::under(std::path::Path::new("/nonexistent"), "n").unwrap();
        let m = Metrics::default();
        m.update(|s| s.syncs = 7);
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, Arc::new(registry(pin, m))));
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut resp = String::new();
        tokio::time::timeout(Duration::from_secs(5), c.read_to_string(&mut resp))
            .await
            .unwrap()
            .unwrap();
        server.abort();
        assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp}");
        assert!(resp.contains("skiff_syncs_total 7"), "{resp}");
    }
}
