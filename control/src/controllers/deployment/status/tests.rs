use k8s_openapi::api::apps::v1::Deployment;
use serde_json::json;

use super::*;

fn deployment(replicas: i32, generation: i64, status: serde_json::Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "generation": generation},
        "spec": {"replicas": replicas, "selector": {}, "template": {}, "progressDeadlineSeconds": 60},
        "status": status,
    }))
    .unwrap()
}

fn rs(name: &str, replicas: i32, ready: i32, available: i32) -> Rs {
    Rs {
        name: name.to_owned(),
        replicas,
        pods: replicas,
        ready,
        available,
        present: replicas,
        ..Rs::default()
    }
}

fn now(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

#[test]
fn counts_and_availability() {
    let d = deployment(4, 2, json!({}));
    let new = rs("new", 2, 2, 1);
    let all = [rs("old", 3, 3, 3), new.clone()];
    let s = calculate(&d, 1, Some(&new), &all, now(0));
    assert_eq!(s.observed_generation, Some(2));
    assert_eq!(
        (
            s.replicas,
            s.updated_replicas,
            s.ready_replicas,
            s.available_replicas,
            s.unavailable_replicas
        ),
        (Some(5), Some(2), Some(5), Some(4), Some(1))
    );
    let avail = condition(&s, AVAILABLE).unwrap();
    assert_eq!(
        (avail.status.as_str(), avail.reason.as_deref()),
        ("True", Some("MinimumReplicasAvailable"))
    );
    let s = calculate(&d, 0, Some(&new), std::slice::from_ref(&new), now(0));
    assert_eq!(condition(&s, AVAILABLE).unwrap().status, "False");
    assert!(!complete(&d, &s));
}

#[test]
fn progressing_then_complete_then_stays_complete() {
    let d = deployment(
        2,
        1,
        json!({"replicas": 2, "updatedReplicas": 1, "availableReplicas": 1}),
    );
    let new = rs("web-abc", 2, 2, 2);
    let mut s = calculate(&d, 0, Some(&new), std::slice::from_ref(&new), now(0));
    new_rs_condition(&d, &mut s, "web-abc", false, now(0));
    assert_eq!(
        condition(&s, PROGRESSING).unwrap().reason.as_deref(),
        Some(FOUND_NEW_RS)
    );
    progress(&d, Some("web-abc"), &mut s, now(1));
    let c = condition(&s, PROGRESSING).unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_deref()),
        ("True", Some(NEW_RS_AVAILABLE))
    );
    assert_eq!(
        c.message.as_deref(),
        Some("ReplicaSet \"web-abc\" has successfully progressed.")
    );
    assert!(complete(&d, &s));
    // Recorded; a later pass leaves it alone.
    let d2 = deployment(2, 1, serde_json::to_value(&s).unwrap());
    let mut again = calculate(&d2, 0, Some(&new), std::slice::from_ref(&new), now(100));
    progress(&d2, Some("web-abc"), &mut again, now(100));
    assert_eq!(again, s);
}

#[test]
fn progress_deadline_exceeded_without_progress() {
    let start = now(0);
    let d = deployment(
        3,
        1,
        json!({"replicas": 3, "updatedReplicas": 1, "readyReplicas": 2, "availableReplicas": 2,
            "conditions": [{"type": "Progressing", "status": "True", "reason": RS_UPDATED,
                "lastUpdateTime": start.to_string(), "lastTransitionTime": start.to_string()}]}),
    );
    let new = rs("web-abc", 1, 0, 0);
    let all = [rs("old", 2, 2, 2), new.clone()];
    let mut s = calculate(&d, 1, Some(&new), &all, now(30));
    progress(&d, Some("web-abc"), &mut s, now(30));
    assert_eq!(
        condition(&s, PROGRESSING).unwrap().reason.as_deref(),
        Some(RS_UPDATED)
    );
    let mut s = calculate(&d, 1, Some(&new), &all, now(61));
    progress(&d, Some("web-abc"), &mut s, now(61));
    let c = condition(&s, PROGRESSING).unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_deref()),
        ("False", Some(TIMED_OUT))
    );
    // Progress (a new pod became ready) renews the condition with a fresh update time.
    let ready_new = rs("web-abc", 1, 1, 1);
    let all = [rs("old", 2, 2, 2), ready_new.clone()];
    let mut s = calculate(&d, 1, Some(&ready_new), &all, now(61));
    progress(&d, Some("web-abc"), &mut s, now(61));
    let c = condition(&s, PROGRESSING).unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_deref()),
        ("True", Some(RS_UPDATED))
    );
    assert_eq!(c.last_update_time.as_ref().unwrap().0, now(61));
    assert_eq!(c.last_transition_time.as_ref().unwrap().0, start);
}

#[test]
fn paused_and_resumed_conditions() {
    let mut d = deployment(1, 1, json!({}));
    d.spec.as_mut().unwrap().paused = Some(true);
    let mut s = DeploymentStatus::default();
    pause_condition(&d, &mut s, now(0));
    assert_eq!(
        condition(&s, PROGRESSING).unwrap().reason.as_deref(),
        Some(PAUSED)
    );
    assert_eq!(condition(&s, PROGRESSING).unwrap().status, "Unknown");
    d.spec.as_mut().unwrap().paused = Some(false);
    pause_condition(&d, &mut s, now(1));
    assert_eq!(
        condition(&s, PROGRESSING).unwrap().reason.as_deref(),
        Some(RESUMED)
    );
}
