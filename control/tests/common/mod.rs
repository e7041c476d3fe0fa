//! Test helpers: a server on 127.0.0.1:0 in a temporary directory, a small HTTP client, kubectl.

#![allow(dead_code, reason = "each test binary uses a different subset of the helpers")]

pub mod faults;
pub mod kubectl;
pub mod python;
pub mod tls_cluster;

use std::time::Duration;

use bytes::Bytes;
use control::server::{Running, ServerConfig, start};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

pub const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

/// A running server with its data directory.
pub struct TestServer {
    pub server: Running,
    pub dir: tempfile::TempDir,
}

pub async fn server() -> TestServer {
    server_with(|_| {}).await
}

pub async fn server_with(tune: impl FnOnce(&mut ServerConfig)) -> TestServer {
    let dir = tempfile::Builder::new()
        .prefix("skiff-ctl-")
        .tempdir()
        .expect("temp dir");
    let mut config = ServerConfig::for_tests(dir.path().to_path_buf());
    tune(&mut config);
    let server = start(config).await.expect("server starts");
    TestServer { server, dir }
}

/// Starts a server again on the data directory of one that was just dropped. The dropped server's tasks release the
/// store asynchronously (an open redb file refuses a second opener), so this retries for a few seconds.
pub async fn restart(config: ServerConfig) -> Running {
    let mut last = None;
    for _ in 0..100 {
        match start(config.clone()).await {
            Ok(running) => return running,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server did not start again within 5 s: {last:?}")
}

/// One HTTP/1.1 request on a fresh connection.
pub async fn send(
    srv: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Response<Incoming> {
    let stream = TcpStream::connect(srv.server.addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1");
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    if body.is_some()
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        builder = builder.header("content-type", "application/json");
    }
    let request = builder
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .expect("request");
    tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .expect("response within 10s")
        .expect("response")
}

/// A request whose whole JSON answer is read.
pub async fn call(srv: &TestServer, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    call_with(srv, method, path, &[], body).await
}

pub async fn call_with(
    srv: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, Value) {
    let body = body.map(|b| serde_json::to_vec(&b).expect("json"));
    let response = send(srv, method, path, headers, body).await;
    let status = response.status();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

/// Reads newline-delimited JSON watch events from a streaming response.
pub struct Lines {
    body: Incoming,
    buf: Vec<u8>,
}

impl Lines {
    pub fn new(response: Response<Incoming>) -> Self {
        Self {
            body: response.into_body(),
            buf: Vec::new(),
        }
    }

    /// The next event, or `None` when the stream ended; panics after 5 s without one.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Some(serde_json::from_slice(&line).expect("each line is JSON"));
            }
            let frame = tokio::time::timeout(Duration::from_secs(5), self.body.frame())
                .await
                .expect("watch event within 5s");
            match frame {
                None => return None,
                Some(frame) => {
                    if let Ok(data) = frame.expect("frame").into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// POSTs JSON to a server address; `None` when the connection fails (e.g. the server was killed).
pub async fn post_to(addr: std::net::SocketAddr, path: &str, body: &Value) -> Option<StatusCode> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let request = Request::builder()
        .method("POST")
        .uri(path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(body).ok()?)))
        .ok()?;
    let response = tokio::time::timeout(Duration::from_secs(5), sender.send_request(request))
        .await
        .ok()?
        .ok()?;
    let status = response.status();
    response.into_body().collect().await.ok()?;
    Some(status)
}
