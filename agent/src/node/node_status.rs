//! The Node object this agent publishes: labels, addresses, capacity, podCIDR and conditions (pure).
use std::{collections::BTreeMap, net::Ipv4Addr};

use k8s_openapi::{
    api::core::v1::{
        DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
        NodeSystemInfo,
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::Time},
};

use super::capacity::Capacity;
use crate::net::cidr::Ipv4Cidr;

/// Below this much available memory the node reports MemoryPressure (the kubelet's default eviction threshold).
pub const MEMORY_PRESSURE_KB: u64 = 100 * 1024;
/// Below this fraction of free space in the state directory's file system: DiskPressure.
pub const DISK_PRESSURE_FREE: f64 = 0.10;
/// Above this fraction of pid_max in use: PIDPressure.
pub const PID_PRESSURE_USED: f64 = 0.90;

/// Fixed facts about this node.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub name: String,
    pub node_ip: Ipv4Addr,
    /// Where the apiserver reaches this agent's log endpoint when that is not `node_ip` (published first).
    pub kubelet_address: Option<Ipv4Addr>,
    pub kubelet_port: u16,
    pub pod_cidr: Option<Ipv4Cidr>,
    pub capacity: Capacity,
    pub machine_id: String,
    pub kernel: String,
}

/// What the agent measured about the node's health.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Health {
    pub mem_available_kb: Option<u64>,
    /// Free fraction of the state directory's file system.
    pub disk_free: Option<f64>,
    /// (processes in use, pid_max).
    pub pids: Option<(u64, u64)>,
    /// The node has a podCIDR and its routes to other nodes are in place.
    pub network_ready: bool,
}

/// Kubernetes' name for this machine's architecture.
pub fn k8s_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Well-known node labels.
pub fn labels(name: &str) -> BTreeMap<String, String> {
    let arch = k8s_arch(std::env::consts::ARCH).to_string();
    BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), name.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), arch.clone()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), arch),
    ])
}

/// Annotation with the address where the apiserver reaches this agent's kubelet endpoint when that is not the node
/// address (`--kubelet-address`; a lab on one machine: 127.0.0.1, as the node namespaces are not routed from the
/// host).
pub const KUBELET_ADDRESS_ANNOTATION: &str = "skiff.dev/kubelet-address";

/// The node's annotations: the kubelet address when it differs from the node address.
pub fn annotations(f: &NodeFacts) -> BTreeMap<String, String> {
    f.kubelet_address
        .filter(|k| *k != f.node_ip)
        .map(|k| (KUBELET_ADDRESS_ANNOTATION.to_string(), k.to_string()))
        .into_iter()
        .collect()
}

/// The node's addresses: the node IP and the hostname. The apiserver reaches the agent at the first InternalIP,
/// or at the kubelet-address annotation when there is one (see [`annotations`]).
pub fn addresses(f: &NodeFacts) -> Vec<NodeAddress> {
    vec![
        NodeAddress {
            type_: "InternalIP".into(),
            address: f.node_ip.to_string(),
        },
        NodeAddress {
            type_: "Hostname".into(),
            address: f.name.clone(),
        },
    ]
}

/// The address other nodes route this node's podCIDR through: its first InternalIP that is not loopback.
pub fn routable_ip(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse::<Ipv4Addr>().ok())
        .find(|ip| !ip.is_loopback())
}

/// The Node object to create when it does not exist yet.
pub fn new_node(f: &NodeFacts) -> Node {
    let cidr = f.pod_cidr.map(|c| c.to_string());
    Node {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(f.name.clone()),
            labels: Some(labels(&f.name)),
            annotations: Some(annotations(f)).filter(|a| !a.is_empty()),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: cidr.clone(),
            pod_cidrs: cidr.map(|c| vec![c]),
            ..Default::default()
        }),
        status: None,
    }
}

fn condition(
    type_: &str,
    on: bool,
    reason: &str,
    message: &str,
    prev: &[NodeCondition],
    now: &Time,
) -> NodeCondition {
    let status = if on { "True" } else { "False" }.to_string();
    let since = prev
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    NodeCondition {
        type_: type_.into(),
        status,
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(since),
    }
}

/// The five node conditions from `health`, keeping transition times of unchanged ones from `prev`.
pub fn conditions(h: &Health, prev: &[NodeCondition], now: &Time) -> Vec<NodeCondition> {
    let memory = h.mem_available_kb.is_some_and(|kb| kb < MEMORY_PRESSURE_KB);
    let disk = h.disk_free.is_some_and(|f| f < DISK_PRESSURE_FREE);
    let pid = h
        .pids
        .is_some_and(|(used, max)| max > 0 && used as f64 / max as f64 > PID_PRESSURE_USED);
    let c = |t, on, reason, msg| condition(t, on, reason, msg, prev, now);
    let (ready_reason, ready_msg) = if h.network_ready {
        ("KubeletReady", "skiff-agent is posting ready status")
    } else {
        (
            "KubeletNotReady",
            "pod network not ready: no podCIDR or routes not installed",
        )
    };
    vec![
        if memory {
            c(
                "MemoryPressure",
                true,
                "KubeletHasInsufficientMemory",
                "node has memory pressure",
            )
        } else {
            c(
                "MemoryPressure",
                false,
                "KubeletHasSufficientMemory",
                "node has sufficient memory available",
            )
        },
        if disk {
            c(
                "DiskPressure",
                true,
                "KubeletHasDiskPressure",
                "node has disk pressure",
            )
        } else {
            c(
                "DiskPressure",
                false,
                "KubeletHasNoDiskPressure",
                "node has no disk pressure",
            )
        },
        if pid {
            c(
                "PIDPressure",
                true,
                "KubeletHasInsufficientPID",
                "node has PID pressure",
            )
        } else {
            c(
                "PIDPressure",
                false,
                "KubeletHasSufficientPID",
                "node has sufficient PID available",
            )
        },
        if h.network_ready {
            c(
                "NetworkUnavailable",
                false,
                "RouteCreated",
                "skiff-agent created the pod routes",
            )
        } else {
            c(
                "NetworkUnavailable",
                true,
                "NoRouteCreated",
                "pod routes not created yet",
            )
        },
        c("Ready", h.network_ready, ready_reason, ready_msg),
    ]
}

fn quantities(c: &Capacity) -> BTreeMap<String, Quantity> {
    c.iter().map(|(k, v)| (k.clone(), Quantity(v.clone()))).collect()
}

/// The node's status (allocatable = capacity: the lab reserves nothing for system daemons).
pub fn status(f: &NodeFacts, conditions: Vec<NodeCondition>) -> NodeStatus {
    NodeStatus {
        addresses: Some(addresses(f)),
        capacity: Some(quantities(&f.capacity)),
        allocatable: Some(quantities(&f.capacity)),
        conditions: Some(conditions),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(f.kubelet_port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: k8s_arch(std::env::consts::ARCH).into(),
            operating_system: "linux".into(),
            kernel_version: f.kernel.clone(),
            os_image: "Skiff lab node".into(),
            container_runtime_version: "skiff://".to_string() + env!("CARGO_PKG_VERSION"),
            kubelet_version: concat!("v1.35.0-skiff.", env!("CARGO_PKG_VERSION")).into(),
            kube_proxy_version: String::new(),
            machine_id: f.machine_id.clone(),
            system_uuid: f.machine_id.clone(),
            boot_id: String::new(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> NodeFacts {
        NodeFacts {
            name: "n1".into(),
            node_ip: "10.99.0.11".parse().unwrap(),
            kubelet_address: Some(Ipv4Addr::LOCALHOST),
            kubelet_port: 10250,
            pod_cidr: Some("10.244.1.0/24".parse().unwrap()),
            capacity: super::super::capacity::parse("cpu=2,memory=4Gi,pods=110").unwrap(),
            machine_id: "m".into(),
            kernel: "6.18".into(),
        }
    }

    fn t(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn addresses_name_the_node_ip_and_the_kubelet_address_is_an_annotation() {
        let f = facts();
        let a = addresses(&f);
        assert_eq!(
            a.iter()
                .map(|a| (a.type_.as_str(), a.address.as_str()))
                .collect::<Vec<_>>(),
            [("InternalIP", "10.99.0.11"), ("Hostname", "n1")]
        );
        let node = Node {
            status: Some(status(&f, vec![])),
            ..new_node(&f)
        };
        assert_eq!(routable_ip(&node), Some(f.node_ip));
        let plain = NodeFacts {
            kubelet_address: None,
            ..facts()
        };
        assert_eq!(addresses(&plain).len(), 2);
        assert_eq!(
            new_node(&f).metadata.annotations.unwrap()[KUBELET_ADDRESS_ANNOTATION],
            "127.0.0.1"
        );
        assert!(new_node(&plain).metadata.annotations.is_none());
    }

    #[test]
    fn new_node_has_labels_and_pod_cidr() {
        let n = new_node(&facts());
        let l = n.metadata.labels.unwrap();
        assert_eq!(l["kubernetes.io/hostname"], "n1");
        assert_eq!(l["kubernetes.io/os"], "linux");
        assert!(l.contains_key("kubernetes.io/arch"));
        assert_eq!(n.spec.unwrap().pod_cidrs.unwrap(), ["10.244.1.0/24"]);
        let s = status(&facts(), vec![]);
        assert_eq!(s.capacity.unwrap()["memory"], Quantity("4Gi".into()));
        assert_eq!(s.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port, 10250);
    }

    #[test]
    fn conditions_report_pressure_and_keep_transition_times() {
        let healthy = Health {
            mem_available_kb: Some(1 << 20),
            disk_free: Some(0.5),
            pids: Some((100, 4_194_304)),
            network_ready: true,
        };
        let first = conditions(&healthy, &[], &t("2026-01-01T00:00:00Z"));
        let get = |cs: &[NodeCondition], ty: &str| cs.iter().find(|c| c.type_ == ty).unwrap().clone();
        assert_eq!(get(&first, "Ready").status, "True");
        assert_eq!(get(&first, "NetworkUnavailable").status, "False");
        assert_eq!(get(&first, "MemoryPressure").status, "False");

        let later = conditions(&healthy, &first, &t("2026-01-01T00:00:10Z"));
        let ready = get(&later, "Ready");
        assert_eq!(ready.last_transition_time, Some(t("2026-01-01T00:00:00Z")));
        assert_eq!(ready.last_heartbeat_time, Some(t("2026-01-01T00:00:10Z")));

        let sick = Health {
            mem_available_kb: Some(10),
            disk_free: Some(0.01),
            pids: Some((4_000_000, 4_194_304)),
            network_ready: false,
        };
        let bad = conditions(&sick, &later, &t("2026-01-01T00:00:20Z"));
        for ty in [
            "MemoryPressure",
            "DiskPressure",
            "PIDPressure",
            "NetworkUnavailable",
        ] {
            assert_eq!(get(&bad, ty).status, "True", "{ty}");
        }
        let ready = get(&bad, "Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.last_transition_time, Some(t("2026-01-01T00:00:20Z")));
    }
}
