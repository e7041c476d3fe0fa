//! Service and EndpointSlice manifests as real Kubernetes YAML, written atomically into the agent's manifests dir.
use std::{fmt::Write as _, fs, path::Path};

/// A Service port: `port` on the ClusterIP, `target_port` on the backends, optional `node_port`.
#[derive(Clone, Debug)]
pub struct Port {
    pub name: &'static str,
    pub protocol: &'static str,
    pub port: u16,
    pub target_port: u16,
    pub node_port: Option<u16>,
}

/// A Service of type ClusterIP or (when any port has a nodePort) NodePort.
#[derive(Clone, Debug)]
pub struct Service {
    pub name: &'static str,
    pub cluster_ip: &'static str,
    pub ports: Vec<Port>,
    /// externalTrafficPolicy: Local (NodePort traffic only to backends on the receiving node).
    pub external_local: bool,
}

/// One endpoint of an EndpointSlice.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub pod: &'static str,
    pub ip: &'static str,
    pub node: &'static str,
}

impl Service {
    pub fn is_node_port(&self) -> bool {
        self.ports.iter().any(|p| p.node_port.is_some())
    }

    /// The Service as YAML, selecting pods labelled `app: NAME`.
    pub fn yaml(&self) -> String {
        self.render(true)
    }

    /// The Service as YAML without a selector: its EndpointSlices are whatever their writer puts there (the
    /// EndpointSlice controller leaves them alone).
    pub fn selectorless_yaml(&self) -> String {
        self.render(false)
    }

    fn render(&self, selector: bool) -> String {
        let mut y = String::new();
        let kind = if self.is_node_port() {
            "NodePort"
        } else {
            "ClusterIP"
        };
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {}\n  namespace: default\nspec:\n  type: {kind}\n  \
             clusterIP: {ip}\n  clusterIPs:\n  - {ip}\n  ipFamilies:\n  - IPv4\n",
            self.name,
            ip = self.cluster_ip
        );
        if selector {
            let _ = write!(y, "  selector:\n    app: {}\n", self.name);
        }
        if self.is_node_port() {
            let policy = if self.external_local { "Local" } else { "Cluster" };
            let _ = writeln!(y, "  externalTrafficPolicy: {policy}");
        }
        y += "  ports:\n";
        for p in &self.ports {
            let _ = write!(
                y,
                "  - name: {}\n    protocol: {}\n    port: {}\n    targetPort: {}\n",
                p.name, p.protocol, p.port, p.target_port
            );
            if let Some(np) = p.node_port {
                let _ = writeln!(y, "    nodePort: {np}");
            }
        }
        y
    }

    /// The Service's EndpointSlice (all endpoints ready) as YAML, labelled as the EndpointSlice controller's.
    pub fn slice_yaml(&self, endpoints: &[Endpoint]) -> String {
        self.slice_yaml_managed_by(endpoints, "endpointslice-controller.k8s.io")
    }

    /// [`Service::slice_yaml`] with another `endpointslice.kubernetes.io/managed-by` (a slice a controller must not
    /// take for its own, as for a selector-less Service).
    pub fn slice_yaml_managed_by(&self, endpoints: &[Endpoint], managed_by: &str) -> String {
        let mut y = String::new();
        let _ = write!(
            y,
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-skt\n  \
             namespace: default\n  labels:\n    kubernetes.io/service-name: {name}\n    \
             endpointslice.kubernetes.io/managed-by: {managed_by}\naddressType: IPv4\nports:\n",
            name = self.name
        );
        for p in &self.ports {
            let _ = write!(
                y,
                "- name: {}\n  protocol: {}\n  port: {}\n",
                p.name, p.protocol, p.target_port
            );
        }
        if endpoints.is_empty() {
            y += "endpoints: []\n";
        } else {
            y += "endpoints:\n";
        }
        for e in endpoints {
            let _ = write!(
                y,
                "- addresses:\n  - {}\n  conditions:\n    ready: true\n    serving: true\n    terminating: false\n  \
                 nodeName: {}\n  targetRef:\n    kind: Pod\n    namespace: default\n    name: {}\n",
                e.ip, e.node, e.pod
            );
        }
        y
    }

    /// Writes `svc-NAME.yaml` and `eps-NAME.yaml` into `dir`.
    pub fn write(&self, dir: &Path, endpoints: &[Endpoint]) {
        write_atomic(dir, &format!("svc-{}.yaml", self.name), &self.yaml());
        self.write_endpoints(dir, endpoints);
    }

    /// Replaces this Service's EndpointSlice file in `dir`.
    pub fn write_endpoints(&self, dir: &Path, endpoints: &[Endpoint]) {
        write_atomic(
            dir,
            &format!("eps-{}.yaml", self.name),
            &self.slice_yaml(endpoints),
        );
    }
}

/// Writes through a temporary file and a rename, so a watcher never reads half a manifest.
fn write_atomic(dir: &Path, file: &str, text: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    fs::write(&tmp, text).unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
    fs::rename(&tmp, dir.join(file)).unwrap_or_else(|e| panic!("renaming {}: {e}", tmp.display()));
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::{core::v1 as core, discovery::v1 as discovery};

    use super::*;

    fn web() -> Service {
        Service {
            name: "web",
            cluster_ip: "10.96.0.10",
            ports: vec![
                Port {
                    name: "http",
                    protocol: "TCP",
                    port: 80,
                    target_port: 8080,
                    node_port: Some(30080),
                },
                Port {
                    name: "dns",
                    protocol: "UDP",
                    port: 53,
                    target_port: 8081,
                    node_port: None,
                },
            ],
            external_local: true,
        }
    }

    #[test]
    fn service_yaml_is_a_valid_nodeport_service() {
        let svc: core::Service = serde_yaml::from_str(&web().yaml()).unwrap();
        let spec = svc.spec.unwrap();
        assert_eq!(svc.metadata.name.as_deref(), Some("web"));
        assert_eq!(spec.type_.as_deref(), Some("NodePort"));
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.10"));
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
        let ports = spec.ports.unwrap();
        assert_eq!(ports.len(), 2);
        assert_eq!((ports[0].port, ports[0].node_port), (80, Some(30080)));
        assert_eq!(ports[1].protocol.as_deref(), Some("UDP"));
        assert_eq!(
            ports[1].target_port,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(
                8081
            ))
        );
    }

    #[test]
    fn selectorless_service_and_its_own_slice() {
        let with: core::Service = serde_yaml::from_str(&web().yaml()).unwrap();
        let selector = with.spec.unwrap().selector.unwrap();
        assert_eq!(selector.get("app").map(String::as_str), Some("web"));
        let without: core::Service = serde_yaml::from_str(&web().selectorless_yaml()).unwrap();
        let spec = without.spec.unwrap();
        assert_eq!(spec.selector, None);
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.10"));
        let slice: discovery::EndpointSlice =
            serde_yaml::from_str(&web().slice_yaml_managed_by(&[], "skiff-tests")).unwrap();
        let labels = slice.metadata.labels.unwrap();
        assert_eq!(
            labels
                .get("endpointslice.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("skiff-tests")
        );
        assert_eq!(
            labels.get("kubernetes.io/service-name").map(String::as_str),
            Some("web")
        );
    }

    #[test]
    fn clusterip_service_has_no_traffic_policy() {
        let mut s = web();
        s.ports.iter_mut().for_each(|p| p.node_port = None);
        let svc: core::Service = serde_yaml::from_str(&s.yaml()).unwrap();
        let spec = svc.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(spec.external_traffic_policy, None);
    }

    #[test]
    fn slice_yaml_lists_ready_endpoints_with_nodes() {
        let eps = [
            Endpoint {
                pod: "be1",
                ip: "10.244.1.3",
                node: "skt-node1",
            },
            Endpoint {
                pod: "be3",
                ip: "10.244.2.3",
                node: "skt-node2",
            },
        ];
        let slice: discovery::EndpointSlice = serde_yaml::from_str(&web().slice_yaml(&eps)).unwrap();
        assert_eq!(
            slice
                .metadata
                .labels
                .unwrap()
                .get("kubernetes.io/service-name")
                .map(String::as_str),
            Some("web")
        );
        assert_eq!(slice.address_type, "IPv4");
        assert_eq!(slice.endpoints.len(), 2);
        assert_eq!(slice.endpoints[1].addresses, ["10.244.2.3"]);
        assert_eq!(slice.endpoints[1].node_name.as_deref(), Some("skt-node2"));
        assert_eq!(slice.endpoints[0].conditions.as_ref().unwrap().ready, Some(true));
        let ports = slice.ports.unwrap();
        assert_eq!((ports[0].port, ports[1].port), (Some(8080), Some(8081)));

        let empty: discovery::EndpointSlice = serde_yaml::from_str(&web().slice_yaml(&[])).unwrap();
        assert!(empty.endpoints.is_empty());
    }
}
