//! `desired`: Services + EndpointSlices + this node -> the dataplane state the maps should express (pure).
use std::{collections::HashMap, net::Ipv4Addr};

use k8s_openapi::api::{
    core::v1::{Node, Service, ServicePort},
    discovery::v1::EndpointSlice,
};
use skiff_common::svc_flags;

use super::endpoints::{PortEndpoints, SERVICE_NAME_LABEL, port_endpoints};
pub use super::state::{
    Algorithm, BackendSpec, DataplaneState, Frontend, NodeInfo, Protocol, Scope, ServiceRef,
};

/// Services with this label are headless (no virtual IP to serve).
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Services with this label are served by another proxy.
pub const PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// Annotation selecting the load-balancing algorithm; `maglev` selects consistent hashing.
pub const LB_ALGORITHM_ANNOTATION: &str = "skiff.dev/lb-algorithm";
/// Label holding a node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Kubernetes' default sessionAffinity ClientIP timeout (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT_S: u32 = 10_800;

impl NodeInfo {
    /// Describes a Node object: its IPv4 InternalIP and ExternalIP addresses (in that order) and its zone label.
    pub fn from_node(node: &Node) -> NodeInfo {
        let mut addresses: Vec<Ipv4Addr> = Vec::new();
        let all = node.status.as_ref().and_then(|s| s.addresses.as_ref());
        for kind in ["InternalIP", "ExternalIP"] {
            for a in all.into_iter().flatten().filter(|a| a.type_ == kind) {
                if let Ok(ip) = a.address.parse::<Ipv4Addr>()
                    && !addresses.contains(&ip)
                {
                    addresses.push(ip);
                }
            }
        }
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            addresses,
            zone: node
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(ZONE_LABEL))
                .cloned(),
        }
    }
}

/// Computes the desired dataplane state. Deterministic: the result is sorted by services map key, and when two
/// Services claim the same frontend the one first by namespace/name wins.
pub fn desired(services: &[Service], slices: &[EndpointSlice], node: &NodeInfo) -> DataplaneState {
    let index = index_slices(slices);
    let mut sorted: Vec<&Service> = services.iter().collect();
    sorted.sort_by(|a, b| {
        (a.metadata.namespace.as_deref(), a.metadata.name.as_deref())
            .cmp(&(b.metadata.namespace.as_deref(), b.metadata.name.as_deref()))
    });
    let mut frontends = Vec::new();
    for svc in sorted {
        let key = (namespace(svc), svc.metadata.name.as_deref().unwrap_or(""));
        let own = index.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        service_frontends(svc, own, node, &mut frontends);
    }
    DataplaneState::from_frontends(frontends)
}

fn namespace(svc: &Service) -> &str {
    svc.metadata.namespace.as_deref().unwrap_or("default")
}

/// IPv4 slices by (namespace, service name).
fn index_slices(slices: &[EndpointSlice]) -> HashMap<(&str, &str), Vec<&EndpointSlice>> {
    let mut index: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for s in slices.iter().filter(|s| s.address_type == "IPv4") {
        let Some(svc) = s.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) else {
            continue;
        };
        let ns = s.metadata.namespace.as_deref().unwrap_or("default");
        index.entry((ns, svc.as_str())).or_default().push(s);
    }
    index
}

/// Whether this proxy serves the Service at all.
fn is_proxied(svc: &Service) -> bool {
    let labels = svc.metadata.labels.as_ref();
    let has_label = |l: &str| labels.is_some_and(|m| m.contains_key(l));
    let Some(spec) = svc.spec.as_ref() else {
        return false;
    };
    let headless = spec.cluster_ip.as_deref() == Some("None")
        || spec.cluster_ips.iter().flatten().any(|ip| ip == "None");
    spec.type_.as_deref() != Some("ExternalName")
        && !headless
        && !has_label(HEADLESS_LABEL)
        && !has_label(PROXY_NAME_LABEL)
}

/// Attributes shared by every frontend of one Service.
struct Common {
    affinity_timeout_s: u32,
    algorithm: Algorithm,
    internal_local: bool,
    external_local: bool,
}

fn service_frontends(svc: &Service, slices: &[&EndpointSlice], node: &NodeInfo, out: &mut Vec<Frontend>) {
    if !is_proxied(svc) {
        return;
    }
    let Some(spec) = svc.spec.as_ref() else {
        return;
    };
    let affinity_timeout_s = if spec.session_affinity.as_deref() == Some("ClientIP") {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_S)
    } else {
        0
    };
    let maglev = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LB_ALGORITHM_ANNOTATION))
        .map(String::as_str)
        == Some("maglev");
    let common = Common {
        affinity_timeout_s,
        algorithm: if maglev {
            Algorithm::Maglev
        } else {
            Algorithm::Random
        },
        internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
        external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
    };
    let svc_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    let cluster_ips = match spec.cluster_ips.as_ref().filter(|v| !v.is_empty()) {
        Some(list) => list.clone(),
        None => spec.cluster_ip.iter().cloned().collect(),
    };
    let cluster_ips = parse_ipv4s(&cluster_ips);
    let mut external_ips = parse_ipv4s(spec.external_ips.as_deref().unwrap_or(&[]));
    if svc_type == "LoadBalancer" {
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref());
        for ing in ingress.into_iter().flatten() {
            // ipMode Proxy: the load balancer delivers to the node itself, the VIP must not be captured here.
            if ing.ip_mode.as_deref() == Some("Proxy") {
                continue;
            }
            if let Some(ip) = ing.ip.as_deref().and_then(|ip| ip.parse::<Ipv4Addr>().ok())
                && !external_ips.contains(&ip)
            {
                external_ips.push(ip);
            }
        }
    }
    let node_ports = matches!(svc_type, "NodePort" | "LoadBalancer");
    for port in spec.ports.iter().flatten() {
        let (Some(protocol), Ok(number)) = (
            Protocol::from_k8s(port.protocol.as_deref()),
            u16::try_from(port.port),
        ) else {
            continue;
        };
        let eps = port_endpoints(port, slices.iter().copied(), &node.name, node.zone.as_deref());
        let origin = ServiceRef {
            namespace: namespace(svc).to_string(),
            name: svc.metadata.name.clone().unwrap_or_default(),
            port_name: port.name.clone().unwrap_or_default(),
            port: number,
        };
        let make = |addr: Ipv4Addr, port: u16, scope: Scope, flags: u16| {
            frontend(&common, &eps, &origin, addr, port, protocol, scope, flags)
        };
        for &ip in &cluster_ips {
            out.push(make(ip, number, Scope::Internal, 0));
        }
        if let Some(node_port) = node_port(port).filter(|_| node_ports) {
            for &ip in &node.addresses {
                out.push(make(ip, node_port, Scope::Internal, svc_flags::NODEPORT));
                out.push(make(ip, node_port, Scope::External, svc_flags::NODEPORT));
            }
        }
        for &ip in &external_ips {
            out.push(make(ip, number, Scope::Internal, svc_flags::EXTERNAL_IP));
            out.push(make(ip, number, Scope::External, svc_flags::EXTERNAL_IP));
        }
    }
}

fn node_port(port: &ServicePort) -> Option<u16> {
    port.node_port
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n != 0)
}

fn parse_ipv4s(list: &[String]) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = Vec::new();
    for ip in list.iter().filter_map(|s| s.parse::<Ipv4Addr>().ok()) {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

#[allow(
    clippy::too_many_arguments,
    reason = "a private constructor called from one closure"
)]
fn frontend(
    common: &Common,
    eps: &PortEndpoints,
    origin: &ServiceRef,
    addr: Ipv4Addr,
    port: u16,
    protocol: Protocol,
    scope: Scope,
    mut flags: u16,
) -> Frontend {
    let local_only = match scope {
        Scope::Internal => common.internal_local,
        Scope::External => common.external_local,
    };
    let pick = |list: &[BackendSpec]| -> Vec<BackendSpec> {
        list.iter().filter(|b| !local_only || b.local).copied().collect()
    };
    // Topology hints apply to cluster-wide policies only (a Local policy already picks this node's endpoints).
    let ready = match &eps.preferred {
        Some(preferred) if !local_only => preferred.clone(),
        _ => pick(&eps.ready),
    };
    if local_only {
        flags |= svc_flags::LOCAL_ONLY;
    }
    if common.algorithm == Algorithm::Maglev {
        flags |= svc_flags::MAGLEV;
    }
    Frontend {
        addr,
        port,
        protocol,
        scope,
        flags,
        affinity_timeout_s: common.affinity_timeout_s,
        algorithm: common.algorithm,
        ready,
        terminating: pick(&eps.terminating),
        origin: origin.clone(),
    }
}
