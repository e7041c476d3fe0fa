//! Fault-test helpers: skiff-control as a child process that can be SIGKILLed and restarted on the same port, a
//! write burst that records every acknowledged write, a watcher that resumes from its last resourceVersion like
//! client-go's reflector, and the comparison of the three (acknowledged writes, event stream, final list).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// A loopback port that is free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// `skiff-control` as a child process on a fixed loopback port (plain HTTP); killed on drop.
pub struct ControlProcess {
    child: Option<std::process::Child>,
    args: Vec<OsString>,
    log: PathBuf,
    pub addr: SocketAddr,
}

impl ControlProcess {
    /// Starts `skiff-control --data-dir DIR --insecure-http` with `extra` arguments; stderr goes to DIR/control.log.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut args: Vec<OsString> = vec!["--data-dir".into(), data_dir.into()];
        args.extend([
            "--listen".into(),
            addr.to_string().into(),
            "--insecure-http".into(),
        ]);
        args.extend(extra.iter().map(OsString::from));
        let mut process = Self {
            child: None,
            args,
            log: data_dir.join("control.log"),
            addr,
        };
        process.spawn();
        process
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the control log");
        let child = Command::new(env!("CARGO_BIN_EXE_skiff-control"))
            .args(&self.args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start skiff-control");
        self.child = Some(child);
    }

    /// Waits until `/readyz` answers 200; panics after `limit` with the server's log.
    pub async fn wait_ready(&mut self, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if let Some((StatusCode::OK, _)) = request(self.addr, "GET", "/readyz", None).await {
                return started.elapsed();
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(std::process::Child::try_wait) {
                panic!("skiff-control exited with {status}: {}", self.log_text());
            }
            assert!(
                started.elapsed() < limit,
                "skiff-control was not ready within {limit:?}: {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL skiff-control");
            child.wait().expect("reap skiff-control");
        }
    }

    /// Starts the process again with the same arguments (same port, data dir and store).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for ControlProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends one request on a fresh connection; `None` when the connection fails or no answer comes within 15 s.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Option<Response<Incoming>> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let bytes = body.map_or_else(Vec::new, |b| serde_json::to_vec(b).expect("json"));
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .ok()?;
    tokio::time::timeout(Duration::from_secs(15), sender.send_request(request))
        .await
        .ok()?
        .ok()
}

/// A request whose whole answer is read (JSON, or the text as a JSON string).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Option<(StatusCode, Value)> {
    let response = send(addr, method, path, body).await?;
    let status = response.status();
    let bytes = tokio::time::timeout(Duration::from_secs(15), response.into_body().collect())
        .await
        .ok()?
        .ok()?
        .to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Some((status, value))
}

/// An object's resourceVersion as a number.
pub fn rv_of(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|rv| rv.parse().ok())
        .unwrap_or_else(|| panic!("no numeric resourceVersion in {object}"))
}

/// The write a writer did (or was doing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Update,
    Delete,
}

/// An acknowledged write: the server answered with success and this resourceVersion.
#[derive(Debug, Clone)]
pub struct Ack {
    pub name: String,
    pub op: Op,
    pub rv: u64,
}

/// What the writers of a burst did.
#[derive(Debug, Default)]
pub struct Ledger {
    pub acks: Vec<Ack>,
    /// Per writer, the write that was sent but not acknowledged when the writer stopped (it may or may not
    /// have been applied).
    pub in_flight: Vec<(String, Op)>,
}

/// Writers that create, update twice and (every other object) delete ConfigMaps under `collection`, until a
/// write fails (the server is gone). Each writer owns its names, so its last acknowledged write per name
/// decides what must be stored.
pub fn start_burst(
    addr: SocketAddr,
    collection: &str,
    writers: usize,
) -> (Arc<Mutex<Ledger>>, Vec<JoinHandle<()>>) {
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let tasks = (0..writers)
        .map(|w| {
            let ledger = Arc::clone(&ledger);
            let collection = collection.to_owned();
            tokio::spawn(async move {
                for i in 0u64.. {
                    let name = format!("w{w}-{i}");
                    let steps: &[Op] = if i % 2 == 0 {
                        &[Op::Create, Op::Update, Op::Update, Op::Delete]
                    } else {
                        &[Op::Create, Op::Update, Op::Update]
                    };
                    let mut current: Option<Value> = None;
                    for (step, op) in steps.iter().enumerate() {
                        let answer = match op {
                            Op::Create => {
                                let body =
                                    json!({"metadata": {"name": name}, "data": {"step": step.to_string()}});
                                request(addr, "POST", &collection, Some(&body)).await
                            }
                            Op::Update => {
                                let mut body = current.clone().expect("created first");
                                body["data"]["step"] = json!(step.to_string());
                                request(addr, "PUT", &format!("{collection}/{name}"), Some(&body)).await
                            }
                            Op::Delete => {
                                request(addr, "DELETE", &format!("{collection}/{name}"), None).await
                            }
                        };
                        match answer {
                            Some((status, object)) if status.is_success() => {
                                let rv = rv_of(&object);
                                ledger.lock().unwrap().acks.push(Ack {
                                    name: name.clone(),
                                    op: *op,
                                    rv,
                                });
                                current = Some(object);
                            }
                            _ => {
                                ledger.lock().unwrap().in_flight.push((name, *op));
                                return;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    (ledger, tasks)
}

/// One object as the event stream or a list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub rv: u64,
    pub data: Value,
}

/// One delivered watch event.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub kind: String,
    pub name: String,
    pub rv: u64,
}

/// What a resuming watcher observed.
#[derive(Debug, Default)]
pub struct WatchLog {
    pub events: Vec<Delivered>,
    /// The state built by applying every event in order (and relists after 410).
    pub state: BTreeMap<String, Seen>,
    /// The last resourceVersion seen (events and bookmarks).
    pub last_rv: u64,
    /// Events whose resourceVersion was not above the last one seen.
    pub out_of_order: usize,
    /// Events delivered a second time (same name and resourceVersion).
    pub duplicates: usize,
    /// Watches started (the first one and every resume).
    pub watches: usize,
    /// 410 Gone answers that made the watcher relist, with the list's resourceVersion.
    pub relists: Vec<u64>,
    /// ERROR events other than 410, as `code reason`.
    pub errors: Vec<String>,
    seen: std::collections::HashSet<(String, u64)>,
}

impl WatchLog {
    fn apply(&mut self, kind: &str, object: &Value) {
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let rv = rv_of(object);
        if !self.seen.insert((name.clone(), rv)) {
            self.duplicates += 1;
        } else if rv <= self.last_rv {
            self.out_of_order += 1;
        }
        self.last_rv = self.last_rv.max(rv);
        self.events.push(Delivered {
            kind: kind.to_owned(),
            name: name.clone(),
            rv,
        });
        if kind == "DELETED" {
            self.state.remove(&name);
        } else {
            self.state.insert(
                name,
                Seen {
                    rv,
                    data: object["data"].clone(),
                },
            );
        }
    }
}

/// The objects of a list as name -> state, and the list's resourceVersion.
pub fn list_state(list: &Value) -> (BTreeMap<String, Seen>, u64) {
    let items = list["items"].as_array().expect("a list has items");
    let state = items
        .iter()
        .map(|item| {
            (
                item["metadata"]["name"].as_str().expect("named").to_owned(),
                Seen {
                    rv: rv_of(item),
                    data: item["data"].clone(),
                },
            )
        })
        .collect();
    (state, rv_of(list))
}

/// Reads newline-delimited JSON events from a watch response until it ends; `on_event` returns false to stop.
async fn read_events(response: Response<Incoming>, mut on_event: impl FnMut(Value) -> bool) {
    let mut body = response.into_body();
    let mut buf = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else { continue };
        buf.extend_from_slice(&data);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                return;
            };
            if !on_event(event) {
                return;
            }
        }
    }
}

/// A watcher of `collection` from `start_rv` that reconnects and resumes from its last resourceVersion whenever
/// the stream ends, relisting after 410 Gone, until stopped.
pub struct Watcher {
    pub log: Arc<Mutex<WatchLog>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Watcher {
    pub fn start(addr: SocketAddr, collection: &str, start_rv: u64, initial: BTreeMap<String, Seen>) -> Self {
        let log = WatchLog {
            last_rv: start_rv,
            state: initial,
            ..WatchLog::default()
        };
        Self::resume(addr, collection, log)
    }

    /// Continues a stopped watcher's log: watches again from its last resourceVersion.
    pub fn resume(addr: SocketAddr, collection: &str, log: WatchLog) -> Self {
        let log = Arc::new(Mutex::new(log));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (shared, collection) = (Arc::clone(&log), collection.to_owned());
        let task = tokio::spawn(async move {
            while !*stopped.borrow() {
                let from = shared.lock().unwrap().last_rv;
                let path = format!("{collection}?watch=true&allowWatchBookmarks=true&resourceVersion={from}");
                let session = async {
                    let Some(response) = send(addr, "GET", &path, None).await else {
                        return;
                    };
                    if response.status() != StatusCode::OK {
                        return;
                    }
                    shared.lock().unwrap().watches += 1;
                    let mut gone = false;
                    read_events(response, |event| {
                        let kind = event["type"].as_str().unwrap_or_default();
                        let mut log = shared.lock().unwrap();
                        match kind {
                            "BOOKMARK" => {
                                let rv = rv_of(&event["object"]);
                                log.last_rv = log.last_rv.max(rv);
                            }
                            "ERROR" if event["object"]["code"] == 410 => gone = true,
                            "ERROR" => log.errors.push(format!(
                                "{} {}: {}",
                                event["object"]["code"],
                                event["object"]["reason"],
                                event["object"]["message"]
                            )),
                            _ => log.apply(kind, &event["object"]),
                        }
                        !gone && kind != "ERROR"
                    })
                    .await;
                    if gone
                        && let Some((StatusCode::OK, list)) = request(addr, "GET", &collection, None).await
                    {
                        let (state, rv) = list_state(&list);
                        let mut log = shared.lock().unwrap();
                        log.state = state;
                        log.last_rv = rv;
                        log.relists.push(rv);
                    }
                };
                tokio::select! {
                    () = session => {}
                    _ = stopped.changed() => return,
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Self { log, stop, task }
    }

    /// Waits until the watcher has seen an object named `name` (or `limit` passes).
    pub async fn wait_for(&self, name: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let seen = {
                let log = self.log.lock().unwrap();
                // Seen as an event, or as part of a relist after 410.
                log.events.iter().any(|e| e.name == name) || log.state.contains_key(name)
            };
            if seen {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    pub async fn stop(self) -> WatchLog {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

/// The verdict of a burst: acknowledged writes against the event stream and the final list.
#[derive(Debug, Default)]
pub struct Verdict {
    pub acknowledged: usize,
    /// Acknowledged writes not reflected in the final list (missing, or older than acknowledged).
    pub lost: Vec<String>,
    /// Acknowledged writes with no event of that kind and resourceVersion (not counting writes covered by a relist).
    pub missing_events: Vec<String>,
    /// Names whose state from the event stream differs from the list.
    pub state_mismatches: Vec<String>,
}

fn event_kind(op: Op) -> &'static str {
    match op {
        Op::Create => "ADDED",
        Op::Update => "MODIFIED",
        Op::Delete => "DELETED",
    }
}

/// Compares the ledger with the watcher's log and a fresh list of the collection.
pub fn judge(ledger: &Ledger, watch: &WatchLog, list: &BTreeMap<String, Seen>) -> Verdict {
    let mut verdict = Verdict {
        acknowledged: ledger.acks.len(),
        ..Verdict::default()
    };
    let delivered: std::collections::HashSet<(&str, &str, u64)> = watch
        .events
        .iter()
        .map(|e| (e.kind.as_str(), e.name.as_str(), e.rv))
        .collect();
    let relisted_up_to = watch.relists.iter().copied().max().unwrap_or(0);
    let mut last: HashMap<&str, &Ack> = HashMap::new();
    for ack in &ledger.acks {
        last.insert(&ack.name, ack);
        if ack.rv > relisted_up_to && !delivered.contains(&(event_kind(ack.op), ack.name.as_str(), ack.rv)) {
            verdict
                .missing_events
                .push(format!("{:?} {} at {}", ack.op, ack.name, ack.rv));
        }
    }
    let pending: HashMap<&str, Op> = ledger.in_flight.iter().map(|(n, op)| (n.as_str(), *op)).collect();
    for (name, ack) in &last {
        let stored = list.get(*name);
        let ok = match (ack.op, stored) {
            (Op::Delete, None) => true,
            (Op::Delete, Some(_)) => false,
            (_, Some(seen)) => seen.rv >= ack.rv,
            // An unacknowledged delete may have been applied before the crash.
            (_, None) => pending.get(name) == Some(&Op::Delete),
        };
        if !ok {
            verdict.lost.push(format!(
                "{:?} {name} at {}: stored {:?}",
                ack.op,
                ack.rv,
                stored.map(|s| s.rv)
            ));
        }
    }
    for name in watch.state.keys().chain(list.keys()) {
        if watch.state.get(name) != list.get(name) && !verdict.state_mismatches.contains(name) {
            verdict.state_mismatches.push(name.clone());
        }
    }
    verdict
}
