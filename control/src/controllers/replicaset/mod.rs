//! ReplicaSet controller: creates and deletes pods to match `replicas`, adopts and releases pods, writes status.

pub mod plan;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::cache::{self, Caches};
use super::events;
use super::expectations::PodExpectations;

const DEBOUNCE: Duration = Duration::from_millis(10);
const RETRY: Duration = Duration::from_secs(1);

/// Runs until the caches stop.
pub async fn run(client: Client, caches: Arc<Caches>) {
    let mut expectations: HashMap<String, PodExpectations> = HashMap::new();
    let mut rounds = cache::Rounds::start(&caches, DEBOUNCE, RETRY).await;
    loop {
        let unfinished =
            reconcile_all(&client, &caches, &mut expectations).await > 0 || !expectations.is_empty();
        if !rounds.next(unfinished).await {
            return;
        }
    }
}

async fn reconcile_all(
    client: &Client,
    caches: &Caches,
    expectations: &mut HashMap<String, PodExpectations>,
) -> usize {
    let pods = caches.pods.state();
    let sets = caches.replicasets.state();
    let uids: HashSet<String> = sets.iter().filter_map(|r| r.metadata.uid.clone()).collect();
    expectations.retain(|uid, _| uids.contains(uid));
    let mut failures = 0;
    for rs in &sets {
        let ns = rs.namespace().unwrap_or_default();
        let in_ns: Vec<&Pod> = pods
            .iter()
            .map(|p| &**p)
            .filter(|p| p.namespace().as_deref() == Some(&ns))
            .collect();
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        if let Some(e) = expectations.get_mut(&uid) {
            if !e.satisfied(&in_ns) {
                continue;
            }
            expectations.remove(&uid);
        }
        failures += reconcile(client, rs, &in_ns, expectations.entry(uid).or_default()).await;
        expectations.retain(|_, e| !(e.creates.is_empty() && e.deletes.is_empty()));
    }
    failures
}

async fn reconcile(client: &Client, rs: &ReplicaSet, pods: &[&Pod], expect: &mut PodExpectations) -> usize {
    let ns = rs.namespace().unwrap_or_default();
    let name = rs.name_any();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let decision = plan::plan(rs, pods);
    tracing::debug!(%ns, replicaset = %name, ?decision, "reconciling");
    let mut failures = 0;
    for pod in &decision.adopt {
        let patch = json!({"metadata": {"ownerReferences": [plan::owner_ref(rs)]}});
        if api
            .patch(pod, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .is_err()
        {
            failures += 1;
        }
    }
    for pod in &decision.release {
        let patch = json!({"metadata": {"ownerReferences": null}});
        if api
            .patch(pod, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .is_err()
        {
            failures += 1;
        }
    }
    expect.since = Some(Instant::now());
    for _ in 0..decision.create {
        match api.create(&PostParams::default(), &plan::new_pod(rs)).await {
            Ok(pod) => {
                let created = pod.name_any();
                events::record(
                    client,
                    rs,
                    "Normal",
                    "SuccessfulCreate",
                    "Create",
                    &format!("Created pod: {created}"),
                )
                .await;
                expect.creates.insert(created);
            }
            Err(e) => {
                tracing::debug!(%ns, replicaset = %name, error = %e, "creating pod");
                failures += 1;
                break;
            }
        }
    }
    for pod in &decision.delete {
        match api.delete(pod, &DeleteParams::default()).await {
            Ok(_) => {
                events::record(
                    client,
                    rs,
                    "Normal",
                    "SuccessfulDelete",
                    "Delete",
                    &format!("Deleted pod: {pod}"),
                )
                .await;
                expect.deletes.insert(pod.clone());
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(_) => failures += 1,
        }
    }
    // Status from what the cache shows now; the next pass after the writes land corrects it.
    let uid = rs.metadata.uid.as_deref().unwrap_or_default();
    let owned: Vec<&Pod> = pods
        .iter()
        .copied()
        .filter(|p| {
            plan::controller_of(p).is_some_and(|o| o.uid == uid) || decision.adopt.contains(&p.name_any())
        })
        .filter(|p| !decision.release.contains(&p.name_any()))
        .collect();
    let status = plan::status(rs, &owned);
    if rs.status.as_ref() != Some(&status) && decision.create == 0 && decision.delete.is_empty() {
        let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
        let patch = json!({"status": status});
        if sets
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .is_err()
        {
            failures += 1;
        }
    }
    failures
}
