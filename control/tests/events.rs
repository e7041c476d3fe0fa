//! core/v1 and events.k8s.io/v1 Events are two views of one storage: kubectl, kube-rs and watches see both.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Lines, call, call_with, send};
use hyper::StatusCode;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, Config};
use serde_json::{Value, json};

const CORE: &str = "/api/v1/namespaces/default/events";
const VIEW: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

async fn client(srv: &common::TestServer) -> Client {
    Client::try_from(Config::new(srv.server.url().parse().expect("url"))).expect("client")
}

/// Runs a real kubectl against the server and returns its stdout; panics with stderr on failure.
async fn kubectl(srv: &common::TestServer, args: &[&str]) -> String {
    let binary = common::kubectl::kubectl();
    let home = tempfile::Builder::new()
        .prefix("skiff-ctl-ev-home-")
        .tempdir()
        .expect("temp dir");
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: {}\ncontexts:\n- name: t\n  \
         context:\n    cluster: t\n    user: u\n    namespace: default\ncurrent-context: t\nusers:\n- name: u\n  \
         user: {{}}\n",
        srv.server.url()
    );
    std::fs::write(home.path().join("config"), config).expect("write kubeconfig");
    let mut cmd = Command::new(binary);
    cmd.args(args)
        .arg("--request-timeout=10s")
        .env("KUBECONFIG", home.path().join("config"))
        .env("HOME", home.path());
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run kubectl"))
        .await
        .expect("join");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Creates pod `name` in default and returns its uid.
async fn pod(srv: &common::TestServer, name: &str) -> String {
    let pod =
        json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "agnhost"}]}});
    let (code, created) = call(srv, "POST", "/api/v1/namespaces/default/pods", Some(pod)).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    created["metadata"]["uid"].as_str().expect("uid").to_owned()
}

/// An events.k8s.io/v1 Event about pod `pod`, as the scheduler writes them.
fn new_style_event(name: &str, pod: &str, uid: &str, reason: &str, note: &str) -> Event {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "eventTime": "2026-12-02T01:02:03.456789Z",
        "reportingController": "skiff.io/test-controller",
        "reportingInstance": "test-instance",
        "action": "Testing",
        "reason": reason,
        "regarding": {"kind": "Pod", "namespace": "default", "name": pod, "uid": uid, "apiVersion": "v1"},
        "note": note,
        "type": "Normal"
    }))
    .expect("event")
}

/// A core/v1 Event about pod `pod`, as a legacy kubelet writes them.
fn legacy_event(name: &str, pod: &str, reason: &str, message: &str) -> Value {
    json!({
        "metadata": {"name": name},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": pod, "apiVersion": "v1"},
        "reason": reason,
        "message": message,
        "source": {"component": "kubelet", "host": "n1"},
        "firstTimestamp": "2026-12-02T01:00:00Z",
        "lastTimestamp": "2026-12-02T01:01:00Z",
        "count": 2,
        "type": "Warning"
    })
}

fn names(list: &Value) -> Vec<&str> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e.pointer("/metadata/name").and_then(Value::as_str))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_style_events_show_in_kubectl_and_the_core_api() {
    let srv = common::server().await;
    let uid = pod(&srv, "web-1").await;
    let api: Api<Event> = Api::namespaced(client(&srv).await, "default");
    let created = api
        .create(
            &PostParams::default(),
            &new_style_event(
                "web-1.a",
                "web-1",
                &uid,
                "Scheduled",
                "Assigned default/web-1 to n1",
            ),
        )
        .await
        .expect("create events.k8s.io Event");
    assert_eq!(created.note.as_deref(), Some("Assigned default/web-1 to n1"));
    assert_eq!(
        created.regarding.as_ref().and_then(|r| r.uid.as_deref()),
        Some(uid.as_str())
    );
    assert!(
        created.deprecated_source.is_none(),
        "derived source leaked into the view: {created:?}"
    );

    // The core view, with kubectl describe's field selector.
    let selector = format!(
        "{CORE}?fieldSelector=involvedObject.name%3Dweb-1,involvedObject.namespace%3Ddefault,involvedObject.uid%3D{uid}"
    );
    let (code, list) = call(&srv, "GET", &selector, None).await;
    assert_eq!(code, StatusCode::OK, "{list}");
    assert_eq!(names(&list), ["web-1.a"], "{list}");
    let core = &list["items"][0];
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(core["message"], "Assigned default/web-1 to n1");
    assert_eq!(core["involvedObject"]["kind"], "Pod");
    assert_eq!(core["reportingComponent"], "skiff.io/test-controller");
    assert_eq!(core["source"]["component"], "skiff.io/test-controller");
    assert!(core.get("regarding").is_none(), "{core}");
    let (_, other) = call(
        &srv,
        "GET",
        &format!("{CORE}?fieldSelector=involvedObject.name%3Dweb-2"),
        None,
    )
    .await;
    assert_eq!(names(&other), Vec::<&str>::new());

    let events = kubectl(&srv, &["get", "events"]).await;
    let line = events
        .lines()
        .find(|l| l.contains("Scheduled"))
        .unwrap_or_else(|| panic!("no Scheduled event in:\n{events}"));
    assert!(
        line.contains("pod/web-1") && line.contains("Assigned default/web-1 to n1"),
        "{line}"
    );

    let described = kubectl(&srv, &["describe", "pod", "web-1"]).await;
    let section = described
        .split("Events:")
        .nth(1)
        .unwrap_or_else(|| panic!("no Events section in:\n{described}"));
    let line = section
        .lines()
        .find(|l| l.contains("Scheduled"))
        .unwrap_or_else(|| panic!("no Scheduled event in:\n{described}"));
    assert!(
        line.contains("skiff.io/test-controller") && line.contains("Assigned default/web-1 to n1"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_events_show_in_the_events_api() {
    let srv = common::server().await;
    pod(&srv, "web-1").await;
    let (code, body) = call(
        &srv,
        "POST",
        CORE,
        Some(legacy_event("web-1.b", "web-1", "BackOff", "restarting")),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");

    let api: Api<Event> = Api::namespaced(client(&srv).await, "default");
    let listed = api
        .list(&ListParams::default().fields("regarding.name=web-1"))
        .await
        .expect("list events.k8s.io");
    assert_eq!(listed.items.len(), 1, "{listed:?}");
    let event = &listed.items[0];
    assert_eq!(
        event.regarding.as_ref().and_then(|r| r.name.as_deref()),
        Some("web-1")
    );
    assert_eq!(event.note.as_deref(), Some("restarting"));
    assert_eq!(event.deprecated_count, Some(2));
    assert_eq!(
        event.deprecated_source.as_ref().and_then(|s| s.host.as_deref()),
        Some("n1")
    );
    // The core field names select on the view too; a miss selects nothing.
    let (_, by_core_field) = call(
        &srv,
        "GET",
        &format!("{VIEW}?fieldSelector=involvedObject.name%3Dweb-1"),
        None,
    )
    .await;
    assert_eq!(names(&by_core_field), ["web-1.b"]);
    let (_, miss) = call(
        &srv,
        "GET",
        &format!("{VIEW}?fieldSelector=regarding.name%3Dweb-9"),
        None,
    )
    .await;
    assert_eq!(names(&miss), Vec::<&str>::new());

    // Get and Table output of the view.
    let (code, got) = call(&srv, "GET", &format!("{VIEW}/web-1.b"), None).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        (got["apiVersion"].as_str(), got["note"].as_str()),
        (Some("events.k8s.io/v1"), Some("restarting"))
    );
    let (_, table) = call_with(&srv, "GET", VIEW, &[("accept", common::TABLE_ACCEPT)], None).await;
    let cells = &table["rows"][0]["cells"];
    assert_eq!(cells[3], "pod/web-1", "{table}");
    assert_eq!(cells[4], "restarting", "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_the_view_are_stored_once() {
    let srv = common::server().await;
    let uid = pod(&srv, "web-1").await;
    let event = serde_json::to_value(new_style_event("web-1.c", "web-1", &uid, "Pulled", "pulled")).unwrap();
    let (code, _) = call(&srv, "POST", VIEW, Some(event)).await;
    assert_eq!(code, StatusCode::CREATED);

    // Patch a series onto it through the view: the core reader sees count and lastTimestamp.
    let patch = json!({"series": {"count": 4, "lastObservedTime": "2026-12-02T01:09:00.123456Z"}});
    let response = send(
        &srv,
        "PATCH",
        &format!("{VIEW}/web-1.c"),
        &[("content-type", "application/merge-patch+json")],
        Some(serde_json::to_vec(&patch).unwrap()),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let (_, core) = call(&srv, "GET", &format!("{CORE}/web-1.c"), None).await;
    assert_eq!(
        (core["count"].as_i64(), core["lastTimestamp"].as_str()),
        (Some(4), Some("2026-12-02T01:09:00Z"))
    );
    let (_, view) = call(&srv, "GET", &format!("{VIEW}/web-1.c"), None).await;
    assert_eq!(view["series"]["count"], 4);
    assert!(view.get("deprecatedCount").is_none(), "{view}");

    // Update through the core view; the events view reads the change.
    let mut core = core;
    core["message"] = json!("pulled again");
    let (code, _) = call(&srv, "PUT", &format!("{CORE}/web-1.c"), Some(core)).await;
    assert_eq!(code, StatusCode::OK);
    let (_, view) = call(&srv, "GET", &format!("{VIEW}/web-1.c"), None).await;
    assert_eq!(view["note"], "pulled again");

    // Delete through the view: gone from both.
    let (code, _) = call(&srv, "DELETE", &format!("{VIEW}/web-1.c"), None).await;
    assert_eq!(code, StatusCode::OK);
    let (code, _) = call(&srv, "GET", &format!("{CORE}/web-1.c"), None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    // deletecollection through the core view removes events written through either.
    let e = serde_json::to_value(new_style_event("web-1.d", "web-1", &uid, "Started", "started")).unwrap();
    assert_eq!(call(&srv, "POST", VIEW, Some(e)).await.0, StatusCode::CREATED);
    let legacy = legacy_event("web-1.e", "web-1", "BackOff", "b");
    assert_eq!(
        call(&srv, "POST", CORE, Some(legacy)).await.0,
        StatusCode::CREATED
    );
    let (code, _) = call(&srv, "DELETE", CORE, None).await;
    assert_eq!(code, StatusCode::OK);
    let (_, left) = call(&srv, "GET", VIEW, None).await;
    assert_eq!(names(&left), Vec::<&str>::new(), "{left}");
}

/// Reads watch events until one names `name`, skipping others (bounded by the 5 s per-line timeout).
async fn until_named(lines: &mut Lines, name: &str) -> Value {
    for _ in 0..20 {
        let event = lines.next().await.expect("watch open");
        if event.pointer("/object/metadata/name").and_then(Value::as_str) == Some(name) {
            return event;
        }
    }
    panic!("no watch event for {name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_on_either_view_see_both() {
    let srv = common::server().await;
    let uid = pod(&srv, "web-1").await;
    let (_, list) = call(&srv, "GET", CORE, None).await;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_owned();
    let mut core_watch = Lines::new(
        send(
            &srv,
            "GET",
            &format!("{CORE}?watch=1&resourceVersion={rv}"),
            &[],
            None,
        )
        .await,
    );
    let mut view_watch = Lines::new(
        send(
            &srv,
            "GET",
            &format!("{VIEW}?watch=1&resourceVersion={rv}"),
            &[],
            None,
        )
        .await,
    );
    let selected = format!("{VIEW}?watch=1&resourceVersion={rv}&fieldSelector=regarding.name%3Dweb-1");
    let mut selected_watch = Lines::new(send(&srv, "GET", &selected, &[], None).await);

    let e = serde_json::to_value(new_style_event("web-1.n", "web-1", &uid, "Scheduled", "new")).unwrap();
    assert_eq!(call(&srv, "POST", VIEW, Some(e)).await.0, StatusCode::CREATED);
    let legacy = legacy_event("web-1.l", "web-1", "BackOff", "legacy");
    assert_eq!(
        call(&srv, "POST", CORE, Some(legacy)).await.0,
        StatusCode::CREATED
    );
    let other = legacy_event("other.l", "other", "BackOff", "not web-1");
    assert_eq!(call(&srv, "POST", CORE, Some(other)).await.0, StatusCode::CREATED);

    for (name, message) in [("web-1.n", "new"), ("web-1.l", "legacy")] {
        let seen = until_named(&mut core_watch, name).await;
        assert_eq!(seen["type"], "ADDED");
        assert_eq!(
            (
                seen["object"]["apiVersion"].as_str(),
                seen["object"]["message"].as_str()
            ),
            (Some("v1"), Some(message))
        );
        let seen = until_named(&mut view_watch, name).await;
        assert_eq!(seen["type"], "ADDED");
        assert_eq!(
            (
                seen["object"]["apiVersion"].as_str(),
                seen["object"]["note"].as_str()
            ),
            (Some("events.k8s.io/v1"), Some(message))
        );
        assert_eq!(seen["object"]["regarding"]["name"], "web-1");
    }
    // The selected view watch sees the two web-1 events in order and not the other one.
    let first = selected_watch.next().await.expect("event");
    let second = selected_watch.next().await.expect("event");
    assert_eq!(
        [
            first["object"]["metadata"]["name"].as_str(),
            second["object"]["metadata"]["name"].as_str()
        ],
        [Some("web-1.n"), Some("web-1.l")]
    );
    let deleted = call(&srv, "DELETE", &format!("{VIEW}/web-1.l"), None).await.0;
    assert_eq!(deleted, StatusCode::OK);
    let gone = selected_watch.next().await.expect("event");
    assert_eq!(
        (gone["type"].as_str(), gone["object"]["metadata"]["name"].as_str()),
        (Some("DELETED"), Some("web-1.l"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_deletion_removes_events_of_both_views() {
    let srv = common::server().await;
    let (code, _) = call(
        &srv,
        "POST",
        "/api/v1/namespaces",
        Some(json!({"metadata": {"name": "ev-ns"}})),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);
    let view = "/apis/events.k8s.io/v1/namespaces/ev-ns/events";
    let core = "/api/v1/namespaces/ev-ns/events";
    let mut e = serde_json::to_value(new_style_event("x.1", "x", "u", "Scheduled", "n")).unwrap();
    e["metadata"]["namespace"] = json!("ev-ns");
    assert_eq!(call(&srv, "POST", view, Some(e)).await.0, StatusCode::CREATED);
    assert_eq!(
        call(&srv, "POST", core, Some(legacy_event("x.2", "x", "BackOff", "b")))
            .await
            .0,
        StatusCode::CREATED
    );

    let (code, _) = call(&srv, "DELETE", "/api/v1/namespaces/ev-ns", None).await;
    assert_eq!(code, StatusCode::OK);
    let mut gone = false;
    for _ in 0..50 {
        if call(&srv, "GET", "/api/v1/namespaces/ev-ns", None).await.0 == StatusCode::NOT_FOUND {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "namespace ev-ns still there after 5s");
    let (_, left) = call(&srv, "GET", "/api/v1/events", None).await;
    assert!(!names(&left).iter().any(|n| n.starts_with("x.")), "{left}");
}
