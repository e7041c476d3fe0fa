//! Compact proxy inputs: only what the dataplane needs from a Service, an EndpointSlice or a Node, with interned
//! strings, converted once so that the Kubernetes objects can be dropped right away.
use std::{collections::HashSet, net::Ipv4Addr, sync::Arc};

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::{Endpoint, EndpointSlice},
};

use super::{
    desired::{DEFAULT_AFFINITY_TIMEOUT_S, HEADLESS_LABEL, LB_ALGORITHM_ANNOTATION, PROXY_NAME_LABEL},
    endpoints::SERVICE_NAME_LABEL,
    state::{Algorithm, NodeInfo, Protocol},
};

/// Hands out one shared copy of each distinct string (namespaces, names, node names and zones repeat a lot).
#[derive(Debug, Default)]
pub struct Interner(HashSet<Arc<str>>);

impl Interner {
    pub fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(v) = self.0.get(s) {
            return v.clone();
        }
        let v: Arc<str> = Arc::from(s);
        self.0.insert(v.clone());
        v
    }

    /// Forgets strings nobody else holds any more.
    pub fn collect(&mut self) {
        self.0.retain(|s| Arc::strong_count(s) > 1);
        self.0.shrink_to_fit();
    }
}

/// (namespace, name) of an object; ordered by namespace, then name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjKey {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

/// One Service port the proxy can serve (TCP or UDP, a valid number).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortInput {
    pub name: Arc<str>,
    pub protocol: Protocol,
    pub port: u16,
    pub node_port: Option<u16>,
}

/// What the dataplane needs of a Service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceInput {
    /// Served by this proxy at all (not headless, not ExternalName, not another proxy's); if false, nothing else
    /// but `health_check_port` is filled in.
    pub proxied: bool,
    pub affinity_timeout_s: u32,
    pub maglev: bool,
    pub internal_local: bool,
    pub external_local: bool,
    /// NodePort or LoadBalancer: ports get NodePort frontends.
    pub node_ports: bool,
    pub cluster_ips: Box<[Ipv4Addr]>,
    /// spec.externalIPs then LoadBalancer ingress IPs (not ipMode Proxy), deduplicated.
    pub external_ips: Box<[Ipv4Addr]>,
    pub ports: Box<[PortInput]>,
    /// healthCheckNodePort when externalTrafficPolicy is Local and no other proxy serves the Service.
    pub health_check_port: Option<u16>,
}

impl ServiceInput {
    pub fn algorithm(&self) -> Algorithm {
        if self.maglev {
            Algorithm::Maglev
        } else {
            Algorithm::Random
        }
    }
}

/// One port a slice offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlicePort {
    pub name: Arc<str>,
    pub protocol: Option<Protocol>,
    /// `None` when unset, zero or out of range.
    pub port: Option<u16>,
}

/// What an endpoint's conditions allow (KEP-1669).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Readiness {
    /// Serving and terminating: a fallback when nothing is ready.
    Terminating,
    /// Ready: used for new flows.
    Ready,
}

/// One usable endpoint of a slice (not-serving endpoints and non-IPv4 addresses are dropped at conversion).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointInput {
    pub addr: Ipv4Addr,
    pub readiness: Readiness,
    pub node: Option<Arc<str>>,
    /// Topology hints, out of line: most endpoints have none (`None` when both lists would be empty).
    pub hints: Option<Box<Hints>>,
}

/// The zones and nodes an endpoint is meant for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hints {
    pub zones: Box<[Arc<str>]>,
    pub nodes: Box<[Arc<str>]>,
}

impl EndpointInput {
    /// The zones the endpoint's hints name.
    pub fn zones(&self) -> &[Arc<str>] {
        self.hints.as_ref().map_or(&[], |h| &h.zones)
    }

    /// The nodes the endpoint's hints name.
    pub fn nodes(&self) -> &[Arc<str>] {
        self.hints.as_ref().map_or(&[], |h| &h.nodes)
    }
}

/// What the dataplane needs of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceInput {
    /// The Service it belongs to (same namespace); `None` for slices that are not IPv4 or have no service label.
    pub service: Option<Arc<str>>,
    pub ports: Box<[SlicePort]>,
    pub endpoints: Box<[EndpointInput]>,
}

/// What the proxy needs of a Node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInput {
    pub info: NodeInfo,
    /// Not being deleted nor tainted for deletion (kube-proxy's /healthz rule).
    pub eligible: bool,
}

impl NodeInput {
    pub fn from_node(node: &Node) -> NodeInput {
        NodeInput {
            info: NodeInfo::from_node(node),
            eligible: crate::healthz::node_eligible(Some(node)),
        }
    }
}

/// Parses a list of addresses, keeping the IPv4 ones once each, in order.
pub fn parse_ipv4s<'a>(list: impl IntoIterator<Item = &'a str>) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = Vec::new();
    for ip in list.into_iter().filter_map(|s| s.parse::<Ipv4Addr>().ok()) {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// The key of an object (namespace `default` when unset).
pub fn key_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    strings: &mut Interner,
) -> ObjKey {
    ObjKey {
        namespace: strings.get(meta.namespace.as_deref().unwrap_or("default")),
        name: strings.get(meta.name.as_deref().unwrap_or("")),
    }
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

fn health_check_port(svc: &Service) -> Option<u16> {
    let other_proxy = svc
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(PROXY_NAME_LABEL));
    let spec = svc.spec.as_ref()?;
    let local = spec.external_traffic_policy.as_deref() == Some("Local");
    let port = spec
        .health_check_node_port
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)?;
    (local && !other_proxy).then_some(port)
}

impl ServiceInput {
    pub fn from_service(svc: &Service, strings: &mut Interner) -> ServiceInput {
        let health_check_port = health_check_port(svc);
        let (true, Some(spec)) = (is_proxied(svc), svc.spec.as_ref()) else {
            return ServiceInput {
                health_check_port,
                ..ServiceInput::default()
            };
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
        let svc_type = spec.type_.as_deref().unwrap_or("ClusterIP");
        let cluster_ips = match spec.cluster_ips.as_ref().filter(|v| !v.is_empty()) {
            Some(list) => parse_ipv4s(list.iter().map(String::as_str)),
            None => parse_ipv4s(spec.cluster_ip.as_deref()),
        };
        let mut external_ips = parse_ipv4s(spec.external_ips.iter().flatten().map(String::as_str));
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
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(PortInput {
                    name: strings.get(p.name.as_deref().unwrap_or("")),
                    protocol: Protocol::from_k8s(p.protocol.as_deref())?,
                    port: u16::try_from(p.port).ok()?,
                    node_port: p
                        .node_port
                        .and_then(|n| u16::try_from(n).ok())
                        .filter(|n| *n != 0),
                })
            })
            .collect();
        ServiceInput {
            proxied: true,
            affinity_timeout_s,
            maglev,
            internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
            external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
            node_ports: matches!(svc_type, "NodePort" | "LoadBalancer"),
            cluster_ips: cluster_ips.into(),
            external_ips: external_ips.into(),
            ports,
            health_check_port,
        }
    }
}

fn readiness(ep: &Endpoint) -> Option<Readiness> {
    let conditions = ep.conditions.as_ref();
    // Unset `ready` means ready; unset `serving` means the same as `ready`.
    let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
    let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
    let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
    if ready {
        Some(Readiness::Ready)
    } else if serving && terminating {
        Some(Readiness::Terminating)
    } else {
        None
    }
}

impl SliceInput {
    pub fn from_slice(slice: &EndpointSlice, strings: &mut Interner) -> SliceInput {
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .filter(|_| slice.address_type == "IPv4")
            .map(|s| strings.get(s));
        if service.is_none() {
            return SliceInput {
                service,
                ports: Box::default(),
                endpoints: Box::default(),
            };
        }
        let ports = slice
            .ports
            .iter()
            .flatten()
            .map(|p| SlicePort {
                name: strings.get(p.name.as_deref().unwrap_or("")),
                protocol: Protocol::from_k8s(p.protocol.as_deref()),
                port: p.port.and_then(|n| u16::try_from(n).ok()).filter(|n| *n != 0),
            })
            .collect();
        let endpoints = slice
            .endpoints
            .iter()
            .filter_map(|ep| {
                // Consumers use the first address only (EndpointSlice API).
                let addr = ep.addresses.first()?.parse::<Ipv4Addr>().ok()?;
                let hints = ep.hints.as_ref();
                let hints = Hints {
                    zones: hints
                        .and_then(|h| h.for_zones.as_ref())
                        .into_iter()
                        .flatten()
                        .map(|z| strings.get(&z.name))
                        .collect(),
                    nodes: hints
                        .and_then(|h| h.for_nodes.as_ref())
                        .into_iter()
                        .flatten()
                        .map(|n| strings.get(&n.name))
                        .collect(),
                };
                Some(EndpointInput {
                    addr,
                    readiness: readiness(ep)?,
                    node: ep.node_name.as_deref().map(|n| strings.get(n)),
                    hints: (!hints.zones.is_empty() || !hints.nodes.is_empty()).then(|| Box::new(hints)),
                })
            })
            .collect();
        SliceInput {
            service,
            ports,
            endpoints,
        }
    }
}

/// One change of the proxy's inputs, as a source delivers it.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A Service was added or changed (`Some`), or deleted (`None`).
    Service(ObjKey, Option<ServiceInput>),
    /// An EndpointSlice was added or changed (`Some`), or deleted (`None`).
    Slice(ObjKey, Option<SliceInput>),
    /// A Node was added or changed (`Some`), or deleted (`None`).
    Node(Arc<str>, Option<NodeInput>),
    /// The initial list of this kind is complete (sent once per kind).
    Listed(Kind),
}

/// The kinds a source delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Service,
    EndpointSlice,
    Node,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Service, Kind::EndpointSlice, Kind::Node];
}

/// Converts Kubernetes objects into changes (keeps the string interner).
#[derive(Debug, Default)]
pub struct Converter {
    pub strings: Interner,
}

impl Converter {
    pub fn service(&mut self, svc: &Service) -> Change {
        let key = key_of(&svc.metadata, &mut self.strings);
        Change::Service(key, Some(ServiceInput::from_service(svc, &mut self.strings)))
    }

    pub fn slice(&mut self, slice: &EndpointSlice) -> Change {
        let key = key_of(&slice.metadata, &mut self.strings);
        Change::Slice(key, Some(SliceInput::from_slice(slice, &mut self.strings)))
    }

    pub fn node(&mut self, node: &Node) -> Change {
        let name = self.strings.get(node.metadata.name.as_deref().unwrap_or(""));
        Change::Node(name, Some(NodeInput::from_node(node)))
    }
}
