//! What runs in the pods: backends that answer their own name (HTTP on 8080, UDP on 8081) and the clients.
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use super::topology::Pod;
use crate::netns::{Proc, in_ns, wait_for};

/// HTTP/1.1 (keep-alive) on 8080 and UDP on 8081, both answering the name given as argv[1].
const BACKEND_PY: &str = r#"
import socket, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
name = sys.argv[1]
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = (name + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 8081))
    while True:
        data, peer = s.recvfrom(2048)
        s.sendto(name.encode(), peer)
threading.Thread(target=udp, daemon=True).start()
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
"#;

/// One TCP connection kept open, sending a GET every 200 ms and printing `ok NAME` per answer.
const LONG_CLIENT_PY: &str = r#"
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
print("connected", s.getsockname()[1], flush=True)
f = s.makefile("rb")
while True:
    s.sendall(b"GET / HTTP/1.1\r\nHost: skt\r\n\r\n")
    status = f.readline()
    if not status:
        print("closed", flush=True)
        sys.exit(1)
    length = 0
    while True:
        line = f.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        key, _, value = line.decode().partition(":")
        if key.strip().lower() == "content-length":
            length = int(value)
    print("ok", f.read(length).decode().strip(), flush=True)
    time.sleep(0.2)
"#;

/// UDP request/response: sends one datagram, prints `NAME FROM_IP FROM_PORT` of the answer.
const UDP_CLIENT_PY: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
s.sendto(b"hi", (sys.argv[1], int(sys.argv[2])))
data, peer = s.recvfrom(2048)
print(data.decode(), peer[0], peer[1])
"#;

/// Starts the backend servers in `pod` and waits until they answer locally.
pub fn start_backend(pod: Pod) -> Proc {
    let mut p = Proc::spawn(
        in_ns(pod.netns, &["python3", "-c", BACKEND_PY, pod.short]).stdout(Stdio::null()),
        &format!("backend {}", pod.short),
    );
    let up = wait_for(Duration::from_secs(10), || {
        let out = in_ns(
            pod.netns,
            &["curl", "-s", "--max-time", "1", "http://127.0.0.1:8080/"],
        )
        .stdin(Stdio::null())
        .output()
        .ok()?;
        (String::from_utf8_lossy(&out.stdout).trim() == pod.short).then_some(())
    });
    assert!(
        up.is_some() && p.alive(),
        "backend {} did not start serving on 8080",
        pod.short
    );
    p
}

/// Where a client process runs: in a pod's namespace, optionally inside the socket-LB cgroup first.
#[derive(Clone, Copy, Debug)]
pub struct Client<'a> {
    pub netns: &'a str,
    pub cgroup: Option<&'a str>,
}

impl Client<'_> {
    /// A command for `argv` run by this client (moved into the cgroup before entering the namespace).
    pub fn command(&self, argv: &[&str]) -> Command {
        match self.cgroup {
            None => in_ns(self.netns, argv),
            Some(cg) => {
                let mut c = Command::new("sh");
                c.args([
                    "-c",
                    r#"cg="$1"; shift; echo $$ > "$cg/cgroup.procs" && exec "$@""#,
                    "sh",
                    cg,
                ])
                .args(["ip", "netns", "exec", self.netns])
                .args(argv);
                c
            }
        }
    }

    /// One HTTP GET with curl; the answer body (a backend name) or curl's exit code and stderr.
    pub fn http_get(&self, url: &str, timeout_s: u32) -> Result<String, CurlError> {
        let started = Instant::now();
        let out = self
            .command(&["curl", "-sS", "--max-time", &timeout_s.to_string(), url])
            .stdin(Stdio::null())
            .output()
            .expect("running curl");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(CurlError {
                code: out.status.code(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                elapsed: started.elapsed(),
            })
        }
    }

    /// `n` HTTP GETs (each a new connection); how many times each backend answered. Failures panic.
    pub fn http_spread(&self, url: &str, n: usize) -> BTreeMap<String, usize> {
        let mut hits = BTreeMap::new();
        for i in 0..n {
            match self.http_get(url, 3) {
                Ok(name) => *hits.entry(name).or_default() += 1,
                Err(e) => panic!("request {i} of {n} to {url} from {} failed: {e:?}", self.netns),
            }
        }
        hits
    }

    /// One UDP request; the answer `(backend name, source address of the answer)`.
    pub fn udp_request(&self, ip: &str, port: u16) -> Result<(String, String), String> {
        let out = self
            .command(&["python3", "-c", UDP_CLIENT_PY, ip, &port.to_string()])
            .stdin(Stdio::null())
            .output()
            .expect("running the UDP client");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut f = text.split_whitespace();
        let (name, from_ip, from_port) = (f.next(), f.next(), f.next());
        match (name, from_ip, from_port) {
            (Some(n), Some(a), Some(p)) => Ok((n.to_owned(), format!("{a}:{p}"))),
            _ => Err(format!("unexpected UDP client output {text:?}")),
        }
    }

    /// Opens a long-lived TCP connection to `ip:port` that sends a request every 200 ms.
    pub fn long_lived(&self, ip: &str, port: u16) -> LongLived {
        let mut cmd = self.command(&["python3", "-c", LONG_CLIENT_PY, ip, &port.to_string()]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut proc = Proc::spawn(&mut cmd, "long-lived client");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            proc.child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            proc.child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let sink = Arc::clone(&lines);
            thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            });
        }
        LongLived { proc, lines }
    }
}

/// A failed curl run.
#[derive(Debug)]
pub struct CurlError {
    pub code: Option<i32>,
    pub stderr: String,
    pub elapsed: Duration,
}

/// curl's exit code for "Failed to connect" (refused or unreachable).
pub const CURL_COULDNT_CONNECT: i32 = 7;

/// A running long-lived connection and everything it printed so far.
pub struct LongLived {
    proc: Proc,
    lines: Arc<Mutex<Vec<String>>>,
}

impl LongLived {
    /// Everything printed so far (stdout and stderr lines).
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Names of the backends that answered, in order.
    pub fn answers(&self) -> Vec<String> {
        self.lines()
            .iter()
            .filter_map(|l| l.strip_prefix("ok ").map(str::to_owned))
            .collect()
    }

    /// Waits until at least `n` answers arrived; panics with the output if the client died or it takes > 10 s.
    pub fn wait_answers(&mut self, n: usize) -> Vec<String> {
        let got = wait_for(Duration::from_secs(10), || {
            let a = self.answers();
            (a.len() >= n).then_some(a)
        });
        match got {
            Some(a) if self.proc.alive() => a,
            _ => panic!(
                "long-lived connection stalled or died (alive: {}); output:\n{}",
                self.proc.alive(),
                self.lines().join("\n")
            ),
        }
    }

    /// The single backend this connection talked to; panics if answers came from more than one (a reconnect).
    pub fn backend(&mut self) -> String {
        let answers = self.wait_answers(1);
        let first = answers[0].clone();
        assert!(
            answers.iter().all(|a| *a == first),
            "one connection was answered by several backends: {answers:?}"
        );
        first
    }

    /// Asserts the connection keeps being answered by `backend` for `period` (at 5 answers per second).
    pub fn assert_keeps_serving(&mut self, backend: &str, period: Duration) {
        let before = self.answers().len();
        thread::sleep(period);
        let expected_min = before + (period.as_millis() / 200 / 2) as usize;
        let answers = self.wait_answers(expected_min.max(before + 1));
        assert!(
            answers[before..].iter().all(|a| a == backend),
            "the established connection moved away from {backend}: {:?}",
            &answers[before..]
        );
        assert!(
            self.proc.alive(),
            "long-lived client died:\n{}",
            self.lines().join("\n")
        );
    }
}
