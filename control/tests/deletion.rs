//! Deletion semantics of the apiserver: graceful pod deletion, finalizers, propagationPolicy, kubectl delete.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Lines, call, call_with, send, server};
use hyper::StatusCode;
use serde_json::{Value, json};

const PODS: &str = "/api/v1/namespaces/default/pods";
const RSS: &str = "/apis/apps/v1/namespaces/default/replicasets";

fn pod(name: &str, node: Option<&str>, grace: Option<i64>) -> Value {
    let mut spec = json!({"containers": [{"name": "c", "image": "nginx"}]});
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
    }
    if let Some(grace) = grace {
        spec["terminationGracePeriodSeconds"] = json!(grace);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
}

async fn create(srv: &common::TestServer, path: &str, body: Value) -> Value {
    let (code, created) = call(srv, "POST", path, Some(body)).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    created
}

fn seconds(ts: &Value) -> i64 {
    control::api::deletion::parse_time(ts.as_str().expect("a timestamp")).expect("RFC 3339")
}

#[tokio::test]
async fn bound_pod_lingers_terminating_until_deleted_with_grace_zero() {
    let srv = server().await;
    let (_, list) = call(&srv, "GET", PODS, None).await;
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
    create(&srv, PODS, pod("web", Some("n1"), Some(20))).await;
    let mut events = Lines::new(
        send(
            &srv,
            "GET",
            &format!("{PODS}?watch=1&resourceVersion={rv}"),
            &[],
            None,
        )
        .await,
    );

    let before = control::registry::meta::unix_now();
    let (code, marked) = call(&srv, "DELETE", &format!("{PODS}/web"), None).await;
    assert_eq!(code, StatusCode::OK, "{marked}");
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 20);
    let at = seconds(&marked["metadata"]["deletionTimestamp"]);
    assert!(
        (before + 20..=before + 22).contains(&at),
        "deletionTimestamp is now + grace: {at} vs {before}"
    );

    // A longer grace does not extend it; status updates during the grace keep the pod.
    let (code, again) = call_with(
        &srv,
        "DELETE",
        &format!("{PODS}/web"),
        &[],
        Some(json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 60})),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(again["metadata"]["deletionGracePeriodSeconds"], 20);
    let merge = [("content-type", "application/merge-patch+json")];
    let (code, _) = call_with(
        &srv,
        "PATCH",
        &format!("{PODS}/web/status"),
        &merge,
        Some(json!({"status": {"phase": "Running"}})),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let (code, still) = call(&srv, "GET", &format!("{PODS}/web"), None).await;
    assert_eq!(code, StatusCode::OK, "the pod stays Terminating");
    assert!(still["metadata"]["deletionTimestamp"].is_string());

    // A shorter grace shortens it; grace 0 (the kubelet's final delete) removes it.
    let (_, shorter) = call(&srv, "DELETE", &format!("{PODS}/web?gracePeriodSeconds=5"), None).await;
    assert_eq!(shorter["metadata"]["deletionGracePeriodSeconds"], 5);
    assert_eq!(seconds(&shorter["metadata"]["deletionTimestamp"]), at - 15);
    let uid = marked["metadata"]["uid"].as_str().unwrap();
    let (code, gone) = call_with(
        &srv,
        "DELETE",
        &format!("{PODS}/web"),
        &[],
        Some(json!({"gracePeriodSeconds": 0, "preconditions": {"uid": uid}})),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{gone}");
    let (code, _) = call(&srv, "GET", &format!("{PODS}/web"), None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    let mut seen = Vec::new();
    for _ in 0..5 {
        let event = events.next().await.expect("an event");
        let grace = event["object"]["metadata"]["deletionGracePeriodSeconds"].as_i64();
        seen.push((event["type"].as_str().unwrap().to_owned(), grace));
    }
    let expected = [
        ("ADDED", None),
        ("MODIFIED", Some(20)),
        ("MODIFIED", Some(20)),
        ("MODIFIED", Some(5)),
    ];
    for (i, (t, g)) in expected.iter().enumerate() {
        assert_eq!((seen[i].0.as_str(), seen[i].1), (*t, *g), "{seen:?}");
    }
    assert_eq!(seen[4].0, "DELETED", "{seen:?}");
}

#[tokio::test]
async fn unbound_and_finished_pods_vanish_at_once() {
    let srv = server().await;
    create(&srv, PODS, pod("pending", None, Some(30))).await;
    let (code, _) = call(&srv, "DELETE", &format!("{PODS}/pending"), None).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        call(&srv, "GET", &format!("{PODS}/pending"), None).await.0,
        StatusCode::NOT_FOUND
    );

    create(&srv, PODS, pod("done", Some("n1"), Some(30))).await;
    let merge = [("content-type", "application/merge-patch+json")];
    call_with(
        &srv,
        "PATCH",
        &format!("{PODS}/done/status"),
        &merge,
        Some(json!({"status": {"phase": "Succeeded"}})),
    )
    .await;
    call(&srv, "DELETE", &format!("{PODS}/done"), None).await;
    assert_eq!(
        call(&srv, "GET", &format!("{PODS}/done"), None).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn finalizers_hold_a_pod_after_grace_zero() {
    let srv = server().await;
    let mut held = pod("held", Some("n1"), None);
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    create(&srv, PODS, held).await;
    let (_, marked) = call(&srv, "DELETE", &format!("{PODS}/held"), None).await;
    assert_eq!(
        marked["metadata"]["deletionGracePeriodSeconds"], 30,
        "the default grace"
    );
    let (_, zero) = call(&srv, "DELETE", &format!("{PODS}/held?gracePeriodSeconds=0"), None).await;
    assert_eq!(zero["metadata"]["deletionGracePeriodSeconds"], 0);
    assert_eq!(
        call(&srv, "GET", &format!("{PODS}/held"), None).await.0,
        StatusCode::OK
    );
    let merge = [("content-type", "application/merge-patch+json")];
    call_with(
        &srv,
        "PATCH",
        &format!("{PODS}/held"),
        &merge,
        Some(json!({"metadata": {"finalizers": null}})),
    )
    .await;
    assert_eq!(
        call(&srv, "GET", &format!("{PODS}/held"), None).await.0,
        StatusCode::NOT_FOUND
    );
}

fn replicaset(name: &str) -> Value {
    json!({"metadata": {"name": name}, "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
}

#[tokio::test]
async fn propagation_policy_sets_the_gc_finalizers() {
    let srv = server().await;
    create(&srv, RSS, replicaset("a")).await;
    let (code, bad) = call(
        &srv,
        "DELETE",
        &format!("{RSS}/a?propagationPolicy=Sideways"),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    let (code, orphaning) = call(
        &srv,
        "DELETE",
        &format!("{RSS}/a"),
        Some(json!({"propagationPolicy": "Orphan"})),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(orphaning["metadata"]["finalizers"], json!(["orphan"]));
    assert!(orphaning["metadata"]["deletionTimestamp"].is_string());
    let (_, fg) = call(
        &srv,
        "DELETE",
        &format!("{RSS}/a"),
        Some(json!({"propagationPolicy": "Foreground"})),
    )
    .await;
    assert_eq!(fg["metadata"]["finalizers"], json!(["foregroundDeletion"]));
    let (code, _) = call(
        &srv,
        "DELETE",
        &format!("{RSS}/a"),
        Some(json!({"propagationPolicy": "Background"})),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        call(&srv, "GET", &format!("{RSS}/a"), None).await.0,
        StatusCode::NOT_FOUND
    );

    create(&srv, RSS, replicaset("b")).await;
    let (code, cascading) = call(
        &srv,
        "DELETE",
        &format!("{RSS}/b"),
        Some(json!({"orphanDependents": true})),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(cascading["metadata"]["finalizers"], json!(["orphan"]));
    let (code, _) = call(
        &srv,
        "DELETE",
        &format!("{RSS}/b"),
        Some(json!({"orphanDependents": false})),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "removing the last finalizer deletes it");
    assert_eq!(
        call(&srv, "GET", &format!("{RSS}/b"), None).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn deletecollection_deletes_pods_gracefully() {
    let srv = server().await;
    let mut bound = pod("bound", Some("n1"), Some(10));
    bound["metadata"]["labels"] = json!({"app": "x"});
    let mut unbound = pod("unbound", None, None);
    unbound["metadata"]["labels"] = json!({"app": "x"});
    create(&srv, PODS, bound).await;
    create(&srv, PODS, unbound).await;
    let (code, list) = call(&srv, "DELETE", &format!("{PODS}?labelSelector=app%3Dx"), None).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let (_, left) = call(&srv, "GET", PODS, None).await;
    let left = left["items"].as_array().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["metadata"]["name"], "bound");
    assert_eq!(left[0]["metadata"]["deletionGracePeriodSeconds"], 10);
}

#[tokio::test]
async fn namespace_deletion_deletes_pods_gracefully_and_waits_for_them() {
    let srv = server().await;
    create(&srv, "/api/v1/namespaces", json!({"metadata": {"name": "team"}})).await;
    let pods = "/api/v1/namespaces/team/pods";
    create(&srv, pods, pod("running", Some("n1"), Some(60))).await;
    create(&srv, pods, pod("pending", None, None)).await;
    call(&srv, "DELETE", "/api/v1/namespaces/team", None).await;
    let mut marked = Value::Null;
    for _ in 0..50 {
        let (_, list) = call(&srv, "GET", pods, None).await;
        let items = list["items"].as_array().unwrap().clone();
        if items.len() == 1 && items[0]["metadata"]["deletionTimestamp"].is_string() {
            marked = items[0].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        marked["metadata"]["name"], "running",
        "the unbound pod goes at once, the bound one is marked"
    );
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 60);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (code, ns) = call(&srv, "GET", "/api/v1/namespaces/team", None).await;
    assert_eq!(
        code,
        StatusCode::OK,
        "the namespace waits for its terminating pod"
    );
    assert_eq!(ns["status"]["phase"], "Terminating");
    // The kubelet's final delete.
    call(
        &srv,
        "DELETE",
        &format!("{pods}/running?gracePeriodSeconds=0"),
        None,
    )
    .await;
    let mut gone = false;
    for _ in 0..50 {
        if call(&srv, "GET", "/api/v1/namespaces/team", None).await.0 == StatusCode::NOT_FOUND {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the namespace goes once its pods are gone");
}

fn kubectl_config(srv: &common::TestServer, home: &std::path::Path) -> std::path::PathBuf {
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: {}\ncontexts:\n- name: t\n  context:\n    cluster: t\n    user: u\n    namespace: default\ncurrent-context: t\nusers:\n- name: u\n  user: {{}}\n",
        srv.server.url()
    );
    let path = home.join("config");
    std::fs::write(&path, config).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_delete_waits_for_the_kubelet() {
    let srv = server().await;
    let binary = common::kubectl::kubectl();
    let home = tempfile::Builder::new()
        .prefix("skiff-ctl-home-")
        .tempdir()
        .unwrap();
    let config = kubectl_config(&srv, home.path());
    create(&srv, PODS, pod("web", Some("n1"), Some(30))).await;
    let mut cmd = Command::new(&binary);
    cmd.args(["delete", "pod", "web", "--timeout=20s"])
        .env("KUBECONFIG", &config)
        .env("HOME", home.path());
    let kubectl = tokio::task::spawn_blocking(move || cmd.output().expect("run kubectl"));

    // Play the kubelet: once the pod is Terminating, wait a moment (kubectl must still be waiting), then delete
    // it with grace 0 as the node agent does when its containers are gone.
    let mut uid = None;
    for _ in 0..100 {
        let (_, p) = call(&srv, "GET", &format!("{PODS}/web"), None).await;
        if p["metadata"]["deletionTimestamp"].is_string() {
            uid = p["metadata"]["uid"].as_str().map(str::to_owned);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let uid = uid.expect("kubectl delete marks the pod Terminating");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !kubectl.is_finished(),
        "kubectl delete waits while the pod is Terminating"
    );
    let (code, _) = call(
        &srv,
        "DELETE",
        &format!("{PODS}/web"),
        Some(json!({"gracePeriodSeconds": 0, "preconditions": {"uid": uid}})),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let out = tokio::time::timeout(Duration::from_secs(20), kubectl)
        .await
        .expect("kubectl returns once the pod is gone")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("pod \"web\" deleted"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_force_delete_removes_at_once() {
    let srv = server().await;
    let binary = common::kubectl::kubectl();
    let home = tempfile::Builder::new()
        .prefix("skiff-ctl-home-")
        .tempdir()
        .unwrap();
    let config = kubectl_config(&srv, home.path());
    create(&srv, PODS, pod("web", Some("n1"), Some(30))).await;
    let mut cmd = Command::new(&binary);
    cmd.args([
        "delete",
        "pod",
        "web",
        "--force",
        "--grace-period=0",
        "--timeout=10s",
    ])
    .env("KUBECONFIG", &config)
    .env("HOME", home.path());
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run kubectl"))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("pod \"web\" force deleted"));
    assert_eq!(
        call(&srv, "GET", &format!("{PODS}/web"), None).await.0,
        StatusCode::NOT_FOUND
    );
}
