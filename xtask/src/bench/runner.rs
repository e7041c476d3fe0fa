//! The benchmark run: testbeds per variant, shuffled rounds per scenario, results collected.
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::seq::SliceRandom;

use super::bpfstats;
use super::model::{ClusterConfig, Endpoint, Placement, Proto, ServicePort, SetSpec, synthetic_set};
use super::netns::{self, addr, ifname};
use super::results::Collector;
use super::sh;
use super::variants::{AgentConfig, Installed, Variant};
use super::worker::{CrrResult, Job, Worker};

pub const TCP_PORT: u16 = 8080;
pub const UDP_PORT: u16 = 9000;
pub const NODE_PORT: u16 = 30080;
pub const IPERF_PORT: u16 = 5201;
const ENDPOINTS: usize = 10;

/// Sizes and durations of one run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub sizes: Vec<usize>,
    pub placements: Vec<Placement>,
    pub rounds: usize,
    pub trial: Duration,
    pub clients: usize,
    pub throughput_rounds: usize,
    pub variants: Vec<Variant>,
    /// Pause after programming (debugging aid; zero in normal runs).
    pub hold: Duration,
    /// Time limit of programming one size; a variant whose next size would not fit it (by linear extrapolation)
    /// is not programmed with larger sizes.
    pub program_budget: Duration,
    /// Endpoint changes per N (their median is reported).
    pub change_reps: usize,
    /// Only these scenarios (empty: all). Programming and its figures (control_plane, footprint) always run.
    pub scenarios: Vec<String>,
    /// Sizes of the skiff-socket figures through the apiserver (skiff-control + agent with --kubeconfig).
    pub apiserver_sizes: Vec<usize>,
    /// Sizes of the sweep too large for the apiserver figures (reported as not measured).
    pub apiserver_skipped: Vec<usize>,
}

impl Plan {
    /// Whether scenario `name` runs (`throughput` selects both long-flow scenarios).
    pub fn runs(&self, name: &str) -> bool {
        self.scenarios.is_empty() || self.scenarios.iter().any(|s| s == name)
    }
}

/// Progress lines with an ETA.
pub struct Progress {
    start: Instant,
    done: usize,
    total: usize,
}

impl Progress {
    pub fn new(total: usize) -> Self {
        Progress {
            start: Instant::now(),
            done: 0,
            total: total.max(1),
        }
    }

    pub fn step(&mut self, what: &str) {
        self.done += 1;
        let el = self.start.elapsed().as_secs_f64();
        let eta = el / self.done as f64 * (self.total.saturating_sub(self.done)) as f64;
        eprintln!(
            "[{:>3}/{}] {what} (elapsed {el:.0}s, eta {eta:.0}s)",
            self.done, self.total
        );
    }
}

fn cluster() -> ClusterConfig {
    ClusterConfig {
        cluster_cidr: addr::CLUSTER_CIDR.into(),
        service_cidr: addr::SERVICE_CIDR.into(),
        node_ips: vec![addr::NODE_UPLINK],
    }
}

/// The fixed services (iperf, UDP NodePort) plus N synthetic ones, and the measured services: one placed first,
/// one in the middle and one last of the synthetic set (one rule set serves all three placements; they have the
/// same endpoints). Returns (services, [(placement, index)]).
fn service_set(n: usize) -> (Vec<ServicePort>, Vec<(Placement, usize)>) {
    let backends: Vec<Ipv4Addr> = (0..ENDPOINTS).map(addr::backend).collect();
    let one = |name: &str, vip: [u8; 4], proto, port, node_port| ServicePort {
        namespace: "bench".into(),
        name: name.into(),
        port_name: "p".into(),
        proto,
        cluster_ip: vip.into(),
        port,
        target_port: port,
        node_port,
        endpoints: vec![Endpoint {
            ip: addr::backend(0),
            port,
        }],
    };
    let mut svcs = vec![
        one("iperf", [10, 96, 0, 2], Proto::Tcp, IPERF_PORT, None),
        one("udp-sink", [10, 96, 0, 3], Proto::Udp, UDP_PORT, Some(NODE_PORT)),
    ];
    let spec = SetSpec {
        services: n,
        endpoints_per_service: ENDPOINTS,
        backends,
        target_port: TCP_PORT,
        placement: Placement::Last,
    };
    let (mut set, last) = synthetic_set(&spec);
    let mut targets = vec![(Placement::Last, last)];
    for (p, i) in [(Placement::First, 0), (Placement::Middle, n / 2)] {
        if targets.iter().all(|&(_, j)| j != i) {
            set[i].name = format!("svc-target-{}", format!("{p:?}").to_lowercase());
            targets.push((p, i));
        }
    }
    targets.sort_by_key(|&(p, _)| p as u8);
    svcs.extend(set);
    let targets = targets.into_iter().map(|(p, i)| (p, i + 2)).collect();
    (svcs, targets)
}

/// Where a variant's clients connect for the target service.
fn target_of(v: Variant, svcs: &[ServicePort], idx: usize) -> (Ipv4Addr, u16) {
    if v == Variant::Direct {
        (addr::backend(0), TCP_PORT)
    } else {
        (svcs[idx].cluster_ip, svcs[idx].port)
    }
}

/// Runs a connection-rate trial from the client namespace of `inst`.
fn crr_trial(inst: &Installed, dst: (Ipv4Addr, u16), clients: usize, dur: Duration) -> Result<CrrResult> {
    let job = Job::Crr {
        dst: dst.0,
        port: dst.1,
        clients,
        millis: dur.as_millis() as u64,
    };
    let mut w = Worker::spawn(&inst.tb.client, &job)?;
    if let Some(cg) = &inst.cgroup {
        std::fs::write(cg.join("cgroup.procs"), w.pid().to_string())
            .context("moving the client into the cgroup")?;
    }
    w.send("go")?;
    let line = w.read_line(dur + Duration::from_secs(15))?;
    let v: serde_json::Value = serde_json::from_str(&line).with_context(|| format!("crr output {line:?}"))?;
    // Without a completed connection the percentiles are null: report that, not a parse error.
    if v["completed"].as_u64() == Some(0) {
        bail!(
            "no connection completed in {:.1} s ({} errors: connect or read timed out or failed)",
            v["secs"].as_f64().unwrap_or(0.0),
            v["errors"]
        );
    }
    serde_json::from_value(v).with_context(|| format!("crr output {line:?}"))
}

/// Busy CPU time of the whole machine (jiffies of user+nice+system+irq+softirq+steal) in seconds.
fn cpu_busy_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if f.len() < 8 {
        return f64::NAN;
    }
    (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / 100.0
}

/// Servers of one testbed (the tcp server worker is killed by its own Drop).
struct Servers(
    #[allow(dead_code, reason = "held for its Drop")] Vec<Worker>,
    Vec<Child>,
);

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.1 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_servers(inst: &Installed) -> Result<Servers> {
    let mut w = Worker::spawn(
        &inst.tb.backend,
        &Job::TcpServer {
            port: TCP_PORT,
            threads: 8,
        },
    )?;
    let ready = w.read_line(Duration::from_secs(10))?;
    if ready != "ready" {
        bail!("tcp server said {ready:?}");
    }
    let iperf = sh::command("ip")
        .args([
            "netns",
            "exec",
            &inst.tb.backend,
            "iperf3",
            "-s",
            "-p",
            &IPERF_PORT.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 -s")?;
    Ok(Servers(vec![w], vec![iperf]))
}

/// Everything the run needs from the command line.
pub struct RunConfig {
    pub plan: Plan,
    pub agent: AgentConfig,
}

/// Runs the whole benchmark and returns the collected samples.
pub fn run(cfg: &RunConfig) -> Result<Collector> {
    let plan = &cfg.plan;
    let mut col = Collector::default();
    let cl = cluster();
    let mut installed = Vec::new();
    for &v in &plan.variants {
        eprintln!("bench: building the {} testbed", v.name());
        match Installed::new(v, ENDPOINTS, &cfg.agent) {
            Ok(i) => installed.push(i),
            Err(e) => col.fail("setup", v.name(), e),
        }
    }
    let mut servers = Vec::new();
    for inst in &installed {
        servers.push(start_servers(inst).with_context(|| format!("servers for {}", inst.variant.name()))?);
    }
    let placements = plan.placements.len();
    let steps = plan.sizes.len() * (1 + placements * plan.rounds) + 3 * plan.throughput_rounds;
    let mut prog = Progress::new(steps);
    let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::from_os_rng();
    let mut alive: Vec<bool> = vec![true; installed.len()];
    // (N, programming time) of each variant so far.
    let mut history: Vec<Vec<(usize, Duration)>> = vec![Vec::new(); installed.len()];
    for (si, &n) in plan.sizes.iter().enumerate() {
        let (svcs, targets) = service_set(n);
        for (i, inst) in installed.iter_mut().enumerate() {
            sh::check_interrupted()?;
            // skiff-xdp only serves the NodePort scenario, which runs at the first size.
            if !alive[i] || (!inst.variant.serves_cluster_ip() && si > 0) {
                continue;
            }
            let started = Instant::now();
            let took = match program_step(inst, &svcs, &targets, n, &cl, plan, &mut col) {
                Ok(took) => took,
                Err(e) => {
                    let reason = if started.elapsed() >= plan.program_budget {
                        format!(
                            "programming took > {:.0} s (the budget per size)",
                            plan.program_budget.as_secs_f64()
                        )
                    } else {
                        "programming failed (see Failures)".to_string()
                    };
                    col.fail("program", inst.variant.name(), e);
                    for &m in &plan.sizes[si..] {
                        col.not_measured(inst.variant.name(), m, &reason);
                    }
                    alive[i] = false;
                    continue;
                }
            };
            history[i].push((n, took));
            eprintln!(
                "bench: {} programmed at N={n} in {:.2} s (with checks and endpoint changes {:.1} s)",
                inst.variant.name(),
                took.as_secs_f64(),
                started.elapsed().as_secs_f64()
            );
            // The next size would not fit the budget (extrapolated with the growth seen so far, at least linear):
            // stop here rather than spend the run waiting on one variant.
            if let Some(&next) = plan.sizes.get(si + 1) {
                let estimate = estimate_program_time(&history[i], next);
                if estimate > plan.program_budget {
                    let reason = format!(
                        "programming N={n} took {:.1} s, so N={next} would take about {:.0} s (budget {:.0} s per \
                         size)",
                        took.as_secs_f64(),
                        estimate.as_secs_f64(),
                        plan.program_budget.as_secs_f64()
                    );
                    for &m in &plan.sizes[si + 1..] {
                        col.not_measured(inst.variant.name(), m, &reason);
                    }
                    // Still measured at this N below (it holds this rule set), not programmed with larger ones.
                    alive[i] = false;
                }
            }
        }
        prog.step(&format!("programmed N={n}"));
        std::thread::sleep(plan.hold);
        let conn_targets = targets
            .iter()
            .filter(|(p, _)| plan.runs("conn_rate") && plan.placements.contains(p));
        for &(placement, target) in conn_targets {
            let pl = format!("{placement:?}").to_lowercase();
            for round in 0..plan.rounds {
                let mut order: Vec<usize> = (0..installed.len())
                    .filter(|&i| installed[i].variant.serves_cluster_ip())
                    .filter(|&i| alive[i] || last_programmed_is(&installed[i], n))
                    .collect();
                order.shuffle(&mut rng);
                for i in order {
                    sh::check_interrupted()?;
                    let inst = &installed[i];
                    let v = inst.variant;
                    if let Err(e) = inst.tb.flush_conntrack() {
                        col.fail("conn_rate", v.name(), e);
                    }
                    match crr_trial(inst, target_of(v, &svcs, target), plan.clients, plan.trial) {
                        Ok(r) => {
                            let add = |c: &mut Collector, m: &str, u: &str, x: f64| {
                                c.add("conn_rate", v.name(), n, Some(&pl), m, u, x)
                            };
                            add(&mut col, "conn_per_s", "1/s", r.completed as f64 / r.secs);
                            add(&mut col, "connect_p50", "us", r.connect_us[0]);
                            add(&mut col, "connect_p99", "us", r.connect_us[1]);
                            add(&mut col, "connect_p999", "us", r.connect_us[2]);
                            add(&mut col, "txn_p99", "us", r.txn_us[1]);
                            add(&mut col, "errors", "count", r.errors as f64);
                        }
                        Err(e) => col.fail("conn_rate", v.name(), e),
                    }
                }
                prog.step(&format!(
                    "conn_rate N={n} target={pl} round {}/{}",
                    round + 1,
                    plan.rounds
                ));
            }
        }
        if si == 0 {
            sh::check_interrupted()?;
            if plan.runs("throughput") {
                long_flows(&installed, &alive, n, plan, &mut rng, &mut prog, &mut col);
            }
            sh::check_interrupted()?;
            // bpf_stats on only for this scenario (it costs every BPF program on the machine a little).
            if plan.runs("udp_nodeport") {
                match bpfstats::Enabled::new() {
                    Ok(_stats) => udp_nodeport(&installed, &alive, n, plan, &mut rng, &mut prog, &mut col),
                    Err(e) => col.fail("udp_nodeport", "skiff-xdp", e),
                }
            }
        }
    }
    drop(servers);
    drop(installed);
    // After the testbeds are gone: its own skiff-control, agent and testbed, so nothing else runs meanwhile.
    if plan.runs("control_plane") && plan.variants.contains(&Variant::SkiffSocket) {
        super::via_apiserver::run(plan, cfg.agent.bin.as_deref(), &cfg.agent.workdir, &mut col);
    }
    Ok(col)
}

/// Largest N measured through the apiserver (larger sizes are reported as not measured).
const APISERVER_MAX_N: usize = 10_000;

/// Sizes of the apiserver-driven figures for `sizes`: the smallest one in a quick run, else every one up to
/// [`APISERVER_MAX_N`]; the larger ones are returned second.
pub fn apiserver_sizes(quick: bool, sizes: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let mut sorted = sizes.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if quick {
        sorted.truncate(1);
        return (sorted, Vec::new());
    }
    sorted.into_iter().partition(|&n| n <= APISERVER_MAX_N)
}

/// Programming time at `next` extrapolated from the last two sizes: t * (next / n)^k with the growth exponent k
/// they show, between 1 (linear, also with one size only) and 2.
fn estimate_program_time(history: &[(usize, Duration)], next: usize) -> Duration {
    let Some(&(n, t)) = history.last() else {
        return Duration::ZERO;
    };
    let k = match history.len().checked_sub(2).map(|i| history[i]) {
        Some((n0, t0)) if n0 > 0 && n > n0 && !t0.is_zero() && !t.is_zero() => {
            (t.as_secs_f64() / t0.as_secs_f64()).ln() / (n as f64 / n0 as f64).ln()
        }
        _ => 1.0,
    };
    // Small sizes are dominated by fixed costs (growth looks flat): never assume better than linear.
    let k = if k.is_finite() { k.clamp(1.0, 2.0) } else { 1.0 };
    t.mul_f64((next as f64 / n.max(1) as f64).powf(k))
}

/// Whether `inst` holds the rule set of size `n` (the last one it was programmed with).
fn last_programmed_is(inst: &Installed, n: usize) -> bool {
    inst.programmed_n == Some(n)
}

/// Programs one variant with the set of size `n`, checks every measured service answers, and records the
/// control-plane and footprint figures; returns how long the programming itself took.
fn program_step(
    inst: &mut Installed,
    svcs: &[ServicePort],
    targets: &[(Placement, usize)],
    n: usize,
    cl: &ClusterConfig,
    plan: &Plan,
    col: &mut Collector,
) -> Result<Duration> {
    let v = inst.variant;
    inst.programmed_n = None;
    // The socket variant's programs hang off its cgroup: if something outside removed it, say so plainly.
    if let Some(cg) = &inst.cgroup
        && !cg.exists()
    {
        bail!(
            "cgroup {} vanished during the run (removed from outside the bench); its socket programs are gone",
            cg.display()
        );
    }
    let p = inst.program(svcs, cl, plan.program_budget)?;
    let add =
        |c: &mut Collector, scen: &str, m: &str, u: &str, x: f64| c.add(scen, v.name(), n, None, m, u, x);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    if v != Variant::Direct && v.serves_cluster_ip() {
        add(col, "control_plane", "program_full", "ms", ms(p.full));
        if let Some(m) = p.maps {
            add(col, "control_plane", "program_full_sync", "ms", ms(m));
        }
        if p.objects > 0 {
            let what = if v.is_skiff() {
                "frontends"
            } else {
                "rules_and_elements"
            };
            add(col, "footprint", what, "count", p.objects as f64);
        }
    }
    // Wait (bounded) until every measured service answers: proves the replica or the maps work.
    if v.serves_cluster_ip() {
        for &(_, target) in targets {
            let deadline = Instant::now() + Duration::from_secs(if v.is_skiff() { 30 } else { 10 });
            loop {
                inst.check_agent()?;
                match crr_trial(inst, target_of(v, svcs, target), 1, Duration::from_millis(100)) {
                    Ok(_) => break,
                    Err(e) if Instant::now() > deadline => {
                        return Err(e.context(format!("{} never answered", svcs[target].name)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        }
    }
    if v != Variant::Direct && v.serves_cluster_ip() {
        // Move an endpoint of a service that is not measured; a few repetitions for a median.
        let other = 2 + n / 4;
        let mut current = svcs.to_vec();
        for rep in 0..plan.change_reps {
            match inst.endpoint_change(&current, other, cl, rep) {
                Ok(c) => {
                    current = c.after.clone();
                    add(
                        col,
                        "control_plane",
                        "endpoint_change",
                        "ms",
                        ms(c.maps.unwrap_or(c.wall)),
                    );
                    if c.maps.is_some() {
                        add(col, "control_plane", "endpoint_change_e2e", "ms", ms(c.wall));
                    }
                }
                Err(e) => {
                    col.fail("control_plane", v.name(), e);
                    break;
                }
            }
        }
    }
    if let Some(agent) = &inst.agent
        && v.serves_cluster_ip()
    {
        if let Some(kib) = agent.rss_kib() {
            add(col, "footprint", "agent_rss", "MiB", kib as f64 / 1024.0);
        }
        match agent.map_memlock_bytes() {
            Ok(b) => add(
                col,
                "footprint",
                "bpf_map_memlock",
                "MiB",
                b as f64 / (1024.0 * 1024.0),
            ),
            Err(e) => col.fail("footprint", v.name(), e),
        }
    }
    inst.programmed_n = Some(n);
    Ok(p.full)
}

/// Long-flow TCP throughput through the fixed one-backend `iperf` service, with default offloads and without.
fn long_flows(
    installed: &[Installed],
    alive: &[bool],
    n: usize,
    plan: &Plan,
    rng: &mut rand::rngs::SmallRng,
    prog: &mut Progress,
    col: &mut Collector,
) {
    let (svcs, _) = service_set(n);
    for offload in [true, false] {
        let scen = if offload {
            "throughput_offload_on"
        } else {
            "throughput_offload_off"
        };
        for inst in installed {
            if let Err(e) = inst.tb.set_offloads(offload) {
                col.fail(scen, inst.variant.name(), e);
            }
        }
        for _ in 0..plan.throughput_rounds {
            let mut order: Vec<usize> = (0..installed.len())
                .filter(|&i| alive[i] && installed[i].variant.serves_cluster_ip())
                .collect();
            order.shuffle(rng);
            for i in order {
                let inst = &installed[i];
                let v = inst.variant;
                let dst = if v == Variant::Direct {
                    addr::backend(0)
                } else {
                    svcs[0].cluster_ip
                };
                let _ = inst.tb.flush_conntrack();
                match iperf(inst, dst, plan.trial.max(Duration::from_secs(2))) {
                    Ok((gbps, cpu_per_gb)) => {
                        col.add(scen, v.name(), n, None, "gbit_per_s", "Gbit/s", gbps);
                        col.add(scen, v.name(), n, None, "cpu_s_per_gb", "s/GB", cpu_per_gb);
                    }
                    Err(e) => col.fail(scen, v.name(), e),
                }
            }
            prog.step(&format!("{scen} round"));
        }
    }
    for inst in installed {
        let _ = inst.tb.set_offloads(true);
    }
}

/// UDP new-flow packet rate from the external namespace through the NodePort path.
fn udp_nodeport(
    installed: &[Installed],
    alive: &[bool],
    n: usize,
    plan: &Plan,
    rng: &mut rand::rngs::SmallRng,
    prog: &mut Progress,
    col: &mut Collector,
) {
    for _ in 0..plan.throughput_rounds {
        let mut order: Vec<usize> = (0..installed.len())
            .filter(|&i| alive[i] && installed[i].variant.serves_node_port())
            .collect();
        order.shuffle(rng);
        for i in order {
            let inst = &installed[i];
            let name = inst.variant.name();
            let _ = inst.tb.flush_conntrack();
            match udp_trial(inst, plan.trial) {
                Ok(u) => {
                    col.add("udp_nodeport", name, n, None, "delivered_pps", "1/s", u.pps);
                    col.add(
                        "udp_nodeport",
                        name,
                        n,
                        None,
                        "cpu_ns_per_pkt",
                        "ns",
                        u.cpu_ns_per_pkt,
                    );
                    col.add(
                        "udp_nodeport",
                        name,
                        n,
                        None,
                        "delivered_ratio",
                        "ratio",
                        u.delivered_ratio,
                    );
                    if let Some(x) = u.xdp_ns_per_pkt {
                        col.add("udp_nodeport", name, n, None, "xdp_ns_per_pkt", "ns", x);
                    }
                }
                Err(e) => col.fail("udp_nodeport", name, e),
            }
        }
        prog.step("udp_nodeport round");
    }
}

/// iperf3 from the client namespace (inside the variant's cgroup when it has one); (Gbit/s, CPU s per GB).
fn iperf(inst: &Installed, dst: Ipv4Addr, dur: Duration) -> Result<(f64, f64)> {
    let secs = dur.as_secs().max(1).to_string();
    let port = IPERF_PORT.to_string();
    let dst = dst.to_string();
    let argv = [
        "netns",
        "exec",
        &inst.tb.client,
        "iperf3",
        "-c",
        &dst,
        "-p",
        &port,
        "-t",
        &secs,
        "-J",
    ];
    let limit = dur + Duration::from_secs(20);
    let cpu0 = cpu_busy_secs();
    let out = match &inst.cgroup {
        Some(cg) => sh::run_in_cgroup("ip", &argv, cg, limit)?,
        None => sh::run_input("ip", &argv, None, limit)?,
    };
    let cpu = cpu_busy_secs() - cpu0;
    let j: serde_json::Value = serde_json::from_str(&out).context("iperf3 -J output")?;
    let bps = j["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3: no end.sum_received")?;
    let bytes = j["end"]["sum_received"]["bytes"].as_f64().unwrap_or(0.0);
    let per_gb = if bytes > 0.0 {
        cpu / (bytes / 1e9)
    } else {
        f64::NAN
    };
    Ok((bps / 1e9, per_gb))
}

/// Figures of one UDP NodePort trial.
struct UdpFigures {
    /// Packets/s that reached the backend.
    pps: f64,
    /// Machine-wide busy CPU per delivered packet (sender included).
    cpu_ns_per_pkt: f64,
    /// Delivered / sent.
    delivered_ratio: f64,
    /// Skiff: run time of the uplink XDP program per packet it saw (bpf_stats).
    xdp_ns_per_pkt: Option<f64>,
}

/// UDP packets from random source ports, from the external namespace to the NodePort (or the backend for
/// direct).
fn udp_trial(inst: &Installed, dur: Duration) -> Result<UdpFigures> {
    let mut sink = Worker::spawn(&inst.tb.backend, &Job::UdpSink { port: UDP_PORT })?;
    if sink.read_line(Duration::from_secs(10))? != "ready" {
        bail!("udp sink did not start");
    }
    let (dst, port) = if inst.variant == Variant::Direct {
        (addr::backend(0), UDP_PORT)
    } else {
        (addr::NODE_UPLINK, NODE_PORT)
    };
    let job = Job::UdpFlood {
        src: addr::EXTERNAL,
        dst,
        port,
        millis: dur.as_millis() as u64,
    };
    let xdp = if inst.variant == Variant::SkiffXdp {
        Some(bpfstats::xdp_prog_id(&inst.tb.node, ifname::NODE_UPLINK)?)
    } else {
        None
    };
    let xdp0 = xdp.map(bpfstats::sample).transpose()?;
    let mut flood = Worker::spawn(&inst.tb.external, &job)?;
    let cpu0 = cpu_busy_secs();
    flood.send("go")?;
    let sent: u64 = flood
        .read_line(dur + Duration::from_secs(15))?
        .parse()
        .context("flood output")?;
    let cpu = cpu_busy_secs() - cpu0;
    std::thread::sleep(Duration::from_millis(100));
    let xdp1 = xdp.map(bpfstats::sample).transpose()?;
    sink.send("stop")?;
    let got: u64 = sink
        .read_line(Duration::from_secs(5))?
        .parse()
        .context("sink output")?;
    if got == 0 {
        bail!("no packet reached the backend ({sent} sent)");
    }
    let xdp_ns_per_pkt = match (xdp0, xdp1) {
        (Some(a), Some(b)) => {
            let runs = b.run_cnt.saturating_sub(a.run_cnt);
            // The XDP program must have seen (nearly) every packet, else this is not the XDP path.
            if runs < got {
                bail!(
                    "the uplink XDP program ran {runs} times for {got} delivered packets: not the XDP path"
                );
            }
            Some(b.run_time_ns.saturating_sub(a.run_time_ns) as f64 / runs as f64)
        }
        _ => None,
    };
    Ok(UdpFigures {
        pps: got as f64 / dur.as_secs_f64(),
        cpu_ns_per_pkt: cpu * 1e9 / got as f64,
        delivered_ratio: got as f64 / sent.max(1) as f64,
        xdp_ns_per_pkt,
    })
}

/// Removes what an interrupted earlier run left behind (namespaces and cgroups with our prefix).
pub fn sweep() -> Result<()> {
    let n = netns::sweep_stale()?;
    if n > 0 {
        eprintln!("bench: removed {n} stale namespaces");
    }
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup/unified") {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(netns::PREFIX) {
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
    Ok(())
}

/// The sizes, placements and durations for `--quick` or a full run.
pub fn plan(quick: bool, variants: Vec<Variant>) -> Plan {
    let mut p = base_plan(quick, variants);
    (p.apiserver_sizes, p.apiserver_skipped) = apiserver_sizes(quick, &p.sizes);
    p
}

fn base_plan(quick: bool, variants: Vec<Variant>) -> Plan {
    if quick {
        Plan {
            sizes: vec![10, 1000],
            placements: vec![Placement::Last],
            rounds: 3,
            trial: Duration::from_millis(1000),
            clients: 16,
            throughput_rounds: 2,
            variants,
            hold: Duration::ZERO,
            program_budget: Duration::from_secs(60),
            change_reps: 3,
            scenarios: Vec::new(),
            apiserver_sizes: Vec::new(),
            apiserver_skipped: Vec::new(),
        }
    } else {
        Plan {
            sizes: vec![10, 100, 1000, 5000, 10000, 20000],
            placements: vec![Placement::First, Placement::Middle, Placement::Last],
            rounds: 5,
            trial: Duration::from_millis(1500),
            clients: 32,
            throughput_rounds: 5,
            variants,
            hold: Duration::ZERO,
            program_budget: Duration::from_secs(120),
            change_reps: 5,
            scenarios: Vec::new(),
            apiserver_sizes: Vec::new(),
            apiserver_skipped: Vec::new(),
        }
    }
}

/// Output directory: `--out` or `bench/results/<unix time>`.
pub fn out_dir(out: Option<PathBuf>) -> PathBuf {
    out.unwrap_or_else(|| {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../bench/results")
            .join(ts.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn apiserver_sizes_stop_at_10k_and_quick_takes_the_smallest() {
        assert_eq!(apiserver_sizes(true, &[1000, 10]), (vec![10], vec![]));
        assert_eq!(
            apiserver_sizes(false, &[10, 100, 20000, 10000]),
            (vec![10, 100, 10000], vec![20000])
        );
        let full = plan(false, Vec::new());
        assert_eq!(full.apiserver_sizes, [10, 100, 1000, 5000, 10000]);
        assert_eq!(full.apiserver_skipped, [20000]);
        assert_eq!(plan(true, Vec::new()).apiserver_sizes, [10]);
    }

    #[test]
    fn program_time_extrapolates_the_growth_seen() {
        assert_eq!(estimate_program_time(&[], 10), Duration::ZERO);
        // One size: linear.
        let one = estimate_program_time(&[(1000, secs(2.0))], 5000);
        assert!((one.as_secs_f64() - 10.0).abs() < 1e-6, "{one:?}");
        // Quadratic growth from 1000 to 5000 (4 s -> 100 s): 10000 takes about 400 s.
        let quad = estimate_program_time(&[(1000, secs(4.0)), (5000, secs(100.0))], 10000);
        assert!((quad.as_secs_f64() - 400.0).abs() < 1.0, "{quad:?}");
        // Flat growth (fixed costs) is still extrapolated linearly; steeper than quadratic is capped at 2.
        let flat = estimate_program_time(&[(10, secs(1.0)), (100, secs(1.0))], 1000);
        assert!((flat.as_secs_f64() - 10.0).abs() < 1e-6, "{flat:?}");
        let steep = estimate_program_time(&[(100, secs(0.01)), (1000, secs(10.0))], 2000);
        assert!((steep.as_secs_f64() - 40.0).abs() < 1e-6, "{steep:?}");
    }
}
