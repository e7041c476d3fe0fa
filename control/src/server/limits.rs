//! Request limits in front of the API, mirroring kube-apiserver's generic filters: `--max-requests-inflight` and
//! `--max-mutating-requests-inflight` (429 + Retry-After, long-running requests exempt), `--request-timeout`
//! (504 for non-long-running requests, shortened by a request's `?timeout=`), the 3 MiB body limit (413 before
//! the body is read when Content-Length announces more) and, without a kube equivalent, a cap on concurrent watches
//! per authenticated user, and a nesting-depth check of JSON and YAML bodies (`nesting`). Header read timeouts
//! (kube's `ReadHeaderTimeout`) are set on the connection in `server`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use super::health::Health;
use super::nesting;
use crate::api::path::{self, Route};
use crate::api::router::ApiState;
use crate::api::status::ApiError;
use crate::auth::PeerUser;

/// Seconds clients are told to wait after a 429 (kube-apiserver sends 1).
const RETRY_AFTER_SECONDS: u64 = 1;

/// Limits on concurrent and slow requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitOptions {
    /// Concurrent non-mutating, non-long-running requests (kube `--max-requests-inflight`, 400); 0 = no limit.
    pub max_requests_inflight: usize,
    /// Concurrent mutating requests (kube `--max-mutating-requests-inflight`, 200); 0 = no limit.
    pub max_mutating_requests_inflight: usize,
    /// Time limit of a non-long-running request (kube `--request-timeout`, 60 s).
    pub request_timeout: Duration,
    /// Time a client has to send a request's headers (kube-apiserver's `ReadHeaderTimeout`, 32 s).
    pub header_read_timeout: Duration,
    /// Concurrent watches per user; 0 = no limit.
    pub max_watches_per_user: usize,
}

impl Default for LimitOptions {
    fn default() -> Self {
        Self {
            max_requests_inflight: 400,
            max_mutating_requests_inflight: 200,
            request_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(32),
            max_watches_per_user: 1000,
        }
    }
}

/// How a request is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestClass {
    /// Health probes: never limited, so an overloaded server can still say so.
    Probe,
    /// A watch: counted per user, no timeout.
    Watch,
    /// Other long-running requests (logs, exec, attach, port-forward, proxy): neither limited nor timed out.
    LongRunning,
    /// GET, HEAD, OPTIONS.
    ReadOnly,
    /// POST, PUT, PATCH, DELETE.
    Mutating,
}

fn query_flag(query: Option<&str>, name: &str) -> bool {
    query.is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == name && (v == "true" || v == "1"))
    })
}

fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    query.and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    })
}

/// Classifies a request like kube-apiserver's `BasicLongRunningRequestCheck` (verbs watch and proxy; subresources
/// attach, exec, proxy, log and portforward are long-running).
pub fn classify(method: &Method, path: &str, query: Option<&str>) -> RequestClass {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if matches!(segments.first(), Some(&("healthz" | "readyz" | "livez"))) {
        return RequestClass::Probe;
    }
    // The deprecated `/api/v1/watch/...` and `/apis/<group>/<version>/watch/...` forms.
    let watch_path = match segments.first() {
        Some(&"api") => segments.get(2) == Some(&"watch"),
        Some(&"apis") => segments.get(3) == Some(&"watch"),
        _ => false,
    };
    if *method == Method::GET && (query_flag(query, "watch") || watch_path) {
        return RequestClass::Watch;
    }
    if let Route::Resource(resource) = path::parse(path)
        && resource
            .subresource
            .as_deref()
            .is_some_and(|s| matches!(s, "attach" | "exec" | "proxy" | "log" | "portforward"))
    {
        return RequestClass::LongRunning;
    }
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => RequestClass::ReadOnly,
        _ => RequestClass::Mutating,
    }
}

/// The time limit of a request: `--request-timeout`, or the client's shorter `?timeout=`.
pub fn timeout_for(query: Option<&str>, limit: Duration) -> Duration {
    query_value(query, "timeout")
        .and_then(|t| crate::controllers::nodelifecycle::parse_duration(&t).ok())
        .filter(|t| !t.is_zero())
        .map_or(limit, |t| t.min(limit))
}

/// A 429 `Status` with `Retry-After`, as kube-apiserver answers when its in-flight limit is reached.
fn too_many_requests(message: &str) -> Response {
    let error = ApiError {
        code: 429,
        reason: "TooManyRequests",
        message: message.to_owned(),
        details: Some(serde_json::json!({"retryAfterSeconds": RETRY_AFTER_SECONDS})),
    };
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    response
}

/// A 504 `Status` worded like kube-apiserver's timeout filter.
fn timed_out() -> Response {
    ApiError {
        code: 504,
        reason: "Timeout",
        message: "Timeout: request did not complete within the allotted timeout".to_owned(),
        details: Some(serde_json::json!({"causes": [{"reason": "Timeout", "message": "context deadline exceeded"}], "retryAfterSeconds": 0})),
    }
    .into_response()
}

/// Open watches per user.
#[derive(Default)]
struct WatchCounts(Mutex<HashMap<String, usize>>);

/// Decrements a user's watch count when the watch response ends.
struct WatchSlot {
    counts: Arc<WatchCounts>,
    user: String,
}

impl WatchCounts {
    fn acquire(self: &Arc<Self>, user: &str, limit: usize) -> Option<WatchSlot> {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(user.to_owned()).or_default();
        if limit > 0 && *count >= limit {
            return None;
        }
        *count += 1;
        Some(WatchSlot {
            counts: Arc::clone(self),
            user: user.to_owned(),
        })
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.user);
            }
        }
    }
}

/// The limits of one server, shared by all its connections.
pub struct Limits {
    options: LimitOptions,
    read_only: Option<Semaphore>,
    mutating: Option<Semaphore>,
    watches: Arc<WatchCounts>,
    state: Arc<ApiState>,
    health: Health,
    app: Router,
}

impl Limits {
    pub fn new(options: LimitOptions, state: Arc<ApiState>, health: Health, app: Router) -> Self {
        let semaphore = |n: usize| (n > 0).then(|| Semaphore::new(n));
        Self {
            read_only: semaphore(options.max_requests_inflight),
            mutating: semaphore(options.max_mutating_requests_inflight),
            options,
            watches: Arc::default(),
            state,
            health,
            app,
        }
    }

    /// Time a client has to send a request's headers.
    pub fn header_read_timeout(&self) -> Duration {
        self.options.header_read_timeout
    }

    /// Serves one request within the limits.
    pub async fn serve(&self, request: Request<Body>) -> Response {
        let class = classify(request.method(), request.uri().path(), request.uri().query());
        if class == RequestClass::Probe {
            return self.health.serve(request.uri()).await;
        }
        let announced = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        let max_body = self.state.options.max_body;
        if announced.is_some_and(|n| n > max_body) {
            return ApiError::too_large(max_body).into_response();
        }
        match class {
            RequestClass::Probe | RequestClass::LongRunning => self.call(request).await,
            RequestClass::Watch => self.watch(request).await,
            RequestClass::ReadOnly | RequestClass::Mutating => {
                let semaphore = if class == RequestClass::ReadOnly {
                    &self.read_only
                } else {
                    &self.mutating
                };
                let _permit = match semaphore.as_ref().map(Semaphore::try_acquire) {
                    Some(Err(_)) => {
                        return too_many_requests("Too many requests, please try again later.");
                    }
                    Some(Ok(permit)) => Some(permit),
                    None => None,
                };
                let limit = timeout_for(request.uri().query(), self.options.request_timeout);
                match tokio::time::timeout(limit, self.checked_call(request, max_body)).await {
                    Ok(response) => response,
                    Err(_) => timed_out(),
                }
            }
        }
    }

    /// Reads a JSON or YAML body (within the size limit) and refuses it when it nests too deeply, then calls
    /// the API with the buffered body.
    async fn checked_call(&self, request: Request<Body>, max_body: usize) -> Response {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let textual =
            content_type.is_empty() || content_type.contains("json") || content_type.contains("yaml");
        // Bodies of unauthenticated requests are never buffered: the router answers them 401 unread.
        let authenticated = self
            .state
            .authn
            .authenticate(request.headers(), request.extensions().get::<PeerUser>())
            .is_some();
        if !textual
            || !authenticated
            || matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        {
            return self.call(request).await;
        }
        let (parts, body) = request.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, max_body).await else {
            return ApiError::too_large(max_body).into_response();
        };
        if nesting::too_deep(&bytes, content_type.contains("yaml"), nesting::MAX_DEPTH) {
            return ApiError::bad_request(format!(
                "the request body nests objects or arrays deeper than {} levels",
                nesting::MAX_DEPTH
            ))
            .into_response();
        }
        self.call(Request::from_parts(parts, Body::from(bytes))).await
    }

    async fn call(&self, request: Request<Body>) -> Response {
        match self.app.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    async fn watch(&self, request: Request<Body>) -> Response {
        let peer = request.extensions().get::<PeerUser>();
        // Unauthenticated requests pass on to be refused with 401 by the router.
        let Some(user) = self.state.authn.authenticate(request.headers(), peer) else {
            return self.call(request).await;
        };
        let Some(slot) = self
            .watches
            .acquire(&user.name, self.options.max_watches_per_user)
        else {
            return too_many_requests(&format!(
                "Too many watches: user {:?} already has {} open, please close some first.",
                user.name, self.options.max_watches_per_user
            ));
        };
        let response = self.call(request).await;
        let (parts, body) = response.into_parts();
        // The slot is released when the stream ends or the client goes away (the body is dropped).
        let body = body.into_data_stream().map(move |chunk| {
            let _held = &slot;
            chunk
        });
        Response::from_parts(parts, Body::from_stream(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_like_kube_long_running_check() {
        let get = Method::GET;
        assert_eq!(classify(&get, "/readyz", None), RequestClass::Probe);
        assert_eq!(classify(&get, "/livez/ping", None), RequestClass::Probe);
        assert_eq!(
            classify(
                &get,
                "/api/v1/namespaces/default/pods",
                Some("watch=true&resourceVersion=5")
            ),
            RequestClass::Watch
        );
        assert_eq!(classify(&get, "/api/v1/watch/pods", None), RequestClass::Watch);
        assert_eq!(
            classify(&get, "/apis/apps/v1/watch/namespaces/x/deployments", None),
            RequestClass::Watch
        );
        assert_eq!(
            classify(&get, "/api/v1/namespaces/default/pods/p/log", Some("follow=true")),
            RequestClass::LongRunning
        );
        assert_eq!(
            classify(&Method::POST, "/api/v1/namespaces/default/pods/p/exec", None),
            RequestClass::LongRunning
        );
        assert_eq!(
            classify(
                &get,
                "/api/v1/namespaces/default/pods/p/exec",
                Some("command=sh&stdin=true")
            ),
            RequestClass::LongRunning,
            "a WebSocket exec is a GET"
        );
        assert_eq!(
            classify(&get, "/api/v1/namespaces/default/pods", Some("watch=false")),
            RequestClass::ReadOnly
        );
        assert_eq!(
            classify(&get, "/api/v1/namespaces/log/configmaps/log", None),
            RequestClass::ReadOnly,
            "objects named like subresources are not long-running"
        );
        assert_eq!(
            classify(&Method::PATCH, "/api/v1/namespaces/default/configmaps/c", None),
            RequestClass::Mutating
        );
        assert_eq!(
            classify(&Method::DELETE, "/api/v1/nodes/n", None),
            RequestClass::Mutating
        );
    }

    #[test]
    fn client_timeout_only_shortens_the_limit() {
        let limit = Duration::from_secs(60);
        assert_eq!(timeout_for(None, limit), limit);
        assert_eq!(timeout_for(Some("timeout=5s"), limit), Duration::from_secs(5));
        assert_eq!(timeout_for(Some("timeout=10m"), limit), limit);
        assert_eq!(timeout_for(Some("timeout=bogus"), limit), limit);
        assert_eq!(timeout_for(Some("timeout=0s"), limit), limit);
    }

    #[test]
    fn watch_slots_are_counted_per_user_and_released_on_drop() {
        let counts = Arc::new(WatchCounts::default());
        let a1 = counts.acquire("alice", 2).expect("first");
        let _a2 = counts.acquire("alice", 2).expect("second");
        assert!(counts.acquire("alice", 2).is_none(), "third is refused");
        let _b = counts.acquire("bob", 2).expect("other users are not affected");
        drop(a1);
        assert!(
            counts.acquire("alice", 2).is_some(),
            "a closed watch frees its slot"
        );
        assert!(counts.acquire("carol", 0).is_some(), "0 means no limit");
    }

    #[test]
    fn too_many_requests_carries_retry_after() {
        let response = too_many_requests("busy");
        assert_eq!(response.status().as_u16(), 429);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
