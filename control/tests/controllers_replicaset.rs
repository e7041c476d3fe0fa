//! ReplicaSet controller with the scheduler against a running server: scale up, replace, scale down, status.

mod controllers_common;

use control::controllers::ControllerOptions;
use controllers_common::{cluster, eventually, fake_node, set_pod_status};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

async fn live_pods(pods: &Api<Pod>) -> Vec<Pod> {
    let list = pods.list(&ListParams::default().labels("app=web")).await.unwrap();
    list.items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_are_created_bound_replaced_and_scaled_down() {
    let c = cluster(ControllerOptions::default()).await;
    for n in ["n1", "n2", "n3"] {
        fake_node(
            &c.client,
            n,
            json!({}),
            json!({"cpu": "4", "memory": "8Gi", "pods": "110"}),
        )
        .await;
    }
    let sets: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "default");
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 5, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    }))
    .unwrap();
    sets.create(&PostParams::default(), &rs).await.expect("create rs");
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let bound = eventually(10, "5 bound pods", || async {
        let live = live_pods(&pods).await;
        (live.len() == 5 && live.iter().all(|p| p.spec.as_ref().unwrap().node_name.is_some())).then_some(live)
    })
    .await;
    for (i, p) in bound.iter().enumerate() {
        assert_eq!(p.metadata.owner_references.as_ref().unwrap()[0].name, "web");
        set_pod_status(
            &c.client,
            &p.metadata.name.clone().unwrap(),
            &format!("10.244.0.{}", i + 2),
            true,
        )
        .await;
    }
    eventually(10, "readyReplicas 5", || async {
        let s = sets.get("web").await.unwrap().status?;
        (s.replicas == 5 && s.ready_replicas == Some(5) && s.available_replicas == Some(5)).then_some(())
    })
    .await;

    // A deleted pod is replaced.
    let victim = bound[0].metadata.name.clone().unwrap();
    pods.delete(&victim, &DeleteParams::default()).await.unwrap();
    eventually(10, "replacement", || async {
        let live = live_pods(&pods).await;
        (live.len() == 5
            && live
                .iter()
                .all(|p| p.metadata.name.as_deref() != Some(victim.as_str())))
        .then_some(())
    })
    .await;

    // Scaling down removes the not-ready replacement first and keeps exactly two.
    let not_ready: Vec<String> = live_pods(&pods)
        .await
        .into_iter()
        .filter(|p| !bound.iter().any(|b| b.metadata.name == p.metadata.name))
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(not_ready.len(), 1);
    sets.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 2}})),
    )
    .await
    .unwrap();
    let left = eventually(10, "2 pods", || async {
        let live = live_pods(&pods).await;
        (live.len() == 2).then_some(live)
    })
    .await;
    assert!(left.iter().all(|p| p.metadata.name != Some(not_ready[0].clone())));
    eventually(10, "status replicas 2", || async {
        let s = sets.get("web").await.unwrap().status?;
        (s.replicas == 2).then_some(())
    })
    .await;
}
