//! `cargo xtask bench`: Skiff against kube-proxy's iptables and nftables rule sets, in netns testbeds.
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

mod agent;
mod apiserver;
mod bpfstats;
mod hash;
mod iptables;
mod model;
mod netns;
mod nftables;
mod report;
mod results;
mod runner;
mod sh;
mod stats;
mod targets;
mod variants;
mod via_apiserver;
mod worker;

use variants::Variant;

/// Options of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Smaller service counts and fewer rounds (CI smoke run, under 5 minutes).
    #[arg(long)]
    pub quick: bool,
    /// Output directory (default: bench/results/<unix time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only these variants (comma separated: direct,iptables-nft,iptables-legacy,nftables,skiff-socket,skiff-tc,
    /// skiff-xdp).
    #[arg(long, value_delimiter = ',')]
    pub variants: Vec<String>,
    /// skiff-agent binary (default: target/release or target/debug of this workspace).
    #[arg(long)]
    pub agent: Option<PathBuf>,
    /// Override the service counts of the sweep (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub sizes: Vec<usize>,
    /// Only these scenarios (comma separated: conn_rate,throughput,udp_nodeport,control_plane; default all).
    /// Programming with its control-plane and footprint figures always runs (`control_plane` alone: only that).
    #[arg(long, value_delimiter = ',')]
    pub scenarios: Vec<String>,
    /// Keep the testbeds for this many seconds after programming (debugging).
    #[arg(long, hide = true, default_value_t = 0)]
    pub hold: u64,
    /// Internal: run a load-generator or server job (JSON) in this process.
    #[arg(long, hide = true)]
    pub worker: Option<String>,
    #[command(subcommand)]
    pub suite: Option<Suite>,
}

/// Benchmarks other than the dataplane one (which runs when no suite is named).
#[derive(clap::Subcommand, Debug)]
pub enum Suite {
    /// skiff-control: creates/s, list latency, watch fan-out and scheduling rate, embedded store vs etcd.
    Apiserver(apiserver::ApiserverArgs),
}

pub fn run(args: BenchArgs) -> Result<()> {
    if let Some(Suite::Apiserver(api)) = args.suite {
        return apiserver::run(api);
    }
    if let Some(job) = &args.worker {
        return worker::main(job);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("cargo xtask bench builds network namespaces and must run as root");
    }
    for tool in [
        "ip",
        "iptables-nft-restore",
        "iptables-legacy-restore",
        "nft",
        "conntrack",
        "ethtool",
        "iperf3",
    ] {
        sh::run("sh", &["-c", &format!("command -v {tool}")])
            .with_context(|| format!("`{tool}` is missing: run `cargo xtask setup`"))?;
    }
    let variants: Vec<Variant> = if args.variants.is_empty() {
        Variant::ALL.to_vec()
    } else {
        let mut v = Vec::new();
        for name in &args.variants {
            match Variant::ALL.iter().find(|x| x.name() == name) {
                Some(x) => v.push(*x),
                None => bail!("unknown variant {name:?}"),
            }
        }
        v
    };
    if !variants.contains(&Variant::Direct) || !variants.contains(&Variant::IptablesNft) {
        eprintln!("bench: ratios need the direct and iptables-nft variants; they will be missing");
    }
    // Runs share the `skb-` names and sweep each other's namespaces: one at a time on this machine.
    let _lock = lock()?;
    let out = runner::out_dir(args.out.clone());
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let out = out.canonicalize()?;
    runner::sweep()?;
    let mut plan = runner::plan(args.quick, variants);
    if !args.sizes.is_empty() {
        plan.sizes = args.sizes.clone();
        (plan.apiserver_sizes, plan.apiserver_skipped) = runner::apiserver_sizes(args.quick, &plan.sizes);
    }
    for s in &args.scenarios {
        if !["conn_rate", "throughput", "udp_nodeport", "control_plane"].contains(&s.as_str()) {
            bail!("unknown scenario {s:?} (conn_rate, throughput, udp_nodeport, control_plane)");
        }
    }
    plan.scenarios = args.scenarios.clone();
    plan.hold = std::time::Duration::from_secs(args.hold);
    eprintln!("bench: {plan:?}\nbench: writing to {}", out.display());
    let agent = variants::AgentConfig {
        bin: variants::find_agent(args.agent.clone()),
        workdir: out.clone(),
    };
    let started = std::time::Instant::now();
    sh::catch_interrupts();
    let cfg = runner::RunConfig { plan, agent };
    let col = runner::run(&cfg);
    runner::sweep()?;
    let col = col?;
    let records = col.records();
    let mut command = format!("cargo xtask bench{}", if args.quick { " --quick" } else { "" });
    if !args.variants.is_empty() {
        command.push_str(&format!(" --variants {}", args.variants.join(",")));
    }
    if !args.sizes.is_empty() {
        let s: Vec<String> = args.sizes.iter().map(|n| n.to_string()).collect();
        command.push_str(&format!(" --sizes {}", s.join(",")));
    }
    if !args.scenarios.is_empty() {
        command.push_str(&format!(" --scenarios {}", args.scenarios.join(",")));
    }
    let machine = machine();
    let targets = targets::check(&records);
    let json = serde_json::json!({
        "command": command, "machine": machine, "duration_s": started.elapsed().as_secs(),
        "records": records, "failures": col.failures, "not_measured": col.not_measured,
        "targets": targets,
    });
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(&json)?)?;
    let header = format!(
        "Command: `{command}`  \nMachine: {machine}  \nDuration: {} s\n\n## Targets\n\n{}{}",
        started.elapsed().as_secs(),
        targets::markdown(&targets),
        results::not_measured_markdown(&col.not_measured)
    );
    std::fs::write(
        out.join("report.md"),
        report::markdown(&records, &col.failures, &header),
    )?;
    for (scen, metric, ratio, file, title) in [
        (
            "conn_rate",
            "conn_per_s",
            true,
            "conn_rate_ratio.svg",
            "New connections/s relative to direct",
        ),
        (
            "conn_rate",
            "connect_p99",
            false,
            "connect_p99.svg",
            "connect() p99 latency (us)",
        ),
        (
            "control_plane",
            "program_full",
            false,
            "program_time.svg",
            "Programming N services from scratch (ms)",
        ),
        (
            "control_plane",
            "endpoint_change",
            false,
            "endpoint_change.svg",
            "One endpoint change at N (ms)",
        ),
        (
            "control_plane",
            "endpoint_change_apiserver_from_request",
            false,
            "endpoint_change_apiserver.svg",
            "One endpoint change through the apiserver at N: PATCH sent to agent sync (ms)",
        ),
    ] {
        report::plot_vs_n(&records, scen, metric, ratio, &out.join(file), title)
            .with_context(|| format!("plotting {file}"))?;
    }
    eprintln!(
        "bench: done in {} s: {} figures, {} failures -> {}",
        started.elapsed().as_secs(),
        records.len(),
        col.failures.len(),
        out.join("report.md").display()
    );
    // The quick run is the CI smoke test: every variant must have worked in every scenario it takes part in (a
    // single failed trial among good ones is reported, not fatal).
    let fatal = results::fatal_failures(&records, &col.failures);
    if args.quick && !fatal.is_empty() {
        bail!(
            "{} variant/scenario pairs failed (see the Failures table of {}): {}",
            fatal.len(),
            out.join("report.md").display(),
            fatal
                .iter()
                .map(|f| format!("{} in {}", f.variant, f.scenario))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

const LOCK_FILE: &str = "/run/skiff-bench.lock";

/// Takes the machine-wide bench lock (released by the kernel when the process ends).
fn lock() -> Result<std::fs::File> {
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .with_context(|| format!("opening {LOCK_FILE}"))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another `cargo xtask bench` is running on this machine (it holds {LOCK_FILE}); wait for it to finish"
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {LOCK_FILE}")),
    }
}

fn machine() -> String {
    let kernel = sh::run("uname", &["-r"]).unwrap_or_default();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    format!("kernel {}, {cpus} CPUs ({model})", kernel.trim())
}
