//! Tests of `desired`: what a Kubernetes user expects each Service and EndpointSlice shape to produce.
use std::net::Ipv4Addr;

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use serde_json::{Value, json};
use skiff_common::svc_flags;

use super::desired::*;

fn service(spec: Value) -> Service {
    service_meta(json!({"name": "web", "namespace": "default"}), spec)
}

fn service_meta(metadata: Value, spec: Value) -> Service {
    serde_json::from_value(json!({"metadata": metadata, "spec": spec})).expect("valid Service")
}

/// An endpoint: (address, node, ready, serving, terminating); `None` leaves the condition unset.
type Ep<'a> = (&'a str, &'a str, Option<bool>, Option<bool>, Option<bool>);

fn slice(name: &str, svc: &str, ports: Value, eps: &[Ep<'_>]) -> EndpointSlice {
    let endpoints: Vec<Value> = eps
        .iter()
        .map(|(addr, node, ready, serving, terminating)| {
            let mut c = serde_json::Map::new();
            for (k, v) in [
                ("ready", ready),
                ("serving", serving),
                ("terminating", terminating),
            ] {
                if let Some(v) = v {
                    c.insert(k.into(), json!(v));
                }
            }
            json!({"addresses": [addr], "nodeName": node, "conditions": c})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    }))
    .expect("valid EndpointSlice")
}

fn ready(addr: &'static str, node: &'static str) -> Ep<'static> {
    (addr, node, Some(true), Some(true), Some(false))
}

fn node() -> NodeInfo {
    NodeInfo {
        name: "n1".into(),
        addresses: vec![Ipv4Addr::new(192, 168, 1, 1)],
        zone: None,
    }
}

fn http_slice(eps: &[Ep<'_>]) -> EndpointSlice {
    slice(
        "web-1",
        "web",
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
        eps,
    )
}

fn cluster_ip(extra: Value) -> Value {
    let mut spec = json!({"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
        "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]});
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    spec
}

fn addrs(list: &[BackendSpec]) -> Vec<String> {
    list.iter().map(|b| format!("{}:{}", b.addr, b.port)).collect()
}

#[test]
fn cluster_ip_service_with_ready_endpoints() {
    let s = desired(
        &[service(cluster_ip(json!({})))],
        &[http_slice(&[
            ready("10.244.0.6", "n2"),
            ready("10.244.0.5", "n1"),
        ])],
        &node(),
    );
    assert_eq!(s.frontends.len(), 1);
    let f = &s.frontends[0];
    assert_eq!(
        (f.addr, f.port, f.protocol, f.scope),
        (Ipv4Addr::new(10, 96, 0, 10), 80, Protocol::Tcp, Scope::Internal)
    );
    assert_eq!(addrs(&f.ready), ["10.244.0.5:8080", "10.244.0.6:8080"]);
    assert!(f.ready[0].local && !f.ready[1].local);
    assert_eq!(
        (f.flags, f.affinity_timeout_s, f.algorithm),
        (0, 0, Algorithm::Random)
    );
    assert_eq!(f.origin.to_string(), "default/web:http");
}

#[test]
fn kep_1669_conditions() {
    let eps = [
        ready("10.0.0.1", "n1"),
        ("10.0.0.2", "n1", None, None, None), // unset: ready
        ("10.0.0.3", "n1", Some(false), Some(true), Some(true)), // serving + terminating
        ("10.0.0.4", "n1", Some(false), Some(false), Some(true)), // terminating, not serving
        ("10.0.0.5", "n1", Some(false), Some(true), Some(false)), // serving but not terminating (not ready)
        ("10.0.0.6", "n1", Some(false), None, None), // not ready
    ];
    let s = desired(&[service(cluster_ip(json!({})))], &[http_slice(&eps)], &node());
    let f = &s.frontends[0];
    assert_eq!(addrs(&f.ready), ["10.0.0.1:8080", "10.0.0.2:8080"]);
    assert_eq!(addrs(&f.terminating), ["10.0.0.3:8080"]);
    assert_eq!(addrs(f.active_backends()), ["10.0.0.1:8080", "10.0.0.2:8080"]);

    let only_terminating = [("10.0.0.3", "n1", Some(false), Some(true), Some(true))];
    let s = desired(
        &[service(cluster_ip(json!({})))],
        &[http_slice(&only_terminating)],
        &node(),
    );
    assert!(s.frontends[0].ready.is_empty());
    assert_eq!(addrs(s.frontends[0].active_backends()), ["10.0.0.3:8080"]);

    let none_serving = [("10.0.0.4", "n1", Some(false), Some(false), Some(true))];
    let s = desired(
        &[service(cluster_ip(json!({})))],
        &[http_slice(&none_serving)],
        &node(),
    );
    assert!(s.frontends[0].ready.is_empty() && s.frontends[0].terminating.is_empty());
}

#[test]
fn internal_traffic_policy_local_keeps_node_local_endpoints() {
    let s = desired(
        &[service(cluster_ip(json!({"internalTrafficPolicy": "Local"})))],
        &[http_slice(&[
            ready("10.244.0.5", "n1"),
            ready("10.244.1.5", "n2"),
        ])],
        &node(),
    );
    let f = &s.frontends[0];
    assert_eq!(addrs(&f.ready), ["10.244.0.5:8080"]);
    assert_eq!(f.flags, svc_flags::LOCAL_ONLY);
}

#[test]
fn node_port_per_node_address_with_external_policy_local() {
    let mut n = node();
    n.addresses.push(Ipv4Addr::new(172, 18, 0, 2));
    let spec = cluster_ip(json!({"type": "NodePort", "externalTrafficPolicy": "Local",
        "ports": [{"name": "http", "port": 80, "nodePort": 30080, "protocol": "TCP"}]}));
    let s = desired(
        &[service(spec)],
        &[http_slice(&[
            ready("10.244.0.5", "n1"),
            ready("10.244.1.5", "n2"),
        ])],
        &n,
    );
    // ClusterIP internal + 2 node addresses x (internal, external).
    assert_eq!(s.frontends.len(), 5);
    let np: Vec<&Frontend> = s
        .frontends
        .iter()
        .filter(|f| f.flags & svc_flags::NODEPORT != 0)
        .collect();
    assert_eq!(np.len(), 4);
    for f in np {
        assert_eq!(f.port, 30080);
        assert!(n.addresses.contains(&f.addr));
        match f.scope {
            Scope::Internal => assert_eq!((f.ready.len(), f.flags & svc_flags::LOCAL_ONLY), (2, 0)),
            Scope::External => {
                assert_eq!(addrs(&f.ready), ["10.244.0.5:8080"]);
                assert_ne!(f.flags & svc_flags::LOCAL_ONLY, 0);
            }
        }
    }
}

#[test]
fn load_balancer_ingress_and_external_ips() {
    let mut svc = service(cluster_ip(
        json!({"type": "LoadBalancer", "externalIPs": ["203.0.113.7"],
        "ports": [{"name": "http", "port": 80, "nodePort": 30080, "protocol": "TCP"}]}),
    ));
    svc.status = serde_json::from_value(json!({"loadBalancer": {"ingress": [
        {"ip": "198.51.100.1"}, {"ip": "198.51.100.2", "ipMode": "Proxy"}, {"hostname": "lb.example"}]}}))
    .unwrap();
    let s = desired(&[svc], &[http_slice(&[ready("10.244.0.5", "n1")])], &node());
    let ext: Vec<(Ipv4Addr, Scope)> = s
        .frontends
        .iter()
        .filter(|f| f.flags & svc_flags::EXTERNAL_IP != 0)
        .map(|f| (f.addr, f.scope))
        .collect();
    let lb = Ipv4Addr::new(198, 51, 100, 1);
    let eip = Ipv4Addr::new(203, 0, 113, 7);
    for want in [
        (lb, Scope::Internal),
        (lb, Scope::External),
        (eip, Scope::Internal),
        (eip, Scope::External),
    ] {
        assert!(ext.contains(&want), "{want:?} missing from {ext:?}");
    }
    assert_eq!(ext.len(), 4, "ipMode Proxy and hostnames are not captured");
    assert!(s.frontends.iter().all(|f| f.port == 80 || f.port == 30080));
}

#[test]
fn session_affinity_timeout() {
    let s = desired(
        &[service(cluster_ip(json!({"sessionAffinity": "ClientIP"})))],
        &[],
        &node(),
    );
    assert_eq!(s.frontends[0].affinity_timeout_s, DEFAULT_AFFINITY_TIMEOUT_S);
    let s = desired(
        &[service(cluster_ip(json!({"sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}})))],
        &[],
        &node(),
    );
    assert_eq!(s.frontends[0].affinity_timeout_s, 60);
    assert!(
        s.frontends[0].ready.is_empty(),
        "no endpoints: the frontend stays, with nothing to pick"
    );
}

#[test]
fn named_ports_resolve_per_service_port() {
    let spec = cluster_ip(json!({"ports": [
        {"name": "http", "port": 80, "targetPort": "web"},
        {"name": "metrics", "port": 9100, "targetPort": 9090}]}));
    let sl = slice(
        "web-1",
        "web",
        json!([{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090}]),
        &[ready("10.244.0.5", "n1")],
    );
    let s = desired(&[service(spec)], &[sl], &node());
    let by_port: Vec<(u16, Vec<String>)> = s.frontends.iter().map(|f| (f.port, addrs(&f.ready))).collect();
    assert!(by_port.contains(&(80, vec!["10.244.0.5:8080".into()])));
    assert!(by_port.contains(&(9100, vec!["10.244.0.5:9090".into()])));
}

#[test]
fn multiple_slices_merge_and_deduplicate() {
    let ports = || json!([{"name": "http", "port": 8080, "protocol": "TCP"}]);
    let a = slice(
        "web-a",
        "web",
        ports(),
        &[ready("10.0.0.1", "n1"), ready("10.0.0.2", "n1")],
    );
    let b = slice(
        "web-b",
        "web",
        ports(),
        &[
            ("10.0.0.2", "n2", Some(false), Some(true), Some(true)),
            ready("10.0.0.3", "n2"),
        ],
    );
    let other = slice("other", "other", ports(), &[ready("10.0.0.9", "n1")]);
    let s = desired(&[service(cluster_ip(json!({})))], &[a, b, other], &node());
    let f = &s.frontends[0];
    assert_eq!(
        addrs(&f.ready),
        ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]
    );
    assert!(f.terminating.is_empty(), "the ready copy of 10.0.0.2 wins");
}

#[test]
fn tcp_and_udp_on_the_same_port() {
    let spec = cluster_ip(json!({"ports": [
        {"name": "dns", "port": 53, "protocol": "UDP"},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
        {"name": "sctp", "port": 99, "protocol": "SCTP"}]}));
    let sl = slice(
        "dns-1",
        "web",
        json!([{"name": "dns", "port": 1053, "protocol": "UDP"}, {"name": "dns-tcp", "port": 1053, "protocol": "TCP"}]),
        &[ready("10.244.0.5", "n1")],
    );
    let s = desired(&[service(spec)], &[sl], &node());
    assert_eq!(s.frontends.len(), 2, "SCTP is ignored");
    let protos: Vec<(Protocol, Protocol)> = s
        .frontends
        .iter()
        .map(|f| (f.protocol, f.ready[0].protocol))
        .collect();
    assert!(protos.contains(&(Protocol::Tcp, Protocol::Tcp)));
    assert!(protos.contains(&(Protocol::Udp, Protocol::Udp)));
    assert_ne!(s.frontends[0].key(), s.frontends[1].key());
}

#[test]
fn services_without_selectors_use_hand_made_slices() {
    // No selector: endpoints come from a slice someone wrote, with an unnamed port.
    let spec = json!({"clusterIP": "10.96.0.20", "ports": [{"port": 5432}]});
    let sl = slice(
        "db-manual",
        "web",
        json!([{"port": 5432}]),
        &[("192.0.2.10", "", None, None, None)],
    );
    let s = desired(&[service(spec)], &[sl], &node());
    assert_eq!(addrs(&s.frontends[0].ready), ["192.0.2.10:5432"]);
    assert!(!s.frontends[0].ready[0].local);
}

#[test]
fn skipped_services() {
    let meta = |labels: Value| json!({"name": "web", "namespace": "default", "labels": labels});
    let cases = [
        service(json!({"clusterIP": "None", "ports": [{"port": 80}]})),
        service(json!({"type": "ExternalName", "externalName": "example.com", "ports": [{"port": 80}]})),
        service_meta(
            meta(json!({"service.kubernetes.io/headless": ""})),
            cluster_ip(json!({})),
        ),
        service_meta(
            meta(json!({"service.kubernetes.io/service-proxy-name": "other"})),
            cluster_ip(json!({})),
        ),
        service(json!({"ports": [{"port": 80}]})), // no clusterIP yet
        service(json!({"clusterIP": "fd00::1", "ports": [{"port": 80}]})),
    ];
    let slices = [http_slice(&[ready("10.244.0.5", "n1")])];
    for svc in cases {
        assert!(
            desired(std::slice::from_ref(&svc), &slices, &node())
                .frontends
                .is_empty(),
            "{svc:?}"
        );
    }
}

#[test]
fn maglev_annotation_sets_the_flag() {
    let svc = service_meta(
        json!({"name": "web", "namespace": "default", "annotations": {"skiff.dev/lb-algorithm": "maglev"}}),
        cluster_ip(json!({})),
    );
    let s = desired(&[svc], &[], &node());
    assert_eq!(s.frontends[0].algorithm, Algorithm::Maglev);
    assert_eq!(s.frontends[0].flags, svc_flags::MAGLEV);
}

#[test]
fn slices_of_other_namespaces_and_families_are_ignored() {
    let mut foreign = http_slice(&[ready("10.0.0.1", "n1")]);
    foreign.metadata.namespace = Some("other".into());
    let mut v6 = http_slice(&[("fd00::5", "n1", None, None, None)]);
    v6.address_type = "IPv6".into();
    let s = desired(&[service(cluster_ip(json!({})))], &[foreign, v6], &node());
    assert!(s.frontends[0].ready.is_empty());
}

#[test]
fn output_is_sorted_and_first_service_wins_a_shared_frontend() {
    let a = service_meta(
        json!({"name": "a", "namespace": "default"}),
        cluster_ip(json!({})),
    );
    let b = service_meta(
        json!({"name": "b", "namespace": "default"}),
        cluster_ip(json!({})),
    );
    let s = desired(&[b, a], &[], &node());
    assert_eq!(s.frontends.len(), 1);
    assert_eq!(&*s.frontends[0].origin.name, "a");
    let svc = service(cluster_ip(
        json!({"clusterIPs": ["10.96.0.10"], "externalIPs": ["10.1.0.1", "10.0.0.1"]}),
    ));
    let s = desired(&[svc], &[], &node());
    let keys: Vec<_> = s.frontends.iter().map(|f| f.key()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
}

#[test]
fn node_info_from_node_object() {
    let n: k8s_openapi::api::core::v1::Node = serde_json::from_value(json!({
        "metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "z1"}},
        "status": {"addresses": [{"type": "Hostname", "address": "n1"}, {"type": "ExternalIP", "address": "203.0.113.1"},
            {"type": "InternalIP", "address": "192.168.1.1"}, {"type": "InternalIP", "address": "fd00::1"}]}
    }))
    .unwrap();
    let info = NodeInfo::from_node(&n);
    assert_eq!(info.name, "n1");
    assert_eq!(
        info.addresses,
        vec![Ipv4Addr::new(192, 168, 1, 1), Ipv4Addr::new(203, 0, 113, 1)]
    );
    assert_eq!(info.zone.as_deref(), Some("z1"));
}

#[test]
fn topology_hints_prefer_this_zone_when_every_endpoint_has_them() {
    let hinted = |zones: [&str; 3]| {
        let mut sl = http_slice(&[
            ready("10.0.0.1", "n1"),
            ready("10.0.0.2", "n2"),
            ready("10.0.0.3", "n3"),
        ]);
        for (ep, z) in sl.endpoints.iter_mut().zip(zones) {
            if !z.is_empty() {
                ep.hints = serde_json::from_value(json!({"forZones": [{"name": z}]})).unwrap();
            }
        }
        sl
    };
    let mut n = node();
    n.zone = Some("z1".into());
    let svc = || service(cluster_ip(json!({})));
    let s = desired(&[svc()], &[hinted(["z1", "z2", "z1"])], &n);
    assert_eq!(addrs(&s.frontends[0].ready), ["10.0.0.1:8080", "10.0.0.3:8080"]);
    // One endpoint without hints: hints are ignored.
    let s = desired(&[svc()], &[hinted(["z1", "", "z1"])], &n);
    assert_eq!(s.frontends[0].ready.len(), 3);
    // No hint for this zone: all endpoints.
    let s = desired(&[svc()], &[hinted(["z2", "z2", "z3"])], &n);
    assert_eq!(s.frontends[0].ready.len(), 3);
    // A Local policy is not narrowed further by hints.
    let s = desired(
        &[service(cluster_ip(json!({"internalTrafficPolicy": "Local"})))],
        &[hinted(["z2", "z1", "z1"])],
        &n,
    );
    assert_eq!(addrs(&s.frontends[0].ready), ["10.0.0.1:8080"]);
}
