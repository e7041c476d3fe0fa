//! Pure node filters: whether a pod fits a node, and if not, the reason shown in FailedScheduling.

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration};

use crate::quantity;

/// What a node already carries: the requests of the pods bound to it and the host ports they use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_millis: i64,
    pub memory: i64,
    pub pods: i64,
    /// (protocol, hostIP, port) of bound pods.
    pub host_ports: Vec<(String, String, i32)>,
}

/// A pod's total requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    pub cpu_millis: i64,
    pub memory: i64,
}

/// Sums the container requests (the larger of that and any single init container, as Kubernetes does).
pub fn requests(pod: &Pod) -> Requests {
    let Some(spec) = &pod.spec else {
        return Requests::default();
    };
    let of = |c: &k8s_openapi::api::core::v1::Container| {
        let r = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        Requests {
            cpu_millis: r
                .and_then(|r| r.get("cpu"))
                .and_then(|q| quantity::millicores(&q.0))
                .unwrap_or(0),
            memory: r
                .and_then(|r| r.get("memory"))
                .and_then(|q| quantity::units(&q.0))
                .unwrap_or(0),
        }
    };
    let mut total = Requests::default();
    for c in &spec.containers {
        let r = of(c);
        total.cpu_millis += r.cpu_millis;
        total.memory += r.memory;
    }
    for c in spec.init_containers.iter().flatten() {
        let r = of(c);
        total.cpu_millis = total.cpu_millis.max(r.cpu_millis);
        total.memory = total.memory.max(r.memory);
    }
    total
}

/// Host ports a pod asks for, as (protocol, hostIP, port).
pub fn host_ports(pod: &Pod) -> Vec<(String, String, i32)> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|&h| h > 0)?;
            let ip = p
                .host_ip
                .clone()
                .filter(|ip| !ip.is_empty())
                .unwrap_or_else(|| "0.0.0.0".to_owned());
            Some((p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()), ip, port))
        })
        .collect()
}

/// Allocatable (or capacity) of a node: (cpu millicores, memory bytes, pods).
pub fn allocatable(node: &Node) -> (i64, i64, i64) {
    let status = node.status.as_ref();
    let get = |name: &str| {
        status
            .and_then(|s| {
                let allocatable = s.allocatable.as_ref().and_then(|m| m.get(name));
                allocatable.or_else(|| s.capacity.as_ref().and_then(|m| m.get(name)))
            })
            .map(|q| q.0.clone())
    };
    (
        get("cpu")
            .and_then(|q| quantity::millicores(&q))
            .unwrap_or(i64::MAX),
        get("memory")
            .and_then(|q| quantity::units(&q))
            .unwrap_or(i64::MAX),
        get("pods").and_then(|q| quantity::units(&q)).unwrap_or(110),
    )
}

/// Why a pod does not fit a node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unfit {
    NotReady,
    Unschedulable,
    UntoleratedTaint(String),
    NodeSelector,
    NodeAffinity,
    HostPort,
    TooManyPods,
    InsufficientCpu,
    InsufficientMemory,
}

impl std::fmt::Display for Unfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unfit::NotReady => write!(f, "node(s) were not ready"),
            Unfit::Unschedulable => write!(f, "node(s) were unschedulable"),
            Unfit::UntoleratedTaint(t) => write!(f, "node(s) had untolerated taint {{{t}}}"),
            Unfit::NodeSelector | Unfit::NodeAffinity => {
                write!(f, "node(s) didn't match Pod's node affinity/selector")
            }
            Unfit::HostPort => write!(f, "node(s) didn't have free ports for the requested pod ports"),
            Unfit::TooManyPods => write!(f, "Too many pods"),
            Unfit::InsufficientCpu => write!(f, "Insufficient cpu"),
            Unfit::InsufficientMemory => write!(f, "Insufficient memory"),
        }
    }
}

fn ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether `toleration` tolerates `taint` (key, operator Exists/Equal, value, effect).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    match toleration.key.as_deref().filter(|k| !k.is_empty()) {
        None => toleration.operator.as_deref() == Some("Exists"),
        Some(key) if key != taint.key => false,
        Some(_) => match toleration.operator.as_deref().unwrap_or("Equal") {
            "Exists" => true,
            _ => toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        },
    }
}

fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    let int = |s: &str| s.parse::<i64>().ok();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => {
            matches!((value.and_then(int), values.first().and_then(|x| int(x))), (Some(v), Some(x)) if v > x)
        }
        "Lt" => {
            matches!((value.and_then(int), values.first().and_then(|x| int(x))), (Some(v), Some(x)) if v < x)
        }
        _ => false,
    }
}

/// Whether a node selector term matches the node (all expressions and fields; an empty term matches nothing).
pub fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.metadata.labels.as_ref();
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.and_then(|l| l.get(&r.key)).map(String::as_str)))
        && fields.iter().all(|r| {
            let value = (r.key == "metadata.name").then(|| node.metadata.name.as_deref().unwrap_or(""));
            requirement_matches(r, value)
        })
}

/// Checks every filter; the first failing one is the reason.
pub fn fits(pod: &Pod, node: &Node, usage: &Usage) -> Result<(), Unfit> {
    let spec = pod.spec.clone().unwrap_or_default();
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    if !ready(node) {
        return Err(Unfit::NotReady);
    }
    let node_spec = node.spec.clone().unwrap_or_default();
    if node_spec.unschedulable == Some(true) {
        let taint = Taint {
            key: "node.kubernetes.io/unschedulable".to_owned(),
            effect: "NoSchedule".to_owned(),
            ..Taint::default()
        };
        if !tolerations.iter().any(|t| tolerates(t, &taint)) {
            return Err(Unfit::Unschedulable);
        }
    }
    for taint in node_spec.taints.iter().flatten() {
        if matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
            && !tolerations.iter().any(|t| tolerates(t, taint))
        {
            let value = taint
                .value
                .as_deref()
                .map(|v| format!(": {v}"))
                .unwrap_or_default();
            return Err(Unfit::UntoleratedTaint(format!("{}{value}", taint.key)));
        }
    }
    if let Some(selector) = &spec.node_selector {
        let labels = node.metadata.labels.as_ref();
        if !selector
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        {
            return Err(Unfit::NodeSelector);
        }
    }
    if let Some(required) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
        && !required.node_selector_terms.iter().any(|t| term_matches(t, node))
    {
        return Err(Unfit::NodeAffinity);
    }
    let wanted = host_ports(pod);
    let clash = |(p1, ip1, port1): &(String, String, i32), (p2, ip2, port2): &(String, String, i32)| {
        p1 == p2 && port1 == port2 && (ip1 == ip2 || ip1 == "0.0.0.0" || ip2 == "0.0.0.0")
    };
    if wanted
        .iter()
        .any(|w| usage.host_ports.iter().any(|u| clash(w, u)))
    {
        return Err(Unfit::HostPort);
    }
    let (cpu, memory, pods) = allocatable(node);
    if usage.pods + 1 > pods {
        return Err(Unfit::TooManyPods);
    }
    let req = requests(pod);
    if req.cpu_millis > 0 && usage.cpu_millis.saturating_add(req.cpu_millis) > cpu {
        return Err(Unfit::InsufficientCpu);
    }
    if req.memory > 0 && usage.memory.saturating_add(req.memory) > memory {
        return Err(Unfit::InsufficientMemory);
    }
    Ok(())
}

/// `0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {...}.`
pub fn unschedulable_message(total: usize, reasons: &[Unfit]) -> String {
    let mut counts: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for r in reasons {
        *counts.entry(r.to_string()).or_default() += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    if parts.is_empty() {
        format!("0/{total} nodes are available.")
    } else {
        format!("0/{total} nodes are available: {}.", parts.join(", "))
    }
}
