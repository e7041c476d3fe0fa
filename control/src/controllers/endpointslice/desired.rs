//! Pure decisions: the EndpointSlices and the legacy Endpoints object a Service should have, from its pods.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CorePort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Most endpoints in one slice (kube-controller-manager's default `--max-endpoints-per-slice`).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Set on Endpoints this controller maintains (as the Kubernetes endpoints controller does).
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Whether the controller maintains endpoints for this Service (it has a selector).
pub fn is_managed(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.selector.as_ref()).is_some()
}

/// Whether the pod's labels match the Service's selector.
pub fn selects(svc: &Service, pod: &Pod) -> bool {
    let Some(selector) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    if pod.metadata.namespace != svc.metadata.namespace {
        return false;
    }
    let labels = pod.metadata.labels.as_ref();
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_ip(pod: &Pod) -> Option<&str> {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .filter(|ip| !ip.is_empty())
}

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The container port a Service port reaches on this pod, or None when a named port is not declared.
pub fn resolve_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => name.parse().ok().or_else(|| {
            pod.spec.as_ref()?.containers.iter().find_map(|c| {
                c.ports.as_ref()?.iter().find_map(|p| {
                    (p.name.as_deref() == Some(name) && p.protocol.as_deref().unwrap_or("TCP") == protocol)
                        .then_some(p.container_port)
                })
            })
        }),
    }
}

fn slice_ports(svc: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let ports = svc.spec.as_ref().and_then(|s| s.ports.as_ref());
    ports
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some(EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(resolve_port(pod, p)?),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".to_owned())),
                app_protocol: p.app_protocol.clone(),
            })
        })
        .collect()
}

fn owner(svc: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".to_owned(),
        kind: "Service".to_owned(),
        name: svc.metadata.name.clone().unwrap_or_default(),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// One endpoint of a pod, or None when the pod does not belong in the Service's endpoints.
fn endpoint(svc: &Service, pod: &Pod, zones: &HashMap<String, String>) -> Option<Endpoint> {
    let ip = pod_ip(pod)?;
    if terminal(pod) {
        return None;
    }
    let publish = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let serving = publish || pod_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let ready = publish || (serving && !terminating);
    let spec = pod.spec.as_ref();
    let node = spec.and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty());
    let hostname = spec
        .filter(|s| s.subdomain.is_some() && s.subdomain == svc.metadata.name)
        .and_then(|s| s.hostname.clone());
    Some(Endpoint {
        addresses: vec![ip.to_owned()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname,
        zone: node.as_ref().and_then(|n| zones.get(n).cloned()),
        node_name: node,
        target_ref: Some(ObjectReference {
            kind: Some("Pod".to_owned()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        }),
        ..Endpoint::default()
    })
}

fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.retain(|k, _| k != SERVICE_NAME_LABEL && k != MANAGED_BY_LABEL);
    labels.insert(
        SERVICE_NAME_LABEL.to_owned(),
        svc.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
    if svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        labels.insert(HEADLESS_LABEL.to_owned(), String::new());
    }
    labels
}

/// Name of the `index`th slice of a Service (stable, so reconciling is a plain diff by name).
pub fn slice_name(service: &str, index: usize) -> String {
    // Object names are at most 253 characters; keep room for the suffix.
    let base: String = service.chars().take(240).collect();
    format!("{base}-{index}")
}

/// The slices a Service should have: endpoints grouped by their resolved port set, sorted by pod
/// name, at most [`MAX_ENDPOINTS_PER_SLICE`] per slice; one empty slice when there are none.
pub fn slices(svc: &Service, pods: &[&Pod], zones: &HashMap<String, String>) -> Vec<EndpointSlice> {
    let name = svc.metadata.name.clone().unwrap_or_default();
    let mut sorted: Vec<&Pod> = pods.iter().copied().filter(|p| selects(svc, p)).collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    // Port sets in first-seen order so the packing is deterministic.
    let mut groups: Vec<(Vec<EndpointPort>, Vec<Endpoint>)> = Vec::new();
    for pod in sorted {
        let Some(ep) = endpoint(svc, pod, zones) else {
            continue;
        };
        let ports = slice_ports(svc, pod);
        match groups.iter_mut().find(|(p, _)| *p == ports) {
            Some((_, eps)) => eps.push(ep),
            None => groups.push((ports, vec![ep])),
        }
    }
    if groups.is_empty() {
        // Kubernetes keeps one placeholder slice, without ports, for a Service without endpoints.
        groups.push((Vec::new(), Vec::new()));
    }
    let mut out = Vec::new();
    for (ports, eps) in groups {
        let chunks: Vec<Vec<Endpoint>> = if eps.is_empty() {
            vec![Vec::new()]
        } else {
            eps.chunks(MAX_ENDPOINTS_PER_SLICE)
                .map(<[Endpoint]>::to_vec)
                .collect()
        };
        for chunk in chunks {
            out.push(EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(slice_name(&name, out.len())),
                    namespace: svc.metadata.namespace.clone(),
                    labels: Some(slice_labels(svc)),
                    owner_references: Some(vec![owner(svc)]),
                    ..ObjectMeta::default()
                },
                address_type: "IPv4".to_owned(),
                endpoints: chunk,
                ports: Some(ports.clone()),
            });
        }
    }
    out
}

/// The legacy Endpoints object mirrored from the slices: one subset per port set, ready and not-ready addresses.
pub fn endpoints(svc: &Service, slices: &[EndpointSlice]) -> Endpoints {
    let publish = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let mut subsets: Vec<EndpointSubset> = Vec::new();
    for slice in slices {
        let ports: Vec<CorePort> = slice
            .ports
            .iter()
            .flatten()
            .map(|p| CorePort {
                name: p.name.clone().filter(|n| !n.is_empty()),
                port: p.port.unwrap_or_default(),
                protocol: p.protocol.clone(),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        let mut ready = Vec::new();
        let mut not_ready = Vec::new();
        for ep in &slice.endpoints {
            let c = ep.conditions.clone().unwrap_or_default();
            if c.terminating == Some(true) && !publish {
                continue;
            }
            let address = EndpointAddress {
                ip: ep.addresses[0].clone(),
                hostname: ep.hostname.clone(),
                node_name: ep.node_name.clone(),
                target_ref: ep.target_ref.clone(),
            };
            if c.ready == Some(true) {
                ready.push(address);
            } else {
                not_ready.push(address);
            }
        }
        if ready.is_empty() && not_ready.is_empty() {
            continue;
        }
        let subset = match subsets
            .iter_mut()
            .find(|s| s.ports.as_deref().unwrap_or_default() == ports)
        {
            Some(s) => s,
            None => {
                subsets.push(EndpointSubset {
                    ports: (!ports.is_empty()).then_some(ports),
                    ..EndpointSubset::default()
                });
                subsets.last_mut().expect("just pushed")
            }
        };
        if !ready.is_empty() {
            subset.addresses.get_or_insert_with(Vec::new).extend(ready);
        }
        if !not_ready.is_empty() {
            subset
                .not_ready_addresses
                .get_or_insert_with(Vec::new)
                .extend(not_ready);
        }
    }
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.insert(SKIP_MIRROR_LABEL.to_owned(), "true".to_owned());
    Endpoints {
        metadata: ObjectMeta {
            name: svc.metadata.name.clone(),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    }
}

#[cfg(test)]
mod tests;
