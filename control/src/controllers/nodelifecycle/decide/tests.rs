use std::time::Duration;

use serde_json::{Value, json};

use super::*;

const T0: i64 = 1_800_000_000_000;

fn timings() -> Timings {
    Timings {
        grace: Duration::from_secs(40),
        not_ready_toleration: Duration::from_secs(300),
        unreachable_toleration: Duration::from_secs(300),
    }
}

fn at(ms: i64) -> String {
    Timestamp::from_millisecond(ms).unwrap().to_string()
}

fn node(taints: Value, ready: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": "n1", "creationTimestamp": at(T0)},
        "spec": {"taints": taints},
        "status": {"conditions": [
            {"type": "Ready", "status": ready, "reason": "KubeletReady"},
            {"type": "MemoryPressure", "status": "False"},
            {"type": "NetworkUnavailable", "status": "False"},
        ]}
    }))
    .unwrap()
}

fn pod(name: &str, tolerations: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": "n1", "containers": [], "tolerations": tolerations},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .unwrap()
}

/// The node after applying `actions` (what the next pass sees).
fn applied(mut n: Node, actions: &Actions) -> Node {
    if let Some(t) = &actions.taints {
        n.spec.get_or_insert_default().taints = Some(t.clone());
    }
    if let Some(c) = &actions.conditions {
        n.status.get_or_insert_default().conditions = Some(c.clone());
    }
    n
}

fn names(v: &[(String, String)]) -> Vec<&str> {
    v.iter().map(|(_, n)| n.as_str()).collect()
}

#[test]
fn fresh_lease_changes_nothing_and_rechecks_at_expiry() {
    let n = node(json!([]), "True");
    let p = pod("a", json!([]));
    let a = decide(&n, Some(T0 + 10_000), &[&p], T0 + 20_000, &timings());
    assert_eq!(a.conditions, None);
    assert_eq!(a.taints, None);
    assert!(a.mark_not_ready.is_empty() && a.evict.is_empty());
    assert_eq!(a.recheck_at, Some(T0 + 50_001));
}

#[test]
fn node_without_lease_counts_from_creation() {
    let n = node(json!([]), "True");
    assert!(!stale(&n, None, T0 + 40_000, &timings()));
    assert!(stale(&n, None, T0 + 40_001, &timings()));
    // An old lease from before the node was re-created does not count against it.
    assert!(!stale(&n, Some(T0 - 100_000), T0 + 1_000, &timings()));
    // A posted status heartbeat counts like a lease renewal.
    let mut posted = n.clone();
    posted.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].last_heartbeat_time =
        Some(time(T0 + 30_000));
    assert!(!stale(&posted, Some(T0), T0 + 70_000, &timings()));
    assert!(stale(&posted, Some(T0), T0 + 70_001, &timings()));
}

#[test]
fn stale_lease_marks_unknown_taints_and_marks_pods_not_ready() {
    let n = node(
        json!([{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]),
        "True",
    );
    let p = pod("a", json!([]));
    let now = T0 + 60_000;
    let a = decide(&n, Some(T0 + 10_000), &[&p], now, &timings());
    let conditions = a.conditions.clone().unwrap();
    let get = |t: &str| conditions.iter().find(|c| c.type_ == t).unwrap();
    for t in KUBELET_CONDITIONS {
        assert_eq!(get(t).status, "Unknown", "{t}");
    }
    assert_eq!(get("Ready").reason.as_deref(), Some("NodeStatusUnknown"));
    assert_eq!(
        get("Ready").message.as_deref(),
        Some("Kubelet stopped posting node status.")
    );
    assert_eq!(
        get("DiskPressure").reason.as_deref(),
        Some("NodeStatusNeverUpdated")
    );
    assert_eq!(
        get("NetworkUnavailable").status,
        "False",
        "not a kubelet heartbeat condition"
    );
    let taints = a.taints.clone().unwrap();
    let keys: Vec<(&str, &str)> = taints
        .iter()
        .map(|t| (t.key.as_str(), t.effect.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("dedicated", "NoSchedule"),
            (UNREACHABLE, "NoSchedule"),
            (UNREACHABLE, "NoExecute")
        ]
    );
    let no_execute = taints.iter().find(|t| t.effect == "NoExecute").unwrap();
    assert_eq!(no_execute.time_added.as_ref().map(millis), Some(now));
    assert_eq!(a.mark_not_ready.len(), 1);
    let ready = a.mark_not_ready[0].2.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "False");
    assert!(a.evict.is_empty());
    assert_eq!(a.recheck_at, Some(now + 300_000), "default toleration");

    // The next pass over the updated objects is quiet.
    let n = applied(n, &a);
    let mut p = p;
    p.status.as_mut().unwrap().conditions = Some(a.mark_not_ready[0].2.clone());
    let again = decide(&n, Some(T0 + 10_000), &[&p], now + 1_000, &timings());
    assert_eq!(again.conditions, None);
    assert_eq!(again.taints, None);
    assert!(again.mark_not_ready.is_empty());
}

#[test]
fn eviction_follows_tolerations_on_virtual_time() {
    let n = node(json!([]), "True");
    let lease = Some(T0);
    let default = pod("default", json!([]));
    let short = pod(
        "short",
        json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]),
    );
    let forever = pod(
        "forever",
        json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]),
    );
    let everything = pod("everything", json!([{"operator": "Exists"}]));
    let negative = pod(
        "negative",
        json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": -3}]),
    );
    let other_key = pod(
        "other-key",
        json!([{"key": NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 1}]),
    );
    let pods = [&default, &short, &forever, &everything, &negative, &other_key];
    let tainted_at = T0 + 41_000;
    let first = decide(&n, lease, &pods, tainted_at, &timings());
    assert_eq!(names(&first.evict), ["negative"]);
    assert_eq!(first.recheck_at, Some(tainted_at + 5_000));
    let n = applied(n, &first);
    let step = |now| decide(&n, lease, &pods, now, &timings());
    assert_eq!(names(&step(tainted_at + 4_999).evict), ["negative"]);
    assert_eq!(names(&step(tainted_at + 5_000).evict), ["short", "negative"]);
    assert_eq!(step(tainted_at + 5_000).recheck_at, Some(tainted_at + 300_000));
    assert_eq!(
        names(&step(tainted_at + 300_000).evict),
        ["default", "short", "negative", "other-key"]
    );

    // Terminating pods are left to their kubelet.
    let mut gone = short.clone();
    gone.metadata.deletion_timestamp = Some(time(tainted_at));
    assert!(
        decide(&n, lease, &[&gone], tainted_at + 10_000, &timings())
            .evict
            .is_empty()
    );
}

#[test]
fn untolerated_foreign_no_execute_taint_evicts_at_once() {
    let n = node(json!([{"key": "maintenance", "effect": "NoExecute"}]), "True");
    let plain = pod("plain", json!([]));
    let tolerant = pod("tolerant", json!([{"key": "maintenance", "operator": "Exists"}]));
    let a = decide(&n, Some(T0), &[&plain, &tolerant], T0 + 1_000, &timings());
    assert_eq!(names(&a.evict), ["plain"]);
}

#[test]
fn fresh_lease_again_removes_the_taint_and_stops_evictions() {
    let n = node(json!([]), "True");
    let p = pod("a", json!([]));
    let stale_pass = decide(&n, Some(T0), &[&p], T0 + 60_000, &timings());
    let n = applied(n, &stale_pass);
    let renewed = decide(&n, Some(T0 + 61_000), &[&p], T0 + 61_500, &timings());
    let taints = renewed.taints.expect("taints change");
    assert!(taints.is_empty(), "{taints:?}");
    assert_eq!(renewed.conditions, None, "the agent posts its own conditions");
    assert!(renewed.mark_not_ready.is_empty());
    assert!(renewed.evict.is_empty());
    assert_eq!(renewed.recheck_at, Some(T0 + 101_001));
}

#[test]
fn ready_false_from_the_agent_gives_not_ready_taints() {
    let n = node(json!([]), "False");
    let p = pod("a", json!([]));
    let a = decide(&n, Some(T0), &[&p], T0 + 1_000, &timings());
    let taints = a.taints.unwrap();
    assert!(taints.iter().all(|t| t.key == NOT_READY) && taints.len() == 2);
    assert!(a.mark_not_ready.is_empty(), "the agent reports its own pods");
    assert_eq!(
        a.recheck_at,
        Some(T0 + 40_001),
        "the lease expiry comes before any eviction"
    );
}

#[test]
fn toleration_durations() {
    let t = timings();
    let unreachable = taint(UNREACHABLE, "NoExecute", Some(T0));
    let tol = |v: Value| serde_json::from_value::<Vec<Toleration>>(v).unwrap();
    assert_eq!(toleration_ms(&[], &unreachable, &t), Some(300_000));
    assert_eq!(toleration_ms(&[], &taint("x", "NoExecute", None), &t), Some(0));
    let two = tol(json!([
        {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30},
        {"operator": "Exists", "tolerationSeconds": 10}
    ]));
    assert_eq!(
        toleration_ms(&two, &unreachable, &t),
        Some(10_000),
        "the smallest wins"
    );
}
