//! Building the planner's view of a Deployment's ReplicaSets from cached objects: ownership, pods, availability.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::rollout::Rs;
use crate::controllers::selector;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX: &str = "deployment.kubernetes.io/max-replicas";

/// Deployment annotations that are not copied onto its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED,
    MAX,
    "deprecated.deployment.rollback.to",
];

/// The controller owner reference in `meta`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
}

/// The owner reference a Deployment puts on its ReplicaSets.
pub fn owner_ref(d: &Deployment) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".to_owned(),
        kind: "Deployment".to_owned(),
        name: d.metadata.name.clone().unwrap_or_default(),
        uid: d.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The owner references of `meta` with `owner` added as the controller.
pub fn with_owner(meta: &ObjectMeta, owner: OwnerReference) -> Vec<OwnerReference> {
    let mut refs: Vec<OwnerReference> = meta.owner_references.clone().unwrap_or_default();
    refs.retain(|o| o.uid != owner.uid);
    refs.push(owner);
    refs
}

/// The owner references of `meta` without the one to the owner `uid`.
pub fn without_owner(meta: &ObjectMeta, uid: &str) -> Vec<OwnerReference> {
    let mut refs: Vec<OwnerReference> = meta.owner_references.clone().unwrap_or_default();
    refs.retain(|o| o.uid != uid);
    refs
}

/// The Deployment's annotations that its ReplicaSets carry too.
pub fn copied_annotations(d: &Deployment) -> BTreeMap<String, String> {
    d.metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// How a Deployment relates to the ReplicaSets of its namespace.
#[derive(Debug, Default)]
pub struct Claim<'a> {
    pub owned: Vec<&'a ReplicaSet>,
    /// Orphans matching the selector: to adopt (already included in `owned`).
    pub adopt: Vec<&'a ReplicaSet>,
    /// Owned but no longer matching: to release.
    pub release: Vec<&'a ReplicaSet>,
}

/// Sorts the ReplicaSets of `d`'s namespace into owned, to adopt and to release.
pub fn claim<'a>(d: &Deployment, sets: &[&'a ReplicaSet]) -> Claim<'a> {
    let uid = d.metadata.uid.as_deref().unwrap_or_default();
    let Some(sel) = d.spec.as_ref().map(|s| &s.selector) else {
        return Claim::default();
    };
    let mut out = Claim::default();
    for rs in sets {
        let matches = !selector::is_empty(sel) && selector::matches(sel, rs.metadata.labels.as_ref());
        match controller_of(&rs.metadata) {
            Some(o) if o.uid == uid => {
                if matches {
                    out.owned.push(rs);
                } else if rs.metadata.deletion_timestamp.is_none() {
                    out.release.push(rs);
                }
            }
            None if matches
                && rs.metadata.deletion_timestamp.is_none()
                && d.metadata.deletion_timestamp.is_none() =>
            {
                out.adopt.push(rs);
                out.owned.push(rs);
            }
            _ => {}
        }
    }
    out
}

fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// When the pod became Ready, if it is.
fn ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

/// Ready for at least `min_ready` seconds at `now` (Kubernetes' IsPodAvailable).
pub fn available(pod: &Pod, min_ready: i32, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready <= 0 => true,
        Some(None) => false,
        Some(Some(t)) => t + SignedDuration::from_secs(i64::from(min_ready)) < now,
    }
}

fn annotation_i64(meta: &ObjectMeta, key: &str) -> Option<i64> {
    meta.annotations.as_ref()?.get(key)?.parse().ok()
}

/// The planner's view of `rs` with the pods it controls.
pub fn view(rs: &ReplicaSet, pods: &[&Pod], min_ready: i32, now: Timestamp) -> Rs {
    let uid = rs.metadata.uid.as_deref().unwrap_or_default();
    let mine: Vec<&&Pod> = pods
        .iter()
        .filter(|p| controller_of(&p.metadata).is_some_and(|o| o.uid == uid))
        .filter(|p| !finished(p))
        .collect();
    let live: Vec<&&&Pod> = mine
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let n = |x: usize| i32::try_from(x).unwrap_or(i32::MAX);
    let to_i32 = |v: Option<i64>| v.and_then(|v| i32::try_from(v).ok());
    Rs {
        name: rs.metadata.name.clone().unwrap_or_default(),
        created: rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
        revision: annotation_i64(&rs.metadata, REVISION).unwrap_or(0),
        replicas: rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        desired_annotation: to_i32(annotation_i64(&rs.metadata, DESIRED)),
        max_annotation: to_i32(annotation_i64(&rs.metadata, MAX)),
        pods: n(live.len()),
        ready: n(live.iter().filter(|p| ready_since(p).is_some()).count()),
        available: n(live.iter().filter(|p| available(p, min_ready, now)).count()),
        present: n(mine.len()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(owner: &str, ready: Option<&str>, deleting: bool, phase: &str) -> Pod {
        let mut meta = json!({"name": "p", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "name": "rs", "uid": owner, "controller": true}]});
        if deleting {
            meta["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        let conditions = match ready {
            Some(t) => json!([{"type": "Ready", "status": "True", "lastTransitionTime": t}]),
            None => json!([{"type": "Ready", "status": "False"}]),
        };
        serde_json::from_value(
            json!({"metadata": meta, "status": {"phase": phase, "conditions": conditions}}),
        )
        .unwrap()
    }

    #[test]
    fn counts_pods_by_state_and_min_ready_seconds() {
        let rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "uid": "u1", "annotations": {REVISION: "3", DESIRED: "4", MAX: "5"}},
            "spec": {"replicas": 4, "selector": {}}
        }))
        .unwrap();
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let pods = [
            pod("u1", Some("2026-01-01T00:00:00Z"), false, "Running"),
            pod("u1", Some("2026-01-01T00:00:50Z"), false, "Running"),
            pod("u1", None, false, "Pending"),
            pod("u1", Some("2026-01-01T00:00:00Z"), true, "Running"),
            pod("u1", None, false, "Failed"),
            pod("other", Some("2026-01-01T00:00:00Z"), false, "Running"),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let v = view(&rs, &refs, 30, now);
        assert_eq!(
            (v.revision, v.replicas, v.desired_annotation, v.max_annotation),
            (3, 4, Some(4), Some(5))
        );
        assert_eq!((v.pods, v.ready, v.available, v.present), (3, 2, 1, 4));
        let v = view(&rs, &refs, 0, now);
        assert_eq!(v.available, 2);
    }

    #[test]
    fn claims_owned_adopts_orphans_and_releases_mismatches() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "uid": "d1"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {}}
        }))
        .unwrap();
        let rs = |name: &str, app: &str, owner: Option<&str>| -> ReplicaSet {
            let mut meta = json!({"name": name, "labels": {"app": app}});
            if let Some(uid) = owner {
                meta["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "x",
                    "uid": uid, "controller": true}]);
            }
            serde_json::from_value(json!({"metadata": meta, "spec": {"selector": {}}})).unwrap()
        };
        let sets = [
            rs("mine", "web", Some("d1")),
            rs("orphan", "web", None),
            rs("moved", "db", Some("d1")),
            rs("foreign", "web", Some("d2")),
            rs("unrelated", "db", None),
        ];
        let refs: Vec<&ReplicaSet> = sets.iter().collect();
        let c = claim(&d, &refs);
        let names = |v: &[&ReplicaSet]| {
            v.iter()
                .map(|r| r.metadata.name.clone().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&c.owned), ["mine", "orphan"]);
        assert_eq!(names(&c.adopt), ["orphan"]);
        assert_eq!(names(&c.release), ["moved"]);
        // Adoption and release keep other owners' references.
        let mut meta = sets[1].metadata.clone();
        meta.owner_references = Some(vec![OwnerReference {
            uid: "other".into(),
            ..owner_ref(&d)
        }]);
        meta.owner_references.as_mut().unwrap()[0].controller = None;
        let adopted = with_owner(&meta, owner_ref(&d));
        assert_eq!(adopted.len(), 2);
        assert_eq!(
            controller_of(&ObjectMeta {
                owner_references: Some(adopted.clone()),
                ..meta.clone()
            })
            .unwrap()
            .uid,
            "d1"
        );
        meta.owner_references = Some(adopted);
        let released = without_owner(&meta, "d1");
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].uid, "other");
    }
}
