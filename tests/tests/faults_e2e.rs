//! Fault injection on the dataplane (root, `skt-` namespaces): `kill -9` of skiff-agent and a restart while 100
//! long-lived TCP connections and a constant rate of new connections go through a ClusterIP (TC path) and a NodePort
//! (XDP, from outside the node). Pinned maps, id allocators and conntrack survive, so nothing may fail: the test
//! prints connections reset and requests failed, and asserts both are zero.
use std::{process::Stdio, time::Duration};

use tests::cluster::{EXT_CLIENT, Lab, TC_CLIENT, WEB_IP, WEB_NODE_PORT, agent::Mode, topology::NODE1};

/// Keeps `conns` connections open, each sending a request every second, and opens `rate` new connections per second
/// (one request each), for `secs` seconds; prints one JSON line of counts at the end.
const LOAD_PY: &str = r#"
import json, socket, sys, time
ip, port, conns, rate, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
REQ = b"GET / HTTP/1.1\r\nHost: skt\r\n\r\n"
def exchange(f, s):
    s.sendall(REQ)
    status = f.readline()
    if not status.startswith(b"HTTP/1.1 200"):
        raise IOError("bad status %r" % status)
    length = 0
    while True:
        line = f.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode().partition(":")
        if k.strip().lower() == "content-length":
            length = int(v)
    body = f.read(length)
    if len(body) != length:
        raise IOError("short body")
counts = {"long_lived": conns, "long_requests": 0, "long_failed": 0, "connections_reset": 0,
          "new_requests": 0, "new_failed": 0}
live = []
for _ in range(conns):
    s = socket.create_connection((ip, port), timeout=3)
    live.append([s, s.makefile("rb"), True])
end = time.time() + secs
next_new = time.time()
tick = 0
while time.time() < end:
    for c in live[tick % 5::5]:
        if not c[2]:
            continue
        try:
            exchange(c[1], c[0])
            counts["long_requests"] += 1
        except Exception as e:
            counts["long_failed"] += 1
            counts["connections_reset"] += 1
            c[2] = False
            print("long-lived connection failed:", repr(e), file=sys.stderr, flush=True)
    while time.time() >= next_new:
        next_new += 1.0 / rate
        try:
            s = socket.create_connection((ip, port), timeout=3)
            exchange(s.makefile("rb"), s)
            s.close()
            counts["new_requests"] += 1
        except Exception as e:
            counts["new_failed"] += 1
            print("new connection failed:", repr(e), file=sys.stderr, flush=True)
    tick += 1
    time.sleep(0.2)
print(json.dumps(counts), flush=True)
"#;

struct Load {
    what: &'static str,
    child: std::process::Child,
}

impl Load {
    fn start(
        what: &'static str,
        client: tests::cluster::workload::Client<'_>,
        ip: &str,
        port: u16,
        conns: u32,
    ) -> Load {
        let child = client
            .command(&[
                "python3",
                "-c",
                LOAD_PY,
                ip,
                &port.to_string(),
                &conns.to_string(),
                "20",
                "14",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the load client");
        Load { what, child }
    }

    /// Waits for the end of the run and returns its counts.
    fn finish(self) -> serde_json::Value {
        let out = self.child.wait_with_output().expect("load client output");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let counts: serde_json::Value = stdout
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| panic!("{}: no counts; stdout {stdout:?} stderr {stderr}", self.what));
        println!("{}: {counts} {}", self.what, stderr.trim());
        counts
    }
}

#[test]
fn agent_kill_and_restart_under_load_resets_nothing_and_fails_nothing() {
    let mut lab = Lab::start();
    lab.attach_xdp_pass();
    lab.start_agent(Mode::Both, TC_CLIENT);
    let node_ip = NODE1.ip.to_string();
    let cluster_ip = Load::start("ClusterIP via TC", TC_CLIENT, WEB_IP, 80, 100);
    let node_port = Load::start("NodePort via XDP", EXT_CLIENT, &node_ip, WEB_NODE_PORT, 20);
    std::thread::sleep(Duration::from_secs(3));

    lab.agent().kill9();
    std::thread::sleep(Duration::from_secs(2));
    lab.agent().restart();
    lab.wait_ready(TC_CLIENT);

    let mut failures = Vec::new();
    for load in [cluster_ip, node_port] {
        let what = load.what;
        let c = load.finish();
        let n = |k: &str| c[k].as_u64().unwrap_or(u64::MAX);
        // Each long-lived connection sends one request a second for 14 s: at least 5 each, restart included.
        assert!(
            n("long_requests") >= 5 * n("long_lived"),
            "{what}: too few requests on the long-lived connections: {c}"
        );
        assert!(n("new_requests") > 100, "{what}: too few new connections: {c}");
        for k in ["connections_reset", "long_failed", "new_failed"] {
            if n(k) != 0 {
                failures.push(format!("{what}: {k} = {}", n(k)));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "the agent restart was visible to clients: {failures:?}"
    );
}
