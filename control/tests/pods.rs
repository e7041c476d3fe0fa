//! Pod subresources: binding to a node, and logs and exec proxied to a (fake) node agent.

mod common;

use axum::extract::{Path, RawQuery};
use common::{call, send, server};
use http_body_util::BodyExt;
use hyper::StatusCode;
use serde_json::json;

const PODS: &str = "/api/v1/namespaces/default/pods";

/// A stand-in node agent serving the log contract over HTTPS (self-signed, as agents do) on 127.0.0.1:0.
async fn fake_agent() -> (u16, tokio::task::JoinHandle<()>) {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use tower::ServiceExt;
    let app = axum::Router::new()
        .route(
            "/containerLogs/{ns}/{pod}/{container}",
            axum::routing::get(
                |Path((ns, pod, container)): Path<(String, String, String)>, RawQuery(q): RawQuery| async move {
                    format!("{ns}/{pod}/{container} {}\n", q.unwrap_or_default())
                },
            ),
        )
        .route("/exec/{ns}/{pod}/{container}", axum::routing::get(fake_exec));
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let serve = async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |r: hyper::Request<hyper::body::Incoming>| {
                    app.clone().oneshot(r.map(axum::body::Body::new))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .with_upgrades()
                    .await;
            });
        }
    };
    (port, tokio::spawn(serve))
}

/// The agent's exec endpoint reduced to the upgrade: 101 with the protocol the client offered first, then the
/// request line followed by an echo of whatever the client sends (the apiserver only splices bytes).
async fn fake_exec(request: axum::extract::Request) -> axum::response::Response {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let target = request.uri().to_string();
    let headers = request.headers().clone();
    if headers.get("upgrade").and_then(|v| v.to_str().ok()) != Some("websocket") {
        return axum::response::Response::builder()
            .status(400)
            .body(axum::body::Body::from("not an upgrade"))
            .unwrap();
    }
    let protocol = headers["sec-websocket-protocol"]
        .to_str()
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .trim()
        .to_owned();
    let key = headers["sec-websocket-key"].to_str().unwrap().to_owned();
    let upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let mut io = hyper_util::rt::TokioIo::new(upgrade.await.unwrap());
        io.write_all(format!("{target}\n").as_bytes()).await.unwrap();
        let mut buf = [0u8; 64];
        while let Ok(n) = io.read(&mut buf).await {
            if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    axum::response::Response::builder()
        .status(101)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", format!("accept-{key}"))
        .header("sec-websocket-protocol", protocol)
        .body(axum::body::Body::empty())
        .unwrap()
}

/// An exec request on a fresh connection that may be upgraded.
async fn exec_request(
    srv: &common::TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> hyper::Response<hyper::body::Incoming> {
    let stream = tokio::net::TcpStream::connect(srv.server.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    sender.send_request(request).await.unwrap()
}

async fn text(response: hyper::Response<hyper::body::Incoming>) -> String {
    String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_is_an_upgrade_spliced_to_the_agent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A short request timeout: exec is long-running and must outlive it.
    let srv = common::server_with(|c| c.limits.request_timeout = std::time::Duration::from_secs(1)).await;
    let (port, agent) = fake_agent().await;
    let node = json!({"metadata": {"name": "n1"}, "status": {
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}});
    call(&srv, "POST", "/api/v1/nodes", Some(node)).await;
    let pod = json!({"metadata": {"name": "p1"}, "spec": {"nodeName": "n1",
        "containers": [{"name": "c", "image": "agnhost"}, {"name": "d", "image": "agnhost"}]}});
    let (code, _) = call(&srv, "POST", PODS, Some(pod)).await;
    assert_eq!(code, StatusCode::CREATED);
    let ws = [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "k3y"),
        ("sec-websocket-protocol", "v5.channel.k8s.io, v4.channel.k8s.io"),
    ];
    let exec =
        format!("{PODS}/p1/exec?command=sh&command=-c&command=echo+hi&container=c&stdout=true&stderr=true");

    let r = exec_request(
        &srv,
        "GET",
        &format!("{PODS}/p1/exec?container=c&stdout=true"),
        &ws,
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "no command");
    assert!(text(r).await.contains("you must specify at least one command"));
    let r = exec_request(&srv, "GET", &exec, &ws).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(
        text(r).await.contains("container c in pod p1 is not running"),
        "status says not running"
    );

    let status = json!({"status": {"phase": "Running", "containerStatuses": [
        {"name": "c", "image": "agnhost", "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {}}},
        {"name": "d", "image": "agnhost", "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {}}}]}});
    let (code, body) = common::call_with(
        &srv,
        "PATCH",
        &format!("{PODS}/p1/status"),
        &[("content-type", "application/merge-patch+json")],
        Some(status),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");

    let spdy = [("connection", "Upgrade"), ("upgrade", "SPDY/3.1")];
    let r = exec_request(&srv, "POST", &exec, &spdy).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "SPDY is refused");
    assert!(text(r).await.contains("WebSocket only"));
    let r = exec_request(
        &srv,
        "GET",
        &format!("{PODS}/p1/exec?command=ls&stdout=true"),
        &ws,
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "two containers, none named");

    let r = exec_request(&srv, "GET", &exec, &ws).await;
    assert_eq!(r.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(r.headers()["sec-websocket-protocol"], "v5.channel.k8s.io");
    assert_eq!(r.headers()["sec-websocket-accept"], "accept-k3y");
    let mut io = hyper_util::rt::TokioIo::new(hyper::upgrade::on(r).await.unwrap());
    let expected = "/exec/default/p1/c?command=sh&command=-c&command=echo+hi&stdout=true&stderr=true\n";
    let mut got = vec![0u8; expected.len()];
    io.read_exact(&mut got).await.unwrap();
    assert_eq!(String::from_utf8(got).unwrap(), expected, "the agent's path");
    io.write_all(b"\x00ping").await.unwrap();
    let mut echo = [0u8; 5];
    tokio::time::timeout(std::time::Duration::from_secs(5), io.read_exact(&mut echo))
        .await
        .expect("echo within 5 s")
        .unwrap();
    assert_eq!(&echo, b"\x00ping", "bytes flow both ways");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    io.write_all(b"\x00pong").await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), io.read_exact(&mut echo))
        .await
        .expect("echo within 5 s")
        .unwrap();
    assert_eq!(&echo, b"\x00pong", "the exec outlives the request timeout");

    agent.abort();
    let _ = agent.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_then_logs_through_the_agent() {
    let srv = server().await;
    let (port, agent) = fake_agent().await;
    let node = json!({"metadata": {"name": "n1"}, "status": {
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}});
    let (code, _) = call(&srv, "POST", "/api/v1/nodes", Some(node)).await;
    assert_eq!(code, StatusCode::CREATED);
    let pod =
        json!({"metadata": {"name": "p1"}, "spec": {"containers": [{"name": "c", "image": "agnhost"}]}});
    call(&srv, "POST", PODS, Some(pod)).await;

    let (code, status) = call(&srv, "GET", &format!("{PODS}/p1/log"), None).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "unscheduled: {status}");

    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p1"}, "target": {"kind": "Node", "name": "n1"}});
    let (code, _) = call(&srv, "POST", &format!("{PODS}/p1/binding"), Some(binding.clone())).await;
    assert_eq!(code, StatusCode::CREATED);
    let (_, bound) = call(&srv, "GET", &format!("{PODS}/p1"), None).await;
    assert_eq!(bound["spec"]["nodeName"], "n1");
    assert_eq!(bound["status"]["conditions"][0]["type"], "PodScheduled");
    let (code, _) = call(&srv, "POST", &format!("{PODS}/p1/binding"), Some(binding)).await;
    assert_eq!(code, StatusCode::CONFLICT, "a pod is bound once");

    let response = send(
        &srv,
        "GET",
        &format!("{PODS}/p1/log?tailLines=2&follow=false&bogus=1"),
        &[],
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert_eq!(text, "default/p1/c follow=false&tailLines=2\n");
    let (code, _) = call(&srv, "GET", &format!("{PODS}/p1/log?container=nope"), None).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);

    agent.abort();
    let _ = agent.await;
    let (code, status) = call(&srv, "GET", &format!("{PODS}/p1/log"), None).await;
    assert_eq!(code, StatusCode::BAD_GATEWAY, "{status}");
}
