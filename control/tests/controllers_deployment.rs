//! Deployment controller with the ReplicaSet controller and the scheduler against a running server and a real
//! kubectl: spreading, rolling updates within maxSurge/maxUnavailable, Recreate, history, rollout status, undo,
//! scale, pause and resume. The test plays the kubelet: it marks bound pods ready and removes terminating ones.

mod controllers_common;

use std::collections::BTreeSet;
use std::process::Command;

use control::controllers::ControllerOptions;
use controllers_common::{Cluster, cluster, eventually, fake_node, set_pod_status};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

const REVISION: &str = "deployment.kubernetes.io/revision";

async fn setup() -> Cluster {
    let c = cluster(ControllerOptions::default()).await;
    for n in ["n1", "n2", "n3"] {
        fake_node(
            &c.client,
            n,
            json!({}),
            json!({"cpu": "8", "memory": "16Gi", "pods": "110"}),
        )
        .await;
    }
    c
}

fn deployment(name: &str, replicas: i32, strategy: Value, image: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "strategy": strategy,
            "revisionHistoryLimit": 1,
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]}}}
    }))
    .unwrap()
}

fn image(pod: &Pod) -> String {
    pod.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// All pods of `app`, terminating ones included.
async fn pods_of(client: &Client, app: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
}

fn live(pods: &[Pod]) -> Vec<&Pod> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// One kubelet round: bound pods become ready, terminating pods are removed.
async fn kubelet(client: &Client, pods: &[Pod]) {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    for (i, p) in pods.iter().enumerate() {
        let name = p.name_any();
        if p.metadata.deletion_timestamp.is_some() {
            match api.delete(&name, &DeleteParams::default().grace_period(0)).await {
                Ok(_) | Err(kube::Error::Api(_)) => {}
                Err(e) => panic!("deleting {name}: {e}"),
            }
        } else if p.spec.as_ref().unwrap().node_name.is_some() && !ready(p) {
            set_pod_status(
                client,
                &name,
                &format!("10.244.{}.{}", i / 200, i % 200 + 2),
                true,
            )
            .await;
        }
    }
}

fn complete(d: &Deployment) -> bool {
    let want = d.spec.as_ref().unwrap().replicas.unwrap();
    let Some(s) = d.status.as_ref() else {
        return false;
    };
    s.observed_generation >= d.metadata.generation
        && s.updated_replicas == Some(want)
        && s.replicas == Some(want)
        && s.available_replicas == Some(want)
}

/// Plays the kubelet until the Deployment is complete with every live pod on `image`; `bounds` = (most live pods,
/// fewest ready live pods) checked before every round.
async fn drive(c: &Cluster, name: &str, want_image: &str, bounds: Option<(usize, usize)>) -> Deployment {
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    eventually(30, &format!("{name} rolled out to {want_image}"), || async {
        let pods = pods_of(&c.client, name).await;
        let alive = live(&pods);
        if let Some((most, fewest)) = bounds {
            let ready_now = alive.iter().filter(|p| ready(p)).count();
            assert!(
                alive.len() <= most,
                "{} live pods, at most {most} allowed",
                alive.len()
            );
            assert!(
                ready_now >= fewest,
                "{ready_now} ready pods, at least {fewest} required"
            );
        }
        kubelet(&c.client, &pods).await;
        let d = deployments.get(name).await.unwrap();
        let want = d.spec.as_ref().unwrap().replicas.unwrap() as usize;
        (complete(&d) && alive.len() == want && alive.iter().all(|p| image(p) == want_image)).then_some(d)
    })
    .await
}

async fn sets_of(client: &Client, app: &str) -> Vec<ReplicaSet> {
    Api::<ReplicaSet>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
}

fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().unwrap().replicas.unwrap()
}

fn set_image(image: &str) -> Patch<Value> {
    Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}}))
}

/// kubectl v1.35 against the test server, run off the async workers (the server lives in this process).
struct Kubectl {
    binary: std::path::PathBuf,
    home: tempfile::TempDir,
}

impl Kubectl {
    fn new(c: &Cluster) -> Self {
        let binary = controllers_common::common::kubectl::kubectl();
        let home = tempfile::Builder::new()
            .prefix("skiff-ctl-deploy-")
            .tempdir()
            .unwrap();
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: {}\ncontexts:\n- name: t\n  context:\n    cluster: t\n    user: u\n    namespace: default\ncurrent-context: t\nusers:\n- name: u\n  user: {{}}\n",
            c.srv.server.url()
        );
        std::fs::write(home.path().join("config"), config).unwrap();
        Self { binary, home }
    }

    /// Runs kubectl with `args`; (success, stdout + stderr).
    async fn run(&self, args: &[&str]) -> (bool, String) {
        let mut cmd = Command::new(&self.binary);
        cmd.args(args)
            .env("KUBECONFIG", self.home.path().join("config"))
            .env("HOME", self.home.path());
        let out = tokio::task::spawn_blocking(move || cmd.output().expect("run kubectl"))
            .await
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    async fn ok(&self, args: &[&str]) -> String {
        let (ok, text) = self.run(args).await;
        assert!(ok, "kubectl {args:?} failed: {text}");
        text
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_spreads_stays_in_bounds_and_kubectl_drives_it() {
    let c = setup().await;
    let kubectl = Kubectl::new(&c);
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    let strategy =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}});
    deployments
        .create(
            &PostParams::default(),
            &deployment("web", 10, strategy, "nginx:1"),
        )
        .await
        .expect("create deployment");

    // Ten pods spread over the three nodes.
    let first = drive(&c, "web", "nginx:1", None).await;
    assert_eq!(first.annotations().get(REVISION).map(String::as_str), Some("1"));
    let pods = pods_of(&c.client, "web").await;
    let mut per_node = std::collections::BTreeMap::new();
    for p in live(&pods) {
        *per_node
            .entry(p.spec.as_ref().unwrap().node_name.clone().unwrap())
            .or_insert(0) += 1;
    }
    assert_eq!(per_node.len(), 3, "{per_node:?}");
    assert!(per_node.values().all(|n| (3..=4).contains(n)), "{per_node:?}");
    let sets = sets_of(&c.client, "web").await;
    assert_eq!(sets.len(), 1);
    let rs1 = sets[0].clone();
    let hash = rs1.labels()["pod-template-hash"].clone();
    assert_eq!(rs1.name_any(), format!("web-{hash}"));
    assert_eq!(
        rs1.spec.as_ref().unwrap().selector.match_labels.as_ref().unwrap()["pod-template-hash"],
        hash
    );
    assert_eq!(rs1.annotations()[REVISION], "1");
    assert_eq!(
        rs1.annotations()["deployment.kubernetes.io/desired-replicas"],
        "10"
    );
    assert_eq!(rs1.annotations()["deployment.kubernetes.io/max-replicas"], "13");
    let owner = &rs1.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("Deployment", Some(true))
    );
    let out = kubectl
        .ok(&["rollout", "status", "deployment/web", "--timeout=20s"])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");

    // A rolling update never has more than 10+3 pods nor fewer than 10-2 ready ones, while kubectl watches it.
    deployments
        .patch("web", &PatchParams::default(), &set_image("nginx:2"))
        .await
        .unwrap();
    let watcher = {
        let binary = kubectl.binary.clone();
        let config = kubectl.home.path().join("config");
        tokio::task::spawn_blocking(move || {
            Command::new(binary)
                .args(["rollout", "status", "deployment/web", "--timeout=30s"])
                .env("KUBECONFIG", config)
                .output()
                .expect("run kubectl")
        })
    };
    let second = drive(&c, "web", "nginx:2", Some((13, 8))).await;
    let out = watcher.await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("deployment \"web\" successfully rolled out"),
        "{text}"
    );
    assert_eq!(second.annotations()[REVISION], "2");
    let progressing = second
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap()
        .clone();
    assert_eq!(progressing.reason.as_deref(), Some("NewReplicaSetAvailable"));
    let sets = sets_of(&c.client, "web").await;
    assert_eq!(sets.len(), 2);
    let old = sets.iter().find(|r| r.name_any() == rs1.name_any()).unwrap();
    assert_eq!(replicas(old), 0);

    // Events say what was scaled.
    let events: Vec<String> = Api::<Event>::namespaced(c.client.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ScalingReplicaSet"))
        .filter_map(|e| e.note)
        .collect();
    assert!(
        events.contains(&format!("Scaled up replica set {} from 0 to 10", rs1.name_any())),
        "{events:?}"
    );
    assert!(
        events.contains(&format!(
            "Scaled down replica set {} from 10 to 8",
            rs1.name_any()
        )),
        "{events:?}"
    );

    // Undo goes back to the first template and reuses its ReplicaSet with a new revision.
    let out = kubectl.ok(&["rollout", "undo", "deployment/web"]).await;
    assert!(out.contains("rolled back"), "{out}");
    let third = drive(&c, "web", "nginx:1", Some((13, 8))).await;
    assert_eq!(third.annotations()[REVISION], "3");
    let sets = sets_of(&c.client, "web").await;
    assert_eq!(sets.len(), 2, "undo must not create a ReplicaSet");
    let reused = sets.iter().find(|r| r.name_any() == rs1.name_any()).unwrap();
    assert_eq!(
        (replicas(reused), reused.annotations()[REVISION].as_str()),
        (10, "3")
    );
    assert_eq!(
        reused.annotations()["deployment.kubernetes.io/revision-history"],
        "1"
    );

    // kubectl scale resizes the current ReplicaSet.
    kubectl.ok(&["scale", "deployment/web", "--replicas=4"]).await;
    let scaled = drive(&c, "web", "nginx:1", None).await;
    assert_eq!(scaled.status.as_ref().unwrap().replicas, Some(4));
    let current = sets_of(&c.client, "web")
        .await
        .into_iter()
        .find(|r| r.name_any() == rs1.name_any())
        .unwrap();
    assert_eq!(replicas(&current), 4);
    assert_eq!(
        current.annotations()["deployment.kubernetes.io/desired-replicas"],
        "4"
    );

    // Paused: a template change waits, scaling still applies; resumed: the rollout happens.
    kubectl.ok(&["rollout", "pause", "deployment/web"]).await;
    kubectl.ok(&["set", "image", "deployment/web", "c=nginx:3"]).await;
    kubectl.ok(&["scale", "deployment/web", "--replicas=6"]).await;
    let paused = eventually(10, "paused condition and scale to 6", || async {
        let d = deployments.get("web").await.unwrap();
        let cond = d
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "Progressing")?
            .clone();
        let sets = sets_of(&c.client, "web").await;
        let six = sets
            .iter()
            .any(|r| r.name_any() == rs1.name_any() && replicas(r) == 6);
        (cond.reason.as_deref() == Some("DeploymentPaused") && six).then_some(sets)
    })
    .await;
    let on_new_template = |sets: &[ReplicaSet]| {
        sets.iter().any(|r| {
            r.spec
                .as_ref()
                .unwrap()
                .template
                .as_ref()
                .unwrap()
                .spec
                .as_ref()
                .unwrap()
                .containers[0]
                .image
                .as_deref()
                == Some("nginx:3")
        })
    };
    assert!(
        !on_new_template(&paused),
        "no ReplicaSet for the new template while paused"
    );
    // Paused still cleans history: the revision-2 ReplicaSet is beyond revisionHistoryLimit 1.
    assert_eq!(paused.len(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!on_new_template(&sets_of(&c.client, "web").await));
    eventually(10, "six ready pods while paused", || async {
        let pods = pods_of(&c.client, "web").await;
        kubelet(&c.client, &pods).await;
        let alive = live(&pods);
        (alive.len() == 6 && alive.iter().all(|p| ready(p))).then_some(())
    })
    .await;
    kubectl.ok(&["rollout", "resume", "deployment/web"]).await;
    let resumed = drive(&c, "web", "nginx:3", Some((8, 5))).await;
    assert_eq!(resumed.annotations()[REVISION], "4");
    let out = kubectl
        .ok(&["rollout", "status", "deployment/web", "--timeout=10s"])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    // revisionHistoryLimit 1: the oldest zero-sized ReplicaSet is gone.
    let names: BTreeSet<String> = eventually(10, "history cleanup", || async {
        let sets = sets_of(&c.client, "web").await;
        (sets.len() == 2).then(|| sets.iter().map(ResourceExt::name_any).collect())
    })
    .await;
    assert!(names.contains(&rs1.name_any()), "{names:?}");
    let history = kubectl.ok(&["rollout", "history", "deployment/web"]).await;
    assert!(history.contains('3') && history.contains('4'), "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_never_runs_old_and_new_pods_together() {
    let c = setup().await;
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    deployments
        .create(
            &PostParams::default(),
            &deployment("db", 3, json!({"type": "Recreate"}), "pg:1"),
        )
        .await
        .expect("create deployment");
    drive(&c, "db", "pg:1", None).await;
    deployments
        .patch("db", &PatchParams::default(), &set_image("pg:2"))
        .await
        .unwrap();
    eventually(30, "recreated on pg:2", || async {
        let pods = pods_of(&c.client, "db").await;
        // Terminating pods count: the new template starts only once every old pod is gone.
        let images: BTreeSet<String> = pods.iter().map(image).collect();
        assert!(images.len() <= 1, "old and new pods together: {images:?}");
        kubelet(&c.client, &pods).await;
        let d = deployments.get("db").await.unwrap();
        (complete(&d) && live(&pods).len() == 3 && images.contains("pg:2")).then_some(())
    })
    .await;
    let sets = sets_of(&c.client, "db").await;
    assert_eq!(sets.len(), 2);
    assert_eq!(sets.iter().map(replicas).sum::<i32>(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_rollout_exceeds_its_progress_deadline() {
    let c = setup().await;
    let kubectl = Kubectl::new(&c);
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    let mut d = deployment("api", 2, json!({"type": "RollingUpdate"}), "api:1");
    d.spec.as_mut().unwrap().progress_deadline_seconds = Some(1);
    deployments
        .create(&PostParams::default(), &d)
        .await
        .expect("create deployment");
    drive(&c, "api", "api:1", None).await;
    // The new pods never become ready (no kubelet from here on).
    deployments
        .patch("api", &PatchParams::default(), &set_image("api:2"))
        .await
        .unwrap();
    let cond = eventually(15, "ProgressDeadlineExceeded", || async {
        let d = deployments.get("api").await.unwrap();
        let cond = d
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "Progressing")?;
        (cond.reason.as_deref() == Some("ProgressDeadlineExceeded")).then_some(cond)
    })
    .await;
    assert_eq!(cond.status, "False");
    let (ok, out) = kubectl
        .run(&["rollout", "status", "deployment/api", "--timeout=10s"])
        .await;
    assert!(!ok, "{out}");
    assert!(out.contains("exceeded its progress deadline"), "{out}");
    // The old pods keep serving: the rollout stopped within maxUnavailable (25% of 2 rounds down to 0).
    let pods = pods_of(&c.client, "api").await;
    let ready_old = live(&pods)
        .iter()
        .filter(|p| ready(p) && image(p) == "api:1")
        .count();
    assert_eq!(ready_old, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_replicaset_with_the_same_template_is_adopted_and_reused() {
    let c = setup().await;
    let d = deployment("cache", 3, json!({"type": "RollingUpdate"}), "redis:7");
    let spec = d.spec.clone().unwrap();
    let orphan: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "cache-by-hand", "labels": {"app": "cache"}},
        "spec": {"replicas": 1, "selector": spec.selector, "template": spec.template},
    }))
    .unwrap();
    Api::<ReplicaSet>::namespaced(c.client.clone(), "default")
        .create(&PostParams::default(), &orphan)
        .await
        .expect("create orphan");
    Api::<Deployment>::namespaced(c.client.clone(), "default")
        .create(&PostParams::default(), &d)
        .await
        .expect("create deployment");
    drive(&c, "cache", "redis:7", None).await;
    let sets = sets_of(&c.client, "cache").await;
    assert_eq!(sets.len(), 1, "the orphan is the current ReplicaSet");
    let rs = &sets[0];
    assert_eq!(rs.name_any(), "cache-by-hand");
    assert_eq!(replicas(rs), 3);
    let owner = &rs.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Deployment", "cache")
    );
    assert_eq!(rs.annotations()[REVISION], "1");
}
