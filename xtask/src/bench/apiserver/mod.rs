//! `cargo xtask bench apiserver`: skiff-control's create rate, list latency, watch fan-out and scheduling rate,
//! per store backend (embedded, etcd).
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::results::Collector;
use super::sh;
use crate::progress::{Outcome, Progress};

pub(super) mod creates;
mod fanout;
pub(super) mod fixtures;
pub(super) mod http;
mod latency;
mod lists;
pub(super) mod procs;
mod report;
mod rounds;
mod schedule;

use rounds::{PhaseError, StoreBench};

/// Options of `cargo xtask bench apiserver`.
#[derive(clap::Args, Debug)]
pub struct ApiserverArgs {
    /// 1000 objects, one round, 100 watch updates (about a minute once skiff-control is built).
    #[arg(long)]
    pub quick: bool,
    /// Output directory (default: bench/results/apiserver-<unix time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Store backends to measure, comma separated: embedded, etcd (etcd needs Debian's etcd-server).
    #[arg(long, value_delimiter = ',', default_value = "embedded,etcd")]
    pub store: Vec<String>,
    /// Concurrent clients (one connection each) for the creates.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// ConfigMaps and Pods to create, and pods to list (default 10000; 1000 with --quick).
    #[arg(long)]
    pub objects: Option<usize>,
    /// Rounds per backend, each on a fresh server and store (default 3; 1 with --quick).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Use this skiff-control binary instead of building one (`cargo build --release -p control`).
    #[arg(long)]
    pub control: Option<PathBuf>,
}

/// The sizes of one run.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub objects: usize,
    pub rounds: usize,
    pub concurrency: usize,
    /// Lists of each form per round.
    pub list_samples: usize,
    pub watchers: usize,
    pub updates: usize,
    pub nodes: usize,
    pub sched_pods: usize,
}

impl Plan {
    pub fn new(args: &ApiserverArgs) -> Plan {
        let quick = args.quick;
        Plan {
            objects: args.objects.unwrap_or(if quick { 1000 } else { 10_000 }),
            rounds: args.rounds.unwrap_or(if quick { 1 } else { 3 }).max(1),
            concurrency: args.concurrency.max(1),
            list_samples: if quick { 5 } else { 20 },
            watchers: 100,
            updates: if quick { 100 } else { 1000 },
            nodes: 100,
            sched_pods: 1000,
        }
    }

    /// Progress steps: the build, etcd's start, and five per round and backend.
    fn steps(&self, stores: &[Store]) -> usize {
        1 + stores
            .iter()
            .map(|s| usize::from(*s == Store::Etcd) + 5 * self.rounds)
            .sum::<usize>()
    }
}

/// A store backend of skiff-control.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    Embedded,
    Etcd,
}

impl Store {
    pub fn parse(name: &str) -> Result<Store> {
        match name {
            "embedded" => Ok(Store::Embedded),
            "etcd" => Ok(Store::Etcd),
            other => bail!("unknown store {other:?}; use embedded, etcd or both (comma separated)"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Store::Embedded => "embedded",
            Store::Etcd => "etcd",
        }
    }
}

pub fn run(args: ApiserverArgs) -> Result<()> {
    let plan = Plan::new(&args);
    let mut stores = Vec::new();
    for s in &args.store {
        let s = Store::parse(s)?;
        if !stores.contains(&s) {
            stores.push(s);
        }
    }
    if stores.is_empty() {
        bail!("--store names no backend");
    }
    let out = args.out.clone().unwrap_or_else(|| {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../bench/results")
            .join(format!("apiserver-{ts}"))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let out = out.canonicalize()?;
    let logs = out.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    eprintln!(
        "bench apiserver: {plan:?}\nbench apiserver: writing to {}",
        out.display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    sh::catch_interrupts();
    let started = Instant::now();
    let mut progress = Progress::new(plan.steps(&stores));
    let mut bin = args.control.clone();
    progress.run("build skiff-control (release)", |step| match &bin {
        Some(b) if b.exists() => Ok(Outcome::Ready(format!("using {}", b.display()))),
        Some(b) => bail!("--control {} does not exist", b.display()),
        None => {
            step.say("cargo build --release -p control (several minutes the first time)");
            bin = Some(procs::build_control()?);
            Ok(Outcome::Done)
        }
    })?;
    let bin = bin.context("no skiff-control binary")?;
    let controllers = procs::controller_names(&bin)?;
    if !controllers.iter().any(|c| c == "scheduler") {
        bail!(
            "{} has no scheduler to measure (--disable-controller values: {controllers:?})",
            bin.display()
        );
    }
    let mut col = Collector::default();
    for store in &stores {
        if sh::check_interrupted().is_err() {
            col.fail("setup", store.name(), "interrupted before this backend started");
            continue;
        }
        let mut bench = StoreBench {
            rt: &rt,
            bin: &bin,
            controllers: &controllers,
            store: *store,
            plan: &plan,
            col: &mut col,
            progress: &mut progress,
            logs: &logs,
            etcd: None,
        };
        let result = bench.run();
        // Stops this backend's etcd.
        drop(bench);
        if let Err(e) = result {
            // The step's error already named the scenario; the rest of this backend is skipped.
            let scenario = e.downcast_ref::<PhaseError>().map_or("setup", |p| p.0);
            col.fail(scenario, store.name(), &e);
        }
    }
    remove_empty_logs(&logs);
    let records = col.records();
    let mut command = format!(
        "cargo xtask bench apiserver{}",
        if args.quick { " --quick" } else { "" }
    );
    let names: Vec<&str> = stores.iter().map(|s| s.name()).collect();
    command.push_str(&format!(" --store {}", names.join(",")));
    for (flag, v) in [("--objects", args.objects), ("--rounds", args.rounds)] {
        if let Some(v) = v {
            command.push_str(&format!(" {flag} {v}"));
        }
    }
    if args.concurrency != 16 {
        command.push_str(&format!(" --concurrency {}", args.concurrency));
    }
    let machine = super::machine();
    let duration = started.elapsed().as_secs();
    let json = serde_json::json!({
        "command": command, "machine": machine, "duration_s": duration, "plan": plan,
        "records": records, "failures": col.failures,
    });
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(&json)?)?;
    let header = format!(
        "Command: `{command}`  \nMachine: {machine}  \nDuration: {duration} s  \nPlan: {} objects, {} round(s), \
         {} concurrent clients, {} lists of each form per round, {} watchers x {} updates, {} pods on {} nodes.  \n\
         Values are medians over the rounds; in parentheses the spread, (max - min) / median.",
        plan.objects,
        plan.rounds,
        plan.concurrency,
        plan.list_samples,
        plan.watchers,
        plan.updates,
        plan.sched_pods,
        plan.nodes
    );
    std::fs::write(
        out.join("report.md"),
        report::markdown(&records, &col.failures, &header),
    )?;
    eprintln!(
        "bench apiserver: done in {duration} s: {} figures, {} failures -> {}",
        records.len(),
        col.failures.len(),
        out.join("report.md").display()
    );
    if !col.failures.is_empty() {
        bail!(
            "{} failure(s) (see the Failures table of {})",
            col.failures.len(),
            out.join("report.md").display()
        );
    }
    Ok(())
}

/// Deletes the logs that stayed empty (servers log warnings only), and the directory if nothing is left.
fn remove_empty_logs(dir: &std::path::Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.metadata().is_ok_and(|m| m.is_file() && m.len() == 0) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    // Fails (and keeps the directory) when a log is left.
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(quick: bool) -> ApiserverArgs {
        ApiserverArgs {
            quick,
            out: None,
            store: vec!["embedded".into(), "etcd".into()],
            concurrency: 16,
            objects: None,
            rounds: None,
            control: None,
        }
    }

    #[test]
    fn quick_and_full_plans() {
        let full = Plan::new(&args(false));
        assert_eq!(
            (
                full.objects,
                full.rounds,
                full.updates,
                full.sched_pods,
                full.nodes
            ),
            (10_000, 3, 1000, 1000, 100)
        );
        let quick = Plan::new(&args(true));
        assert_eq!((quick.objects, quick.rounds, quick.updates), (1000, 1, 100));
        assert_eq!(quick.steps(&[Store::Embedded, Store::Etcd]), 1 + 5 + 1 + 5);
        assert_eq!(full.steps(&[Store::Etcd]), 1 + 1 + 15);
    }

    #[test]
    fn the_scheduler_phase_keeps_only_the_scheduler() {
        let all: Vec<String> = ["endpointslice", "scheduler", "nodelifecycle"]
            .map(String::from)
            .to_vec();
        assert_eq!(rounds::disabled(&all, false), all);
        assert_eq!(rounds::disabled(&all, true), ["endpointslice", "nodelifecycle"]);
    }

    #[test]
    fn stores_by_name() {
        assert_eq!(Store::parse("etcd").unwrap(), Store::Etcd);
        assert_eq!(Store::Embedded.name(), "embedded");
        assert!(Store::parse("sqlite").is_err());
    }
}
