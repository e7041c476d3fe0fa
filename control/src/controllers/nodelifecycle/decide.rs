//! Pure node lifecycle decisions: from a Node, its Lease, its pods and the time, what to change.
//!
//! Times are milliseconds since the Unix epoch so tests run on virtual time.

use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, PodCondition, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::Timings;
use crate::scheduler::filter::tolerates;

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The conditions the kubelet owns and the lifecycle controller marks Unknown when it goes silent.
pub const KUBELET_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// What to change for one Node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Actions {
    /// The Node's new `status.conditions`, when they change.
    pub conditions: Option<Vec<NodeCondition>>,
    /// The Node's new `spec.taints`, when they change.
    pub taints: Option<Vec<Taint>>,
    /// Pods (namespace, name) whose Ready condition becomes False, with their new condition list.
    pub mark_not_ready: Vec<(String, String, Vec<PodCondition>)>,
    /// Pods (namespace, name) whose toleration of a NoExecute taint ran out.
    pub evict: Vec<(String, String)>,
    /// When something changes next without any other event (lease expiry or an eviction), in ms.
    pub recheck_at: Option<i64>,
}

/// Milliseconds since the epoch of a Kubernetes time.
pub fn millis(t: &Time) -> i64 {
    t.0.as_millisecond()
}

fn time(ms: i64) -> Time {
    Time(Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Whether the node's last heartbeat (Lease or posted status) is older than the grace period; a node that never
/// sent one counts from its creation.
pub fn stale(node: &Node, lease_renew_ms: Option<i64>, now_ms: i64, timings: &Timings) -> bool {
    now_ms > last_heartbeat(node, lease_renew_ms).saturating_add(duration_ms(timings.grace))
}

/// The latest sign of life: the Lease renewal, the kubelet's Ready heartbeat, or the node's creation.
fn last_heartbeat(node: &Node, lease_renew_ms: Option<i64>) -> i64 {
    let created = node.metadata.creation_timestamp.as_ref().map_or(0, millis);
    let status_beat = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map_or(0, millis);
    lease_renew_ms.unwrap_or(created).max(created).max(status_beat)
}

fn condition_status<'a>(node: &'a Node, type_: &str) -> Option<&'a str> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

/// The kubelet conditions set to Unknown (None when they already are).
fn unknown_conditions(node: &Node, now_ms: i64) -> Option<Vec<NodeCondition>> {
    let mut conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut changed = false;
    for type_ in KUBELET_CONDITIONS {
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".to_owned();
                c.reason = Some("NodeStatusUnknown".to_owned());
                c.message = Some("Kubelet stopped posting node status.".to_owned());
                c.last_transition_time = Some(time(now_ms));
                changed = true;
            }
            None => {
                conditions.push(NodeCondition {
                    type_: type_.to_owned(),
                    status: "Unknown".to_owned(),
                    reason: Some("NodeStatusNeverUpdated".to_owned()),
                    message: Some("Kubelet never posted node status.".to_owned()),
                    last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                    last_transition_time: Some(time(now_ms)),
                });
                changed = true;
            }
        }
    }
    changed.then_some(conditions)
}

fn taint(key: &str, effect: &str, added_ms: Option<i64>) -> Taint {
    Taint {
        key: key.to_owned(),
        effect: effect.to_owned(),
        time_added: added_ms.map(time),
        value: None,
    }
}

/// The node's taints with the lifecycle taints for its state (existing ones keep their timeAdded).
fn desired_taints(node: &Node, stale: bool, now_ms: i64) -> Vec<Taint> {
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let key = if stale {
        Some(UNREACHABLE)
    } else if condition_status(node, "Ready") == Some("False") {
        Some(NOT_READY)
    } else {
        None
    };
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| {
            let ours = (t.key == UNREACHABLE || t.key == NOT_READY)
                && (t.effect == "NoExecute" || t.effect == "NoSchedule");
            !ours || Some(t.key.as_str()) == key
        })
        .cloned()
        .collect();
    if let Some(key) = key {
        for effect in ["NoSchedule", "NoExecute"] {
            if !out.iter().any(|t| t.key == key && t.effect == effect) {
                let added = (effect == "NoExecute").then_some(now_ms);
                out.push(taint(key, effect, added));
            }
        }
    }
    out
}

/// How long a pod may stay on a node with `taint` (ms): None = forever, Some(0) = leave now.
///
/// Pods without a toleration for the not-ready/unreachable taints get the defaults, as the
/// DefaultTolerationSeconds admission plugin would have given them.
pub fn toleration_ms(tolerations: &[Toleration], taint: &Taint, timings: &Timings) -> Option<i64> {
    let matching: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
    if matching.is_empty() {
        return match taint.key.as_str() {
            NOT_READY => Some(duration_ms(timings.not_ready_toleration)),
            UNREACHABLE => Some(duration_ms(timings.unreachable_toleration)),
            _ => Some(0),
        };
    }
    if matching.iter().any(|t| t.toleration_seconds.is_none()) {
        return None;
    }
    matching
        .iter()
        .filter_map(|t| t.toleration_seconds)
        .min()
        .map(|s| s.max(0).saturating_mul(1000))
}

/// When the pod must leave a node with these taints (ms since epoch), or None when it tolerates them forever.
pub fn eviction_at(pod: &Pod, taints: &[Taint], now_ms: i64, timings: &Timings) -> Option<i64> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    taints
        .iter()
        .filter(|t| t.effect == "NoExecute")
        .filter_map(|t| {
            let since = t.time_added.as_ref().map_or(now_ms, millis);
            toleration_ms(tolerations, t, timings).map(|ms| since.saturating_add(ms))
        })
        .min()
}

fn pod_ready_not_false(pod: &Pod) -> Option<Vec<PodCondition>> {
    let mut conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    match conditions.iter_mut().find(|c| c.type_ == "Ready") {
        Some(c) if c.status == "False" => None,
        Some(c) => {
            c.status = "False".to_owned();
            c.reason = Some("NodeNotReady".to_owned());
            c.message = Some("Kubelet stopped posting node status.".to_owned());
            Some(conditions)
        }
        None => {
            conditions.push(PodCondition {
                type_: "Ready".to_owned(),
                status: "False".to_owned(),
                reason: Some("NodeNotReady".to_owned()),
                message: Some("Kubelet stopped posting node status.".to_owned()),
                ..PodCondition::default()
            });
            Some(conditions)
        }
    }
}

/// Decides everything for one node at `now_ms`. `pods` are the pods bound to it.
pub fn decide(
    node: &Node,
    lease_renew_ms: Option<i64>,
    pods: &[&Pod],
    now_ms: i64,
    timings: &Timings,
) -> Actions {
    let stale = stale(node, lease_renew_ms, now_ms, timings);
    let mut out = Actions::default();
    if stale {
        out.conditions = unknown_conditions(node, now_ms);
    } else {
        out.recheck_at = Some(
            last_heartbeat(node, lease_renew_ms)
                .saturating_add(duration_ms(timings.grace))
                .saturating_add(1),
        );
    }
    let taints = desired_taints(node, stale, now_ms);
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    if taints != current {
        out.taints = Some(taints.clone());
    }
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        if stale && let Some(conditions) = pod_ready_not_false(pod) {
            out.mark_not_ready.push((ns.clone(), name.clone(), conditions));
        }
        match eviction_at(pod, &taints, now_ms, timings) {
            Some(at) if at <= now_ms => out.evict.push((ns, name)),
            Some(at) => out.recheck_at = Some(out.recheck_at.map_or(at, |r| r.min(at))),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests;
