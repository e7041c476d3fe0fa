//! HTTPS with the generated CA: client certificates and bearer tokens authenticate, anonymous requests get 401.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use control::server::{Running, Security, ServerConfig, start};
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;

async fn tls_server(dir: &tempfile::TempDir) -> Running {
    let mut config = ServerConfig::for_tests(dir.path().to_path_buf());
    config.security = Security::Tls { hosts: vec![] };
    start(config).await.expect("TLS server starts")
}

/// One HTTPS GET that trusts the cluster CA and presents no client certificate.
async fn get(srv: &Running, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let pki = srv.pki.as_ref().unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_cert_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut request = hyper::Request::builder().uri(path).header("host", "127.0.0.1");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        sender.send_request(request.body(Full::new(Bytes::new())).unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_is_refused_tokens_are_accepted() {
    let dir = tempfile::Builder::new().prefix("skiff-ctl-").tempdir().unwrap();
    let srv = tls_server(&dir).await;
    assert!(srv.url().starts_with("https://"));
    let (code, status) = get(&srv, "/api/v1/namespaces", None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert_eq!(status["reason"], "Unauthorized");
    let (code, _) = get(&srv, "/api/v1/namespaces", Some("not-the-token")).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let token = srv.pki.as_ref().unwrap().admin_token.clone();
    let (code, list) = get(&srv, "/api/v1/namespaces", Some(&token)).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(list["items"].as_array().unwrap().len(), 4);
    let (code, _) = get(&srv, "/healthz", None).await;
    assert_eq!(code, StatusCode::OK, "health probes are open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_client_with_the_generated_kubeconfig() {
    let dir = tempfile::Builder::new().prefix("skiff-ctl-").tempdir().unwrap();
    let srv = tls_server(&dir).await;
    let text = srv.pki.as_ref().unwrap().kubeconfig(&srv.url());
    let kubeconfig = Kubeconfig::from_yaml(&text).expect("kubeconfig parses");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    let client = Client::try_from(config).expect("client");
    let namespaces: Api<Namespace> = Api::all(client);
    let list = namespaces
        .list(&ListParams::default())
        .await
        .expect("list over mutual TLS");
    assert_eq!(list.items.len(), 4);

    // kubectl accepts the same kubeconfig.
    std::fs::write(dir.path().join("kubeconfig"), &text).unwrap();
    let kubectl = common::kubectl::kubectl();
    let dir_path = dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(kubectl)
            .args(["get", "ns", "--request-timeout=10s"])
            .env("KUBECONFIG", dir_path.join("kubeconfig"))
            .env("HOME", &dir_path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("kube-system"), "{stdout}");
}
