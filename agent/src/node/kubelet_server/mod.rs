//! The node's kubelet endpoint for the apiserver: HTTPS, every request authenticated (client certificate or
//! TokenReview) and authorized (SubjectAccessReview on `nodes/<subresource>`), except the open `/healthz`.
//!
//! Routes: `GET /containerLogs/<ns>/<pod>/<container>` ([`super::logs_http`]), `GET /exec/<ns>/<pod>/<container>`
//! upgraded to a WebSocket ([`super::exec_http`]) and `GET /healthz`. Answers
//! like kubelet: 401 `Unauthorized` without valid credentials, 403 `Forbidden (user=..., verb=...,
//! resource=nodes, subresource=...)` when the review denies.
pub mod auth;
pub mod request;
pub mod subject;
pub mod tls;

use std::{convert::Infallible, path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{
    Request, Response, StatusCode,
    body::Incoming,
    header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue},
};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use self::auth::{Gate, User};
use super::{
    exec_http,
    logs_http::{self, LogTargets},
};

/// Response bodies of the endpoint.
pub type Body = BoxBody<Bytes, Infallible>;

/// A handshake that has not finished by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A complete response with `code`, content type and body.
pub fn reply(code: u16, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Everything the endpoint serves with.
pub struct KubeletServer {
    /// This node's name (the `name` of every authorization check).
    pub node: String,
    pub tls: Arc<rustls::ServerConfig>,
    pub gate: Gate,
    pub logs: LogTargets,
    /// Root of the pods' state directories (their log files).
    pub pod_root: PathBuf,
    /// This binary (`__enter-pod exec` runs exec'd commands in containers).
    pub agent_exe: PathBuf,
}

/// Serves `listener` until it fails.
pub async fn serve(listener: TcpListener, server: Arc<KubeletServer>) {
    let acceptor = TlsAcceptor::from(Arc::clone(&server.tls));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, acceptor.clone(), Arc::clone(&server)));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a kubelet connection");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn connection(stream: TcpStream, acceptor: TlsAcceptor, server: Arc<KubeletServer>) {
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "kubelet TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    // rustls verified the chain against the client CA; the leaf names the user.
    let peer = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| subject::user_and_groups(leaf))
        .map(|(name, groups)| User {
            name,
            uid: String::new(),
            groups: with_authenticated(groups),
        });
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (server, peer) = (Arc::clone(&server), peer.clone());
        async move { Ok::<_, Infallible>(handle(&server, peer, req).await) }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await
    {
        tracing::debug!(error = %e, "kubelet connection ended with an error");
    }
}

fn with_authenticated(mut groups: Vec<String>) -> Vec<String> {
    if !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".into());
    }
    groups
}

/// The caller: the client certificate's user, else the bearer token's (TokenReview); `None` is 401.
async fn authenticate(server: &KubeletServer, peer: Option<User>, req: &Request<Incoming>) -> Option<User> {
    if peer.is_some() {
        return peer;
    }
    let header = req.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let token = request::bearer_token(header)?;
    match server.gate.authenticate_token(token).await {
        Ok(user) => user,
        Err(e) => {
            tracing::warn!(error = %e, "could not check a bearer token");
            None
        }
    }
}

async fn handle(server: &KubeletServer, peer: Option<User>, req: Request<Incoming>) -> Response<Body> {
    let (method, path) = (req.method().as_str().to_owned(), req.uri().path().to_owned());
    if request::is_open(&method, &path) {
        return reply(200, "text/plain", "ok");
    }
    let Some(user) = authenticate(server, peer, &req).await else {
        return reply(401, "text/plain", "Unauthorized");
    };
    let Some(attrs) = request::attributes(&method, &path, &server.node) else {
        return reply(405, "text/plain", format!("{method} is not supported"));
    };
    let described = format!(
        "user={}, verb={}, resource=nodes, subresource={}",
        user.name, attrs.verb, attrs.subresource
    );
    match server.gate.authorize(&user, &attrs).await {
        Ok(Ok(())) => {}
        Ok(Err(reason)) => {
            tracing::debug!(user = %user.name, %path, %reason, "kubelet request forbidden");
            return reply(403, "text/plain", format!("Forbidden ({described})"));
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not authorize a kubelet request");
            return reply(500, "text/plain", format!("Authorization error ({described})"));
        }
    }
    if path.starts_with("/containerLogs/") {
        if method != "GET" {
            return reply(405, "text/plain", format!("{method} is not supported"));
        }
        let target = req.uri().path_and_query().map_or(path.as_str(), |pq| pq.as_str());
        return logs_http::respond(target, &server.logs, &server.pod_root).await;
    }
    if path.starts_with("/exec/") {
        return exec_http::respond(server, req).await;
    }
    reply(404, "text/plain", "404 page not found")
}
