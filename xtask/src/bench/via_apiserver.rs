//! Skiff's control-plane figures through the apiserver: skiff-control plus `skiff-agent proxy --kubeconfig`.
//!
//! Per size N a fresh skiff-control (embedded store, plain HTTP on loopback) and a fresh agent (socket mode, in a
//! testbed of its own) are started. N selector-less Services with 10 endpoints each (one EndpointSlice per Service,
//! labelled `kubernetes.io/service-name`) are created through the API by a few concurrent clients, then one slice
//! is patched a few times (the last endpoint's address alternates). Times end at the agent's `synced` log line, read
//! from its own timestamp (the agent's wall clock, UTC, microseconds), and start at the bench's wall clock on the
//! same machine: the first create sent (`program_full_apiserver`, which includes the creates themselves), the
//! PATCH's answer received (`endpoint_change_apiserver`; zero when the agent synced before the answer arrived, as
//! the watch event can overtake it) or the PATCH sent (`endpoint_change_apiserver_from_request`).
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::agent::{Agent, AgentSpec};
use super::apiserver::creates::create_all;
use super::apiserver::fixtures;
use super::apiserver::http::{Conn, JSON, MERGE_PATCH};
use super::apiserver::procs::{Control, ControlSpec, Scratch};
use super::netns::{Testbed, addr, ifname};
use super::results::Collector;
use super::runner::{Plan, TCP_PORT};

/// The variant the figures are reported under (same dataplane mode as the manifest-driven `skiff-socket`).
const VARIANT: &str = "skiff-socket";
const TAG: &str = "ska";
const NAMESPACE: &str = "bench-api";
const ENDPOINTS: usize = 10;
/// Concurrent API clients creating the objects.
const CLIENTS: usize = 4;
const METRICS_PORT: u16 = 19_979;
/// No `synced` line for this long after the creates: the agent has applied all of them.
const QUIET: Duration = Duration::from_secs(1);

/// Runs the figures for every size of `plan.apiserver_sizes`; failures are recorded, not returned.
pub fn run(plan: &Plan, agent_bin: Option<&Path>, workdir: &Path, col: &mut Collector) {
    for &n in &plan.apiserver_skipped {
        col.not_measured(VARIANT, n, "the figures through the apiserver stop at N=10000");
    }
    if plan.apiserver_sizes.is_empty() {
        return;
    }
    let Some(agent_bin) = agent_bin else {
        col.fail(
            "control_plane",
            VARIANT,
            "skiff-agent binary not found (apiserver figures)",
        );
        return;
    };
    let setup = || -> Result<(tokio::runtime::Runtime, PathBuf)> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        Ok((rt, control_bin(agent_bin)?))
    };
    let (rt, control) = match setup() {
        Ok(x) => x,
        Err(e) => {
            col.fail("control_plane", VARIANT, e.context("apiserver figures: setup"));
            return;
        }
    };
    eprintln!(
        "bench: figures through the apiserver with {} and {}",
        control.display(),
        agent_bin.display()
    );
    for (i, &n) in plan.apiserver_sizes.iter().enumerate() {
        if let Err(e) = super::sh::check_interrupted() {
            col.fail("control_plane", VARIANT, e);
            return;
        }
        eprintln!("bench: {VARIANT} through the apiserver at N={n}");
        let step = Step {
            rt: &rt,
            control: &control,
            agent: agent_bin,
            workdir,
            n,
            reps: plan.change_reps,
            limit: plan.program_budget,
        };
        match step.run(col) {
            Ok(()) => {}
            Err(e) => {
                col.fail(
                    "control_plane",
                    VARIANT,
                    e.context(format!("apiserver figures at N={n}")),
                );
                for &m in &plan.apiserver_sizes[i + 1..] {
                    col.not_measured(
                        VARIANT,
                        m,
                        &format!("the figures through the apiserver failed at N={n} (see Failures)"),
                    );
                }
                return;
            }
        }
    }
}

/// skiff-control next to the agent binary (same build), else in this workspace's release or debug target dir (like
/// the agent, an existing binary is used as is), else a release build of it.
fn control_bin(agent: &Path) -> Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."));
    let found = agent
        .parent()
        .map(|d| d.join("skiff-control"))
        .into_iter()
        .chain(["target/release/skiff-control", "target/debug/skiff-control"].map(|p| root.join(p)))
        .find(|p| p.is_file());
    match found {
        Some(bin) => Ok(bin),
        None => super::apiserver::procs::build_control(),
    }
}

/// One size: fresh server, fresh agent, creates, endpoint changes.
struct Step<'a> {
    rt: &'a tokio::runtime::Runtime,
    control: &'a Path,
    agent: &'a Path,
    workdir: &'a Path,
    n: usize,
    reps: usize,
    limit: Duration,
}

/// Removes the agent's cgroup when dropped (after the agent, which is declared later and so dropped first).
struct Cgroup(PathBuf);

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

impl Step<'_> {
    fn run(&self, col: &mut Collector) -> Result<()> {
        let n = self.n;
        let scratch = Scratch::new(&format!("via-api-{n}"))?;
        let server = Control::start(
            self.rt,
            &ControlSpec {
                bin: self.control,
                etcd: None,
                disable: &[],
                tag: &format!("via-api-{n}"),
                log: self.workdir.join(format!("control-via-api-{n}.log")),
            },
        )?;
        let kubeconfig = scratch.path().join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_yaml(server.addr))?;
        // Locals drop in reverse order: agent, cgroup, testbed (the agent's links live in the testbed).
        let tb = Testbed::create(TAG, ENDPOINTS)?;
        let cg = Cgroup(PathBuf::from(format!(
            "/sys/fs/cgroup/unified/{}{TAG}",
            super::netns::PREFIX
        )));
        if !cg.0.exists() {
            std::fs::create_dir(&cg.0).with_context(|| format!("creating cgroup {}", cg.0.display()))?;
        }
        let mut agent = Agent::start(&AgentSpec {
            bin: self.agent,
            workdir: self.workdir,
            node: &tb.node,
            netns: &tb.node,
            uplink: ifname::NODE_UPLINK,
            pod_iface: "pod-*",
            cgroup: &cg.0,
            mode: "socket",
            metrics_port: METRICS_PORT,
            xdp_pass: Vec::new(),
            kubeconfig: Some(&kubeconfig),
        })
        .context("starting skiff-agent proxy --kubeconfig")?;
        // The apiserver's own `kubernetes` Service may already be there.
        let base = agent.frontends();
        let target = base + n as u64;
        let addr = server.addr;
        self.rt.block_on(async {
            Conn::connect(addr)
                .await?
                .create("/api/v1/namespaces", &fixtures::namespace(NAMESPACE))
                .await
        })?;
        // Slices first, then Services: the agent has a frontend only once its Service exists, so the sync that
        // reaches N frontends holds every object.
        agent.skip_log();
        let t0 = unix_now();
        let started = Instant::now();
        let slices = self.rt.block_on(create_all(
            addr,
            n,
            CLIENTS,
            Arc::new(|i| {
                (
                    collection("discovery.k8s.io/v1", "endpointslices"),
                    slice(i, None),
                )
            }),
        ))?;
        let services = self.rt.block_on(create_all(
            addr,
            n,
            CLIENTS,
            Arc::new(|i| (collection("v1", "services"), service(i))),
        ))?;
        let creates = started.elapsed();
        agent
            .wait_sync(self.limit, |s| s.frontends >= target)
            .context("waiting for the agent to sync every Service")?;
        // Endpoints may land in later syncs than their Service: the last sync before the agent goes quiet is the
        // one that completes the set (nothing else changes meanwhile).
        let sync = agent
            .wait_quiet(QUIET, self.limit)
            .context("waiting for the agent to go quiet")?
            .map_or_else(|| agent.last_sync(), Some)
            .context("no sync seen")?;
        let full = sync_delay(t0, &sync)?;
        eprintln!(
            "bench: apiserver N={n}: {} creates in {:.2} s (slices {:.2} s, services {:.2} s); agent synced {} \
             frontends {:.1} ms after the first create",
            2 * n,
            creates.as_secs_f64(),
            slices.elapsed.as_secs_f64(),
            services.elapsed.as_secs_f64(),
            sync.frontends,
            full * 1e3
        );
        col.add(
            "control_plane",
            VARIANT,
            n,
            None,
            "program_full_apiserver",
            "ms",
            full * 1e3,
        );
        // Endpoint changes of a Service in the middle of the set.
        let idx = n / 4;
        let path = format!(
            "{}/{}",
            collection("discovery.k8s.io/v1", "endpointslices"),
            slice_name(idx)
        );
        for rep in 0..self.reps {
            let moved = addr::backend(ENDPOINTS + rep % 2);
            let patch = json!({"endpoints": slice(idx, Some(moved))["endpoints"]});
            agent.skip_log();
            let (sent, acked) = self.rt.block_on(async {
                let mut conn = Conn::connect(addr).await?;
                let body = serde_json::to_vec(&patch)?;
                let sent = unix_now();
                conn.ok(hyper::Method::PATCH, &path, JSON, Some((MERGE_PATCH, body)))
                    .await?;
                anyhow::Ok((sent, unix_now()))
            })?;
            let sync = agent
                .wait_sync(Duration::from_secs(30), |s| s.ops > 0)
                .with_context(|| format!("waiting for the sync of endpoint change {}", rep + 1))?;
            let took = sync_delay(acked, &sync)?;
            let from_sent = sync_delay(sent, &sync)?;
            eprintln!(
                "bench: apiserver N={n} endpoint change {}: PATCH answered in {:.2} ms, synced {:.2} ms after the \
                 answer ({:.2} ms after sending; agent's own sync {:.3} ms)",
                rep + 1,
                (acked - sent) * 1e3,
                took * 1e3,
                from_sent * 1e3,
                sync.took_ms
            );
            col.add(
                "control_plane",
                VARIANT,
                n,
                None,
                "endpoint_change_apiserver_from_request",
                "ms",
                from_sent * 1e3,
            );
            col.add(
                "control_plane",
                VARIANT,
                n,
                None,
                "endpoint_change_apiserver",
                "ms",
                took * 1e3,
            );
        }
        drop(agent);
        drop(cg);
        drop(tb);
        drop(server);
        Ok(())
    }
}

/// Seconds from `from` (Unix time) to the sync line's timestamp; a line earlier than `from` (the agent's sync won
/// the race with the PATCH's answer) counts as zero.
fn sync_delay(from: f64, sync: &super::agent::Sync) -> Result<f64> {
    let Some(at) = sync.at_unix else {
        bail!("the agent's `synced` line has no timestamp");
    };
    Ok((at - from).max(0.0))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A kubeconfig for a plain-HTTP apiserver without authentication.
fn kubeconfig_yaml(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: bench\n  cluster:\n    server: http://{addr}\nusers:\n- \
         name: bench\n  user: {{}}\ncontexts:\n- name: bench\n  context:\n    cluster: bench\n    user: \
         bench\ncurrent-context: bench\n"
    )
}

fn collection(group_version: &str, resource: &str) -> String {
    let prefix = if group_version == "v1" {
        "/api/v1".to_string()
    } else {
        format!("/apis/{group_version}")
    };
    format!("{prefix}/namespaces/{NAMESPACE}/{resource}")
}

fn service_name(i: usize) -> String {
    format!("svc-{i:05}")
}

fn slice_name(i: usize) -> String {
    format!("{}-bench", service_name(i))
}

/// A selector-less ClusterIP Service (the apiserver allocates its address).
fn service(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": service_name(i), "namespace": NAMESPACE},
        "spec": {"type": "ClusterIP", "ports": [{"name": "p", "protocol": "TCP", "port": 80, "targetPort": TCP_PORT}]},
    })
}

/// The EndpointSlice of Service `i`: the testbed's 10 backends, the last one replaced by `last` when given.
fn slice(i: usize, last: Option<Ipv4Addr>) -> Value {
    let endpoints: Vec<Value> = (0..ENDPOINTS)
        .map(|k| {
            let ip = match last {
                Some(ip) if k == ENDPOINTS - 1 => ip,
                _ => addr::backend(k),
            };
            json!({"addresses": [ip.to_string()], "conditions": {"ready": true}})
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": slice_name(i), "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": service_name(i)},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "p", "protocol": "TCP", "port": TCP_PORT}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_moves_only_the_last_endpoint() {
        let a = slice(3, None);
        let b = slice(3, Some(Ipv4Addr::new(10, 244, 2, 99)));
        assert_eq!(a["metadata"]["labels"]["kubernetes.io/service-name"], "svc-00003");
        let ips = |v: &Value| -> Vec<String> {
            v["endpoints"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["addresses"][0].as_str().unwrap().to_string())
                .collect()
        };
        let (a, b) = (ips(&a), ips(&b));
        assert_eq!(a.len(), ENDPOINTS);
        assert_eq!(a[..ENDPOINTS - 1], b[..ENDPOINTS - 1]);
        assert_ne!(a[ENDPOINTS - 1], b[ENDPOINTS - 1]);
        assert_eq!(b[ENDPOINTS - 1], "10.244.2.99");
    }

    #[test]
    fn paths_and_kubeconfig() {
        assert_eq!(
            collection("v1", "services"),
            "/api/v1/namespaces/bench-api/services"
        );
        assert_eq!(
            collection("discovery.k8s.io/v1", "endpointslices"),
            "/apis/discovery.k8s.io/v1/namespaces/bench-api/endpointslices"
        );
        let kc = kubeconfig_yaml(([127, 0, 0, 1], 6443).into());
        assert!(kc.contains("server: http://127.0.0.1:6443\n"), "{kc}");
        assert!(kc.contains("current-context: bench\n"));
    }

    #[test]
    fn sync_delay_uses_the_line_timestamp() {
        let s = |at| super::super::agent::Sync {
            ops: 1,
            frontends: 1,
            took_ms: 0.1,
            at_unix: at,
        };
        assert!((sync_delay(100.0, &s(Some(100.25))).unwrap() - 0.25).abs() < 1e-9);
        assert_eq!(sync_delay(100.0, &s(Some(99.0))).unwrap(), 0.0);
        assert!(sync_delay(100.0, &s(None)).is_err());
    }
}
