//! DaemonSet controller: one pod per eligible node, rolling updates or OnDelete, and the DaemonSet status.

pub mod plan;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
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
        let unfinished = reconcile_all(&client, &caches, &mut expectations).await || !expectations.is_empty();
        if !rounds.next(unfinished).await {
            return;
        }
    }
}

/// One pass over every DaemonSet; true when one should be looked at again soon.
async fn reconcile_all(
    client: &Client,
    caches: &Caches,
    expectations: &mut HashMap<String, PodExpectations>,
) -> bool {
    let pods = caches.pods.state();
    let nodes = caches.nodes.state();
    let node_refs: Vec<&Node> = nodes.iter().map(|n| &**n).collect();
    let sets = caches.daemonsets.state();
    let uids: HashSet<String> = sets.iter().filter_map(|d| d.metadata.uid.clone()).collect();
    expectations.retain(|uid, _| uids.contains(uid));
    let mut again = false;
    for ds in &sets {
        if ds.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let owned: Vec<&Pod> = pods
            .iter()
            .map(|p| &**p)
            .filter(|p| p.namespace() == ds.namespace())
            .filter(|p| plan::controller_of(p).is_some_and(|o| o.uid == uid))
            .collect();
        if let Some(e) = expectations.get_mut(&uid) {
            if !e.satisfied(&owned) {
                continue;
            }
            expectations.remove(&uid);
        }
        let expect = expectations.entry(uid.clone()).or_default();
        again |= reconcile(client, ds, &node_refs, &owned, expect).await;
        if !expectations.get(&uid).is_some_and(PodExpectations::pending) {
            expectations.remove(&uid);
        }
    }
    again
}

async fn reconcile(
    client: &Client,
    ds: &DaemonSet,
    nodes: &[&Node],
    owned: &[&Pod],
    expect: &mut PodExpectations,
) -> bool {
    let ns = ds.namespace().unwrap_or_default();
    let name = ds.name_any();
    let decision = plan::plan(ds, nodes, owned, Timestamp::now().as_millisecond());
    tracing::debug!(%ns, daemonset = %name, create = ?decision.create, delete = ?decision.delete, "reconciling");
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let mut again = decision.waiting_for_min_ready;
    expect.since = Some(Instant::now());
    for node in &decision.create {
        match api.create(&PostParams::default(), &plan::new_pod(ds, node)).await {
            Ok(pod) => {
                let created = pod.name_any();
                let note = format!("Created pod: {created}");
                events::record(client, ds, "Normal", "SuccessfulCreate", "Create", &note).await;
                expect.creates.insert(created);
            }
            Err(e) => {
                tracing::warn!(%ns, daemonset = %name, %node, error = %e, "creating daemon pod");
                let note = format!("Error creating: {e}");
                events::record(client, ds, "Warning", "FailedCreate", "Create", &note).await;
                again = true;
            }
        }
    }
    for pod in &decision.delete {
        match api.delete(pod, &DeleteParams::default()).await {
            Ok(_) => {
                let note = format!("Deleted pod: {pod}");
                events::record(client, ds, "Normal", "SuccessfulDelete", "Delete", &note).await;
                expect.deletes.insert(pod.clone());
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                tracing::warn!(%ns, daemonset = %name, %pod, error = %e, "deleting daemon pod");
                again = true;
            }
        }
    }
    let current = ds.status.clone().unwrap_or_default();
    if current != decision.status {
        let sets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
        let patch = json!({"status": decision.status});
        if let Err(e) = sets
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            tracing::debug!(%ns, daemonset = %name, error = %e, "updating status");
            again = true;
        }
    }
    again
}
