//! Pure Deployment status: the counts `kubectl rollout status` reads and the Available and Progressing conditions.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::rollout::Rs;

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";

fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// The progress deadline, unless unset or "never" (MaxInt32).
fn deadline(d: &Deployment) -> Option<i32> {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s != i32::MAX)
}

pub fn condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status.conditions.iter().flatten().find(|c| c.type_ == type_)
}

/// A condition of `type_` as of `now`.
pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message),
        last_transition_time: Some(Time(now)),
        last_update_time: Some(Time(now)),
    }
}

/// Sets `cond`, keeping the existing one when status and reason are unchanged, and its transition time when only
/// the reason changed.
pub fn set_condition(status: &mut DeploymentStatus, mut cond: DeploymentCondition) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if let Some(cur) = conditions.iter().find(|c| c.type_ == cond.type_) {
        if cur.status == cond.status && cur.reason == cond.reason {
            return;
        }
        if cur.status == cond.status {
            cond.last_transition_time = cur.last_transition_time.clone();
        }
    }
    conditions.retain(|c| c.type_ != cond.type_);
    conditions.push(cond);
}

fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(c) = status.conditions.as_mut() {
        c.retain(|c| c.type_ != type_);
    }
}

/// Counts from the ReplicaSets (`new` is also in `all`) and the Available condition; other conditions are kept.
pub fn calculate(
    d: &Deployment,
    max_unavailable: i32,
    new: Option<&Rs>,
    all: &[Rs],
    now: Timestamp,
) -> DeploymentStatus {
    let old = d.status.clone().unwrap_or_default();
    let available: i32 = all.iter().map(|r| r.available).sum();
    let desired_total: i32 = all.iter().map(|r| r.replicas).sum();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(all.iter().map(|r| r.pods).sum()),
        updated_replicas: Some(new.map_or(0, |n| n.pods)),
        ready_replicas: Some(all.iter().map(|r| r.ready).sum()),
        available_replicas: Some(available),
        unavailable_replicas: Some((desired_total - available).max(0)),
        terminating_replicas: None,
        collision_count: old.collision_count,
        conditions: Some(old.conditions.unwrap_or_default()),
    };
    let cond = if available >= replicas(d) - max_unavailable {
        new_condition(
            AVAILABLE,
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".to_owned(),
            now,
        )
    } else {
        new_condition(
            AVAILABLE,
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".to_owned(),
            now,
        )
    };
    set_condition(&mut status, cond);
    status
}

/// Every replica is updated and available, and the latest spec was observed.
pub fn complete(d: &Deployment, status: &DeploymentStatus) -> bool {
    let want = replicas(d);
    status.updated_replicas == Some(want)
        && status.replicas == Some(want)
        && status.available_replicas == Some(want)
        && status.observed_generation >= d.metadata.generation
}

/// Whether `new` shows progress over the Deployment's recorded status.
fn progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let n = |v: Option<i32>| v.unwrap_or(0);
    let old_old = n(old.replicas) - n(old.updated_replicas);
    let new_old = n(new.replicas) - n(new.updated_replicas);
    n(new.updated_replicas) > n(old.updated_replicas)
        || new_old < old_old
        || n(new.ready_replicas) > n(old.ready_replicas)
        || n(new.available_replicas) > n(old.available_replicas)
}

/// Whether the rollout made no progress for progressDeadlineSeconds.
fn timed_out(d: &Deployment, status: &DeploymentStatus, now: Timestamp) -> bool {
    let (Some(secs), Some(cond)) = (deadline(d), condition(status, PROGRESSING)) else {
        return false;
    };
    match cond.reason.as_deref() {
        Some(TIMED_OUT) => true,
        Some(NEW_RS_AVAILABLE) => false,
        _ => cond
            .last_update_time
            .as_ref()
            .is_some_and(|t| t.0 + SignedDuration::from_secs(i64::from(secs)) < now),
    }
}

/// The Progressing condition of a rollout pass (kube-controller-manager's syncRolloutStatus).
pub fn progress(d: &Deployment, new_rs: Option<&str>, status: &mut DeploymentStatus, now: Timestamp) {
    if deadline(d).is_none() {
        remove_condition(status, PROGRESSING);
        return;
    }
    let current = condition(status, PROGRESSING).cloned();
    let done = status.replicas == status.updated_replicas
        && current.as_ref().and_then(|c| c.reason.as_deref()) == Some(NEW_RS_AVAILABLE);
    if done {
        return;
    }
    let name = d.metadata.name.as_deref().unwrap_or_default();
    let subject = match new_rs {
        Some(rs) => format!("ReplicaSet {rs:?}"),
        None => format!("Deployment {name:?}"),
    };
    if complete(d, status) {
        let cond = new_condition(
            PROGRESSING,
            "True",
            NEW_RS_AVAILABLE,
            format!("{subject} has successfully progressed."),
            now,
        );
        set_condition(status, cond);
    } else if progressing(d, status) {
        let mut cond = new_condition(
            PROGRESSING,
            "True",
            RS_UPDATED,
            format!("{subject} is progressing."),
            now,
        );
        if let Some(cur) = current
            && cur.status == "True"
        {
            cond.last_transition_time = cur.last_transition_time;
        }
        remove_condition(status, PROGRESSING);
        set_condition(status, cond);
    } else if timed_out(d, status, now) {
        let cond = new_condition(
            PROGRESSING,
            "False",
            TIMED_OUT,
            format!("{subject} has timed out progressing."),
            now,
        );
        set_condition(status, cond);
    }
}

/// The Progressing condition while paused (Unknown, DeploymentPaused) and right after resuming (DeploymentResumed).
pub fn pause_condition(d: &Deployment, status: &mut DeploymentStatus, now: Timestamp) {
    if deadline(d).is_none() {
        return;
    }
    let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
    let reason = condition(status, PROGRESSING).and_then(|c| c.reason.clone());
    if paused && reason.as_deref() != Some(PAUSED) {
        let c = new_condition(
            PROGRESSING,
            "Unknown",
            PAUSED,
            "Deployment is paused".to_owned(),
            now,
        );
        set_condition(status, c);
    } else if !paused && reason.as_deref() == Some(PAUSED) {
        let c = new_condition(
            PROGRESSING,
            "Unknown",
            RESUMED,
            "Deployment is resumed".to_owned(),
            now,
        );
        set_condition(status, c);
    }
}

/// Progressing=True once the Deployment has a ReplicaSet for its template (created now, or found without any
/// Progressing condition recorded yet).
pub fn new_rs_condition(
    d: &Deployment,
    status: &mut DeploymentStatus,
    rs: &str,
    created: bool,
    now: Timestamp,
) {
    if deadline(d).is_none() {
        return;
    }
    if created {
        let c = new_condition(
            PROGRESSING,
            "True",
            NEW_RS_CREATED,
            format!("Created new replica set {rs:?}"),
            now,
        );
        set_condition(status, c);
    } else if condition(status, PROGRESSING).is_none() {
        let c = new_condition(
            PROGRESSING,
            "True",
            FOUND_NEW_RS,
            format!("Found new replica set {rs:?}"),
            now,
        );
        set_condition(status, c);
    }
}

#[cfg(test)]
mod tests;
