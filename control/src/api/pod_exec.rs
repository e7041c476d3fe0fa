//! `pods/exec`: kubectl's WebSocket exec (`GET .../pods/<name>/exec?command=..&stdin=..`, `Upgrade: websocket`,
//! `Sec-WebSocket-Protocol: v5.channel.k8s.io`) proxied to the node agent like kube-apiserver's
//! UpgradeAwareHandler: the request is authorized as `create pods/exec` (also for GET), the container chosen,
//! then the upgrade is sent to the agent's `/exec/<namespace>/<pod>/<container>?<command, stdin, stdout, stderr,
//! tty>` over TLS with the apiserver's kubelet client certificate (see [`super::pods`]); the agent's 101 goes back
//! to the client and both connections are spliced byte for byte. Any other answer of the agent is passed back.
//! SPDY (kubectl's fallback for servers without WebSocket exec) is refused with 400.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::pods::{agent_unreachable, dial_agent, load_pod, passthrough, pick_container, pod_agent};
use super::router::{ApiState, Ctx};
use super::status::ApiError;

/// Query parameters of an exec forwarded to the agent (the container is in its path).
const EXEC_PARAMS: &[&str] = &["command", "stdin", "stdout", "stderr", "tty"];

/// Headers of the WebSocket handshake passed between client and agent.
const REQUEST_HEADERS: &[&str] = &[
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
];
const RESPONSE_HEADERS: &[&str] = &["sec-websocket-accept", "sec-websocket-protocol"];

fn truthy(v: &str) -> bool {
    matches!(v, "true" | "1")
}

/// kube-apiserver's checks of an exec query: a command and at least one stream.
pub fn validate(query: Option<&str>) -> Result<(), ApiError> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    if !pairs.iter().any(|(k, _)| k == "command") {
        return Err(ApiError::bad_request(
            "you must specify at least one command for the container",
        ));
    }
    let on = |name: &str| pairs.iter().any(|(k, v)| k == name && truthy(v));
    if !(on("stdin") || on("stdout") || on("stderr")) {
        return Err(ApiError::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    Ok(())
}

/// The agent's path for an exec of `container`: the client's command (every `command`, in order) and streams.
pub fn agent_path(namespace: &str, pod: &str, container: &str, query: Option<&str>) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if EXEC_PARAMS.contains(&k.as_ref()) {
            out.append_pair(&k, &v);
        }
    }
    format!("/exec/{namespace}/{pod}/{container}?{}", out.finish())
}

/// Whether a request asks for a WebSocket (`Connection: Upgrade` and `Upgrade: websocket`).
pub fn is_websocket(headers: &HeaderMap) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .unwrap_or("")
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, "websocket")
}

/// Whether `container` of `pod` runs, from the pod's status.
fn container_running(pod: &Value, container: &str) -> bool {
    ["containerStatuses", "initContainerStatuses"]
        .iter()
        .flat_map(|list| pod["status"][list].as_array().into_iter().flatten())
        .any(|s| s["name"] == container && s["state"]["running"].is_object())
}

/// GET (WebSocket) or POST (SPDY, refused) `pods/<name>/exec`.
pub async fn exec(
    state: &Arc<ApiState>,
    ctx: &Ctx,
    query: Option<&str>,
    headers: &HeaderMap,
    upgrade: Option<OnUpgrade>,
) -> Result<Response, ApiError> {
    validate(query)?;
    let pod = load_pod(state, ctx).await?;
    let container = pick_container(&pod, ctx.query.get("container"))?;
    if !container_running(&pod, &container) {
        let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
        return Err(ApiError::bad_request(format!(
            "container {container} in pod {} is not running (pod phase {phase})",
            ctx.name()
        )));
    }
    let (node, ip, port) = pod_agent(state, &pod).await?;
    if !is_websocket(headers) {
        let offered = headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none");
        return Err(ApiError::bad_request(format!(
            "exec is served over WebSocket only (v5.channel.k8s.io, kubectl 1.30 or newer); upgrade {offered:?} is not supported"
        )));
    }
    let upgrade = upgrade.ok_or_else(|| ApiError::internal("the connection cannot be upgraded"))?;
    let path = agent_path(
        ctx.namespace().unwrap_or("default"),
        ctx.name(),
        &container,
        query,
    );
    let mut request = hyper::Request::builder()
        .method(hyper::Method::GET)
        .uri(path)
        .header(header::HOST, format!("{ip}:{port}"))
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket");
    for name in REQUEST_HEADERS {
        for value in headers.get_all(*name) {
            request = request.header(*name, value.clone());
        }
    }
    let request = request
        .body(Body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut sender = dial_agent(state, &node, &ip, port).await?;
    let upstream = sender
        .send_request(request)
        .await
        .map_err(|e| agent_unreachable(&node, &ip, port, &e))?;
    if upstream.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(passthrough(upstream));
    }
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let out = response.headers_mut();
    out.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    out.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    for name in RESPONSE_HEADERS {
        if let Some(v) = upstream.headers().get(*name) {
            out.insert(*name, v.clone());
        }
    }
    let (namespace, name) = (
        ctx.namespace().unwrap_or("default").to_owned(),
        ctx.name().to_owned(),
    );
    tokio::spawn(async move {
        let agent_side = hyper::upgrade::on(upstream);
        let (client, agent) = match tokio::join!(upgrade, agent_side) {
            (Ok(c), Ok(a)) => (c, a),
            (c, a) => {
                tracing::debug!(client = ?c.err(), agent = ?a.err(), "exec upgrade failed");
                return;
            }
        };
        let (mut client, mut agent) = (TokioIo::new(client), TokioIo::new(agent));
        match tokio::io::copy_bidirectional(&mut client, &mut agent).await {
            Ok((up, down)) => tracing::debug!(%namespace, pod = %name, %container, up, down, "exec ended"),
            Err(e) => tracing::debug!(%namespace, pod = %name, %container, error = %e, "exec ended"),
        }
    });
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn agent_path_keeps_command_order_and_streams() {
        let q = "command=sh&command=-c&command=echo+a%26b&container=c&stdin=true&stdout=true&stderr=true&tty=false&pretty=1";
        assert_eq!(
            agent_path("default", "p", "c", Some(q)),
            "/exec/default/p/c?command=sh&command=-c&command=echo+a%26b&stdin=true&stdout=true&stderr=true&tty=false"
        );
        assert_eq!(agent_path("ns", "p", "main", None), "/exec/ns/p/main?");
    }

    #[test]
    fn exec_queries_need_a_command_and_a_stream() {
        assert!(validate(Some("command=ls&stdout=true")).is_ok());
        let err = validate(Some("stdout=true")).unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (400, "you must specify at least one command for the container")
        );
        let err = validate(Some("command=ls&stdout=false")).unwrap_err();
        assert_eq!(
            err.message,
            "you must specify at least 1 of stdin, stdout, stderr"
        );
    }

    #[test]
    fn websocket_upgrades_are_recognised() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_websocket(&h));
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        assert!(!is_websocket(&h), "SPDY is not served");
        h.remove(header::CONNECTION);
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(!is_websocket(&h), "Connection: Upgrade is required");
    }

    #[test]
    fn running_containers_from_status() {
        let pod = json!({"status": {"containerStatuses": [
            {"name": "a", "state": {"running": {"startedAt": "x"}}},
            {"name": "b", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        assert!(container_running(&pod, "a"));
        assert!(!container_running(&pod, "b"));
        assert!(!container_running(&pod, "c"));
    }
}
