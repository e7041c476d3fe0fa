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

const DEBOUNCE: Duration = Duration::from_millis(10);
const RETRY: Duration = Duration::from_secs(1);
/// Writes the cache has not shown after this long are no longer waited for.
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Pods created or deleted that the cache does not show yet; the DaemonSet waits for them before the next
/// decision so it never creates two pods for one node.
#[derive(Default)]
struct Expectations {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    since: Option<Instant>,
}

impl Expectations {
    fn satisfied(&mut self, pods: &[&Pod]) -> bool {
        let present: HashSet<&str> = pods.iter().filter_map(|p| p.metadata.name.as_deref()).collect();
        self.creates.retain(|n| !present.contains(n.as_str()));
        let live: HashSet<&str> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.name.as_deref())
            .collect();
        self.deletes.retain(|n| live.contains(n.as_str()));
        let expired = self.since.is_some_and(|t| t.elapsed() > EXPECTATION_TIMEOUT);
        (self.creates.is_empty() && self.deletes.is_empty()) || expired
    }

    fn pending(&self) -> bool {
        !(self.creates.is_empty() && self.deletes.is_empty())
    }
}

/// Runs until the caches stop.
pub async fn run(client: Client, caches: Arc<Caches>) {
    let mut changes = caches.subscribe();
    caches.ready().await;
    let mut expectations: HashMap<String, Expectations> = HashMap::new();
    loop {
        let again = reconcile_all(&client, &caches, &mut expectations).await;
        let more = if again || !expectations.is_empty() {
            tokio::time::timeout(RETRY, cache::next_change(&mut changes, DEBOUNCE))
                .await
                .unwrap_or(true)
        } else {
            cache::next_change(&mut changes, DEBOUNCE).await
        };
        if !more {
            return;
        }
    }
}

/// One pass over every DaemonSet; true when one should be looked at again soon.
async fn reconcile_all(
    client: &Client,
    caches: &Caches,
    expectations: &mut HashMap<String, Expectations>,
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
        if !expectations.get(&uid).is_some_and(Expectations::pending) {
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
    expect: &mut Expectations,
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
