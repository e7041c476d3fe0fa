//! DaemonSet controller with the scheduler against a running server and fake nodes: pods follow nodes joining,
//! leaving and changing labels; a rolling update stays within maxUnavailable and `kubectl rollout status`
//! succeeds. The test plays the kubelet: it marks bound pods ready and finishes terminating ones.

mod controllers_common;

use std::collections::BTreeMap;
use std::process::Command;

use control::controllers::ControllerOptions;
use controllers_common::{Cluster, cluster, eventually, fake_node, set_pod_status};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

const OPTIONS: ControllerOptions = ControllerOptions {
    daemonset: true,
    scheduler: true,
    podgc: true,
    ..ControllerOptions::NONE
};

fn daemonset(name: &str, image: &str, extra_spec: Value) -> DaemonSet {
    let mut spec = json!({
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": image}]}}
    });
    for (k, v) in extra_spec.as_object().unwrap() {
        match k.as_str() {
            "nodeSelector" => spec["template"]["spec"]["nodeSelector"] = v.clone(),
            _ => spec[k] = v.clone(),
        }
    }
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

async fn node(c: &Cluster, name: &str, labels: Value) {
    fake_node(
        &c.client,
        name,
        labels,
        json!({"cpu": "4", "memory": "8Gi", "pods": "110"}),
    )
    .await;
}

fn node_of(pod: &Pod) -> Option<String> {
    pod.spec.as_ref()?.node_name.clone()
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Live (not terminating) pods of `app` by the node they are bound to; None while one is unbound.
async fn bound(client: &Client, app: &str) -> Option<BTreeMap<String, Pod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let list = pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for p in list.items {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let node = node_of(&p)?;
        assert!(
            out.insert(node.clone(), p).is_none(),
            "two live daemon pods on {node}"
        );
    }
    Some(out)
}

async fn wait_for_nodes(c: &Cluster, app: &str, nodes: &[&str]) -> BTreeMap<String, Pod> {
    let want: Vec<String> = nodes.iter().map(|n| (*n).to_owned()).collect();
    eventually(15, &format!("{app} pods on exactly {nodes:?}"), || async {
        let got = bound(&c.client, app).await?;
        (got.keys().cloned().collect::<Vec<_>>() == want).then_some(got)
    })
    .await
}

/// One kubelet pass: terminating pods finish, bound pods become ready; returns the live pods.
async fn kubelet(client: &Client, app: &str, next_ip: &mut u32) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let list = pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap();
    let mut live = Vec::new();
    for p in list.items {
        let name = p.name_any();
        if p.metadata.deletion_timestamp.is_some() {
            let _ = pods
                .delete(
                    &name,
                    &DeleteParams {
                        grace_period_seconds: Some(0),
                        ..DeleteParams::default()
                    },
                )
                .await;
            continue;
        }
        if node_of(&p).is_some() && !ready(&p) {
            *next_ip += 1;
            let ip = format!("10.244.{}.{}", *next_ip / 200, *next_ip % 200 + 2);
            set_pod_status(client, &name, &ip, true).await;
        }
        live.push(p);
    }
    live
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_follow_nodes_joining_leaving_and_relabelled() {
    let c = cluster(OPTIONS).await;
    node(&c, "n1", json!({"role": "edge"})).await;
    node(&c, "n2", json!({"role": "edge"})).await;
    node(&c, "n3", json!({})).await;
    let sets: Api<DaemonSet> = Api::namespaced(c.client.clone(), "default");
    sets.create(
        &PostParams::default(),
        &daemonset("agent", "agent:1", json!({"nodeSelector": {"role": "edge"}})),
    )
    .await
    .expect("create daemonset");

    let pods = wait_for_nodes(&c, "agent", &["n1", "n2"]).await;
    let pod = &pods["n1"];
    let v = serde_json::to_value(pod).unwrap();
    assert_eq!(
        v["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchFields"][0],
        json!({"key": "metadata.name", "operator": "In", "values": ["n1"]})
    );
    let tolerations = pod.spec.as_ref().unwrap().tolerations.clone().unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t.key.as_deref() == Some("node.kubernetes.io/unreachable")
                && t.effect.as_deref() == Some("NoExecute")
                && t.toleration_seconds.is_none()),
        "{tolerations:?}"
    );
    let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("DaemonSet", "agent"));
    assert!(pod.labels().contains_key("controller-revision-hash"));

    // A node that joins later gets its pod; so does one that starts matching.
    node(&c, "n4", json!({"role": "edge"})).await;
    wait_for_nodes(&c, "agent", &["n1", "n2", "n4"]).await;
    let nodes: Api<Node> = Api::all(c.client.clone());
    let label = |v: Value| Patch::Merge(json!({"metadata": {"labels": v}}));
    nodes
        .patch("n3", &PatchParams::default(), &label(json!({"role": "edge"})))
        .await
        .unwrap();
    wait_for_nodes(&c, "agent", &["n1", "n2", "n3", "n4"]).await;

    // A node that stops matching loses its pod; a node that leaves too.
    nodes
        .patch("n1", &PatchParams::default(), &label(json!({"role": null})))
        .await
        .unwrap();
    nodes.delete("n2", &DeleteParams::default()).await.unwrap();
    wait_for_nodes(&c, "agent", &["n3", "n4"]).await;
    // Whatever the deletion path, nothing stays bound to the deleted node.
    let all: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    eventually(15, "no pod left on the deleted node", || async {
        let list = all.list(&ListParams::default()).await.unwrap();
        list.items
            .iter()
            .all(|p| node_of(p).as_deref() != Some("n2"))
            .then_some(())
    })
    .await;

    let status = eventually(10, "status for two nodes", || async {
        let s = sets.get("agent").await.unwrap().status?;
        (s.desired_number_scheduled == 2 && s.current_number_scheduled == 2 && s.number_misscheduled == 0)
            .then_some(s)
    })
    .await;
    assert_eq!(status.number_ready, 0, "nobody marked the pods ready");
    let events: Api<Event> = Api::namespaced(c.client.clone(), "default");
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("DaemonSet"))
        .filter_map(|e| e.reason)
        .collect();
    assert!(reasons.iter().any(|r| r == "SuccessfulCreate"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "SuccessfulDelete"), "{reasons:?}");
}

/// kubectl v1.35 against the test server, run off the async workers.
struct Kubectl {
    binary: std::path::PathBuf,
    home: tempfile::TempDir,
}

impl Kubectl {
    fn new(c: &Cluster) -> Self {
        let binary = controllers_common::common::kubectl::kubectl();
        let home = tempfile::Builder::new()
            .prefix("skiff-ctl-ds-")
            .tempdir()
            .unwrap();
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: {}\ncontexts:\n- name: t\n  context:\n    cluster: t\n    user: u\n    namespace: default\ncurrent-context: t\nusers:\n- name: u\n  user: {{}}\n",
            c.srv.server.url()
        );
        std::fs::write(home.path().join("config"), config).unwrap();
        Self { binary, home }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.args(args)
            .env("KUBECONFIG", self.home.path().join("config"))
            .env("HOME", self.home.path());
        cmd
    }
}

fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Plays the kubelet until kubectl's `rollout status` ends; checks the live ready pods never drop below
/// `min_ready` once all were ready.
async fn rollout(c: &Cluster, kubectl: &Kubectl, image: &str, min_ready: usize, next_ip: &mut u32) -> String {
    let mut cmd = kubectl.command(&["rollout", "status", "ds/agent", "--timeout=30s"]);
    let status = tokio::task::spawn_blocking(move || cmd.output().expect("run kubectl"));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(40);
    while !status.is_finished() {
        assert!(tokio::time::Instant::now() < deadline, "rollout did not end");
        let live = kubelet(&c.client, "agent", next_ip).await;
        let ready_now = live.iter().filter(|p| ready(p)).count();
        assert!(
            ready_now >= min_ready,
            "only {ready_now} ready pods while rolling out {image}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let out = status.await.unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "kubectl rollout status failed: {text}");
    text
}

fn image_of(pod: &Pod) -> String {
    pod.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_within_max_unavailable_and_rollout_status() {
    let c = cluster(OPTIONS).await;
    for n in ["n1", "n2", "n3", "n4"] {
        node(&c, n, json!({})).await;
    }
    let kubectl = Kubectl::new(&c);
    let sets: Api<DaemonSet> = Api::namespaced(c.client.clone(), "default");
    let strategy =
        json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}});
    sets.create(&PostParams::default(), &daemonset("agent", "agent:1", strategy))
        .await
        .expect("create daemonset");
    let mut next_ip = 0;
    let text = rollout(&c, &kubectl, "agent:1", 0, &mut next_ip).await;
    assert!(text.contains("successfully rolled out"), "{text}");
    let s = sets.get("agent").await.unwrap().status.unwrap();
    assert_eq!(
        (
            s.desired_number_scheduled,
            s.current_number_scheduled,
            s.number_ready,
            s.number_available,
            s.updated_number_scheduled
        ),
        (4, 4, 4, Some(4), Some(4))
    );
    let before = bound(&c.client, "agent").await.unwrap();
    let old_hash = before["n1"].labels()["controller-revision-hash"].clone();

    // New template: pods are replaced one node at a time; 3 of 4 stay ready throughout.
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "agent:2"}]}}}});
    sets.patch("agent", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    let text = rollout(&c, &kubectl, "agent:2", 3, &mut next_ip).await;
    assert!(text.contains("successfully rolled out"), "{text}");
    let after = eventually(10, "four new pods", || async {
        let b = bound(&c.client, "agent").await?;
        (b.len() == 4 && b.values().all(|p| image_of(p) == "agent:2")).then_some(b)
    })
    .await;
    for (node, pod) in &after {
        assert_ne!(pod.labels()["controller-revision-hash"], old_hash, "{node}");
        assert_eq!(pod.labels()["pod-template-generation"], "2", "{node}");
        assert_ne!(pod.name_any(), before[node].name_any(), "{node} got a new pod");
    }

    // `kubectl get ds` shows the counts.
    let mut cmd = kubectl.command(&[
        "get",
        "ds",
        "agent",
        "-o",
        "jsonpath={.status.updatedNumberScheduled}/{.status.numberAvailable}",
    ]);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run kubectl"))
        .await
        .unwrap();
    assert_eq!(output_text(&out).trim(), "4/4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_delete_replaces_only_deleted_pods() {
    let c = cluster(OPTIONS).await;
    for n in ["n1", "n2"] {
        node(&c, n, json!({})).await;
    }
    let sets: Api<DaemonSet> = Api::namespaced(c.client.clone(), "default");
    sets.create(
        &PostParams::default(),
        &daemonset(
            "agent",
            "agent:1",
            json!({"updateStrategy": {"type": "OnDelete"}}),
        ),
    )
    .await
    .expect("create daemonset");
    let first = wait_for_nodes(&c, "agent", &["n1", "n2"]).await;
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "agent:2"}]}}}});
    sets.patch("agent", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    eventually(10, "observed generation 2", || async {
        let s = sets.get("agent").await.unwrap().status?;
        (s.observed_generation == Some(2) && s.updated_number_scheduled == Some(0)).then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let same = bound(&c.client, "agent").await.unwrap();
    assert_eq!(
        same["n1"].name_any(),
        first["n1"].name_any(),
        "OnDelete leaves pods alone"
    );
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    pods.delete(
        &first["n1"].name_any(),
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
    )
    .await
    .unwrap();
    let replaced = eventually(10, "replacement on n1", || async {
        let b = bound(&c.client, "agent").await?;
        b.get("n1")
            .filter(|p| p.name_any() != first["n1"].name_any())
            .cloned()
    })
    .await;
    assert_eq!(image_of(&replaced), "agent:2");
    assert_eq!(
        image_of(&bound(&c.client, "agent").await.unwrap()["n2"]),
        "agent:1"
    );
}
