//! The benchmark run: testbeds per variant, shuffled rounds per scenario, results collected.
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::seq::SliceRandom;

use super::model::{ClusterConfig, Endpoint, Placement, Proto, ServicePort, SetSpec, synthetic_set};
use super::netns::{self, addr};
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

/// The fixed services (iperf, UDP NodePort) plus N synthetic ones; returns (services, index of the target).
fn service_set(n: usize, placement: Placement) -> (Vec<ServicePort>, usize) {
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
        placement,
    };
    let (set, target) = synthetic_set(&spec);
    svcs.extend(set);
    (svcs, target + 2)
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
    let r: CrrResult = serde_json::from_str(&line).with_context(|| format!("crr output {line:?}"))?;
    if r.completed == 0 {
        bail!("no connection completed ({} errors)", r.errors);
    }
    Ok(r)
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
    let iperf = Command::new("ip")
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
        match Installed::new(v, ENDPOINTS) {
            Ok(i) => installed.push(i),
            Err(e) => col.fail("setup", v.name(), e),
        }
    }
    let mut servers = Vec::new();
    for inst in &installed {
        servers.push(start_servers(inst).with_context(|| format!("servers for {}", inst.variant.name()))?);
    }
    let steps = plan.sizes.len() * plan.placements.len() * (1 + plan.rounds)
        + 2 * plan.throughput_rounds
        + plan.throughput_rounds;
    let mut prog = Progress::new(steps);
    let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::from_os_rng();
    let mut alive: Vec<bool> = vec![true; installed.len()];
    for &n in &plan.sizes {
        for &placement in &plan.placements {
            let pl = format!("{placement:?}").to_lowercase();
            let (svcs, target) = service_set(n, placement);
            for (i, inst) in installed.iter_mut().enumerate() {
                if !alive[i] {
                    continue;
                }
                let v = inst.variant;
                let res = (|| -> Result<()> {
                    let p = inst.program(&svcs, &cl, &cfg.agent)?;
                    if v != Variant::Direct && !v.is_skiff() {
                        col.add(
                            "control_plane",
                            v.name(),
                            n,
                            Some(&pl),
                            "program_full",
                            "ms",
                            p.full.as_secs_f64() * 1e3,
                        );
                    }
                    if p.objects > 0 {
                        col.add(
                            "footprint",
                            v.name(),
                            n,
                            Some(&pl),
                            "rules_and_elements",
                            "count",
                            p.objects as f64,
                        );
                    }
                    // Wait (bounded) until the target answers: proves the replica works, and for Skiff that
                    // the agent programmed its maps.
                    let deadline = Instant::now() + Duration::from_secs(if v.is_skiff() { 60 } else { 5 });
                    let started = Instant::now();
                    loop {
                        inst.check_agent(&cfg.agent.workdir)?;
                        match crr_trial(inst, target_of(v, &svcs, target), 1, Duration::from_millis(100)) {
                            Ok(_) => break,
                            Err(e) if Instant::now() > deadline => {
                                return Err(e.context("target service never answered"));
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(200)),
                        }
                    }
                    if v.is_skiff() {
                        col.add(
                            "control_plane",
                            v.name(),
                            n,
                            Some(&pl),
                            "time_to_ready",
                            "ms",
                            started.elapsed().as_secs_f64() * 1e3,
                        );
                        if let Some(kib) = inst.agent_rss_kib() {
                            col.add(
                                "footprint",
                                v.name(),
                                n,
                                Some(&pl),
                                "agent_rss",
                                "KiB",
                                kib as f64,
                            );
                        }
                    }
                    if v != Variant::Direct {
                        let other = if target == 2 { 3 } else { 2 };
                        match inst.endpoint_change(&svcs, other, &cl) {
                            Ok(d) => col.add(
                                "control_plane",
                                v.name(),
                                n,
                                Some(&pl),
                                "endpoint_change",
                                "ms",
                                d.as_secs_f64() * 1e3,
                            ),
                            Err(e) => col.fail("control_plane", v.name(), e),
                        }
                    }
                    Ok(())
                })();
                if let Err(e) = res {
                    col.fail("program", v.name(), e);
                    alive[i] = false;
                }
            }
            prog.step(&format!("programmed N={n} target={pl}"));
            std::thread::sleep(plan.hold);
            for round in 0..plan.rounds {
                let mut order: Vec<usize> = (0..installed.len()).filter(|&i| alive[i]).collect();
                order.shuffle(&mut rng);
                for i in order {
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
    }
    let n0 = plan.sizes[0];
    let (svcs, _) = service_set(n0, Placement::Last);
    // Long flows: reprogramming is not needed, every variant still holds the last set (iperf service is fixed).
    for offload in [true, false] {
        let scen = if offload {
            "throughput_offload_on"
        } else {
            "throughput_offload_off"
        };
        for inst in &installed {
            if let Err(e) = inst.tb.set_offloads(offload) {
                col.fail(scen, inst.variant.name(), e);
            }
        }
        for _ in 0..plan.throughput_rounds {
            let mut order: Vec<usize> = (0..installed.len()).filter(|&i| alive[i]).collect();
            order.shuffle(&mut rng);
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
                        col.add(scen, v.name(), n0, None, "gbit_per_s", "Gbit/s", gbps);
                        col.add(scen, v.name(), n0, None, "cpu_s_per_gb", "s/GB", cpu_per_gb);
                    }
                    Err(e) => col.fail(scen, v.name(), e),
                }
            }
            prog.step(&format!("{scen} round"));
        }
    }
    for inst in &installed {
        let _ = inst.tb.set_offloads(true);
    }
    for _ in 0..plan.throughput_rounds {
        let mut order: Vec<usize> = (0..installed.len())
            .filter(|&i| alive[i] && installed[i].variant != Variant::SkiffSocket)
            .collect();
        order.shuffle(&mut rng);
        for i in order {
            let inst = &installed[i];
            let name = if inst.variant == Variant::SkiffTc {
                "skiff-xdp"
            } else {
                inst.variant.name()
            };
            let _ = inst.tb.flush_conntrack();
            match udp_trial(inst, plan.trial) {
                Ok((pps, ns_per_pkt)) => {
                    col.add("udp_nodeport", name, n0, None, "delivered_pps", "1/s", pps);
                    col.add("udp_nodeport", name, n0, None, "cpu_ns_per_pkt", "ns", ns_per_pkt);
                }
                Err(e) => col.fail("udp_nodeport", name, e),
            }
        }
        prog.step("udp_nodeport round");
    }
    drop(servers);
    drop(installed);
    Ok(col)
}

/// iperf3 from the client namespace (inside the variant's cgroup when it has one); (Gbit/s, CPU s per GB).
fn iperf(inst: &Installed, dst: Ipv4Addr, dur: Duration) -> Result<(f64, f64)> {
    let secs = dur.as_secs().max(1).to_string();
    let iperf = format!("iperf3 -c {dst} -p {IPERF_PORT} -t {secs} -J");
    let script = match &inst.cgroup {
        Some(cg) => format!("echo $$ > {}/cgroup.procs && exec {iperf}", cg.display()),
        None => format!("exec {iperf}"),
    };
    let cpu0 = cpu_busy_secs();
    let out = sh::run_input(
        "ip",
        &["netns", "exec", &inst.tb.client, "sh", "-c", &script],
        None,
        dur + Duration::from_secs(20),
    )?;
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

/// UDP packets from random source ports, from the external namespace to the NodePort (or the backend for
/// direct); (delivered packets/s, machine CPU ns per delivered packet).
fn udp_trial(inst: &Installed, dur: Duration) -> Result<(f64, f64)> {
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
    let mut flood = Worker::spawn(&inst.tb.external, &job)?;
    let cpu0 = cpu_busy_secs();
    flood.send("go")?;
    let sent: u64 = flood
        .read_line(dur + Duration::from_secs(15))?
        .parse()
        .context("flood output")?;
    let cpu = cpu_busy_secs() - cpu0;
    std::thread::sleep(Duration::from_millis(100));
    sink.send("stop")?;
    let got: u64 = sink
        .read_line(Duration::from_secs(5))?
        .parse()
        .context("sink output")?;
    if got == 0 {
        bail!("no packet reached the backend ({sent} sent)");
    }
    Ok((got as f64 / dur.as_secs_f64(), cpu * 1e9 / got as f64))
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
    if quick {
        Plan {
            sizes: vec![10, 1000],
            placements: vec![Placement::Last],
            rounds: 5,
            trial: Duration::from_millis(1000),
            clients: 16,
            throughput_rounds: 3,
            variants,
            hold: Duration::ZERO,
        }
    } else {
        Plan {
            sizes: vec![10, 100, 1000, 5000, 10000, 20000],
            placements: vec![Placement::First, Placement::Middle, Placement::Last],
            rounds: 5,
            trial: Duration::from_secs(2),
            clients: 32,
            throughput_rounds: 5,
            variants,
            hold: Duration::ZERO,
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
