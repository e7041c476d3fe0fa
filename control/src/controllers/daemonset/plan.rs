//! Pure DaemonSet decisions: which nodes should run a daemon pod, which pods to create and delete (including
//! RollingUpdate steps), the pods' shape, and the status `kubectl rollout status ds/x` reads.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec,
    Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::scheduler::filter::{term_matches, tolerates};

/// The label carrying the hash of the template a pod was made from.
pub const HASH_LABEL: &str = "controller-revision-hash";
/// The label carrying the DaemonSet generation a pod was made from.
pub const GENERATION_LABEL: &str = "pod-template-generation";

/// What one reconcile of a DaemonSet should do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Nodes that get a new pod from the current template.
    pub create: Vec<String>,
    /// Pod names to delete.
    pub delete: Vec<String>,
    /// The status from the pods as they are now.
    pub status: DaemonSetStatus,
    /// Some pod is ready but not yet available for minReadySeconds: look again soon.
    pub waiting_for_min_ready: bool,
}

/// Whether a node should run the daemon pod, and whether a pod already there may stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Eligibility {
    pub should_run: bool,
    pub should_continue_running: bool,
}

/// A stable short hash of the pod template, spelled like Kubernetes' `controller-revision-hash` values.
pub fn template_hash(ds: &DaemonSet) -> String {
    let template = ds.spec.as_ref().map(|s| &s.template);
    let bytes = serde_json::to_vec(&template).unwrap_or_default();
    // FNV-1a, 32 bit.
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    // Kubernetes' SafeEncodeString alphabet (no vowels, no look-alike digits).
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|d| char::from(ALPHABET[usize::from(d - b'0')]))
        .collect()
}

/// The tolerations the DaemonSet controller adds to every daemon pod (kube's AddOrUpdateDaemonPodTolerations).
pub fn daemon_tolerations(spec: &PodSpec) -> Vec<Toleration> {
    let mut out = spec.tolerations.clone().unwrap_or_default();
    let mut wanted = vec![
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        wanted.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    for (key, effect) in wanted {
        let present = out
            .iter()
            .any(|t| t.key.as_deref() == Some(key) && t.effect.as_deref() == Some(effect));
        if !present {
            out.push(Toleration {
                key: Some(key.to_owned()),
                operator: Some("Exists".to_owned()),
                effect: Some(effect.to_owned()),
                ..Toleration::default()
            });
        }
    }
    out
}

fn template_spec(ds: &DaemonSet) -> PodSpec {
    ds.spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default()
}

/// kube's NodeShouldRunDaemonPod: node selector, required node affinity and taints (resources are the
/// scheduler's business).
pub fn eligibility(ds: &DaemonSet, node: &Node) -> Eligibility {
    let spec = template_spec(ds);
    let labels = node.metadata.labels.as_ref();
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
    let affinity_ok = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
        .is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(t, node)));
    if !selector_ok || !affinity_ok || node.metadata.deletion_timestamp.is_some() {
        return Eligibility {
            should_run: false,
            should_continue_running: false,
        };
    }
    let tolerations = daemon_tolerations(&spec);
    let untolerated = |effect: &str| {
        node.spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .filter(|t| t.effect == effect)
            .any(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
    };
    let no_execute = untolerated("NoExecute");
    Eligibility {
        should_run: !no_execute && !untolerated("NoSchedule"),
        should_continue_running: !no_execute,
    }
}

/// The node a daemon pod is for: its nodeName, or before binding the `metadata.name` its affinity requires.
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(n.to_owned());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

fn ready_since(pod: &Pod) -> Option<i64> {
    let c = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(
        c.last_transition_time
            .as_ref()
            .map_or(0, |t| t.0.as_millisecond()),
    )
}

fn available(pod: &Pod, min_ready_seconds: i64, now_ms: i64) -> bool {
    ready_since(pod)
        .is_some_and(|since| since.saturating_add(min_ready_seconds.saturating_mul(1000)) <= now_ms)
}

fn failed(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
}

fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

fn is_new(pod: &Pod, hash: &str) -> bool {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(HASH_LABEL))
        .is_some_and(|h| h == hash)
}

/// Oldest first (then by name), the order kube keeps duplicates in.
fn by_age(pods: &mut [&Pod]) {
    pods.sort_by(|a, b| {
        let t = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        t(a).cmp(&t(b))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
}

/// An intOrString budget against `total`, rounding percentages up (as kube does for DaemonSets).
pub fn scaled(value: Option<&IntOrString>, default: i32, total: usize) -> usize {
    let total = i64::try_from(total).unwrap_or(i64::MAX);
    let v = match value {
        None => i64::from(default),
        Some(IntOrString::Int(i)) => i64::from(*i),
        Some(IntOrString::String(s)) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            (pct * total + 99) / 100
        }
    };
    usize::try_from(v.max(0)).unwrap_or(0)
}

/// The update strategy: None for OnDelete, else (maxUnavailable, maxSurge) resolved against `desired`.
fn rolling(ds: &DaemonSet, desired: usize) -> Option<(usize, usize)> {
    let strategy = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
    if strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete") {
        return None;
    }
    let ru = strategy.and_then(|s| s.rolling_update.as_ref());
    let surge = scaled(ru.and_then(|r| r.max_surge.as_ref()), 0, desired);
    let unavailable_default = if surge > 0 { 0 } else { 1 };
    let mut unavailable = scaled(
        ru.and_then(|r| r.max_unavailable.as_ref()),
        unavailable_default,
        desired,
    );
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    Some((unavailable, surge))
}

/// Decides creations, deletions and status from the nodes and the DaemonSet's own pods.
pub fn plan(ds: &DaemonSet, nodes: &[&Node], owned: &[&Pod], now_ms: i64) -> Plan {
    let mut out = Plan::default();
    let hash = template_hash(ds);
    let min_ready = i64::from(ds.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0));
    let avail = |p: &Pod| available(p, min_ready, now_ms);
    let mut on_node: HashMap<String, Vec<&Pod>> = HashMap::new();
    for pod in owned {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if failed(pod) {
            // A failed daemon pod is deleted and replaced.
            out.delete.push(name(pod));
            continue;
        }
        match target_node(pod) {
            Some(node) => on_node.entry(node).or_default().push(pod),
            None => out.delete.push(name(pod)),
        }
    }
    let mut nodes: Vec<&Node> = nodes.to_vec();
    nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut status = DaemonSetStatus {
        observed_generation: ds.metadata.generation,
        ..DaemonSetStatus::default()
    };
    // Nodes whose pods go through the update logic: (node, old pods, new pods).
    let mut updating: Vec<(String, Vec<&Pod>, Vec<&Pod>)> = Vec::new();
    let mut unavailable_nodes = 0usize;
    let mut known: BTreeMap<String, ()> = BTreeMap::new();
    for node in &nodes {
        let node_name = node.metadata.name.clone().unwrap_or_default();
        known.insert(node_name.clone(), ());
        let e = eligibility(ds, node);
        let mut pods = on_node.remove(&node_name).unwrap_or_default();
        by_age(&mut pods);
        if e.should_run {
            status.desired_number_scheduled += 1;
        }
        if pods.is_empty() {
            if e.should_run {
                out.create.push(node_name);
                unavailable_nodes += 1;
            }
            continue;
        }
        if !e.should_continue_running {
            status.number_misscheduled += 1;
            out.delete.extend(pods.iter().map(|p| name(p)));
            continue;
        }
        if !e.should_run {
            // Tolerated NoExecute but not NoSchedule (or no longer selected while running): kube keeps it.
            status.number_misscheduled += 1;
            continue;
        }
        let (new, old): (Vec<&Pod>, Vec<&Pod>) = pods.iter().partition(|p| is_new(p, &hash));
        let chosen = new.first().or(old.first()).copied().unwrap_or(pods[0]);
        status.current_number_scheduled += 1;
        if ready_since(chosen).is_some() {
            status.number_ready += 1;
        }
        if avail(chosen) {
            *status.number_available.get_or_insert(0) += 1;
        } else {
            unavailable_nodes += 1;
            out.waiting_for_min_ready |= ready_since(chosen).is_some();
        }
        if !new.is_empty() {
            *status.updated_number_scheduled.get_or_insert(0) += 1;
        }
        updating.push((node_name, old, new));
    }
    // Pods on nodes that left.
    for (node, pods) in on_node {
        if !known.contains_key(&node) {
            out.delete.extend(pods.iter().map(|p| name(p)));
        }
    }
    let desired = usize::try_from(status.desired_number_scheduled).unwrap_or(0);
    let strategy = rolling(ds, desired);
    let mut surge_in_use = updating
        .iter()
        .filter(|(_, old, new)| !old.is_empty() && new.first().is_some_and(|p| !avail(p)))
        .count();
    let mut budget = strategy.map_or(0, |(max_unavailable, _)| {
        max_unavailable.saturating_sub(unavailable_nodes)
    });
    for (node, old, new) in updating {
        // Duplicates: keep the oldest of each kind.
        out.delete.extend(new.iter().skip(1).map(|p| name(p)));
        let Some((_, max_surge)) = strategy else {
            out.delete.extend(old.iter().skip(1).map(|p| name(p)));
            continue;
        };
        if let Some(fresh) = new.first() {
            // The new pod is there; the old ones go once it is available (at once without surge).
            if max_surge == 0 || avail(fresh) {
                out.delete.extend(old.iter().map(|p| name(p)));
            }
            continue;
        }
        out.delete.extend(old.iter().skip(1).map(|p| name(p)));
        let current = old[0];
        if max_surge > 0 {
            if !avail(current) {
                out.create.push(node);
            } else if surge_in_use < max_surge {
                surge_in_use += 1;
                out.create.push(node);
            }
        } else if !avail(current) {
            out.delete.push(name(current));
        } else if budget > 0 {
            budget -= 1;
            out.delete.push(name(current));
        }
    }
    status.number_unavailable = Some(status.desired_number_scheduled - status.number_available.unwrap_or(0));
    status.number_available.get_or_insert(0);
    status.updated_number_scheduled.get_or_insert(0);
    out.status = status;
    out.delete.sort();
    out.delete.dedup();
    out
}

/// The owner reference a DaemonSet puts on its pods.
pub fn owner_ref(ds: &DaemonSet) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".to_owned(),
        kind: "DaemonSet".to_owned(),
        name: ds.metadata.name.clone().unwrap_or_default(),
        uid: ds.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The controller owner reference of a pod, if any.
pub fn controller_of(pod: &Pod) -> Option<&OwnerReference> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
}

/// A daemon pod for `node`: the template, the hash and generation labels, the daemon tolerations, and a
/// required node affinity on `metadata.name` so the scheduler binds it there.
pub fn new_pod(ds: &DaemonSet, node: &str) -> Pod {
    let template = ds.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(HASH_LABEL.to_owned(), template_hash(ds));
    labels.insert(
        GENERATION_LABEL.to_owned(),
        ds.metadata.generation.unwrap_or(1).to_string(),
    );
    let mut spec = template.spec.unwrap_or_default();
    spec.tolerations = Some(daemon_tolerations(&spec));
    let pin = NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".to_owned(),
                operator: "In".to_owned(),
                values: Some(vec![node.to_owned()]),
            }]),
            match_expressions: None,
        }],
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default)
        .required_during_scheduling_ignored_during_execution = Some(pin);
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ds.metadata.name.as_deref().unwrap_or("daemon"))),
            namespace: ds.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: meta.annotations,
            owner_references: Some(vec![owner_ref(ds)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

#[cfg(test)]
mod tests;
