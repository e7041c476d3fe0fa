use serde_json::json;

use super::*;

const NOW: i64 = 1_800_000_000;

fn bound_pod() -> Value {
    json!({"metadata": {"name": "p", "generation": 1}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
}

fn opts(grace: Option<i64>, propagation: Option<Propagation>) -> DeleteOptions {
    DeleteOptions {
        grace_period_seconds: grace,
        propagation,
        ..DeleteOptions::default()
    }
}

fn marked(outcome: Outcome) -> Value {
    match outcome {
        Outcome::Mark(v) => v,
        other => panic!("expected Mark, got {other:?}"),
    }
}

#[test]
fn pod_grace_follows_request_then_spec_then_default() {
    let mut pod = bound_pod();
    assert_eq!(pod_grace(&pod, None), DEFAULT_POD_GRACE);
    pod["spec"]["terminationGracePeriodSeconds"] = json!(5);
    assert_eq!(pod_grace(&pod, None), 5);
    assert_eq!(pod_grace(&pod, Some(2)), 2);
    assert_eq!(pod_grace(&pod, Some(-3)), 1);
    pod["status"]["phase"] = json!("Succeeded");
    assert_eq!(pod_grace(&pod, Some(10)), 0, "finished pods go at once");
    let unbound = json!({"metadata": {"name": "p"}, "spec": {}});
    assert_eq!(pod_grace(&unbound, Some(10)), 0, "unbound pods go at once");
}

#[test]
fn bound_pod_is_marked_with_its_grace_and_lingers() {
    let out = marked(decide(&bound_pod(), true, &opts(None, None), NOW));
    assert_eq!(out["metadata"]["deletionTimestamp"], format_time(NOW + 30));
    assert_eq!(out["metadata"]["deletionGracePeriodSeconds"], 30);
    assert_eq!(out["metadata"]["generation"], 2);
    assert!(
        !remove_on_update(&out),
        "a status update during grace keeps the pod"
    );
}

#[test]
fn a_second_delete_may_only_shorten_the_grace() {
    let first = marked(decide(&bound_pod(), true, &opts(Some(20), None), NOW));
    assert_eq!(decide(&first, true, &opts(None, None), NOW + 1), Outcome::Pending);
    assert_eq!(
        decide(&first, true, &opts(Some(60), None), NOW + 1),
        Outcome::Pending
    );
    let shorter = marked(decide(&first, true, &opts(Some(5), None), NOW + 1));
    assert_eq!(shorter["metadata"]["deletionGracePeriodSeconds"], 5);
    assert_eq!(shorter["metadata"]["deletionTimestamp"], format_time(NOW + 5));
    assert_eq!(
        decide(&shorter, true, &opts(Some(0), None), NOW + 2),
        Outcome::Remove
    );
}

#[test]
fn grace_zero_removes_unless_finalizers_hold() {
    assert_eq!(
        decide(&bound_pod(), true, &opts(Some(0), None), NOW),
        Outcome::Remove
    );
    let mut held = bound_pod();
    held["metadata"]["finalizers"] = json!(["example.com/x"]);
    let graceful = marked(decide(&held, true, &opts(None, None), NOW));
    let out = marked(decide(&graceful, true, &opts(Some(0), None), NOW));
    assert_eq!(out["metadata"]["deletionGracePeriodSeconds"], 0);
    let mut done = out.clone();
    done["metadata"]["finalizers"] = json!([]);
    assert!(remove_on_update(&done), "the last finalizer going removes it");
}

#[test]
fn unbound_pods_and_other_kinds_go_at_once() {
    let unbound = json!({"metadata": {"name": "p"}, "spec": {}});
    assert_eq!(decide(&unbound, true, &opts(None, None), NOW), Outcome::Remove);
    let cm = json!({"metadata": {"name": "c"}});
    assert_eq!(decide(&cm, false, &opts(Some(30), None), NOW), Outcome::Remove);
}

#[test]
fn propagation_policies_set_gc_finalizers() {
    let rs = json!({"metadata": {"name": "rs", "finalizers": ["example.com/x"]}});
    let orphan = marked(decide(&rs, false, &opts(None, Some(Propagation::Orphan)), NOW));
    assert_eq!(
        orphan["metadata"]["finalizers"],
        json!(["example.com/x", "orphan"])
    );
    assert_eq!(orphan["metadata"]["deletionGracePeriodSeconds"], 0);
    let fg = marked(decide(
        &orphan,
        false,
        &opts(None, Some(Propagation::Foreground)),
        NOW,
    ));
    assert_eq!(
        fg["metadata"]["finalizers"],
        json!(["example.com/x", "foregroundDeletion"])
    );
    assert_eq!(
        fg["metadata"]["deletionTimestamp"], orphan["metadata"]["deletionTimestamp"],
        "the first deletion time stays"
    );
    assert_eq!(decide(&fg, false, &opts(None, None), NOW), Outcome::Pending);
    let plain = json!({"metadata": {"name": "rs", "finalizers": ["foregroundDeletion"],
        "deletionTimestamp": format_time(NOW), "deletionGracePeriodSeconds": 0}});
    assert_eq!(
        decide(&plain, false, &opts(None, Some(Propagation::Background)), NOW),
        Outcome::Remove,
        "switching to Background lets it go"
    );
}

#[test]
fn orphan_dependents_maps_to_the_orphan_finalizer() {
    let current = vec![ORPHAN.to_owned()];
    let mut o = DeleteOptions {
        orphan_dependents: Some(true),
        ..DeleteOptions::default()
    };
    assert_eq!(finalizers_for(&[], &o), vec![ORPHAN.to_owned()]);
    o.orphan_dependents = Some(false);
    assert!(finalizers_for(&current, &o).is_empty());
    assert_eq!(finalizers_for(&current, &DeleteOptions::default()), current);
}

#[test]
fn options_parse_from_body_and_query() {
    let body = json!({"kind": "DeleteOptions", "gracePeriodSeconds": 0, "propagationPolicy": "Foreground",
        "preconditions": {"uid": "u1"}});
    let o = DeleteOptions::parse(&body, |_| None).unwrap();
    assert_eq!(o.grace_period_seconds, Some(0));
    assert_eq!(o.propagation, Some(Propagation::Foreground));
    assert_eq!(o.precondition_uid.as_deref(), Some("u1"));
    let q = DeleteOptions::parse(&json!({}), |k| match k {
        "gracePeriodSeconds" => Some("7"),
        "propagationPolicy" => Some("Orphan"),
        _ => None,
    })
    .unwrap();
    assert_eq!(
        (q.grace_period_seconds, q.propagation),
        (Some(7), Some(Propagation::Orphan))
    );
    let bad = DeleteOptions::parse(&json!({"propagationPolicy": "Sideways"}), |_| None).unwrap_err();
    assert_eq!(bad[0].field, "propagationPolicy");
    let both = DeleteOptions::parse(
        &json!({"propagationPolicy": "Orphan", "orphanDependents": true}),
        |_| None,
    );
    assert!(both.is_err());
}
