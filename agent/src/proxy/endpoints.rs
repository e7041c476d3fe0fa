//! EndpointSlices -> the ready and terminating backends of one Service port (KEP-1669 conditions, named ports).
use std::{collections::BTreeMap, net::Ipv4Addr};

use k8s_openapi::api::{
    core::v1::ServicePort,
    discovery::v1::{Endpoint, EndpointSlice},
};

use super::state::{BackendSpec, Protocol};

/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The backends of one Service port, before traffic-policy filtering.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortEndpoints {
    /// Ready endpoints, sorted.
    pub ready: Vec<BackendSpec>,
    /// Serving and terminating endpoints, sorted.
    pub terminating: Vec<BackendSpec>,
    /// The ready endpoints topology hints prefer for this node (same node, else same zone), when every ready
    /// endpoint carries hints and some name this node or zone (kube-proxy's rule); `None` = no preference.
    pub preferred: Option<Vec<BackendSpec>>,
}

/// One deduplicated endpoint while merging slices.
struct Candidate {
    readiness: Readiness,
    port: u16,
    local: bool,
    zones: Vec<String>,
    nodes: Vec<String>,
}

/// What an endpoint's conditions allow (KEP-1669).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Readiness {
    /// Not serving: excluded.
    Excluded,
    /// Serving and terminating: a fallback when nothing is ready.
    Terminating,
    /// Ready: used for new flows.
    Ready,
}

fn readiness(ep: &Endpoint) -> Readiness {
    let conditions = ep.conditions.as_ref();
    // Unset `ready` means ready; unset `serving` means the same as `ready`.
    let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
    let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
    let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
    if ready {
        Readiness::Ready
    } else if serving && terminating {
        Readiness::Terminating
    } else {
        Readiness::Excluded
    }
}

/// Resolves the backends of Service port `port` from the Service's slices, merged and deduplicated by address
/// (the best condition wins: a ready copy beats a terminating one; local if any copy is on `node_name`).
pub fn port_endpoints<'a>(
    port: &ServicePort,
    slices: impl Iterator<Item = &'a EndpointSlice>,
    node_name: &str,
    zone: Option<&str>,
) -> PortEndpoints {
    let Some(protocol) = Protocol::from_k8s(port.protocol.as_deref()) else {
        return PortEndpoints::default();
    };
    let port_name = port.name.as_deref().unwrap_or("");
    let mut by_addr: BTreeMap<Ipv4Addr, Candidate> = BTreeMap::new();
    for slice in slices {
        let Some(number) = slice_port(slice, port_name, protocol) else {
            continue;
        };
        for ep in &slice.endpoints {
            // Consumers use the first address only (EndpointSlice API).
            let Some(addr) = ep.addresses.first().and_then(|a| a.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            let readiness = readiness(ep);
            if readiness == Readiness::Excluded {
                continue;
            }
            let local = ep.node_name.as_deref() == Some(node_name) && !node_name.is_empty();
            let hints = ep.hints.as_ref();
            let new = Candidate {
                readiness,
                port: number,
                local,
                zones: hints
                    .and_then(|h| h.for_zones.as_ref())
                    .into_iter()
                    .flatten()
                    .map(|z| z.name.clone())
                    .collect(),
                nodes: hints
                    .and_then(|h| h.for_nodes.as_ref())
                    .into_iter()
                    .flatten()
                    .map(|n| n.name.clone())
                    .collect(),
            };
            match by_addr.get_mut(&addr) {
                None => {
                    by_addr.insert(addr, new);
                }
                Some(cur) => {
                    let any_local = cur.local || local;
                    if (readiness, std::cmp::Reverse(number)) > (cur.readiness, std::cmp::Reverse(cur.port)) {
                        *cur = new;
                    }
                    cur.local = any_local;
                }
            }
        }
    }
    let mut out = PortEndpoints::default();
    let (mut all_zone, mut any_zone, mut all_node, mut any_node) = (true, false, true, false);
    let mut hinted: Vec<(BackendSpec, bool, bool)> = Vec::new();
    for (addr, c) in by_addr {
        let spec = BackendSpec {
            addr,
            port: c.port,
            protocol,
            local: c.local,
        };
        match c.readiness {
            Readiness::Ready => {
                let for_zone = zone.is_some_and(|z| c.zones.iter().any(|h| h == z));
                let for_node = !node_name.is_empty() && c.nodes.iter().any(|h| h == node_name);
                all_zone &= !c.zones.is_empty();
                all_node &= !c.nodes.is_empty();
                any_zone |= for_zone;
                any_node |= for_node;
                hinted.push((spec, for_node, for_zone));
                out.ready.push(spec);
            }
            Readiness::Terminating => out.terminating.push(spec),
            Readiness::Excluded => {}
        }
    }
    if all_node && any_node {
        out.preferred = Some(hinted.iter().filter(|h| h.1).map(|h| h.0).collect());
    } else if all_zone && any_zone {
        out.preferred = Some(hinted.iter().filter(|h| h.2).map(|h| h.0).collect());
    }
    out
}

/// The port number a slice gives for the Service port named `name` with `protocol` ("" matches an unnamed port).
fn slice_port(slice: &EndpointSlice, name: &str, protocol: Protocol) -> Option<u16> {
    slice.ports.as_ref()?.iter().find_map(|p| {
        let same_name = p.name.as_deref().unwrap_or("") == name;
        let same_proto = Protocol::from_k8s(p.protocol.as_deref()) == Some(protocol);
        if same_name && same_proto {
            p.port.and_then(|n| u16::try_from(n).ok()).filter(|n| *n != 0)
        } else {
            None
        }
    })
}
