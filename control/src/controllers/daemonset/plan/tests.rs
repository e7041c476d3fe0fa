use serde_json::{Value, json};

use super::*;

const NOW: i64 = 1_800_000_000_000;

fn ds(extra_spec: Value) -> DaemonSet {
    let mut spec = json!({
        "selector": {"matchLabels": {"app": "agent"}},
        "template": {"metadata": {"labels": {"app": "agent"}},
            "spec": {"containers": [{"name": "c", "image": "agent:1"}]}}
    });
    for (k, v) in extra_spec.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({
        "metadata": {"name": "agent", "namespace": "kube-system", "uid": "ds-uid", "generation": 2},
        "spec": spec
    }))
    .unwrap()
}

fn node(name: &str, labels: Value, taints: Value) -> Node {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}}))
        .unwrap()
}

fn nodes(names: &[&str]) -> Vec<Node> {
    names.iter().map(|n| node(n, json!({}), json!([]))).collect()
}

/// A daemon pod as the controller made it, bound, with a readiness.
fn pod(d: &DaemonSet, name: &str, node: &str, ready: bool) -> Pod {
    let mut p = new_pod(d, node);
    p.metadata.name = Some(name.to_owned());
    p.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    ));
    p.spec.as_mut().unwrap().node_name = Some(node.to_owned());
    p.status = Some(
        serde_json::from_value(json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"},
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]}))
        .unwrap(),
    );
    p
}

fn run(d: &DaemonSet, nodes: &[Node], pods: &[Pod]) -> Plan {
    let n: Vec<&Node> = nodes.iter().collect();
    let p: Vec<&Pod> = pods.iter().collect();
    plan(d, &n, &p, NOW)
}

#[test]
fn one_pod_per_node_and_status() {
    let d = ds(json!({}));
    let ns = nodes(&["n1", "n2", "n3"]);
    let first = run(&d, &ns, &[]);
    assert_eq!(first.create, ["n1", "n2", "n3"]);
    assert!(first.delete.is_empty());
    assert_eq!(first.status.desired_number_scheduled, 3);
    assert_eq!(first.status.current_number_scheduled, 0);
    assert_eq!(first.status.observed_generation, Some(2));

    let pods = [
        pod(&d, "a", "n1", true),
        pod(&d, "b", "n2", false),
        pod(&d, "c", "n3", true),
    ];
    let steady = run(&d, &ns, &pods);
    assert!(steady.create.is_empty() && steady.delete.is_empty(), "{steady:?}");
    let s = &steady.status;
    assert_eq!(
        (
            s.desired_number_scheduled,
            s.current_number_scheduled,
            s.number_ready,
            s.number_available
        ),
        (3, 3, 2, Some(2))
    );
    assert_eq!(
        (
            s.updated_number_scheduled,
            s.number_unavailable,
            s.number_misscheduled
        ),
        (Some(3), Some(1), 0)
    );
}

#[test]
fn unbound_pods_count_for_their_pinned_node() {
    let d = ds(json!({}));
    let ns = nodes(&["n1"]);
    let mut p = new_pod(&d, "n1");
    p.metadata.name = Some("pending".to_owned());
    assert_eq!(target_node(&p).as_deref(), Some("n1"));
    let out = run(&d, &ns, &[p]);
    assert!(out.create.is_empty() && out.delete.is_empty());
}

#[test]
fn node_selection_affinity_and_taints() {
    let d = ds(
        json!({"template": {"metadata": {"labels": {"app": "agent"}}, "spec": {
            "containers": [{"name": "c", "image": "agent:1"}],
            "nodeSelector": {"role": "edge"},
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["z9"]}]}]}}}
        }}}),
    );
    let edge = json!({"role": "edge"});
    let ns = vec![
        node("plain", json!({}), json!([])),
        node("edge", edge.clone(), json!([])),
        node("edge-z9", json!({"role": "edge", "zone": "z9"}), json!([])),
        node(
            "edge-dedicated",
            edge.clone(),
            json!([{"key": "dedicated", "effect": "NoSchedule"}]),
        ),
        node(
            "edge-evicting",
            edge.clone(),
            json!([{"key": "dedicated", "effect": "NoExecute"}]),
        ),
        node(
            "edge-unreachable",
            edge.clone(),
            json!([
            {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
            {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/memory-pressure", "effect": "NoSchedule"}]),
        ),
    ];
    let out = run(&d, &ns, &[]);
    assert_eq!(
        out.create,
        ["edge"],
        "unreachable NoSchedule is not tolerated by default"
    );
    let e = |n: usize| eligibility(&d, &ns[n]);
    assert_eq!(
        e(3),
        Eligibility {
            should_run: false,
            should_continue_running: true
        }
    );
    assert_eq!(
        e(4),
        Eligibility {
            should_run: false,
            should_continue_running: false
        }
    );

    // Pods on nodes that stopped matching or evict are removed; a tolerated-NoExecute-only node keeps its pod.
    let pods = [
        pod(&d, "on-plain", "plain", true),
        pod(&d, "on-dedicated", "edge-dedicated", true),
        pod(&d, "on-evicting", "edge-evicting", true),
        pod(&d, "on-gone", "gone", true),
        pod(&d, "on-edge", "edge", true),
    ];
    let out = run(&d, &ns, &pods);
    assert_eq!(out.delete, ["on-evicting", "on-gone", "on-plain"]);
    assert!(out.create.is_empty());
    assert_eq!(out.status.number_misscheduled, 3);
    assert_eq!(out.status.desired_number_scheduled, 1);
}

#[test]
fn daemon_pods_are_pinned_and_tolerate_node_problems() {
    let d = ds(json!({}));
    let p = new_pod(&d, "n7");
    let labels = p.metadata.labels.clone().unwrap();
    assert_eq!(labels.get(HASH_LABEL), Some(&template_hash(&d)));
    assert_eq!(labels.get(GENERATION_LABEL).map(String::as_str), Some("2"));
    assert_eq!(labels.get("app").map(String::as_str), Some("agent"));
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(
        v["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"],
        json!({"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n7"]}]}]})
    );
    let tolerations = p.spec.unwrap().tolerations.unwrap();
    let keys: Vec<(String, String, Option<i64>)> = tolerations
        .iter()
        .map(|t| {
            (
                t.key.clone().unwrap(),
                t.effect.clone().unwrap(),
                t.toleration_seconds,
            )
        })
        .collect();
    assert!(keys.contains(&("node.kubernetes.io/unreachable".into(), "NoExecute".into(), None)));
    assert!(keys.contains(&("node.kubernetes.io/not-ready".into(), "NoExecute".into(), None)));
    assert!(keys.contains(&(
        "node.kubernetes.io/unschedulable".into(),
        "NoSchedule".into(),
        None
    )));
    assert_eq!(keys.len(), 6);
    assert_eq!(p.metadata.owner_references.unwrap()[0].kind, "DaemonSet");
}

#[test]
fn template_hash_changes_with_the_template_only() {
    let a = ds(json!({}));
    let mut b = a.clone();
    b.metadata.generation = Some(9);
    assert_eq!(template_hash(&a), template_hash(&b));
    let c = ds(json!({"template": {"metadata": {"labels": {"app": "agent"}},
        "spec": {"containers": [{"name": "c", "image": "agent:2"}]}}}));
    assert_ne!(template_hash(&a), template_hash(&c));
    assert!(
        template_hash(&a)
            .chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c))
    );
}

fn updated(image: &str, strategy: Value) -> DaemonSet {
    ds(
        json!({"updateStrategy": strategy, "template": {"metadata": {"labels": {"app": "agent"}},
        "spec": {"containers": [{"name": "c", "image": image}]}}}),
    )
}

#[test]
fn rolling_update_respects_max_unavailable() {
    let old = ds(json!({}));
    let ns = nodes(&["n1", "n2", "n3", "n4"]);
    let new = updated(
        "agent:2",
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}}),
    );
    let mut pods = vec![
        pod(&old, "a", "n1", true),
        pod(&old, "b", "n2", true),
        pod(&old, "c", "n3", true),
        pod(&old, "d", "n4", true),
    ];
    let step = run(&new, &ns, &pods);
    assert_eq!(step.delete, ["a", "b"]);
    assert!(step.create.is_empty());
    assert_eq!(step.status.updated_number_scheduled, Some(0));

    // The deleted ones are replaced by new pods (not ready yet): nothing else may go.
    pods.retain(|p| !["a", "b"].contains(&p.metadata.name.as_deref().unwrap()));
    let step = run(&new, &ns, &pods);
    assert_eq!(step.create, ["n1", "n2"]);
    pods.push(pod(&new, "a2", "n1", false));
    pods.push(pod(&new, "b2", "n2", false));
    let step = run(&new, &ns, &pods);
    assert!(step.delete.is_empty() && step.create.is_empty(), "{step:?}");

    // One new pod ready: one more old pod may go.
    pods[2] = pod(&new, "a2", "n1", true);
    let step = run(&new, &ns, &pods);
    assert_eq!(step.delete, ["c"]);

    // An unavailable old pod is replaced without waiting for the budget.
    let mut pods = vec![pod(&old, "a", "n1", true), pod(&old, "b", "n2", false)];
    let one = updated(
        "agent:2",
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}),
    );
    let step = run(&one, &nodes(&["n1", "n2"]), &pods);
    assert_eq!(step.delete, ["b"], "the budget is used up by b itself");
    pods[1] = pod(&old, "b", "n2", true);
    assert_eq!(run(&one, &nodes(&["n1", "n2"]), &pods).delete, ["a"]);
}

#[test]
fn percentages_round_up_and_default_is_one() {
    assert_eq!(scaled(Some(&IntOrString::String("10%".into())), 1, 3), 1);
    assert_eq!(scaled(Some(&IntOrString::String("50%".into())), 1, 5), 3);
    assert_eq!(scaled(None, 1, 5), 1);
    let ns = nodes(&["n1", "n2", "n3"]);
    let old = ds(json!({}));
    let pods: Vec<Pod> = ["n1", "n2", "n3"]
        .iter()
        .enumerate()
        .map(|(i, n)| pod(&old, &format!("p{i}"), n, true))
        .collect();
    let new = updated("agent:2", json!({}));
    assert_eq!(run(&new, &ns, &pods).delete.len(), 1);
}

#[test]
fn surge_creates_new_before_deleting_old() {
    let old = ds(json!({}));
    let ns = nodes(&["n1", "n2", "n3"]);
    let new = updated(
        "agent:2",
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}),
    );
    let mut pods = vec![
        pod(&old, "a", "n1", true),
        pod(&old, "b", "n2", true),
        pod(&old, "c", "n3", true),
    ];
    let step = run(&new, &ns, &pods);
    assert_eq!(step.create, ["n1"]);
    assert!(step.delete.is_empty());
    pods.push(pod(&new, "a2", "n1", false));
    let step = run(&new, &ns, &pods);
    assert!(step.create.is_empty() && step.delete.is_empty(), "{step:?}");
    pods[3] = pod(&new, "a2", "n1", true);
    let step = run(&new, &ns, &pods);
    assert_eq!(step.delete, ["a"]);
    assert_eq!(
        step.create,
        ["n2"],
        "the surge slot frees once the new pod is available"
    );
}

#[test]
fn on_delete_waits_for_the_user() {
    let old = ds(json!({}));
    let ns = nodes(&["n1", "n2"]);
    let new = updated("agent:2", json!({"type": "OnDelete"}));
    let pods = [pod(&old, "a", "n1", true)];
    let step = run(&new, &ns, &pods);
    assert!(step.delete.is_empty());
    assert_eq!(step.create, ["n2"], "missing pods come from the new template");
    assert_eq!(step.status.updated_number_scheduled, Some(0));
}

#[test]
fn duplicates_failed_and_min_ready_seconds() {
    let d = ds(json!({"minReadySeconds": 10}));
    let ns = nodes(&["n1", "n2"]);
    let mut failed = pod(&d, "failed", "n2", false);
    failed.status.as_mut().unwrap().phase = Some("Failed".into());
    let mut fresh = pod(&d, "fresh", "n1", true);
    let just_now = k8s_openapi::jiff::Timestamp::from_millisecond(NOW - 5_000).unwrap();
    fresh.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].last_transition_time =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(just_now));
    let mut dup = pod(&d, "dup", "n1", true);
    dup.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(just_now));
    let out = run(&d, &ns, &[fresh, dup, failed]);
    assert_eq!(out.delete, ["dup", "failed"]);
    assert_eq!(out.create, ["n2"]);
    assert_eq!(out.status.number_ready, 1);
    assert_eq!(out.status.number_available, Some(0));
    assert!(out.waiting_for_min_ready);
}
