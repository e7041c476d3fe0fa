use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;

use super::filter::{self, Unfit, Usage};
use super::{NodeState, choose, score};

fn node(name: &str, extra: serde_json::Value) -> Node {
    let mut v = json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}]}
    });
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn pod(extra: serde_json::Value) -> Pod {
    let mut v = json!({
        "metadata": {"name": "p", "namespace": "default",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs-uid", "controller": true}]},
        "spec": {"containers": [{"name": "c", "image": "x",
            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]}
    });
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

#[test]
fn not_ready_and_unschedulable_nodes_are_filtered() {
    let p = pod(json!({}));
    let not_ready = node(
        "a",
        json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
    );
    assert_eq!(
        filter::fits(&p, &not_ready, &Usage::default()),
        Err(Unfit::NotReady)
    );
    let cordoned = node("a", json!({"spec": {"unschedulable": true}}));
    assert_eq!(
        filter::fits(&p, &cordoned, &Usage::default()),
        Err(Unfit::Unschedulable)
    );
    let tolerant = pod(json!({"spec": {"tolerations": [
        {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}}));
    assert_eq!(filter::fits(&tolerant, &cordoned, &Usage::default()), Ok(()));
}

#[test]
fn requests_against_allocatable_minus_bound() {
    let p = pod(json!({}));
    let n = node("a", json!({}));
    let used = Usage {
        cpu_millis: 1600,
        ..Usage::default()
    };
    assert_eq!(filter::fits(&p, &n, &used), Err(Unfit::InsufficientCpu));
    let used = Usage {
        cpu_millis: 1500,
        memory: 3 * 1024 * 1024 * 1024 + 1,
        ..Usage::default()
    };
    assert_eq!(filter::fits(&p, &n, &used), Err(Unfit::InsufficientMemory));
    let used = Usage {
        cpu_millis: 1500,
        memory: 3 * 1024 * 1024 * 1024,
        ..Usage::default()
    };
    assert_eq!(filter::fits(&p, &n, &used), Ok(()));
    let full = node("a", json!({"status": {"allocatable": {"pods": "2"}}}));
    assert_eq!(
        filter::fits(
            &p,
            &full,
            &Usage {
                pods: 2,
                ..Usage::default()
            }
        ),
        Err(Unfit::TooManyPods)
    );
}

#[test]
fn node_selector_and_required_affinity() {
    let n = node("a", json!({"metadata": {"labels": {"disk": "ssd", "gen": "5"}}}));
    let sel = pod(json!({"spec": {"nodeSelector": {"disk": "hdd"}}}));
    assert_eq!(
        filter::fits(&sel, &n, &Usage::default()),
        Err(Unfit::NodeSelector)
    );
    let affinity = |op: &str, values: serde_json::Value| {
        pod(
            json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "gen", "operator": op, "values": values}]}]}}}}}),
        )
    };
    assert_eq!(
        filter::fits(&affinity("In", json!(["5", "6"])), &n, &Usage::default()),
        Ok(())
    );
    assert_eq!(
        filter::fits(&affinity("NotIn", json!(["5"])), &n, &Usage::default()),
        Err(Unfit::NodeAffinity)
    );
    assert_eq!(
        filter::fits(&affinity("Gt", json!(["4"])), &n, &Usage::default()),
        Ok(())
    );
    assert_eq!(
        filter::fits(&affinity("Lt", json!(["4"])), &n, &Usage::default()),
        Err(Unfit::NodeAffinity)
    );
    let by_name = pod(
        json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}]}}}}}),
    );
    assert_eq!(
        filter::fits(&by_name, &n, &Usage::default()),
        Err(Unfit::NodeAffinity)
    );
}

#[test]
fn taints_need_tolerations() {
    let n = node(
        "a",
        json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"},
        {"key": "soft", "effect": "PreferNoSchedule"}]}}),
    );
    let plain = pod(json!({}));
    assert_eq!(
        filter::fits(&plain, &n, &Usage::default()),
        Err(Unfit::UntoleratedTaint("dedicated: db".to_owned()))
    );
    let wrong =
        pod(json!({"spec": {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "web"}]}}));
    assert!(filter::fits(&wrong, &n, &Usage::default()).is_err());
    let ok = pod(
        json!({"spec": {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]}}),
    );
    assert_eq!(filter::fits(&ok, &n, &Usage::default()), Ok(()));
    let all = pod(json!({"spec": {"tolerations": [{"operator": "Exists"}]}}));
    assert_eq!(filter::fits(&all, &n, &Usage::default()), Ok(()));
}

#[test]
fn host_ports_conflict() {
    let p = pod(json!({"spec": {"containers": [{"name": "c", "image": "x",
        "ports": [{"containerPort": 80, "hostPort": 8080, "protocol": "TCP"}]}]}}));
    let n = node("a", json!({}));
    let used = Usage {
        host_ports: vec![("TCP".into(), "10.0.0.1".into(), 8080)],
        ..Usage::default()
    };
    assert_eq!(filter::fits(&p, &n, &used), Err(Unfit::HostPort));
    let udp = Usage {
        host_ports: vec![("UDP".into(), "0.0.0.0".into(), 8080)],
        ..Usage::default()
    };
    assert_eq!(filter::fits(&p, &n, &udp), Ok(()));
}

#[test]
fn message_counts_reasons_per_node() {
    let msg = filter::unschedulable_message(
        3,
        &[Unfit::InsufficientCpu, Unfit::NotReady, Unfit::InsufficientCpu],
    );
    assert_eq!(
        msg,
        "0/3 nodes are available: 2 Insufficient cpu, 1 node(s) were not ready."
    );
    let p = pod(json!({"spec": {"nodeSelector": {"x": "y"}}}));
    let (a, b) = (node("a", json!({})), node("b", json!({})));
    let err = choose(&p, &[&a, &b], &HashMap::new()).unwrap_err();
    assert_eq!(
        err,
        "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
    );
}

#[test]
fn scores_prefer_free_nodes_spread_and_preferred_affinity() {
    let p = pod(json!({}));
    let n = node("a", json!({}));
    assert_eq!(score::least_allocated(&p, &n, &Usage::default()), 75); // 500m of 2 CPUs, 1Gi of 4Gi
    let busy = Usage {
        cpu_millis: 1000,
        ..Usage::default()
    };
    assert_eq!(score::least_allocated(&p, &n, &busy), 50); // (25 + 75) / 2
    assert_eq!(score::spread(0, 2), 100);
    assert_eq!(score::spread(2, 2), 0);
    assert_eq!(score::spread(0, 0), 100);
    let pref = pod(
        json!({"spec": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 30, "preference": {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["a"]}]}}]}}}}),
    );
    assert_eq!(score::preferred_affinity(&pref, &n), 30);
    assert_eq!(score::preferred_affinity(&pref, &node("b", json!({}))), 0);
}

#[test]
fn replicas_of_one_owner_spread_over_nodes() {
    let nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            node(
                n,
                json!({"status": {"allocatable": {"cpu": "64", "memory": "64Gi"}}}),
            )
        })
        .collect();
    let refs: Vec<&Node> = nodes.iter().collect();
    let mut states: HashMap<String, NodeState> = HashMap::new();
    let mut placed: HashMap<String, usize> = HashMap::new();
    for _ in 0..10 {
        let p = pod(json!({}));
        let chosen = choose(&p, &refs, &states).unwrap();
        states.entry(chosen.clone()).or_default().add(&p);
        *placed.entry(chosen).or_default() += 1;
    }
    let mut counts: Vec<usize> = placed.values().copied().collect();
    counts.sort();
    assert_eq!(counts, [3, 3, 4]);
}

#[test]
fn pending_means_unbound_for_this_scheduler() {
    assert!(super::pending(&pod(json!({}))));
    assert!(!super::pending(&pod(json!({"spec": {"nodeName": "a"}}))));
    assert!(!super::pending(&pod(json!({"spec": {"schedulerName": "other"}}))));
}
