//! skiff-control on the etcd backend: etcd restarts give clean 503s and recover; `kill -9` of skiff-control
//! during a write burst loses no acknowledged write.

mod common;
mod etcd_support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::json;
use tokio::sync::Mutex;

use control::store::Store;
use control::store::etcd::EtcdStore;
use etcd_support::Etcd;

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

/// Kills the child on drop, so a failing test leaves no process behind.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn configmap(name: &str) -> serde_json::Value {
    json!({"metadata": {"name": name}, "data": {"a": "b"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restart_gives_503_then_recovers() {
    let mut etcd = Etcd::start().await;
    let options = etcd.options("/skiff-ctl");
    let srv = common::server_with(|c| c.etcd = Some(options)).await;
    let (status, created) = common::call(&srv, "POST", CONFIGMAPS, Some(configmap("before"))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    // Read etcd directly, with a client of our own.
    let direct = EtcdStore::connect(etcd.options("/skiff-ctl")).await.unwrap();
    let stored = direct
        .get("/core/configmaps/default/before")
        .await
        .unwrap()
        .expect("the object lives in etcd under the prefix");
    assert_eq!(
        rv,
        stored.mod_revision.to_string(),
        "resourceVersion is etcd's mod_revision"
    );

    etcd.kill();
    let (status, body) = common::call(&srv, "POST", CONFIGMAPS, Some(configmap("during"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["code"], 503);
    let (status, _) = common::call(&srv, "GET", &format!("{CONFIGMAPS}/before"), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    etcd.restart().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = common::call(&srv, "POST", CONFIGMAPS, Some(configmap("after"))).await;
        if status == StatusCode::CREATED {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after the etcd restart: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, list) = common::call(&srv, "GET", CONFIGMAPS, None).await;
    assert_eq!(status, StatusCode::OK);
    let mut names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["after", "before"]);
}

fn wait_for_url(kubeconfig: &std::path::Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(text) = std::fs::read_to_string(kubeconfig)
            && let Some(line) = text.lines().find(|l| l.trim_start().starts_with("server: "))
        {
            return line.trim_start().trim_start_matches("server: ").to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "skiff-control did not write its kubeconfig within 15s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_creates_survive_sigkill_on_etcd() {
    let etcd = Etcd::start().await;
    let dir = tempfile::Builder::new()
        .prefix("skiff-ctl-etcd-crash-")
        .tempdir()
        .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let child = Command::new(env!("CARGO_BIN_EXE_skiff-control"))
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "--store",
            "etcd",
            "--etcd-endpoints",
            &etcd.endpoint(),
            "--etcd-prefix",
            "/skiff-ctl",
        ])
        .args(["--listen", "127.0.0.1:0", "--insecure-http", "--kubeconfig-out"])
        .arg(&kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start skiff-control");
    let mut child = Child(child);
    let url = wait_for_url(&kubeconfig);
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().expect("server address");

    let acked = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let acked = Arc::clone(&acked);
            tokio::spawn(async move {
                for i in 0.. {
                    let name = format!("w{w}-{i}");
                    match common::post_to(addr, CONFIGMAPS, &configmap(&name)).await {
                        Some(StatusCode::CREATED) => acked.lock().await.push(name),
                        _ => return,
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    child.0.kill().expect("SIGKILL");
    child.0.wait().unwrap();
    for writer in writers {
        tokio::time::timeout(Duration::from_secs(10), writer)
            .await
            .expect("writers stop")
            .unwrap();
    }
    let acked = acked.lock().await.clone();
    assert!(
        acked.len() >= 4,
        "the burst acknowledged only {} writes",
        acked.len()
    );

    let options = etcd.options("/skiff-ctl");
    let srv = common::server_with(|c| c.etcd = Some(options)).await;
    let (_, list) = common::call(&srv, "GET", CONFIGMAPS, None).await;
    let stored: std::collections::HashSet<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|n| !stored.contains(n.as_str())).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {lost:?}",
        lost.len(),
        acked.len()
    );
}
