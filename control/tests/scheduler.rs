//! Scheduler against a running server with fake nodes: spreading, unschedulable reporting, retry on cluster change.

mod controllers_common;

use std::collections::BTreeMap;

use control::controllers::ControllerOptions;
use controllers_common::{cluster, create_pod, eventually, fake_node};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;

const SCHEDULER_ONLY: ControllerOptions = ControllerOptions {
    endpointslice: false,
    replicaset: false,
    scheduler: true,
    ..ControllerOptions::NONE
};

fn replica(i: usize) -> serde_json::Value {
    json!({"metadata": {"name": format!("web-{i}"), "labels": {"app": "web"}, "ownerReferences": [{
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs-web", "controller": true}]},
        "spec": {"containers": [{"name": "c", "image": "nginx",
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}})
}

#[tokio::test]
async fn ten_replicas_spread_over_three_nodes() {
    let c = cluster(SCHEDULER_ONLY).await;
    for n in ["n1", "n2", "n3"] {
        fake_node(
            &c.client,
            n,
            json!({}),
            json!({"cpu": "4", "memory": "8Gi", "pods": "110"}),
        )
        .await;
    }
    for i in 0..10 {
        create_pod(&c.client, replica(i)).await;
    }
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let placement = eventually(10, "10 bound pods", || async {
        let list = pods.list(&ListParams::default().labels("app=web")).await.unwrap();
        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        for p in &list.items {
            *per_node.entry(p.spec.as_ref()?.node_name.clone()?).or_default() += 1;
        }
        (per_node.values().sum::<usize>() == 10).then_some(per_node)
    })
    .await;
    let mut counts: Vec<usize> = placement.values().copied().collect();
    counts.sort();
    assert_eq!(counts, [3, 3, 4], "{placement:?}");
    let bound = pods.get("web-0").await.unwrap();
    let scheduled = bound.status.unwrap().conditions.unwrap();
    assert!(
        scheduled
            .iter()
            .any(|c| c.type_ == "PodScheduled" && c.status == "True")
    );
    let events: Api<Event> = Api::namespaced(c.client.clone(), "default");
    eventually(10, "Scheduled events", || async {
        let list = events.list(&ListParams::default()).await.unwrap();
        (list
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some("Scheduled"))
            .count()
            == 10)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn unschedulable_pod_reports_why_and_is_retried_when_a_node_fits() {
    let c = cluster(SCHEDULER_ONLY).await;
    fake_node(
        &c.client,
        "small",
        json!({}),
        json!({"cpu": "1", "memory": "1Gi", "pods": "110"}),
    )
    .await;
    create_pod(
        &c.client,
        json!({"metadata": {"name": "big"}, "spec": {"nodeSelector": {"disk": "ssd"}, "containers": [{"name": "c",
            "image": "x", "resources": {"requests": {"cpu": "2"}}}]}}),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let message = eventually(10, "PodScheduled=False", || async {
        let p = pods.get("big").await.unwrap();
        let cond = p
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled")?;
        (cond.status == "False" && cond.reason.as_deref() == Some("Unschedulable")).then_some(cond.message?)
    })
    .await;
    assert_eq!(
        message,
        "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
    );
    let events: Api<Event> = Api::namespaced(c.client.clone(), "default");
    eventually(10, "FailedScheduling event", || async {
        let list = events.list(&ListParams::default()).await.unwrap();
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("FailedScheduling") && e.note.as_deref() == Some(message.as_str())
            })
            .then_some(())
    })
    .await;

    // A matching node that is too small changes the reason; a big enough one gets the pod.
    fake_node(
        &c.client,
        "ssd-small",
        json!({"disk": "ssd"}),
        json!({"cpu": "1", "memory": "1Gi"}),
    )
    .await;
    eventually(10, "Insufficient cpu", || async {
        let p = pods.get("big").await.unwrap();
        let cond = p
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled")?;
        cond.message?.contains("1 Insufficient cpu").then_some(())
    })
    .await;
    fake_node(
        &c.client,
        "ssd-big",
        json!({"disk": "ssd"}),
        json!({"cpu": "8", "memory": "16Gi"}),
    )
    .await;
    let node = eventually(10, "bound to ssd-big", || async {
        pods.get("big").await.unwrap().spec?.node_name
    })
    .await;
    assert_eq!(node, "ssd-big");
}
