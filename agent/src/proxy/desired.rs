//! `desired`: Services + EndpointSlices + this node -> the dataplane state the maps should express (pure).
use std::{collections::HashMap, net::Ipv4Addr};

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use skiff_common::svc_flags;

pub use super::state::{
    Algorithm, BackendSpec, DataplaneState, Frontend, NodeInfo, Protocol, Scope, ServiceRef,
};
use super::{
    endpoints::{PortEndpoints, port_endpoints},
    inputs::{Change, Converter, ObjKey, ServiceInput, SliceInput},
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

/// Computes the desired dataplane state from whole object lists (the full recompute; the agent keeps the same
/// result up to date incrementally with `incremental::Desired`). Deterministic: the result is sorted by services
/// map key, and when two Services claim the same frontend the one first by namespace/name wins.
pub fn desired(services: &[Service], slices: &[EndpointSlice], node: &NodeInfo) -> DataplaneState {
    let mut conv = Converter::default();
    let mut index: HashMap<ObjKey, Vec<SliceInput>> = HashMap::new();
    for s in slices {
        let Change::Slice(key, Some(input)) = conv.slice(s) else {
            continue;
        };
        if let Some(svc) = input.service.clone() {
            let owner = ObjKey {
                namespace: key.namespace,
                name: svc,
            };
            index.entry(owner).or_default().push(input);
        }
    }
    let mut sorted: Vec<(ObjKey, ServiceInput)> = services
        .iter()
        .filter_map(|svc| match conv.service(svc) {
            Change::Service(key, Some(input)) => Some((key, input)),
            _ => None,
        })
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut frontends = Vec::new();
    for (key, svc) in &sorted {
        let own: Vec<&SliceInput> = index.get(key).into_iter().flatten().collect();
        frontends.extend(service_frontends(key, svc, &own, node));
    }
    DataplaneState::from_frontends(frontends)
}

/// The frontends one Service asks for, in its own order (cluster IPs, NodePorts, external IPs per port); pure.
pub fn service_frontends(
    key: &ObjKey,
    svc: &ServiceInput,
    slices: &[&SliceInput],
    node: &NodeInfo,
) -> Vec<Frontend> {
    let mut out = Vec::new();
    if !svc.proxied {
        return out;
    }
    let common = Common {
        affinity_timeout_s: svc.affinity_timeout_s,
        algorithm: svc.algorithm(),
        internal_local: svc.internal_local,
        external_local: svc.external_local,
    };
    for port in svc.ports.iter() {
        let (protocol, number) = (port.protocol, port.port);
        let eps = port_endpoints(port, slices.iter().copied(), &node.name, node.zone.as_deref());
        let origin = ServiceRef {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            port_name: port.name.clone(),
            port: number,
        };
        let make = |addr: Ipv4Addr, port: u16, scope: Scope, flags: u16| {
            frontend(&common, &eps, &origin, addr, port, protocol, scope, flags)
        };
        for &ip in svc.cluster_ips.iter() {
            out.push(make(ip, number, Scope::Internal, 0));
        }
        if let Some(node_port) = port.node_port.filter(|_| svc.node_ports) {
            for &ip in &node.addresses {
                out.push(make(ip, node_port, Scope::Internal, svc_flags::NODEPORT));
                out.push(make(ip, node_port, Scope::External, svc_flags::NODEPORT));
            }
        }
        for &ip in svc.external_ips.iter() {
            out.push(make(ip, number, Scope::Internal, svc_flags::EXTERNAL_IP));
            out.push(make(ip, number, Scope::External, svc_flags::EXTERNAL_IP));
        }
    }
    out
}

/// Attributes shared by every frontend of one Service.
struct Common {
    affinity_timeout_s: u32,
    algorithm: Algorithm,
    internal_local: bool,
    external_local: bool,
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
        let mut v: Vec<BackendSpec> = list.iter().filter(|b| !local_only || b.local).copied().collect();
        // Frontends are kept (by `incremental::Desired` and the planner): without the spare room of the collect.
        v.shrink_to_fit();
        v
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
