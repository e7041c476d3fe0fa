//! kube-proxy-compatible health endpoints (`/healthz`, `/livez` on :10256): healthy while every queued change was
//! written to the dataplane within the timeout; `/healthz` also reports whether load balancers should use this node.
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use k8s_openapi::api::core::v1::Node;
use tokio::net::TcpListener;

use crate::agnhost::http::{self, Handler, Request, Response};

/// kube-proxy's default (twice its 30 s sync period).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Taint the cluster autoscaler sets on nodes it is about to delete.
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

/// The sync progress the endpoints report on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// When the dataplane was last brought up to date.
    pub last_updated: Option<SystemTime>,
    /// The oldest change not yet written (none when up to date).
    pub oldest_queued: Option<SystemTime>,
    /// Whether the Node is neither being deleted nor marked for deletion (unknown counts as eligible).
    pub node_eligible: bool,
}

impl State {
    /// Healthy unless a change has been waiting longer than `timeout`.
    pub fn healthy(&self, now: SystemTime, timeout: Duration) -> bool {
        match self.oldest_queued {
            None => true,
            Some(q) => now.duration_since(q).unwrap_or_default() <= timeout,
        }
    }
}

/// Whether load balancers may keep sending to this node (kube-proxy's `nodeEligible`).
pub fn node_eligible(node: Option<&Node>) -> bool {
    let Some(node) = node else { return true };
    let deleting = node.metadata.deletion_timestamp.is_some();
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == TO_BE_DELETED_TAINT));
    !deleting && !tainted
}

/// Formats a time like Go's `time.Time` JSON encoding (RFC 3339, UTC, nanoseconds without trailing zeros).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (proleptic Gregorian), after H. Hinnant's `civil_from_days`.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let frac = match d.subsec_nanos() {
        0 => String::new(),
        n => format!(".{}", format!("{n:09}").trim_end_matches('0')),
    };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{frac}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The answer to `GET path` (kube-proxy's JSON body; 200 when healthy, 503 when not).
pub fn respond(path: &str, state: &State, now: SystemTime, timeout: Duration) -> Response {
    let last = rfc3339(state.last_updated.unwrap_or(UNIX_EPOCH));
    let healthy = state.healthy(now, timeout);
    let body = |eligible: Option<bool>| {
        let mut v = serde_json::json!({ "lastUpdated": last, "currentTime": rfc3339(now) });
        if let Some(e) = eligible {
            v["nodeEligible"] = e.into();
        }
        v.to_string()
    };
    match path {
        "/healthz" => {
            let ok = healthy && state.node_eligible;
            Response::status(if ok { 200 } else { 503 }, body(Some(state.node_eligible)))
        }
        "/livez" => Response::status(if healthy { 200 } else { 503 }, body(None)),
        _ => Response::status(404, "404 page not found\n"),
    }
}

/// Shared sync progress: the sync loop reports, the HTTP server reads.
#[derive(Clone, Debug)]
pub struct Health {
    state: Arc<Mutex<State>>,
    timeout: Duration,
}

impl Health {
    pub fn new(timeout: Duration) -> Self {
        Health {
            state: Arc::new(Mutex::new(State {
                node_eligible: true,
                ..State::default()
            })),
            timeout,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// A change arrived that is not in the dataplane yet.
    pub fn queued(&self) {
        self.with(|s| {
            s.oldest_queued.get_or_insert_with(SystemTime::now);
        });
    }

    /// The dataplane holds every change queued so far.
    pub fn updated(&self) {
        self.with(|s| {
            s.last_updated = Some(SystemTime::now());
            s.oldest_queued = None;
        });
    }

    pub fn set_node_eligible(&self, eligible: bool) {
        self.with(|s| s.node_eligible = eligible);
    }

    /// Whether every queued change reached the dataplane within the timeout, now.
    pub fn healthy(&self) -> bool {
        self.state().healthy(SystemTime::now(), self.timeout)
    }

    pub fn state(&self) -> State {
        self.with(|s| *s)
    }

    /// Serves `/healthz` and `/livez` on `listener` until the task is dropped.
    pub async fn serve(self, listener: TcpListener) {
        let handler: Handler = Arc::new(move |req: &Request| {
            if req.method != "GET" && req.method != "HEAD" {
                return Response::status(405, "method not allowed\n");
            }
            respond(&req.path, &self.state(), SystemTime::now(), self.timeout)
        });
        if let Err(e) = http::serve(listener, handler).await {
            tracing::error!(error = %e, "healthz server stopped");
        }
    }
}

/// Binds the healthz address with a message that names the flag.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    TcpListener::bind(addr).await.with_context(|| {
        format!(
            "binding --healthz-addr {addr} (is kube-proxy still running on this node? it uses :10256 too)"
        )
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::core::v1::{NodeSpec, Taint},
        apimachinery::pkg::apis::meta::v1::Time,
    };

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn formats_times_like_go() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(
            rfc3339(at(1_798_761_599) + Duration::from_nanos(120_000_000)),
            "2026-12-31T23:59:59.12Z"
        );
    }

    #[test]
    fn healthy_until_a_queued_change_is_older_than_the_timeout() {
        let t = Duration::from_secs(60);
        let mut s = State {
            node_eligible: true,
            ..State::default()
        };
        assert!(s.healthy(at(1000), t), "nothing queued yet");
        s.oldest_queued = Some(at(1000));
        assert!(s.healthy(at(1060), t));
        assert!(!s.healthy(at(1061), t));
        let r = respond("/healthz", &s, at(1061), t);
        assert_eq!(r.status, 503);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["lastUpdated"], "1970-01-01T00:00:00Z");
        assert_eq!(v["currentTime"], rfc3339(at(1061)));
        assert_eq!(v["nodeEligible"], true);
        s.oldest_queued = None;
        s.last_updated = Some(at(1062));
        assert_eq!(respond("/healthz", &s, at(1063), t).status, 200);
        assert_eq!(respond("/livez", &s, at(1063), t).status, 200);
        assert_eq!(respond("/metrics", &s, at(1063), t).status, 404);
    }

    #[test]
    fn an_ineligible_node_fails_healthz_but_not_livez() {
        let s = State {
            node_eligible: false,
            ..State::default()
        };
        let t = Duration::from_secs(60);
        assert_eq!(respond("/healthz", &s, at(5), t).status, 503);
        let live = respond("/livez", &s, at(5), t);
        assert_eq!(live.status, 200);
        assert!(!live.body.contains("nodeEligible"));
    }

    #[test]
    fn nodes_being_deleted_or_marked_are_not_eligible() {
        assert!(node_eligible(None));
        let mut n = Node::default();
        assert!(node_eligible(Some(&n)));
        n.spec = Some(NodeSpec {
            taints: Some(vec![Taint {
                key: TO_BE_DELETED_TAINT.into(),
                effect: "NoSchedule".into(),
                ..Taint::default()
            }]),
            ..NodeSpec::default()
        });
        assert!(!node_eligible(Some(&n)));
        n.spec = None;
        n.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert!(!node_eligible(Some(&n)));
    }

    #[tokio::test]
    async fn serves_over_http() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let health = Health::new(DEFAULT_TIMEOUT);
        health.queued();
        health.updated();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(health.clone().serve(listener));
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut resp = String::new();
        tokio::time::timeout(Duration::from_secs(5), c.read_to_string(&mut resp))
            .await
            .unwrap()
            .unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(resp.contains("\"nodeEligible\":true"), "{resp}");
        server.abort();
    }
}
