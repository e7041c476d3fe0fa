//! One store backend's rounds: a fresh server per round, then creates, lists, watch fan-out, scheduler.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::super::results::Collector;
use super::super::sh;
use super::procs::{Control, ControlSpec, Etcd};
use super::{Plan, Store, creates, fanout, fixtures, http, latency, lists, schedule};
use crate::progress::{Outcome, Progress, seconds};

/// The controllers to turn off: all of them for the API phases (nothing but the measured clients writes), all but
/// the scheduler for the scheduler phase (only it acts on the pods; no node lifecycle controller marks the fake
/// nodes NotReady for lack of heartbeats).
pub fn disabled(all: &[String], keep_scheduler: bool) -> Vec<String> {
    all.iter()
        .filter(|n| !(keep_scheduler && *n == "scheduler"))
        .cloned()
        .collect()
}

/// An error of one scenario (the name goes into the Failures table).
#[derive(Debug)]
pub struct PhaseError(pub &'static str, String);

impl std::fmt::Display for PhaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for PhaseError {}

/// Every round of one store backend.
pub struct StoreBench<'a> {
    pub rt: &'a tokio::runtime::Runtime,
    pub bin: &'a std::path::Path,
    pub controllers: &'a [String],
    pub store: Store,
    pub plan: &'a Plan,
    pub col: &'a mut Collector,
    pub progress: &'a mut Progress,
    /// Directory of the servers' logs.
    pub logs: &'a std::path::Path,
    /// The etcd of the `etcd` backend, started by [`StoreBench::run`].
    pub etcd: Option<Etcd>,
}

impl StoreBench<'_> {
    pub fn run(&mut self) -> Result<()> {
        if self.store == Store::Etcd {
            let (rt, log) = (self.rt, self.logs.join("etcd.log"));
            let mut started = None;
            self.step("setup", "etcd: start etcd", |_| {
                started = Some(Etcd::start(rt, &log)?);
                Ok(Outcome::Done)
            })?;
            self.etcd = started;
        }
        let endpoint = self.etcd.as_ref().map(|e| e.endpoint.clone());
        for round in 0..self.plan.rounds {
            self.round(round, endpoint.as_deref())?;
        }
        Ok(())
    }

    /// Runs one progress step; a failure is tagged with `scenario`.
    fn step(
        &mut self,
        scenario: &'static str,
        label: &str,
        f: impl FnOnce(&mut Collector) -> Result<Outcome>,
    ) -> Result<()> {
        sh::check_interrupted()?;
        let col = &mut *self.col;
        self.progress
            .run(label, |_| f(col))
            .map_err(|e| anyhow::Error::new(PhaseError(scenario, format!("{e:#}"))))
    }

    /// Like [`StoreBench::step`], but a failure is recorded and the round goes on; returns whether it worked.
    fn phase(
        &mut self,
        scenario: &'static str,
        label: &str,
        f: impl FnOnce(&mut Collector) -> Result<Outcome>,
    ) -> Result<bool> {
        match self.step(scenario, label, f) {
            Ok(()) => Ok(true),
            Err(e) => {
                sh::check_interrupted()?;
                let e = match self.etcd.as_mut().map(Etcd::check_alive) {
                    Some(Err(dead)) => anyhow::anyhow!("{e:#} ({dead:#})"),
                    _ => e,
                };
                self.col.fail(scenario, self.store.name(), &e);
                Ok(false)
            }
        }
    }

    fn round(&mut self, round: usize, etcd: Option<&str>) -> Result<()> {
        let (rt, plan, store) = (self.rt, self.plan.clone(), self.store.name());
        let n = plan.objects;
        let label = |what: &str| format!("{store} round {}/{}: {what}", round + 1, plan.rounds);
        let prefix = format!("/skiff-bench-{}-api{round}", std::process::id());
        let (api_only, scheduler_only) = (
            disabled(self.controllers, false),
            disabled(self.controllers, true),
        );
        let spec = ControlSpec {
            bin: self.bin,
            etcd: etcd.map(|e| (e, prefix.as_str())),
            disable: &api_only,
            tag: store,
            log: self.logs.join(format!("control-{store}-r{}-api.log", round + 1)),
        };
        let mut server: Option<Control> = None;
        self.step("setup", &label("start skiff-control"), |col| {
            let mut s = Control::start(rt, &spec)?;
            Figures { col, store }.add("footprint", n, "rss_after_start", "MiB", s.rss_mib()?);
            server = Some(s);
            Ok(Outcome::Done)
        })?;
        let mut server = server.context("no server")?;
        let what = format!("create {n} ConfigMaps and {n} Pods");
        let created = self.phase("creates", &label(&what), |col| {
            creates_step(rt, &mut server, Figures { col, store }, &plan)
        })?;
        if created {
            let what = format!("{} lists of each form over {n} pods", plan.list_samples);
            self.phase("list", &label(&what), |col| {
                lists_step(rt, &mut server, Figures { col, store }, &plan)
            })?;
        }
        let what = format!("{} watchers x {} updates", plan.watchers, plan.updates);
        self.phase("watch_fanout", &label(&what), |col| {
            fanout_step(rt, &mut server, Figures { col, store }, &plan)
        })?;
        drop(server);
        let prefix = format!("/skiff-bench-{}-sched{round}", std::process::id());
        let spec = ControlSpec {
            etcd: etcd.map(|e| (e, prefix.as_str())),
            disable: &scheduler_only,
            log: self
                .logs
                .join(format!("control-{store}-r{}-scheduler.log", round + 1)),
            ..spec
        };
        let what = format!("schedule {} pods on {} nodes", plan.sched_pods, plan.nodes);
        self.phase("scheduler", &label(&what), |col| {
            scheduler_step(rt, &spec, Figures { col, store }, &plan)
        })?;
        Ok(())
    }
}

/// Adds one backend's figures to the collector.
struct Figures<'a> {
    col: &'a mut Collector,
    store: &'a str,
}

impl Figures<'_> {
    fn add(&mut self, scenario: &str, n: usize, metric: &str, unit: &str, value: f64) {
        self.col.add(scenario, self.store, n, None, metric, unit, value);
    }

    fn fail(&mut self, scenario: &str, error: impl std::fmt::Display) {
        self.col.fail(scenario, self.store, error);
    }
}

/// Creates the `bench` namespace, then N ConfigMaps and N Pods in it.
fn creates_step(
    rt: &tokio::runtime::Runtime,
    server: &mut Control,
    mut fig: Figures<'_>,
    plan: &Plan,
) -> Result<Outcome> {
    let (t, n, addr) = (Instant::now(), plan.objects, server.addr);
    let mut text = Vec::new();
    rt.block_on(async {
        create_namespace(addr, "bench").await?;
        let kinds: [(&str, creates::MakeObject); 2] = [
            (
                "configmap",
                Arc::new(|i| {
                    (
                        "/api/v1/namespaces/bench/configmaps".to_owned(),
                        fixtures::config_map(i),
                    )
                }),
            ),
            (
                "pod",
                Arc::new(|i| ("/api/v1/namespaces/bench/pods".to_owned(), fixtures::pod(i))),
            ),
        ];
        for (kind, make) in kinds {
            let timed = creates::create_all(addr, n, plan.concurrency, make).await?;
            let rate = latency::rate(n, timed.elapsed);
            let s = latency::summarize(&timed.latencies).context("no creates")?;
            fig.add("creates", n, &format!("{kind}_creates_per_s"), "1/s", rate);
            fig.add("creates", n, &format!("{kind}_create_p50"), "ms", s.p50);
            fig.add("creates", n, &format!("{kind}_create_p99"), "ms", s.p99);
            text.push(format!("{kind}s {rate:.0}/s (p99 {:.1} ms)", s.p99));
        }
        anyhow::Ok(())
    })?;
    server.check_alive()?;
    fig.add("footprint", n, "rss_after_creates", "MiB", server.rss_mib()?);
    Ok(Outcome::Ready(format!(
        "{} ({})",
        text.join(", "),
        seconds(t.elapsed())
    )))
}

/// Every list form over the `bench` namespace; a failed form is recorded and the others still count.
fn lists_step(
    rt: &tokio::runtime::Runtime,
    server: &mut Control,
    mut fig: Figures<'_>,
    plan: &Plan,
) -> Result<Outcome> {
    let (t, n) = (Instant::now(), plan.objects);
    let forms = rt.block_on(lists::measure(server.addr, "bench", n, plan.list_samples))?;
    let mut text = Vec::new();
    for r in forms {
        let short = r.form.trim_start_matches("list_");
        if let Some(e) = r.error {
            fig.fail("list", format!("{}: {e:#}", r.form));
            text.push(format!("{short} FAILED"));
            continue;
        }
        let s = latency::summarize(&r.samples).context("no list samples")?;
        fig.add("list", n, &format!("{}_p50", r.form), "ms", s.p50);
        fig.add("list", n, &format!("{}_p99", r.form), "ms", s.p99);
        text.push(format!("{short} p50 {:.1} ms", s.p50));
    }
    fig.add("footprint", n, "rss_after_lists", "MiB", server.rss_mib()?);
    Ok(Outcome::Ready(format!(
        "{} ({})",
        text.join(", "),
        seconds(t.elapsed())
    )))
}

/// The watch fan-out in the `bench-watch` namespace; fails when an event was lost.
fn fanout_step(
    rt: &tokio::runtime::Runtime,
    server: &mut Control,
    mut fig: Figures<'_>,
    plan: &Plan,
) -> Result<Outcome> {
    let (t, addr, w) = (Instant::now(), server.addr, plan.watchers);
    let f = rt.block_on(async {
        create_namespace(addr, "bench-watch").await?;
        fanout::measure(addr, "bench-watch", w, plan.updates).await
    })?;
    fig.add(
        "watch_fanout",
        w,
        "events_delivered",
        "events",
        f.delivered as f64,
    );
    fig.add("watch_fanout", w, "events_expected", "events", f.expected as f64);
    let s = latency::summarize(&f.latencies).context("no update reached every watcher")?;
    fig.add("watch_fanout", w, "fanout_p50", "ms", s.p50);
    fig.add("watch_fanout", w, "fanout_p99", "ms", s.p99);
    fig.add("watch_fanout", w, "fanout_max", "ms", s.max);
    fig.add(
        "footprint",
        plan.objects,
        "rss_after_watch",
        "MiB",
        server.rss_mib()?,
    );
    if f.delivered != f.expected {
        bail!(
            "{} watch events delivered, expected {} ({w} watchers x {} updates)",
            f.delivered,
            f.expected,
            plan.updates
        );
    }
    Ok(Outcome::Ready(format!(
        "p50 {:.2} ms, p99 {:.2} ms, {} events ({})",
        s.p50,
        s.p99,
        f.delivered,
        seconds(t.elapsed())
    )))
}

/// A server of its own with only the scheduler on: fake nodes, then the burst of unbound pods.
fn scheduler_step(
    rt: &tokio::runtime::Runtime,
    spec: &ControlSpec<'_>,
    mut fig: Figures<'_>,
    plan: &Plan,
) -> Result<Outcome> {
    let mut server = Control::start(rt, spec)?;
    let addr = server.addr;
    let s = rt.block_on(async {
        create_namespace(addr, "bench-sched").await?;
        schedule::create_nodes(addr, plan.nodes).await?;
        schedule::measure(addr, "bench-sched", plan.sched_pods, plan.concurrency).await
    })?;
    let rate = latency::rate(s.pods, s.elapsed);
    fig.add("scheduler", s.pods, "pods_bound_per_s", "1/s", rate);
    fig.add(
        "scheduler",
        s.pods,
        "time_to_bind_all",
        "s",
        s.elapsed.as_secs_f64(),
    );
    fig.add(
        "scheduler",
        s.pods,
        "creates_per_s",
        "1/s",
        latency::rate(s.pods, s.create_elapsed),
    );
    fig.add(
        "footprint",
        plan.objects,
        "rss_after_schedule",
        "MiB",
        server.rss_mib()?,
    );
    Ok(Outcome::Ready(format!(
        "{rate:.0} pods bound/s, all in {}",
        seconds(s.elapsed)
    )))
}

async fn create_namespace(addr: SocketAddr, name: &str) -> Result<()> {
    http::Conn::connect(addr)
        .await?
        .create("/api/v1/namespaces", &fixtures::namespace(name))
        .await
}
