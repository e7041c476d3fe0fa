//! `kill -9` of skiff-control during a write burst loses no acknowledged write.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::json;
use tokio::sync::Mutex;

/// Kills the child on drop, so a failing test leaves no process behind.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_url(kubeconfig: &std::path::Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(kubeconfig)
            && let Some(line) = text.lines().find(|l| l.trim_start().starts_with("server: "))
        {
            return line.trim_start().trim_start_matches("server: ").to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "skiff-control did not write its kubeconfig within 10s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_creates_survive_sigkill() {
    let dir = tempfile::Builder::new()
        .prefix("skiff-ctl-crash-")
        .tempdir()
        .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let child = Command::new(env!("CARGO_BIN_EXE_skiff-control"))
        .arg("--data-dir")
        .arg(dir.path())
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
                    let body = json!({"metadata": {"name": name}, "data": {"n": i.to_string()}});
                    match common::post_to(addr, "/api/v1/namespaces/default/configmaps", &body).await {
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

    let config = control::server::ServerConfig::for_tests(dir.path().to_path_buf());
    let srv = common::TestServer {
        server: control::server::start(config).await.expect("restart"),
        dir,
    };
    let (_, list) = common::call(&srv, "GET", "/api/v1/namespaces/default/configmaps", None).await;
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
