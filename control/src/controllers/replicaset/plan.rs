//! Pure ReplicaSet decisions: which pods it owns or adopts, how many to create, which to delete, its status.

use std::cmp::Ordering;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::controllers::selector;

/// What one reconcile of a ReplicaSet should do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Pods matching the selector without a controller: take them over.
    pub adopt: Vec<String>,
    /// Owned pods that no longer match the selector: let them go.
    pub release: Vec<String>,
    pub create: usize,
    /// Names in deletion order (least valuable first).
    pub delete: Vec<String>,
}

/// The controller owner reference of a pod, if any.
pub fn controller_of(pod: &Pod) -> Option<&OwnerReference> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
}

pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

fn phase_rank(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        _ => 2,
    }
}

/// Kubernetes' deletion order: unassigned before assigned, pending before running, not ready before ready,
/// then the newest first.
pub fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    let assigned = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty())
    };
    assigned(a)
        .cmp(&assigned(b))
        .then(phase_rank(a).cmp(&phase_rank(b)))
        .then(pod_ready(a).cmp(&pod_ready(b)))
        .then_with(|| {
            let t = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            t(b).cmp(&t(a))
        })
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// Decides adoption, release, creations and deletions from the pods of the ReplicaSet's namespace.
pub fn plan(rs: &ReplicaSet, pods: &[&Pod]) -> Plan {
    let Some(spec) = &rs.spec else {
        return Plan::default();
    };
    let uid = rs.metadata.uid.as_deref().unwrap_or_default();
    let mut out = Plan::default();
    let mut owned: Vec<&Pod> = Vec::new();
    for pod in pods {
        let selected = !selector::is_empty(&spec.selector)
            && selector::matches(&spec.selector, pod.metadata.labels.as_ref());
        match controller_of(pod) {
            Some(owner) if owner.uid == uid => {
                if selected {
                    owned.push(pod);
                } else if pod.metadata.deletion_timestamp.is_none() {
                    out.release.push(pod.metadata.name.clone().unwrap_or_default());
                }
            }
            None if selected && active(pod) && rs.metadata.deletion_timestamp.is_none() => {
                out.adopt.push(pod.metadata.name.clone().unwrap_or_default());
                owned.push(pod);
            }
            _ => {}
        }
    }
    if rs.metadata.deletion_timestamp.is_some() {
        // A ReplicaSet being deleted (e.g. in the foreground) no longer manages its replicas.
        return out;
    }
    let mut alive: Vec<&Pod> = owned.into_iter().filter(|p| active(p)).collect();
    let want = usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
    if alive.len() < want {
        out.create = want - alive.len();
    } else if alive.len() > want {
        alive.sort_by(|a, b| deletion_order(a, b));
        out.delete = alive[..alive.len() - want]
            .iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect();
    }
    out
}

/// The status of a ReplicaSet from its owned pods (available = ready; minReadySeconds is not tracked).
pub fn status(rs: &ReplicaSet, owned: &[&Pod]) -> ReplicaSetStatus {
    let alive: Vec<&&Pod> = owned.iter().filter(|p| active(p)).collect();
    let template_labels = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully = alive
        .iter()
        .filter(|p| {
            let labels = p.metadata.labels.clone().unwrap_or_default();
            template_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .count();
    let ready = alive.iter().filter(|p| pod_ready(p)).count();
    let n = |x: usize| i32::try_from(x).unwrap_or(i32::MAX);
    ReplicaSetStatus {
        replicas: n(alive.len()),
        fully_labeled_replicas: Some(n(fully)),
        ready_replicas: Some(n(ready)),
        available_replicas: Some(n(ready)),
        observed_generation: rs.metadata.generation,
        ..ReplicaSetStatus::default()
    }
}

/// The owner reference a ReplicaSet puts on its pods.
pub fn owner_ref(rs: &ReplicaSet) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".to_owned(),
        kind: "ReplicaSet".to_owned(),
        name: rs.metadata.name.clone().unwrap_or_default(),
        uid: rs.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A new pod from the ReplicaSet's template.
pub fn new_pod(rs: &ReplicaSet) -> Pod {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", rs.metadata.name.as_deref().unwrap_or("pod"))),
            namespace: rs.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: meta.annotations,
            owner_references: Some(vec![owner_ref(rs)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

#[cfg(test)]
mod tests;
