//! Pod subresources: binding to a node, and logs proxied to a (fake) node agent.

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
    let app = axum::Router::new().route(
        "/containerLogs/{ns}/{pod}/{container}",
        axum::routing::get(
            |Path((ns, pod, container)): Path<(String, String, String)>, RawQuery(q): RawQuery| async move {
                format!("{ns}/{pod}/{container} {}\n", q.unwrap_or_default())
            },
        ),
    );
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
                    .await;
            });
        }
    };
    (port, tokio::spawn(serve))
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
