//! Arbitrary Services, EndpointSlices and Node changes over small pools (so that objects collide and overlap),
//! turned into the k8s-openapi objects the agent's sources deliver.
use arbitrary::Arbitrary;
use k8s_openapi::api::{core::v1::Node, core::v1::Service, discovery::v1::EndpointSlice};
use serde_json::{Value, json};

/// A few names per pool: namespaces, Services, slices, addresses and ports.
const NAMESPACES: [&str; 2] = ["a", "b"];
const SERVICES: u8 = 4;
const SLICES: u8 = 6;

/// A protocol name as found in objects, including ones the proxy must ignore.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Proto {
    Unset,
    Tcp,
    Udp,
    Sctp,
    Lower,
}

impl Proto {
    fn value(self) -> Value {
        match self {
            Proto::Unset => Value::Null,
            Proto::Tcp => json!("TCP"),
            Proto::Udp => json!("UDP"),
            Proto::Sctp => json!("SCTP"),
            Proto::Lower => json!("tcp"),
        }
    }
}

/// An address string: mostly from a small pool, sometimes not an IPv4 address at all.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Addr {
    Pool(u8),
    None,
    Garbage,
    V6,
}

impl Addr {
    fn render(self, prefix: &str) -> String {
        match self {
            Addr::Pool(n) => format!("{prefix}.{}", n % 6),
            Addr::None => "None".into(),
            Addr::Garbage => "10.0.0.256".into(),
            Addr::V6 => "fd00::1".into(),
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub struct PortSpec {
    pub name: bool,
    pub port: u8,
    pub protocol: Proto,
    pub node_port: Option<u8>,
}

#[derive(Arbitrary, Debug, Clone)]
pub struct ServiceSpec {
    pub svc_type: u8,
    pub cluster_ips: Vec<Addr>,
    pub external_ips: Vec<Addr>,
    pub ports: Vec<PortSpec>,
    pub affinity: Option<i16>,
    pub maglev: bool,
    pub internal_local: bool,
    pub external_local: bool,
    pub headless_label: bool,
    pub lb_ingress: Option<(Addr, bool)>,
}

#[derive(Arbitrary, Debug, Clone)]
pub struct EndpointSpec {
    pub addr: Addr,
    pub node: Option<bool>,
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
    pub zone_hint: Option<bool>,
    pub node_hint: Option<bool>,
}

#[derive(Arbitrary, Debug, Clone)]
pub struct SliceSpec {
    pub service: u8,
    pub ipv6: bool,
    pub ports: Vec<PortSpec>,
    pub endpoints: Vec<EndpointSpec>,
}

/// One change a source could deliver.
#[derive(Arbitrary, Debug, Clone)]
pub enum Op {
    PutService {
        ns: bool,
        name: u8,
        spec: ServiceSpec,
    },
    DeleteService {
        ns: bool,
        name: u8,
    },
    PutSlice {
        ns: bool,
        name: u8,
        spec: SliceSpec,
    },
    DeleteSlice {
        ns: bool,
        name: u8,
    },
    Node {
        second_address: bool,
        zone: Option<bool>,
    },
    /// Ends a batch: the agent recomputes and plans here.
    Sync,
}

pub fn namespace(ns: bool) -> &'static str {
    NAMESPACES[usize::from(ns)]
}

pub fn service_name(n: u8) -> String {
    format!("s{}", n % SERVICES)
}

pub fn slice_name(n: u8) -> String {
    format!("e{}", n % SLICES)
}

fn ports(list: &[PortSpec], node_ports: bool, target: bool) -> Vec<Value> {
    list.iter()
        .take(3)
        .map(|p| {
            let base: i64 = if target { 8080 } else { 80 };
            let mut v = json!({"port": base + i64::from(p.port % 3), "protocol": p.protocol.value()});
            if p.name {
                v["name"] = json!("p");
            }
            if node_ports && let Some(n) = p.node_port {
                v["nodePort"] = json!(30000 + i64::from(n % 3));
            }
            v
        })
        .collect()
}

/// The Service `ns/name` as `spec` describes it.
pub fn service(ns: &str, name: &str, spec: &ServiceSpec) -> Service {
    let ty = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"][usize::from(spec.svc_type % 4)];
    let cluster_ips: Vec<String> = spec
        .cluster_ips
        .iter()
        .take(2)
        .map(|a| a.render("10.96.0"))
        .collect();
    let mut s = json!({
        "type": ty,
        "ports": ports(&spec.ports, ty != "ClusterIP", false),
        "externalIPs": spec.external_ips.iter().take(2).map(|a| a.render("203.0.113")).collect::<Vec<_>>(),
        "internalTrafficPolicy": if spec.internal_local { "Local" } else { "Cluster" },
        "externalTrafficPolicy": if spec.external_local { "Local" } else { "Cluster" },
    });
    if let Some(first) = cluster_ips.first() {
        s["clusterIP"] = json!(first);
        s["clusterIPs"] = json!(cluster_ips);
    }
    if let Some(t) = spec.affinity {
        s["sessionAffinity"] = json!("ClientIP");
        s["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": t}});
    }
    let mut meta = json!({"namespace": ns, "name": name});
    if spec.maglev {
        meta["annotations"] = json!({"skiff.dev/lb-algorithm": "maglev"});
    }
    if spec.headless_label {
        meta["labels"] = json!({"service.kubernetes.io/headless": ""});
    }
    let mut obj = json!({"metadata": meta, "spec": s});
    if let Some((addr, proxy)) = spec.lb_ingress {
        let mut ing = json!({"ip": addr.render("198.51.100")});
        if proxy {
            ing["ipMode"] = json!("Proxy");
        }
        obj["status"] = json!({"loadBalancer": {"ingress": [ing]}});
    }
    serde_json::from_value(obj).expect("generated Services decode")
}

/// The EndpointSlice `ns/name` as `spec` describes it.
pub fn slice(ns: &str, name: &str, spec: &SliceSpec) -> EndpointSlice {
    let endpoints: Vec<Value> = spec
        .endpoints
        .iter()
        .take(6)
        .map(|e| {
            let mut v = json!({"addresses": [e.addr.render("10.244.0")]});
            if let Some(local) = e.node {
                v["nodeName"] = json!(if local { "n1" } else { "n2" });
            }
            let mut c = json!({});
            for (k, f) in [
                ("ready", e.ready),
                ("serving", e.serving),
                ("terminating", e.terminating),
            ] {
                if let Some(b) = f {
                    c[k] = json!(b);
                }
            }
            v["conditions"] = c;
            let mut hints = json!({});
            if let Some(z) = e.zone_hint {
                hints["forZones"] = json!([{"name": if z { "z1" } else { "z2" }}]);
            }
            if let Some(n) = e.node_hint {
                hints["forNodes"] = json!([{"name": if n { "n1" } else { "n2" }}]);
            }
            v["hints"] = hints;
            v
        })
        .collect();
    let obj = json!({
        "metadata": {"namespace": ns, "name": name,
                     "labels": {"kubernetes.io/service-name": service_name(spec.service)}},
        "addressType": if spec.ipv6 { "IPv6" } else { "IPv4" },
        "ports": ports(&spec.ports, false, true),
        "endpoints": endpoints,
    });
    serde_json::from_value(obj).expect("generated EndpointSlices decode")
}

/// Node `n1` with one or two InternalIP addresses and maybe a zone.
pub fn node(second_address: bool, zone: Option<bool>) -> Node {
    let mut addresses = vec![json!({"type": "InternalIP", "address": "192.168.1.1"})];
    if second_address {
        addresses.push(json!({"type": "ExternalIP", "address": "192.168.1.2"}));
    }
    let mut meta = json!({"name": "n1"});
    if let Some(z) = zone {
        meta["labels"] = json!({"topology.kubernetes.io/zone": if z { "z1" } else { "z2" }});
    }
    serde_json::from_value(json!({"metadata": meta, "status": {"addresses": addresses}}))
        .expect("generated Nodes decode")
}
