//! Helpers for the controller suites: a server with controllers, fake nodes and pods whose status the test sets.

#![allow(dead_code, reason = "each test binary uses a different subset of the helpers")]

use std::future::Future;
use std::time::Duration;

use control::controllers::{self, ControllerOptions, Controllers};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

#[path = "../common/mod.rs"]
pub mod common;

/// A test server with its controllers and a client.
pub struct Cluster {
    pub srv: common::TestServer,
    pub controllers: Controllers,
    pub client: Client,
}

pub async fn cluster(options: ControllerOptions) -> Cluster {
    let srv = common::server().await;
    let controllers = controllers::start_for(&srv.server, options)
        .await
        .expect("controllers start");
    let client = controllers::client(&srv.server.url(), None)
        .await
        .expect("client");
    Cluster {
        srv,
        controllers,
        client,
    }
}

/// Polls `check` every 25 ms until it returns Some, failing the test after `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Creates a Ready node without an agent.
pub async fn fake_node(client: &Client, name: &str, labels: Value, allocatable: Value) -> Node {
    let api: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
    }))
    .unwrap();
    api.create(&PostParams::default(), &node)
        .await
        .expect("create node");
    let status = json!({"status": {
        "allocatable": allocatable, "capacity": allocatable,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("node status")
}

/// Creates a pod from JSON in `default`.
pub async fn create_pod(client: &Client, pod: Value) -> Pod {
    let pod: Pod = serde_json::from_value(pod).unwrap();
    Api::<Pod>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &pod)
        .await
        .expect("create pod")
}

/// Sets a pod's IP and Ready condition, as a node agent would.
pub async fn set_pod_status(client: &Client, name: &str, ip: &str, ready: bool) {
    let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}});
    Api::<Pod>::namespaced(client.clone(), "default")
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("pod status");
}
