//! healthCheckNodePort servers for `externalTrafficPolicy: Local` Services (as kube-proxy): one HTTP listener per
//! such Service answering 200 with this node's local endpoint count when it has any, else 503, so that cloud load
//! balancers only send to nodes with local backends.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use tokio::{net::TcpListener, task::JoinHandle};

use crate::{
    agnhost::http::{self, Handler, Request, Response},
    healthz::Health,
    proxy::{desired::PROXY_NAME_LABEL, endpoints::SERVICE_NAME_LABEL},
};

/// What one health-check port reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceHealth {
    pub namespace: String,
    pub name: String,
    /// Ready endpoints of the Service on this node (distinct addresses).
    pub local_endpoints: usize,
}

/// The health-check ports this node must serve: `healthCheckNodePort` of every Service with
/// `externalTrafficPolicy: Local` that this proxy serves. When two Services claim a port, the first by
/// namespace/name keeps it.
pub fn wanted(
    services: &[Service],
    slices: &[EndpointSlice],
    node_name: &str,
) -> BTreeMap<u16, ServiceHealth> {
    let mut out = BTreeMap::new();
    let mut sorted: Vec<&Service> = services.iter().collect();
    sorted.sort_by_key(|s| (s.metadata.namespace.clone(), s.metadata.name.clone()));
    for svc in sorted {
        let labels = svc.metadata.labels.as_ref();
        if labels.is_some_and(|l| l.contains_key(PROXY_NAME_LABEL)) {
            continue;
        }
        let Some(spec) = &svc.spec else { continue };
        let local = spec.external_traffic_policy.as_deref() == Some("Local");
        let Some(port) = spec.health_check_node_port.and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        if !local || port == 0 {
            continue;
        }
        let namespace = svc.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let name = svc.metadata.name.clone().unwrap_or_default();
        let local_endpoints = local_ready_endpoints(slices, &namespace, &name, node_name);
        out.entry(port).or_insert(ServiceHealth {
            namespace,
            name,
            local_endpoints,
        });
    }
    out
}

fn local_ready_endpoints(slices: &[EndpointSlice], namespace: &str, name: &str, node_name: &str) -> usize {
    let mut addrs = BTreeSet::new();
    let own = slices.iter().filter(|s| {
        s.metadata.namespace.as_deref().unwrap_or("default") == namespace
            && s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .map(String::as_str)
                == Some(name)
    });
    for slice in own {
        for ep in &slice.endpoints {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if ready && ep.node_name.as_deref() == Some(node_name) {
                addrs.extend(ep.addresses.first().cloned());
            }
        }
    }
    addrs.len()
}

/// kube-proxy's response body and status for one health-check port.
pub fn respond(h: &ServiceHealth, proxy_healthy: bool) -> Response {
    let body = serde_json::json!({
        "service": { "namespace": h.namespace, "name": h.name },
        "localEndpoints": h.local_endpoints,
        "serviceProxyHealthy": proxy_healthy,
    });
    let ok = h.local_endpoints > 0 && proxy_healthy;
    Response::status(if ok { 200 } else { 503 }, body.to_string())
}

struct Listener {
    task: JoinHandle<()>,
    current: Arc<Mutex<ServiceHealth>>,
}

/// The running health-check listeners, reconciled against `wanted` after every sync.
pub struct Servers {
    ip: IpAddr,
    health: Health,
    listeners: BTreeMap<u16, Listener>,
}

impl Servers {
    /// Listeners will bind `ip` (kube-proxy binds every address: 0.0.0.0).
    pub fn new(ip: IpAddr, health: Health) -> Self {
        Servers {
            ip,
            health,
            listeners: BTreeMap::new(),
        }
    }

    /// Ports currently served.
    pub fn ports(&self) -> Vec<u16> {
        self.listeners.keys().copied().collect()
    }

    /// Opens listeners for new ports, closes those no longer wanted and updates the counts. A port that cannot be
    /// bound is retried on the next sync.
    pub async fn reconcile(&mut self, wanted: BTreeMap<u16, ServiceHealth>) {
        self.listeners.retain(|port, l| {
            let keep = wanted.contains_key(port);
            if !keep {
                l.task.abort();
                tracing::info!(port, "closed health-check node port");
            }
            keep
        });
        for (port, h) in wanted {
            if let Some(l) = self.listeners.get(&port) {
                *l.current
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = h;
                continue;
            }
            let addr = SocketAddr::new(self.ip, port);
            let listener = match TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(%addr, service = %format!("{}/{}", h.namespace, h.name), error = %e,
                        "cannot open health-check node port; retrying on the next sync");
                    continue;
                }
            };
            tracing::info!(%addr, service = %format!("{}/{}", h.namespace, h.name), "serving health-check node port");
            let current = Arc::new(Mutex::new(h));
            let (shared, health) = (current.clone(), self.health.clone());
            let handler: Handler = Arc::new(move |_req: &Request| {
                let h = shared
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                respond(&h, health.healthy())
            });
            let task = tokio::spawn(async move {
                if let Err(e) = http::serve(listener, handler).await {
                    tracing::warn!(%addr, error = %e, "health-check node port stopped");
                }
            });
            self.listeners.insert(port, Listener { task, current });
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for l in self.listeners.values() {
            l.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::{
        core::v1::ServiceSpec,
        discovery::v1::{Endpoint, EndpointConditions},
    };

    use super::*;

    fn svc(name: &str, policy: &str, hc_port: Option<i32>) -> Service {
        let mut s = Service::default();
        s.metadata.name = Some(name.into());
        s.metadata.namespace = Some("default".into());
        s.spec = Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            external_traffic_policy: Some(policy.into()),
            health_check_node_port: hc_port,
            ..ServiceSpec::default()
        });
        s
    }

    fn slice(service: &str, eps: &[(&str, &str, Option<bool>)]) -> EndpointSlice {
        let mut s = EndpointSlice {
            address_type: "IPv4".into(),
            ..EndpointSlice::default()
        };
        s.metadata.namespace = Some("default".into());
        s.metadata.labels = Some([(SERVICE_NAME_LABEL.to_string(), service.to_string())].into());
        s.endpoints = eps
            .iter()
            .map(|(ip, node, ready)| Endpoint {
                addresses: vec![ip.to_string()],
                node_name: Some(node.to_string()),
                conditions: Some(EndpointConditions {
                    ready: *ready,
                    ..EndpointConditions::default()
                }),
                ..Endpoint::default()
            })
            .collect();
        s
    }

    #[test]
    fn only_local_policy_services_with_a_port() {
        let services = [
            svc("local", "Local", Some(31000)),
            svc("cluster", "Cluster", Some(31001)),
            svc("noport", "Local", None),
        ];
        let slices = [slice(
            "local",
            &[
                ("10.0.0.1", "n1", Some(true)),
                ("10.0.0.2", "n1", None),
                ("10.0.0.3", "n2", Some(true)),
            ],
        )];
        let w = wanted(&services, &slices, "n1");
        assert_eq!(w.keys().copied().collect::<Vec<_>>(), [31000]);
        assert_eq!(w[&31000].local_endpoints, 2);
        assert_eq!(w[&31000].name, "local");
        assert_eq!(wanted(&services, &slices, "n3")[&31000].local_endpoints, 0);
    }

    #[test]
    fn not_ready_and_duplicate_endpoints_do_not_count() {
        let services = [svc("a", "Local", Some(31000))];
        let slices = [
            slice(
                "a",
                &[("10.0.0.1", "n1", Some(false)), ("10.0.0.2", "n1", Some(true))],
            ),
            slice("a", &[("10.0.0.2", "n1", Some(true))]),
            slice("other", &[("10.0.0.9", "n1", Some(true))]),
        ];
        assert_eq!(wanted(&services, &slices, "n1")[&31000].local_endpoints, 1);
    }

    #[test]
    fn services_for_another_proxy_are_ignored() {
        let mut s = svc("a", "Local", Some(31000));
        s.metadata.labels = Some([(PROXY_NAME_LABEL.to_string(), "other".to_string())].into());
        assert!(wanted(&[s], &[], "n1").is_empty());
    }

    #[test]
    fn status_follows_local_endpoints_and_proxy_health() {
        let h = ServiceHealth {
            namespace: "default".into(),
            name: "web".into(),
            local_endpoints: 2,
        };
        let r = respond(&h, true);
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["service"]["name"], "web");
        assert_eq!(v["localEndpoints"], 2);
        assert_eq!(respond(&h, false).status, 503);
        let none = ServiceHealth {
            local_endpoints: 0,
            ..h
        };
        assert_eq!(respond(&none, true).status, 503);
    }

    #[tokio::test]
    async fn listeners_follow_the_wanted_ports() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Pick a free port, release it, and ask for it.
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let health = Health::new(crate::healthz::DEFAULT_TIMEOUT);
        let mut servers = Servers::new("127.0.0.1".parse().unwrap(), health);
        let h = ServiceHealth {
            namespace: "default".into(),
            name: "web".into(),
            local_endpoints: 0,
        };
        servers.reconcile([(port, h.clone())].into()).await;
        assert_eq!(servers.ports(), [port]);
        let get = || async move {
            let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            c.write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut resp = String::new();
            tokio::time::timeout(std::time::Duration::from_secs(5), c.read_to_string(&mut resp))
                .await
                .unwrap()
                .unwrap();
            resp
        };
        assert!(get().await.starts_with("HTTP/1.1 503"));
        servers
            .reconcile(
                [(
                    port,
                    ServiceHealth {
                        local_endpoints: 3,
                        ..h
                    },
                )]
                .into(),
            )
            .await;
        let resp = get().await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(resp.contains("\"localEndpoints\":3"), "{resp}");
        servers.reconcile(BTreeMap::new()).await;
        assert!(servers.ports().is_empty());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(),
            "port still open"
        );
    }
}
