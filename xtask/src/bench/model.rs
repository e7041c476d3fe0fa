//! The Service/EndpointSlice inputs every variant is built from, and the synthetic sets the sweep uses.
use std::net::Ipv4Addr;

/// L4 protocol of a service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// Lower-case name (`tcp`), as kube-proxy uses it in hashes, matches and chain names.
    pub fn lower(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    /// Kubernetes API spelling (`TCP`).
    pub fn api(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        }
    }
}

/// One ready endpoint of a service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// One Service port with its endpoints (a `ServicePortName` in kube-proxy's terms).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub namespace: String,
    pub name: String,
    pub port_name: String,
    pub proto: Proto,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub target_port: u16,
    /// NodePort (type NodePort, externalTrafficPolicy Cluster), if any.
    pub node_port: Option<u16>,
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// `ns/name:port` (or `ns/name` for an unnamed port), kube-proxy's `ServicePortName.String()`.
    pub fn port_name_string(&self) -> String {
        if self.port_name.is_empty() {
            format!("{}/{}", self.namespace, self.name)
        } else {
            format!("{}/{}:{}", self.namespace, self.name, self.port_name)
        }
    }
}

/// Cluster-wide settings the rule sets depend on.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Pod CIDR: traffic from outside it is masqueraded on its way to a ClusterIP.
    pub cluster_cidr: String,
    /// Service CIDR (nftables mode drops traffic to unallocated ClusterIPs in it).
    pub service_cidr: String,
    /// Addresses that accept NodePort traffic.
    pub node_ips: Vec<Ipv4Addr>,
}

/// Where the measured service sits in the rule set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    First,
    Middle,
    Last,
}

/// Addressing plan of the synthetic service set.
#[derive(Clone, Debug)]
pub struct SetSpec {
    pub services: usize,
    pub endpoints_per_service: usize,
    /// Backend addresses; endpoint j of every service uses `backends[j % len]`.
    pub backends: Vec<Ipv4Addr>,
    pub target_port: u16,
    pub placement: Placement,
}

/// The ClusterIP of synthetic service `i` (10.96.0.0/16, skipping .0 and the first ten addresses).
pub fn service_vip(i: usize) -> Ipv4Addr {
    let n = 10 + i as u32;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + n)
}

/// Synthetic services `bench/svc-<i>` port `http` 80/TCP -> target port, each with the same backends. The target
/// service (named `svc-target`, returned index) is placed first, in the middle or last.
pub fn synthetic_set(spec: &SetSpec) -> (Vec<ServicePort>, usize) {
    assert!(spec.services > 0 && !spec.backends.is_empty());
    let target = match spec.placement {
        Placement::First => 0,
        Placement::Middle => spec.services / 2,
        Placement::Last => spec.services - 1,
    };
    let services = (0..spec.services)
        .map(|i| ServicePort {
            namespace: "bench".into(),
            name: if i == target {
                "svc-target".into()
            } else {
                format!("svc-{i}")
            },
            port_name: "http".into(),
            proto: Proto::Tcp,
            cluster_ip: service_vip(i),
            port: 80,
            target_port: spec.target_port,
            node_port: None,
            endpoints: (0..spec.endpoints_per_service)
                .map(|j| Endpoint {
                    ip: spec.backends[j % spec.backends.len()],
                    port: spec.target_port,
                })
                .collect(),
        })
        .collect();
    (services, target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_name_string_matches_kube_proxy() {
        let (svcs, _) = synthetic_set(&SetSpec {
            services: 1,
            endpoints_per_service: 1,
            backends: vec![Ipv4Addr::new(10, 0, 0, 1)],
            target_port: 8080,
            placement: Placement::First,
        });
        assert_eq!(svcs[0].port_name_string(), "bench/svc-target:http");
        let mut unnamed = svcs[0].clone();
        unnamed.port_name.clear();
        assert_eq!(unnamed.port_name_string(), "bench/svc-target");
    }

    #[test]
    fn target_is_placed_where_asked() {
        let spec = |placement| SetSpec {
            services: 11,
            endpoints_per_service: 3,
            backends: vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)],
            target_port: 8080,
            placement,
        };
        assert_eq!(synthetic_set(&spec(Placement::First)).1, 0);
        assert_eq!(synthetic_set(&spec(Placement::Middle)).1, 5);
        let (svcs, t) = synthetic_set(&spec(Placement::Last));
        assert_eq!(t, 10);
        assert_eq!(svcs[t].name, "svc-target");
        assert_eq!(svcs[t].endpoints[2].ip, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(service_vip(0), Ipv4Addr::new(10, 96, 0, 10));
        assert_eq!(service_vip(300), Ipv4Addr::new(10, 96, 1, 54));
    }
}
