//! The scheduler: binds unscheduled pods to the best fitting node and reports why others cannot run.

pub mod filter;
pub mod score;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::controllers::cache::{self, Caches};
use crate::controllers::events;
use filter::Usage;

/// The `schedulerName` this scheduler serves.
pub const SCHEDULER_NAME: &str = "default-scheduler";
const DEBOUNCE: Duration = Duration::from_millis(10);
/// A pass with failed writes is repeated after this long even without changes.
const RETRY: Duration = Duration::from_secs(1);

/// Whether the pod waits for this scheduler.
pub fn pending(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    spec.is_some_and(|s| s.node_name.as_deref().unwrap_or("").is_empty())
        && spec
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or(SCHEDULER_NAME)
            == SCHEDULER_NAME
        && pod.metadata.deletion_timestamp.is_none()
}

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The controller owner's uid, the key for spreading.
fn owner_uid(pod: &Pod) -> Option<&str> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

/// What the scheduler knows about one node while it places pods.
#[derive(Debug, Clone, Default)]
pub struct NodeState {
    pub usage: Usage,
    /// Bound pods per controller owner uid.
    pub owners: HashMap<String, usize>,
}

impl NodeState {
    /// Accounts a pod placed on the node.
    pub fn add(&mut self, pod: &Pod) {
        let r = filter::requests(pod);
        self.usage.cpu_millis += r.cpu_millis;
        self.usage.memory += r.memory;
        self.usage.pods += 1;
        self.usage.host_ports.extend(filter::host_ports(pod));
        if let Some(uid) = owner_uid(pod) {
            *self.owners.entry(uid.to_owned()).or_default() += 1;
        }
    }
}

/// Picks the node for `pod` (ties go to the first name in order), or the FailedScheduling message.
pub fn choose(pod: &Pod, nodes: &[&Node], states: &HashMap<String, NodeState>) -> Result<String, String> {
    let empty = NodeState::default();
    let mut feasible = Vec::new();
    let mut reasons = Vec::new();
    for node in nodes {
        let state = states.get(&node.name_any()).unwrap_or(&empty);
        match filter::fits(pod, node, &state.usage) {
            Ok(()) => feasible.push((*node, state)),
            Err(why) => reasons.push(why),
        }
    }
    if feasible.is_empty() {
        return Err(filter::unschedulable_message(nodes.len(), &reasons));
    }
    let owner = owner_uid(pod);
    let count = |s: &NodeState| owner.and_then(|o| s.owners.get(o)).copied().unwrap_or(0);
    let max = feasible.iter().map(|(_, s)| count(s)).max().unwrap_or(0);
    let mut best: Option<(i64, String)> = None;
    for (node, state) in feasible {
        let total = score::total(
            score::least_allocated(pod, node, &state.usage),
            score::spread(count(state), max),
            score::preferred_affinity(pod, node),
        );
        let name = node.name_any();
        if best
            .as_ref()
            .is_none_or(|(s, n)| total > *s || (total == *s && name < *n))
        {
            best = Some((total, name));
        }
    }
    Ok(best.expect("at least one feasible node").1)
}

/// Runs until the caches stop.
pub async fn run(client: Client, caches: Arc<Caches>) {
    // Pods bound in an earlier pass that the cache has not shown bound yet: key -> node.
    let mut assumed: HashMap<(String, String), String> = HashMap::new();
    // Last FailedScheduling message per pod, so an unchanged cluster does not repeat it.
    let mut reported: HashMap<(String, String), String> = HashMap::new();
    let mut rounds = cache::Rounds::start(&caches, DEBOUNCE, RETRY).await;
    loop {
        let unfinished = schedule_pass(&client, &caches, &mut assumed, &mut reported).await > 0;
        if !rounds.next(unfinished).await {
            return;
        }
    }
}

async fn schedule_pass(
    client: &Client,
    caches: &Caches,
    assumed: &mut HashMap<(String, String), String>,
    reported: &mut HashMap<(String, String), String>,
) -> usize {
    let pods = caches.pods.state();
    let nodes = caches.nodes.state();
    let mut node_list: Vec<&Node> = nodes.iter().map(|n| &**n).collect();
    node_list.sort_by_key(|n| n.name_any());
    let key = |p: &Pod| (p.namespace().unwrap_or_default(), p.name_any());
    let mut states: HashMap<String, NodeState> = HashMap::new();
    let mut queue = Vec::new();
    let mut still_assumed = HashMap::new();
    for pod in &pods {
        if terminal(pod) {
            continue;
        }
        let bound = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty());
        match bound.or_else(|| assumed.get(&key(pod)).cloned()) {
            Some(node) => {
                if pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .unwrap_or("")
                    .is_empty()
                {
                    still_assumed.insert(key(pod), node.clone());
                }
                states.entry(node).or_default().add(pod);
            }
            None if pending(pod) => queue.push(&**pod),
            None => {}
        }
    }
    *assumed = still_assumed;
    reported.retain(|k, _| queue.iter().any(|p| key(p) == *k));
    queue.sort_by(|a, b| {
        (a.metadata.creation_timestamp.as_ref().map(|t| t.0), key(a))
            .cmp(&(b.metadata.creation_timestamp.as_ref().map(|t| t.0), key(b)))
    });
    let mut failures = 0;
    for pod in queue {
        let (ns, name) = key(pod);
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        match choose(pod, &node_list, &states) {
            Ok(node) => {
                let binding = json!({
                    "apiVersion": "v1", "kind": "Binding",
                    "metadata": {"name": name, "namespace": ns},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": node},
                });
                match api
                    .create_subresource::<_, serde_json::Value>(
                        "binding",
                        &name,
                        &PostParams::default(),
                        &binding,
                    )
                    .await
                {
                    Ok(_) => {
                        tracing::debug!(%ns, pod = %name, %node, "bound");
                        states.entry(node.clone()).or_default().add(pod);
                        assumed.insert((ns.clone(), name.clone()), node.clone());
                        reported.remove(&(ns.clone(), name.clone()));
                        let note = format!("Successfully assigned {ns}/{name} to {node}");
                        events::record(client, pod, "Normal", "Scheduled", "Binding", &note).await;
                    }
                    Err(e) => {
                        tracing::debug!(%ns, pod = %name, error = %e, "binding failed");
                        failures += 1;
                    }
                }
            }
            Err(message) => {
                if reported.get(&(ns.clone(), name.clone())) == Some(&message) {
                    continue;
                }
                let patch = json!({"status": {"conditions": [{
                    "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": message, "lastTransitionTime": k8s_openapi::jiff::Timestamp::now(),
                }]}});
                if let Err(e) = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
                    .await
                {
                    tracing::debug!(%ns, pod = %name, error = %e, "reporting unschedulable failed");
                    failures += 1;
                    continue;
                }
                events::record(client, pod, "Warning", "FailedScheduling", "Scheduling", &message).await;
                reported.insert((ns, name), message);
            }
        }
    }
    failures
}

#[cfg(test)]
mod tests;
