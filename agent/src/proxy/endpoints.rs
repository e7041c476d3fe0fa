//! EndpointSlices -> the ready and terminating backends of one Service port (KEP-1669 conditions, named ports).
use std::{collections::BTreeMap, net::Ipv4Addr, sync::Arc};

use super::{
    inputs::{PortInput, Readiness, SliceInput},
    state::{BackendSpec, Protocol},
};

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
struct Candidate<'a> {
    readiness: Readiness,
    port: u16,
    local: bool,
    zones: &'a [Arc<str>],
    nodes: &'a [Arc<str>],
}

/// Resolves the backends of Service port `port` from the Service's slices, merged and deduplicated by address
/// (the best condition wins: a ready copy beats a terminating one; local if any copy is on `node_name`).
pub fn port_endpoints<'a>(
    port: &PortInput,
    slices: impl Iterator<Item = &'a SliceInput>,
    node_name: &str,
    zone: Option<&str>,
) -> PortEndpoints {
    let protocol = port.protocol;
    let mut by_addr: BTreeMap<Ipv4Addr, Candidate<'a>> = BTreeMap::new();
    for slice in slices {
        let Some(number) = slice_port(slice, &port.name, protocol) else {
            continue;
        };
        for ep in slice.endpoints.iter() {
            let readiness = ep.readiness;
            let local = !node_name.is_empty() && ep.node.as_deref() == Some(node_name);
            let new = Candidate {
                readiness,
                port: number,
                local,
                zones: ep.zones(),
                nodes: ep.nodes(),
            };
            match by_addr.get_mut(&ep.addr) {
                None => {
                    by_addr.insert(ep.addr, new);
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
                let for_zone = zone.is_some_and(|z| c.zones.iter().any(|h| &**h == z));
                let for_node = !node_name.is_empty() && c.nodes.iter().any(|h| &**h == node_name);
                all_zone &= !c.zones.is_empty();
                all_node &= !c.nodes.is_empty();
                any_zone |= for_zone;
                any_node |= for_node;
                hinted.push((spec, for_node, for_zone));
                out.ready.push(spec);
            }
            Readiness::Terminating => out.terminating.push(spec),
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
fn slice_port(slice: &SliceInput, name: &str, protocol: Protocol) -> Option<u16> {
    slice.ports.iter().find_map(|p| {
        (&*p.name == name && p.protocol == Some(protocol))
            .then_some(p.port)
            .flatten()
    })
}
