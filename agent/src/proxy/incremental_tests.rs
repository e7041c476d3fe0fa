//! Tests of `incremental::Desired` and `Planner::plan_delta` against the full recompute (`desired` + `plan`).
use std::{collections::BTreeMap, net::Ipv4Addr};

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::json;

use super::{
    desired::desired,
    incremental::Desired,
    inputs::{Change, Converter, Kind, ObjKey},
    planner::Planner,
    state::NodeInfo,
    testkit::{apply_checked, assert_expresses},
};

/// Random Services and EndpointSlices over small pools, so that Services share VIPs and backends.
struct World {
    rng: StdRng,
    services: BTreeMap<(String, String), Service>,
    slices: BTreeMap<(String, String), EndpointSlice>,
    node: Node,
}

const NAMESPACES: [&str; 2] = ["a", "b"];

impl World {
    fn new(seed: u64) -> World {
        World {
            rng: StdRng::seed_from_u64(seed),
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
            node: node_object(&["192.168.1.1"]),
        }
    }

    fn random_service(&mut self, ns: &str, name: &str) -> Service {
        let r = &mut self.rng;
        let ip = format!("10.96.0.{}", r.random_range(1..6));
        let proto = if r.random_bool(0.2) { "UDP" } else { "TCP" };
        let node_port = r.random_bool(0.3);
        let mut port = json!({"name": "p", "port": 80 + r.random_range(0..2), "protocol": proto});
        if node_port {
            port["nodePort"] = json!(30000 + r.random_range(0..3));
        }
        let mut spec = json!({
            "clusterIP": ip, "clusterIPs": [ip], "ports": [port],
            "type": if node_port { "NodePort" } else { "ClusterIP" },
        });
        if r.random_bool(0.2) {
            spec["externalTrafficPolicy"] = json!("Local");
            spec["healthCheckNodePort"] = json!(32000 + r.random_range(0..2));
        }
        if r.random_bool(0.1) {
            spec["externalIPs"] = json!([format!("203.0.113.{}", r.random_range(1..3))]);
        }
        let mut meta = json!({"namespace": ns, "name": name});
        if r.random_bool(0.05) {
            meta["annotations"] = json!({"skiff.dev/lb-algorithm": "maglev"});
        }
        serde_json::from_value(json!({"metadata": meta, "spec": spec})).unwrap()
    }

    fn random_slice(&mut self, ns: &str, name: &str) -> EndpointSlice {
        let r = &mut self.rng;
        let svc = format!("s{}", r.random_range(0..6));
        let proto = if r.random_bool(0.2) { "UDP" } else { "TCP" };
        let eps: Vec<serde_json::Value> = (0..r.random_range(0..4))
            .map(|_| {
                json!({
                    "addresses": [format!("10.244.0.{}", r.random_range(1..8))],
                    "nodeName": if r.random_bool(0.5) { "n1" } else { "n2" },
                    "conditions": {"ready": r.random_bool(0.7), "serving": true, "terminating": r.random_bool(0.3)},
                })
            })
            .collect();
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "ports": [{"name": "p", "port": 8080 + r.random_range(0..2), "protocol": proto}],
            "endpoints": eps,
        }))
        .unwrap()
    }

    /// One random change, applied to the world and returned as the change a source would send.
    fn step(&mut self, conv: &mut Converter) -> Change {
        let ns = NAMESPACES[self.rng.random_range(0..2)].to_string();
        match self.rng.random_range(0..10) {
            0..4 => {
                let name = format!("s{}", self.rng.random_range(0..6));
                let svc = self.random_service(&ns, &name);
                self.services.insert((ns, name), svc.clone());
                conv.service(&svc)
            }
            4 => {
                let name = format!("s{}", self.rng.random_range(0..6));
                self.services.remove(&(ns.clone(), name.clone()));
                Change::Service(key(&ns, &name), None)
            }
            5..8 => {
                let name = format!("e{}", self.rng.random_range(0..8));
                let slice = self.random_slice(&ns, &name);
                self.slices.insert((ns, name), slice.clone());
                conv.slice(&slice)
            }
            8 => {
                let name = format!("e{}", self.rng.random_range(0..8));
                self.slices.remove(&(ns.clone(), name.clone()));
                Change::Slice(key(&ns, &name), None)
            }
            _ => {
                let addrs: &[&str] = if self.rng.random_bool(0.5) {
                    &["192.168.1.1"]
                } else {
                    &["192.168.1.1", "192.168.1.2"]
                };
                self.node = node_object(addrs);
                conv.node(&self.node)
            }
        }
    }

    fn node_info(&self) -> NodeInfo {
        NodeInfo::from_node(&self.node)
    }

    fn full(&self) -> super::state::DataplaneState {
        let services: Vec<Service> = self.services.values().cloned().collect();
        let slices: Vec<EndpointSlice> = self.slices.values().cloned().collect();
        desired(&services, &slices, &self.node_info())
    }
}

fn key(ns: &str, name: &str) -> ObjKey {
    ObjKey {
        namespace: ns.into(),
        name: name.into(),
    }
}

fn node_object(addrs: &[&str]) -> Node {
    let addresses: Vec<serde_json::Value> = addrs
        .iter()
        .map(|a| json!({"type": "InternalIP", "address": a}))
        .collect();
    serde_json::from_value(json!({"metadata": {"name": "n1"}, "status": {"addresses": addresses}})).unwrap()
}

fn listed(d: &mut Desired) {
    for kind in Kind::ALL {
        d.apply(Change::Listed(kind));
    }
}

#[test]
fn incremental_state_and_plans_equal_the_full_recompute() {
    for seed in 0..12 {
        let mut world = World::new(seed);
        let mut conv = Converter::default();
        let mut inc = Desired::default();
        assert!(!inc.ready());
        listed(&mut inc);
        assert!(inc.ready());
        inc.apply(conv.node(&world.node));
        let (mut full_planner, mut delta_planner) = (Planner::default(), Planner::default());
        for step in 0..40 {
            // A few changes per sync, as a source delivers them between two syncs.
            for _ in 0..world.rng.random_range(1..4) {
                let c = world.step(&mut conv);
                inc.apply(c);
            }
            let context = format!("seed {seed} step {step}");
            let node = inc.node("n1").map(|n| n.info.clone()).unwrap();
            assert_eq!(node, world.node_info(), "{context}");
            let delta = inc.update(&node);
            let want = world.full();
            assert_eq!(inc.state(), want, "{context}: incremental state");

            let before = delta_planner.contents().clone();
            let full_ops = full_planner.plan(&want);
            let delta_ops = delta_planner.plan_delta(&delta.upserts, &delta.removed);
            assert_eq!(delta_ops, full_ops, "{context}: plan");
            let after = apply_checked(&before, &delta_ops, false);
            assert_eq!(&after, delta_planner.contents(), "{context}");
            assert_expresses(&after, &want);
        }
    }
}

#[test]
fn one_endpoint_change_recomputes_one_service() {
    let mut conv = Converter::default();
    let mut inc = Desired::default();
    listed(&mut inc);
    let node = NodeInfo {
        name: "n1".into(),
        addresses: vec![Ipv4Addr::new(192, 168, 1, 1)],
        zone: None,
    };
    let slice = |name: &str, ip: &str| -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": format!("{name}-1"),
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip]}],
        }))
        .unwrap()
    };
    for i in 0..100 {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": format!("s{i}")},
            "spec": {"clusterIP": format!("10.96.1.{i}"), "ports": [{"port": 80}]},
        }))
        .unwrap();
        inc.apply(conv.service(&svc));
        inc.apply(conv.slice(&slice(&format!("s{i}"), "10.244.0.1")));
    }
    assert_eq!(inc.update(&node).upserts.len(), 100);
    assert!(inc.update(&node).is_empty(), "nothing changed");
    // The same slice again changes nothing; a moved endpoint changes exactly its Service's frontend.
    inc.apply(conv.slice(&slice("s7", "10.244.0.1")));
    assert!(inc.update(&node).is_empty());
    inc.apply(conv.slice(&slice("s7", "10.244.0.2")));
    let delta = inc.update(&node);
    assert_eq!((delta.upserts.len(), delta.recomputed), (1, 1));
    assert_eq!(&*delta.upserts[0].origin.name, "s7");
    assert_eq!(delta.upserts[0].ready[0].addr, Ipv4Addr::new(10, 244, 0, 2));
    // Deleting the Service removes its frontend.
    inc.apply(Change::Service(key("default", "s7"), None));
    let delta = inc.update(&node);
    assert_eq!((delta.upserts.len(), delta.removed.len()), (0, 1));
    // A new node address touches every Service.
    let mut two = node.clone();
    two.addresses.push(Ipv4Addr::new(192, 168, 1, 2));
    assert!(
        inc.update(&two).is_empty(),
        "ClusterIP-only Services do not depend on node addresses"
    );
}

#[test]
fn health_ports_match_service_health_wanted() {
    for seed in 0..20 {
        let mut world = World::new(seed);
        let mut conv = Converter::default();
        let mut inc = Desired::default();
        for _ in 0..80 {
            let c = world.step(&mut conv);
            inc.apply(c);
        }
        let services: Vec<Service> = world.services.values().cloned().collect();
        let slices: Vec<EndpointSlice> = world.slices.values().cloned().collect();
        for node in ["n1", "n2"] {
            assert_eq!(
                inc.health_ports(node),
                crate::service_health::wanted(&services, &slices, node),
                "seed {seed} node {node}"
            );
        }
    }
}
