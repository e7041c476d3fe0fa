//! Map pressure (root, `skq-` namespaces): a conntrack LRU far smaller than the flows through a ClusterIP, and a
//! Service with more endpoints than the backends map holds. Nothing is created in the root network namespace; the
//! agent's metrics listen on loopback.
//!
//! What a full conntrack does (TC path): new flows evict the least recently used entries, so every new connection
//! still gets through. An idle established flow that lost its entries is served again when its client speaks next:
//! a surviving service entry puts the evicted reply entry back, and a flow that lost both is selected anew (the
//! same backend here, with one backend; with random selection over several backends it may land on another one,
//! which resets it, while Maglev with an unchanged backend set or ClientIP affinity keep it on its backend). A
//! reply the backend sends first, before the client spoke again, reaches the client untranslated and resets the
//! flow. The socket path keeps no per-packet state: its LRU (`sock_rev_nat`) only serves getpeername/recvmsg.
//!
//! Run with `cargo test -p tests --test map_pressure -- --test-threads=1` after `cargo build -p agent`.
use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::Duration,
};

use tests::{
    cluster::{
        agent::{agent_bin, cleanup_stale},
        manifests::{Endpoint, Port, Service},
    },
    netns::{Netns, Proc, in_ns, ip, sweep, try_run, wait_for},
};

const NODE: &str = "skq-node";
const NODE_IP: &str = "10.245.0.1";
const GATEWAY: &str = "10.245.1.1";
const METRICS: &str = "127.0.0.1:19975";
const CT_SIZE: u64 = 256;
const BACKENDS_SIZE: u32 = 16;

/// A pod: its namespace, address and host-side veth (matched by `--pod-iface skqp-*`).
struct Pod {
    netns: &'static str,
    ip: &'static str,
    host_if: &'static str,
}

const CLIENT: Pod = Pod {
    netns: "skq-client",
    ip: "10.245.1.2",
    host_if: "skqp-client",
};
const BE1: Pod = Pod {
    netns: "skq-be1",
    ip: "10.245.1.3",
    host_if: "skqp-be1",
};
const BE2: Pod = Pod {
    netns: "skq-be2",
    ip: "10.245.1.4",
    host_if: "skqp-be2",
};

/// Answers every line on every connection with its name (asyncio, thousands of connections).
const SERVER_PY: &str = r#"
import asyncio, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
name, port = sys.argv[1].encode(), int(sys.argv[2])
async def serve(r, w):
    try:
        while True:
            line = await r.readline()
            if not line:
                break
            w.write(name + b"\n")
            await w.drain()
    except Exception:
        pass
    w.close()
async def main():
    srv = await asyncio.start_server(serve, "0.0.0.0", port, backlog=4096)
    async with srv:
        await srv.serve_forever()
asyncio.run(main())
"#;

/// Phase 1: `long` connections, one exchange each, kept open and idle. Phase 2: `new` more connections, at most
/// `inflight` opening at a time, each with one exchange, all kept open. Prints a JSON line, waits for a line on
/// stdin, then phase 3: one more exchange on every long-lived connection; prints a second JSON line.
const CLIENT_PY: &str = r#"
import asyncio, json, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
vip, port, n_long, n_new, inflight = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
async def exchange(r, w):
    w.write(b"hi\n")
    await w.drain()
    line = await asyncio.wait_for(r.readline(), 5)
    if not line:
        raise IOError("closed")
    return line.strip().decode()
async def open_one():
    r, w = await asyncio.wait_for(asyncio.open_connection(vip, port), 10)
    await exchange(r, w)
    return r, w
async def main():
    errors = []
    longs = []
    for _ in range(n_long):
        longs.append(await open_one())
    sem = asyncio.Semaphore(inflight)
    async def guarded():
        async with sem:
            try:
                return await open_one()
            except Exception as e:
                errors.append(repr(e))
                return None
    news = await asyncio.gather(*[guarded() for _ in range(n_new)])
    ok = sum(1 for c in news if c is not None)
    print(json.dumps({"long_opened": len(longs), "new_opened": n_new, "new_ok": ok, "new_failed": n_new - ok,
                      "open_now": len(longs) + ok, "errors": errors[:5]}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    survived, broken = 0, []
    for r, w in longs:
        try:
            await exchange(r, w)
            survived += 1
        except Exception as e:
            broken.append(repr(e))
    print(json.dumps({"long_survived": survived, "long_broken": len(broken), "errors": broken[:5]}), flush=True)
    for c in [c for c in news if c] + longs:
        c[1].close()
asyncio.run(main())
"#;

/// The test network: a node namespace with a client pod and two backend pods on veths. Dropped, every namespace
/// (and with them the veths) is deleted.
struct Testbed {
    namespaces: Vec<Netns>,
    dir: PathBuf,
    /// The tests share the `skq-` names: one testbed at a time (cargo runs tests in parallel). Dropped last.
    _serial: std::sync::MutexGuard<'static, ()>,
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Testbed {
    fn build(name: &str) -> Testbed {
        // A failed test poisons the lock; the next one still gets a clean testbed from the sweep below.
        let serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tests::fixture::ensure_bpffs();
        cleanup_stale(NODE);
        sweep("skq-");
        let dir = std::env::temp_dir().join(format!("skq-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("manifests")).unwrap();
        let node = Netns::create(NODE);
        node.sysctl(&[
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ]);
        ip(&["-n", NODE, "addr", "add", &format!("{NODE_IP}/32"), "dev", "lo"]);
        let mut namespaces = vec![node];
        for pod in [CLIENT, BE1, BE2] {
            namespaces.push(Netns::create(pod.netns));
            pod_link(&pod);
        }
        Testbed {
            namespaces,
            dir,
            _serial: serial,
        }
    }

    fn manifests(&self) -> PathBuf {
        self.dir.join("manifests")
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        // Namespaces go first (their processes with them), then the scratch directory.
        self.namespaces.clear();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn pod_link(pod: &Pod) {
    tests::netns::wire_pod(NODE, GATEWAY, pod.netns, pod.host_if, pod.ip);
}

/// `skiff-agent proxy` for the testbed's node (TC mode, manifests). Dropped, it is killed and its pins removed.
struct Agent {
    proc: Option<Proc>,
    log: PathBuf,
}

impl Agent {
    /// Watching the testbed's manifests directory.
    fn start(bed: &Testbed, extra: &[&str]) -> Agent {
        let manifests = bed.manifests().display().to_string();
        Agent::start_with_source(bed, &["--manifests", &manifests], extra)
    }

    /// With `source` flags (`--manifests DIR` or `--kubeconfig FILE`).
    fn start_with_source(bed: &Testbed, source: &[&str], extra: &[&str]) -> Agent {
        let log = bed.dir.join("agent.log");
        let out = fs::File::create(&log).unwrap();
        let mut cmd = Command::new(agent_bin());
        cmd.arg("proxy")
            .args(source)
            .args([
                "--node-name",
                NODE,
                "--netns",
                NODE,
                "--uplink",
                "none",
                "--node-ip",
                NODE_IP,
                "--pod-iface",
                "skqp-*",
                "--mode",
                "tc",
                "--metrics-addr",
                METRICS,
                "--ct-gc-interval",
                "1",
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let proc = Proc::spawn(&mut cmd, "skiff-agent");
        Agent {
            proc: Some(proc),
            log,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until the log has a line containing `needle`; panics with the log otherwise.
    fn wait_log(&mut self, needle: &str, limit: Duration) {
        let found = wait_for(limit, || {
            if let Some(p) = self.proc.as_mut() {
                assert!(p.alive(), "skiff-agent exited:\n{}", self.log());
            }
            self.log().contains(needle).then_some(())
        });
        assert!(
            found.is_some(),
            "no {needle:?} in the agent log within {limit:?}:\n{}",
            self.log()
        );
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
        if let Err(e) = tests::cluster::agent::cleanup(NODE) {
            eprintln!("cleanup of {NODE}: {e:#}");
        }
    }
}

fn start_server(pod: &Pod, name: &str) -> Proc {
    let mut cmd = in_ns(pod.netns, &["python3", "-c", SERVER_PY, name, "8080"]);
    cmd.stdout(Stdio::null());
    let p = Proc::spawn(&mut cmd, name);
    let up = wait_for(Duration::from_secs(10), || {
        try_run(&mut in_ns(pod.netns, &["ss", "-ltnH", "sport = :8080"]))
            .ok()
            .filter(|o| !o.trim().is_empty())
    });
    assert!(up.is_some(), "{name} did not listen on :8080");
    p
}

fn service(name: &'static str, vip: &'static str) -> Service {
    Service {
        name,
        cluster_ip: vip,
        ports: vec![Port {
            name: "echo",
            protocol: "TCP",
            port: 80,
            target_port: 8080,
            node_port: None,
        }],
        external_local: false,
    }
}

fn endpoint(pod: &'static str, ip: &'static str) -> Endpoint {
    Endpoint { pod, ip, node: NODE }
}

/// `n` endpoints: `first`, then addresses no pod answers on (10.245.9.x).
fn endpoints(first: Endpoint, n: usize) -> Vec<Endpoint> {
    let mut v = vec![first];
    for i in 1..n {
        let ip: &'static str = Box::leak(format!("10.245.9.{i}").into_boxed_str());
        let pod: &'static str = Box::leak(format!("fake-{i}").into_boxed_str());
        v.push(endpoint(pod, ip));
    }
    v
}

/// The agent's /metrics text.
fn metrics() -> String {
    let mut s =
        TcpStream::connect_timeout(&METRICS.parse().unwrap(), Duration::from_secs(2)).expect("metrics");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The value of the sample line starting with `series` (name and labels), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
}

fn inspect(what: &str) -> String {
    try_run(Command::new(agent_bin()).args(["inspect", what, "--node-name", NODE]))
        .unwrap_or_else(|e| panic!("inspect {what}: {e:#}"))
}

/// One line through `vip:80` from the client pod: the backend's name.
fn ask(vip: &str) -> Result<String, String> {
    let script = "import socket,sys\ns=socket.create_connection((sys.argv[1],80),timeout=3)\ns.sendall(b'hi\\n')\n\
                  print(s.makefile().readline().strip())";
    try_run(&mut in_ns(CLIENT.netns, &["python3", "-c", script, vip]))
        .map(|o| o.trim().to_string())
        .map_err(|e| format!("{e:#}"))
}

fn json_field(line: &str, key: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {line}"))
}

struct LoadClient {
    child: Child,
    stdin: ChildStdin,
    lines: BufReader<ChildStdout>,
}

impl LoadClient {
    fn start(vip: &str, long: u32, new: u32, inflight: u32) -> LoadClient {
        let mut child = in_ns(
            CLIENT.netns,
            &[
                "python3",
                "-c",
                CLIENT_PY,
                vip,
                "80",
                &long.to_string(),
                &new.to_string(),
                &inflight.to_string(),
            ],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("client");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap());
        LoadClient { child, stdin, lines }
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.lines.read_line(&mut l).expect("client output");
        assert!(!l.is_empty(), "the load client ended early");
        l
    }
}

impl Drop for LoadClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn full_conntrack_keeps_new_flows_working_and_shows_pressure() {
    let bed = Testbed::build("ct");
    let _be1 = start_server(&BE1, "be1");
    let web = service("web", "10.96.77.10");
    web.write(&bed.manifests(), &[endpoint("be1", BE1.ip)]);
    let mut agent = Agent::start(&bed, &["--ct-size", &CT_SIZE.to_string()]);
    agent.wait_log("synced", Duration::from_secs(30));
    // The TC hooks attach within seconds of the agent seeing the pod interfaces.
    let first = wait_for(Duration::from_secs(15), || ask(web.cluster_ip).ok());
    assert_eq!(
        first.as_deref(),
        Some("be1"),
        "ClusterIP not served:\n{}",
        agent.log()
    );

    let (long, new, inflight) = (50u32, 1000u32, 32u32);
    let mut client = LoadClient::start(web.cluster_ip, long, new, inflight);
    let opened = client.line();
    let (new_ok, new_failed) = (json_field(&opened, "new_ok"), json_field(&opened, "new_failed"));
    // Metrics: the GC pass (every second) publishes the conntrack fill and the evictions it saw. A thrashing LRU
    // map holds between about half of its entries (the kernel's per-CPU free lists, for a map this small) and all.
    let full = wait_for(Duration::from_secs(10), || {
        let m = metrics();
        let n = sample(&m, "skiff_map_entries{map=\"conntrack\"}")? as u64;
        let max = sample(&m, "skiff_map_max_entries{map=\"conntrack\"}")? as u64;
        // A lower bound: it counts only entries a GC pass saw before the LRU evicted them, so a burst faster than
        // the GC interval may show none; 1050 flows held open in 256 entries evict whatever the counter says.
        let evicted = sample(&m, "skiff_conntrack_evictions_total")? as u64;
        (n >= max / 2).then_some((n, max, evicted))
    });
    let maps = inspect("maps");
    client.stdin.write_all(b"go\n").unwrap();
    let after = client.line();
    let (survived, broken) = (
        json_field(&after, "long_survived"),
        json_field(&after, "long_broken"),
    );
    println!(
        "map_pressure conntrack: ct-size {CT_SIZE}; flows opened {} (long-lived {long}, new {new}, {inflight} in \
         flight), new failed {new_failed}; conntrack (entries, max, evictions seen) {:?}; idle long-lived flows \
         after eviction: {survived} served, {broken} broken",
        long + new,
        full
    );
    println!("{maps}");
    assert_eq!(
        new_failed, 0,
        "new connections failed with a full conntrack: {opened}"
    );
    assert_eq!(new_ok, u64::from(new));
    let (n, max, evicted) =
        full.unwrap_or_else(|| panic!("conntrack pressure never showed in the metrics:\n{}", metrics()));
    assert_eq!(max, CT_SIZE);
    assert!(n <= CT_SIZE, "{n} entries, {evicted} evictions counted");
    assert!(maps.contains("pressure: conntrack full ("), "{maps}");
    // One backend: evicted idle flows are selected anew to it (or get their reply entry back) when they speak.
    assert_eq!(broken, 0, "idle long-lived flows broke after eviction: {after}");
}

#[test]
fn oversize_service_is_refused_whole_and_programmed_once_it_fits() {
    let bed = Testbed::build("big");
    let _be1 = start_server(&BE1, "be1");
    let _be2 = start_server(&BE2, "be2");
    let small = service("small", "10.96.77.11");
    let big = service("big", "10.96.77.12");
    small.write(&bed.manifests(), &[endpoint("be1", BE1.ip)]);
    // More endpoints than the backends map holds.
    let too_many = BACKENDS_SIZE as usize + 4;
    big.write(&bed.manifests(), &endpoints(endpoint("be2", BE2.ip), too_many));
    let mut agent = Agent::start(&bed, &["--backends-size", &BACKENDS_SIZE.to_string()]);
    agent.wait_log("synced", Duration::from_secs(30));
    agent.wait_log("does not fit", Duration::from_secs(10));
    let served = wait_for(Duration::from_secs(15), || ask(small.cluster_ip).ok());
    assert_eq!(
        served.as_deref(),
        Some("be1"),
        "the other Service must keep working"
    );
    let m = metrics();
    let refused = sample(&m, "skiff_services_refused");
    let labelled = sample(
        &m,
        "skiff_service_refused{namespace=\"default\",name=\"big\",resource=\"backends\"}",
    );
    let services = inspect("services");
    let backends_used = sample(&m, "skiff_map_entries{map=\"backends\"}");
    println!(
        "map_pressure oversize (new): backends-size {BACKENDS_SIZE}, big has {too_many} endpoints; \
         skiff_services_refused {refused:?}; backends entries {backends_used:?}"
    );
    assert_eq!(refused, Some(1.0), "{m}");
    assert_eq!(labelled, Some(1.0), "{m}");
    assert!(
        !services.contains("10.96.77.12"),
        "a refused Service was programmed:\n{services}"
    );
    assert!(services.contains("10.96.77.11"), "{services}");
    assert!(
        agent
            .log()
            .contains("Service default/big with 20 endpoints does not fit"),
        "{}",
        agent.log()
    );

    // Scaled down to what fits: programmed without any other change (the refused Service is retried).
    big.write_endpoints(&bed.manifests(), &[endpoint("be2", BE2.ip)]);
    let now_served = wait_for(Duration::from_secs(15), || ask(big.cluster_ip).ok());
    assert_eq!(
        now_served.as_deref(),
        Some("be2"),
        "scaled-down Service not programmed:\n{}",
        agent.log()
    );
    let after = wait_for(Duration::from_secs(5), || {
        sample(&metrics(), "skiff_services_refused").filter(|v| *v == 0.0)
    });
    assert_eq!(after, Some(0.0));

    // Growing past the limit again: refused, and it keeps its previous programming (still served by be2).
    big.write_endpoints(&bed.manifests(), &endpoints(endpoint("be2", BE2.ip), too_many));
    let refused_again = wait_for(Duration::from_secs(15), || {
        let m = metrics();
        (sample(&m, "skiff_service_refusals_total")? >= 2.0).then_some(sample(&m, "skiff_services_refused"))
    });
    assert_eq!(refused_again, Some(Some(1.0)), "{}", metrics());
    for i in 0..10 {
        assert_eq!(
            ask(big.cluster_ip).as_deref(),
            Ok("be2"),
            "request {i} to the kept Service"
        );
    }
    assert_eq!(ask(small.cluster_ip).as_deref(), Ok("be1"));
    println!(
        "map_pressure oversize (grown): refused again, previous programming kept (10/10 requests to be2)"
    );
}

/// The same against skiff-control: the refusal is a Warning Event on the Service (`kubectl get events`), the other
/// Service keeps working, and scaling the EndpointSlice down gets the Service programmed.
#[test]
fn oversize_service_gets_a_warning_event_from_the_apiserver() {
    let bed = Testbed::build("api");
    let _be1 = start_server(&BE1, "be1");
    let _be2 = start_server(&BE2, "be2");
    let control = tests::cluster::control::Control::start(&bed.dir.join("cluster"));
    let kubeconfig = bed.dir.join("cluster/admin.kubeconfig");
    let small = service("small", "10.96.77.11");
    let big = service("big", "10.96.77.12");
    let too_many = BACKENDS_SIZE as usize + 4;
    let big_slice = |eps: &[Endpoint]| big.slice_yaml_managed_by(eps, "skq-test");
    control.apply(&small.selectorless_yaml());
    control.apply(&small.slice_yaml_managed_by(&[endpoint("be1", BE1.ip)], "skq-test"));
    control.apply(&big.selectorless_yaml());
    control.apply(&big_slice(&endpoints(endpoint("be2", BE2.ip), too_many)));
    let mut agent = Agent::start_with_source(
        &bed,
        &["--kubeconfig", &kubeconfig.display().to_string()],
        &["--backends-size", &BACKENDS_SIZE.to_string()],
    );
    agent.wait_log("does not fit", Duration::from_secs(30));
    let served = wait_for(Duration::from_secs(15), || ask(small.cluster_ip).ok());
    assert_eq!(
        served.as_deref(),
        Some("be1"),
        "the other Service must keep working"
    );
    let event = wait_for(Duration::from_secs(15), || {
        let out = control.kubectl(&["get", "events", "-n", "default"]).ok()?;
        out.lines()
            .find(|l| l.contains("ServiceTooLarge") && l.contains("service/big"))
            .map(str::to_owned)
    });
    let event = event.unwrap_or_else(|| {
        panic!(
            "no ServiceTooLarge event:\n{:?}\nagent:\n{}",
            control.kubectl(&["get", "events", "-A"]),
            agent.log()
        )
    });
    println!("map_pressure apiserver: kubectl get events -n default:\n{event}");
    assert!(
        event.contains("Warning") && event.contains("20 endpoints does not fit"),
        "{event}"
    );
    assert!(ask(big.cluster_ip).is_err(), "a refused Service answered");

    control.apply(&big_slice(&[endpoint("be2", BE2.ip)]));
    let now_served = wait_for(Duration::from_secs(20), || ask(big.cluster_ip).ok());
    assert_eq!(
        now_served.as_deref(),
        Some("be2"),
        "scaled-down Service not programmed:\n{}",
        agent.log()
    );
    assert_eq!(ask(small.cluster_ip).as_deref(), Ok("be1"));
    println!("map_pressure apiserver: after scaling to 1 endpoint, big is served by be2");
}
