//! Garbage collector against a running server with controllers: Orphan, Foreground and Background
//! propagation, dangling owners, and namespace deletion with graceful pods (the test plays the kubelet).

mod controllers_common;

use std::process::Command;

use control::controllers::{self, ControllerOptions};
use controllers_common::{cluster, common, eventually, fake_node};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{DeleteParams, ListParams, PostParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

/// Deletes every Terminating pod with grace 0 (what the node agent does once containers are gone) until dropped.
struct Kubelet(tokio::task::JoinHandle<()>);

impl Kubelet {
    fn start(client: &Client) -> Self {
        let client = client.clone();
        let pods: Api<Pod> = Api::all(client.clone());
        Self(tokio::spawn(async move {
            loop {
                if let Ok(list) = pods.list(&ListParams::default()).await {
                    for pod in list
                        .items
                        .iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_some())
                    {
                        let api = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
                        final_delete(&api, pod).await;
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }))
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn final_delete(api: &Api<Pod>, pod: &Pod) {
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let _ = api.delete(&pod.name_any(), &params).await;
}

async fn nodes(client: &Client) {
    for n in ["n1", "n2"] {
        fake_node(
            client,
            n,
            json!({}),
            json!({"cpu": "8", "memory": "16Gi", "pods": "110"}),
        )
        .await;
    }
}

fn rs_json(name: &str, replicas: i32) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    })
}

async fn app_pods(client: &Client, ns: &str, app: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
}

async fn bound_pods(client: &Client, ns: &str, app: &str, n: usize) -> Vec<Pod> {
    eventually(15, &format!("{n} bound {app} pods"), || async {
        let pods = app_pods(client, ns, app).await;
        (pods.len() == n
            && pods.iter().all(|p| {
                p.spec.as_ref().unwrap().node_name.is_some() && p.metadata.deletion_timestamp.is_none()
            }))
        .then_some(pods)
    })
    .await
}

fn kubectl(srv: &common::TestServer, home: &std::path::Path, args: &[&str]) -> String {
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: {}\ncontexts:\n- name: t\n  context:\n    cluster: t\n    user: u\n    namespace: default\ncurrent-context: t\nusers:\n- name: u\n  user: {{}}\n",
        srv.server.url()
    );
    std::fs::write(home.join("config"), config).unwrap();
    let out = Command::new(common::kubectl::kubectl())
        .args(args)
        .args(["--request-timeout=10s"])
        .env("KUBECONFIG", home.join("config"))
        .env("HOME", home)
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_deletion_of_a_replicaset_deletes_its_pods_first() {
    let c = cluster(ControllerOptions::default()).await;
    nodes(&c.client).await;
    let sets: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "default");
    let rs: ReplicaSet = serde_json::from_value(rs_json("fg", 3)).unwrap();
    sets.create(&PostParams::default(), &rs).await.unwrap();
    bound_pods(&c.client, "default", "fg", 3).await;

    let marked = sets.delete("fg", &DeleteParams::foreground()).await.unwrap();
    let marked = marked.left().expect("the ReplicaSet stays while its pods go");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(
        marked.metadata.finalizers,
        Some(vec!["foregroundDeletion".to_owned()])
    );

    let terminating = eventually(10, "the collector deletes the pods (gracefully)", || async {
        let pods = app_pods(&c.client, "default", "fg").await;
        pods.iter()
            .all(|p| p.metadata.deletion_timestamp.is_some())
            .then_some(pods)
    })
    .await;
    assert_eq!(
        terminating.len(),
        3,
        "no replacement pods for a ReplicaSet being deleted"
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        sets.get_opt("fg").await.unwrap().is_some(),
        "the owner waits for its blocking dependents"
    );

    let _kubelet = Kubelet::start(&c.client);
    eventually(15, "the ReplicaSet goes after its pods", || async {
        sets.get_opt("fg").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(app_pods(&c.client, "default", "fg").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_cascade_orphan_leaves_pods_without_owner_references() {
    let c = cluster(ControllerOptions::default()).await;
    nodes(&c.client).await;
    let sets: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "default");
    let rs: ReplicaSet = serde_json::from_value(rs_json("orph", 2)).unwrap();
    sets.create(&PostParams::default(), &rs).await.unwrap();
    let before = bound_pods(&c.client, "default", "orph", 2).await;

    let home = tempfile::Builder::new()
        .prefix("skiff-ctl-home-")
        .tempdir()
        .unwrap();
    let srv = &c.srv;
    let path = home.path().to_owned();
    let out =
        tokio::task::block_in_place(|| kubectl(srv, &path, &["delete", "rs", "orph", "--cascade=orphan"]));
    assert!(out.starts_with("replicaset.apps \"orph\" deleted"), "{out}");
    assert!(
        sets.get_opt("orph").await.unwrap().is_none(),
        "kubectl --wait returned after the owner went"
    );

    let after = app_pods(&c.client, "default", "orph").await;
    let names = |pods: &[Pod]| {
        let mut n: Vec<String> = pods.iter().map(ResourceExt::name_any).collect();
        n.sort();
        n
    };
    assert_eq!(names(&after), names(&before), "the pods stay");
    for pod in &after {
        assert!(
            pod.metadata.owner_references.as_ref().is_none_or(Vec::is_empty),
            "{pod:?}"
        );
        assert!(pod.metadata.deletion_timestamp.is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_deletion_of_a_deployment_removes_its_replicasets_and_pods() {
    let c = cluster(ControllerOptions::default()).await;
    nodes(&c.client).await;
    let deploys: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    let sets: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "bg"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "bg"}},
            "template": {"metadata": {"labels": {"app": "bg"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    }))
    .unwrap();
    let d = deploys.create(&PostParams::default(), &d).await.unwrap();
    if !controllers::NAMES.contains(&"deployment") {
        // Without a Deployment controller, its ReplicaSet is made here, owned as that controller would.
        let mut rs = rs_json("bg-1", 2);
        rs["spec"]["selector"]["matchLabels"] = json!({"app": "bg"});
        rs["spec"]["template"]["metadata"]["labels"] = json!({"app": "bg"});
        rs["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "bg",
            "uid": d.metadata.uid, "controller": true, "blockOwnerDeletion": true}]);
        sets.create(&PostParams::default(), &serde_json::from_value(rs).unwrap())
            .await
            .unwrap();
    }
    bound_pods(&c.client, "default", "bg", 2).await;
    let owned_sets = sets.list(&ListParams::default()).await.unwrap().items;
    assert!(!owned_sets.is_empty());

    let home = tempfile::Builder::new()
        .prefix("skiff-ctl-home-")
        .tempdir()
        .unwrap();
    let srv = &c.srv;
    let path = home.path().to_owned();
    let out = tokio::task::block_in_place(|| kubectl(srv, &path, &["delete", "deployment", "bg"]));
    assert!(out.starts_with("deployment.apps \"bg\" deleted"), "{out}");
    eventually(10, "the ReplicaSets go", || async {
        sets.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    eventually(10, "the pods are Terminating", || async {
        app_pods(&c.client, "default", "bg")
            .await
            .iter()
            .all(|p| p.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;
    let _kubelet = Kubelet::start(&c.client);
    eventually(10, "the pods go", || async {
        app_pods(&c.client, "default", "bg")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependents_of_missing_or_replaced_owners_are_collected() {
    let c = cluster(ControllerOptions::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    let owner = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap(),
        )
        .await
        .unwrap();
    let dependent = |name: &str, owner_name: &str, uid: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name, "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": owner_name, "uid": uid}]}}))
        .unwrap()
    };
    let uid = owner.metadata.uid.clone().unwrap();
    cms.create(&PostParams::default(), &dependent("kept", "owner", &uid))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &dependent("missing", "nobody", "no-uid"))
        .await
        .unwrap();
    cms.create(
        &PostParams::default(),
        &dependent("replaced", "owner", "an-older-uid"),
    )
    .await
    .unwrap();
    eventually(10, "dangling dependents collected", || async {
        (cms.get_opt("missing").await.unwrap().is_none() && cms.get_opt("replaced").await.unwrap().is_none())
            .then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        cms.get_opt("kept").await.unwrap().is_some(),
        "a live owner keeps its dependent"
    );

    // Background deletion of the owner takes the dependent with it.
    cms.delete("owner", &DeleteParams::background()).await.unwrap();
    eventually(10, "dependent of a deleted owner collected", || async {
        cms.get_opt("kept").await.unwrap().is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_empties_it() {
    let c = cluster(ControllerOptions::default()).await;
    nodes(&c.client).await;
    let namespaces: Api<Namespace> = Api::all(c.client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap(),
        )
        .await
        .unwrap();
    let sets: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "team");
    let rs: ReplicaSet = serde_json::from_value(rs_json("app", 2)).unwrap();
    sets.create(&PostParams::default(), &rs).await.unwrap();
    bound_pods(&c.client, "team", "app", 2).await;

    namespaces.delete("team", &DeleteParams::default()).await.unwrap();
    eventually(10, "pods Terminating, ReplicaSet gone", || async {
        let pods = app_pods(&c.client, "team", "app").await;
        (sets.list(&ListParams::default()).await.unwrap().items.is_empty()
            && pods.iter().all(|p| p.metadata.deletion_timestamp.is_some()))
        .then_some(())
    })
    .await;
    assert!(
        namespaces.get_opt("team").await.unwrap().is_some(),
        "the namespace waits for its pods"
    );
    let _kubelet = Kubelet::start(&c.client);
    eventually(15, "the namespace goes", || async {
        namespaces.get_opt("team").await.unwrap().is_none().then_some(())
    })
    .await;
}

/// Every controller off except the named ones.
fn only(names: &[&str]) -> ControllerOptions {
    let mut options = ControllerOptions::default();
    for name in controllers::NAMES.iter().filter(|n| !names.contains(n)) {
        options.disable(name).unwrap();
    }
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_started_later_finishes_pending_work() {
    let c = cluster(only(&[])).await;
    let sets: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    let rs = sets
        .create(
            &PostParams::default(),
            &serde_json::from_value(rs_json("later", 0)).unwrap(),
        )
        .await
        .unwrap();
    let owned: Pod = serde_json::from_value(json!({"metadata": {"name": "later-a", "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "later", "uid": rs.metadata.uid, "controller": true,
         "blockOwnerDeletion": true}]},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &owned).await.unwrap();
    let dangling: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "dangling", "ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "gone", "uid": "gone-uid"}]}}))
        .unwrap();
    cms.create(&PostParams::default(), &dangling).await.unwrap();
    sets.delete("later", &DeleteParams::orphan()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        sets.get_opt("later").await.unwrap().is_some(),
        "nobody orphans without a collector"
    );

    let _gc = controllers::start_for(&c.srv.server, only(&["garbagecollector"]))
        .await
        .unwrap();
    eventually(
        10,
        "the orphaning finishes and the dangling dependent goes",
        || async {
            (sets.get_opt("later").await.unwrap().is_none()
                && cms.get_opt("dangling").await.unwrap().is_none())
            .then_some(())
        },
    )
    .await;
    let pod = pods.get("later-a").await.unwrap();
    assert!(
        pod.metadata.owner_references.as_ref().is_none_or(Vec::is_empty),
        "{pod:?}"
    );
}
