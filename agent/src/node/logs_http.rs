//! Container logs of the kubelet endpoint: `GET /containerLogs/<ns>/<pod>/<container>` (the kubelet path the
//! apiserver proxies `pods/log` to; see control/src/api/pods.rs), served by [`super::kubelet_server`].
use std::{
    collections::BTreeMap,
    convert::Infallible,
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use bytes::Bytes;
use futures::{SinkExt, StreamExt, channel::mpsc};
use http_body_util::{BodyExt, StreamBody};
use hyper::{
    Response,
    body::Frame,
    header::{CONTENT_TYPE, HeaderValue},
};
use serde_json::json;
use tokio::sync::watch;

use super::kubelet_server::{Body, reply};
use crate::pods::{layout::PodDir, logs, status::PodView};

/// A pod whose logs can be read: its UID and live status.
#[derive(Debug, Clone)]
pub struct LogTarget {
    pub uid: String,
    pub status: watch::Receiver<PodView>,
}

/// Pods running on this node by (namespace, name); the pod manager keeps it current.
#[derive(Debug, Clone, Default)]
pub struct LogTargets(Arc<RwLock<BTreeMap<(String, String), LogTarget>>>);

impl LogTargets {
    pub fn insert(&self, namespace: &str, name: &str, t: LogTarget) {
        self.0
            .write()
            .expect("log targets lock")
            .insert((namespace.into(), name.into()), t);
    }

    pub fn remove(&self, namespace: &str, name: &str, uid: &str) {
        let mut m = self.0.write().expect("log targets lock");
        let key = (namespace.to_string(), name.to_string());
        if m.get(&key).is_some_and(|t| t.uid == uid) {
            m.remove(&key);
        }
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<LogTarget> {
        self.0
            .read()
            .expect("log targets lock")
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }
}

/// A parsed log request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRequest {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub follow: bool,
    pub previous: bool,
    pub tail: Option<usize>,
    pub limit_bytes: Option<usize>,
}

/// What to answer instead of logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
        }
    }

    /// A Kubernetes `Status` body.
    pub fn body(&self) -> String {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.message, "reason": self.reason, "code": self.code})
        .to_string()
    }
}

fn truthy(v: &str) -> bool {
    matches!(v, "true" | "1" | "True")
}

/// Parses `/containerLogs/<ns>/<pod>/<container>?follow=true&tailLines=N&previous=true&limitBytes=N`.
pub fn parse_request(target: &str) -> Result<LogRequest, Refusal> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ["containerLogs", ns, pod, container] = parts.as_slice() else {
        return Err(Refusal::new(404, "NotFound", format!("no handler for {path}")));
    };
    let mut req = LogRequest {
        namespace: ns.to_string(),
        pod: pod.to_string(),
        container: container.to_string(),
        follow: false,
        previous: false,
        tail: None,
        limit_bytes: None,
    };
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let num = || {
            v.parse::<i64>()
                .map_err(|_| Refusal::new(400, "BadRequest", format!("{k}={v}: not a number")))
        };
        match k.as_ref() {
            "follow" => req.follow = truthy(&v),
            "previous" => req.previous = truthy(&v),
            "tailLines" => req.tail = Some(num()?.max(0) as usize),
            "limitBytes" => req.limit_bytes = Some(num()?.max(1) as usize),
            _ => {}
        }
    }
    Ok(req)
}

/// Which run's log file a request reads: the current run, or the one before it with `previous`.
pub fn attempt(view: &PodView, req: &LogRequest) -> Result<u32, Refusal> {
    let c = view.container(&req.container).ok_or_else(|| {
        Refusal::new(
            400,
            "BadRequest",
            format!("container {} is not valid for pod {}", req.container, req.pod),
        )
    })?;
    let current = c.restart_count.max(0) as u32;
    if req.previous {
        current.checked_sub(1).ok_or_else(|| {
            Refusal::new(
                400,
                "BadRequest",
                format!(
                    "previous terminated container \"{}\" in pod \"{}\" not found",
                    req.container, req.pod
                ),
            )
        })
    } else {
        Ok(current)
    }
}

fn text(body: String) -> Response<Body> {
    reply(200, "text/plain", body)
}

fn refuse(r: &Refusal) -> Response<Body> {
    reply(r.code, "application/json", r.body())
}

/// Answers `GET /containerLogs/...` (`target` is the path and query): the log text, streamed while
/// `follow=true` until the container's run ends or the client goes away.
pub async fn respond(target: &str, targets: &LogTargets, root: &Path) -> Response<Body> {
    let req = match parse_request(target) {
        Ok(r) => r,
        Err(r) => return refuse(&r),
    };
    let Some(t) = targets.get(&req.namespace, &req.pod) else {
        return refuse(&Refusal::new(
            404,
            "NotFound",
            format!("pod {}/{} is not running on this node", req.namespace, req.pod),
        ));
    };
    let view = t.status.borrow().clone();
    let attempt = match attempt(&view, &req) {
        Ok(a) => a,
        Err(r) => return refuse(&r),
    };
    let path = PodDir::new(root, &t.uid).log_file(&req.container, attempt);
    let p = path.clone();
    let tail = req.tail;
    let read = tokio::task::spawn_blocking(move || {
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        logs::read(&p, tail).map(|t| (t, len))
    })
    .await;
    let (mut body, offset) = match read {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return refuse(&Refusal::new(
                500,
                "InternalError",
                format!("reading the log: {e}"),
            ));
        }
        Err(e) => return refuse(&Refusal::new(500, "InternalError", e.to_string())),
    };
    if let Some(limit) = req.limit_bytes {
        let mut cut = limit.min(body.len());
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        body.truncate(cut);
    }
    if !req.follow || req.previous {
        return text(body);
    }
    let (mut tx, rx) = mpsc::channel::<Bytes>(16);
    let container = req.container.clone();
    tokio::spawn(async move {
        if tx.send(Bytes::from(body)).await.is_ok() {
            follow(tx, t, &container, attempt, path, offset).await;
        }
    });
    let stream = rx.map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// Sends lines appended to `path` until the container's run `attempt` is over or the receiver is gone.
async fn follow(
    mut tx: mpsc::Sender<Bytes>,
    t: LogTarget,
    container: &str,
    attempt: u32,
    path: PathBuf,
    mut offset: u64,
) {
    let mut partial = String::new();
    let mut last_round = false;
    loop {
        let p = path.clone();
        let from = offset;
        let chunk = tokio::task::spawn_blocking(move || -> std::io::Result<(Vec<u8>, u64)> {
            let mut f = match std::fs::File::open(&p) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
                Err(e) => return Err(e),
            };
            let len = f.metadata()?.len();
            let start = if len < from { 0 } else { from }; // rotated: start over
            f.seek(SeekFrom::Start(start))?;
            let mut buf = Vec::new();
            f.take(1 << 20).read_to_end(&mut buf)?;
            let end = start + buf.len() as u64;
            Ok((buf, end))
        })
        .await;
        let Ok(Ok((bytes, end))) = chunk else {
            tracing::debug!(path = %path.display(), "following a log stopped: read failed");
            return;
        };
        offset = end;
        partial.push_str(&String::from_utf8_lossy(&bytes));
        let mut out = String::new();
        while let Some(i) = partial.find('\n') {
            let line: String = partial.drain(..=i).collect();
            out.push_str(logs::message(line.trim_end_matches('\n')));
            out.push('\n');
        }
        if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
            return;
        }
        if last_round || tx.is_closed() {
            return;
        }
        let over = {
            let view = t.status.borrow();
            view.container(container)
                .is_none_or(|c| c.restart_count.max(0) as u32 != attempt || !c.state.is_running())
        };
        if over || t.status.has_changed().is_err() {
            last_round = true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::status::{ContainerView, Phase};

    #[test]
    fn parses_the_kubelet_path_and_query() {
        let r =
            parse_request("/containerLogs/default/web/c1?follow=true&tailLines=5&previous=false").unwrap();
        assert_eq!(
            (r.namespace.as_str(), r.pod.as_str(), r.container.as_str()),
            ("default", "web", "c1")
        );
        assert!(r.follow && !r.previous);
        assert_eq!(r.tail, Some(5));
        assert_eq!(parse_request("/other").unwrap_err().code, 404);
        assert_eq!(
            parse_request("/containerLogs/a/b/c?tailLines=x")
                .unwrap_err()
                .code,
            400
        );
    }

    #[test]
    fn previous_reads_the_run_before() {
        let mut c = ContainerView::new("c1", "agnhost");
        c.restart_count = 2;
        let view = PodView {
            phase: Phase::Running,
            initialized: true,
            init_containers: vec![],
            containers: vec![c],
        };
        let mut r = parse_request("/containerLogs/d/p/c1").unwrap();
        assert_eq!(attempt(&view, &r), Ok(2));
        r.previous = true;
        assert_eq!(attempt(&view, &r), Ok(1));
        r.container = "nope".into();
        assert_eq!(attempt(&view, &r).unwrap_err().code, 400);
        let fresh = PodView {
            containers: vec![ContainerView::new("c1", "agnhost")],
            ..view
        };
        let r = parse_request("/containerLogs/d/p/c1?previous=true").unwrap();
        assert!(
            attempt(&fresh, &r)
                .unwrap_err()
                .message
                .contains("previous terminated container")
        );
    }
}
