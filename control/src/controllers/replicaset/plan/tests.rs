use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use super::*;

fn rs(replicas: i32) -> ReplicaSet {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "rs-uid", "generation": 3},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web", "tier": "fe"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    }))
    .unwrap()
}

/// A pod owned by the ReplicaSet: `created` orders age, `node` empty means unassigned.
fn pod(name: &str, created: u32, node: &str, phase: &str, ready: bool) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web", "tier": "fe"},
            "creationTimestamp": format!("2026-01-01T00:00:{created:02}Z"),
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs-uid", "controller": true}]},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx"}]},
        "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
    }))
    .unwrap()
}

#[test]
fn creates_the_missing_pods() {
    let a = pod("a", 1, "n1", "Running", true);
    let p = plan(&rs(3), &[&a]);
    assert_eq!(p.create, 2);
    assert!(p.delete.is_empty());
    let new = new_pod(&rs(3));
    assert_eq!(new.metadata.generate_name.as_deref(), Some("web-"));
    assert_eq!(new.metadata.owner_references.unwrap()[0].uid, "rs-uid");
    assert_eq!(new.metadata.labels.unwrap()["tier"], "fe");
}

#[test]
fn deletes_unassigned_pending_not_ready_and_newest_first() {
    let ready_old = pod("ready-old", 1, "n1", "Running", true);
    let ready_new = pod("ready-new", 5, "n1", "Running", true);
    let not_ready = pod("not-ready", 2, "n1", "Running", false);
    let pending = pod("pending", 3, "n1", "Pending", false);
    let unassigned = pod("unassigned", 4, "", "Pending", false);
    let all = [&ready_old, &ready_new, &not_ready, &pending, &unassigned];
    assert_eq!(
        plan(&rs(1), &all).delete,
        ["unassigned", "pending", "not-ready", "ready-new"]
    );
    assert_eq!(plan(&rs(0), &all).delete.len(), 5);
}

#[test]
fn terminating_and_finished_pods_do_not_count() {
    let mut terminating = pod("t", 1, "n1", "Running", true);
    terminating.metadata.deletion_timestamp = terminating.metadata.creation_timestamp.clone();
    let failed = pod("f", 2, "n1", "Failed", false);
    assert_eq!(plan(&rs(2), &[&terminating, &failed]).create, 2);
}

#[test]
fn adopts_orphans_releases_mismatches_and_ignores_foreign_pods() {
    let mut orphan = pod("orphan", 1, "n1", "Running", true);
    orphan.metadata.owner_references = None;
    let mut relabelled = pod("relabelled", 2, "n1", "Running", true);
    relabelled.metadata.labels = Some([("app".to_owned(), "debug".to_owned())].into());
    let mut foreign = pod("foreign", 3, "n1", "Running", true);
    foreign.metadata.owner_references.as_mut().unwrap()[0].uid = "other".to_owned();
    let p = plan(&rs(1), &[&orphan, &relabelled, &foreign]);
    assert_eq!(p.adopt, ["orphan"]);
    assert_eq!(p.release, ["relabelled"]);
    assert_eq!((p.create, p.delete.len()), (0, 0));
}

#[test]
fn status_counts() {
    let a = pod("a", 1, "n1", "Running", true);
    let b = pod("b", 2, "n1", "Running", false);
    let mut c = pod("c", 3, "n1", "Running", true);
    c.metadata.labels = Some([("app".to_owned(), "web".to_owned())].into());
    let s = status(&rs(3), &[&a, &b, &c]);
    assert_eq!(s.replicas, 3);
    assert_eq!(s.ready_replicas, Some(2));
    assert_eq!(s.available_replicas, Some(2));
    assert_eq!(s.fully_labeled_replicas, Some(2));
    assert_eq!(s.observed_generation, Some(3));
}

#[test]
fn a_replicaset_being_deleted_creates_and_deletes_nothing() {
    let mut deleting = rs(3);
    deleting.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-01-01T00:01:00Z".parse().unwrap(),
    ));
    let a = pod("a", 1, "n1", "Running", true);
    let p = plan(&deleting, &[&a]);
    assert_eq!((p.create, p.delete.len()), (0, 0));
}
