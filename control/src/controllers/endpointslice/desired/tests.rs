use std::collections::HashMap;

use serde_json::json;

use super::*;

fn svc(extra: serde_json::Value) -> Service {
    let mut v = json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "svc-uid", "labels": {"app": "web"}},
        "spec": {"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
            {"name": "metrics", "port": 9090, "targetPort": 9100, "protocol": "TCP"}
        ]}
    });
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn pod(name: &str, ip: &str, ready: bool, http_port: i32) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x",
            "ports": [{"name": "http", "containerPort": http_port, "protocol": "TCP"}]}]},
        "status": {"podIP": ip, "phase": "Running",
            "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
    }))
    .unwrap()
}

fn zones() -> HashMap<String, String> {
    HashMap::from([("n1".to_owned(), "zone-a".to_owned())])
}

fn conditions(e: &Endpoint) -> (bool, bool, bool) {
    let c = e.conditions.clone().unwrap();
    (c.ready.unwrap(), c.serving.unwrap(), c.terminating.unwrap())
}

#[test]
fn ready_pod_becomes_endpoint_with_resolved_named_port_node_and_zone() {
    let p = pod("a", "10.244.0.5", true, 8080);
    let out = slices(&svc(json!({})), &[&p], &zones());
    assert_eq!(out.len(), 1);
    let s = &out[0];
    assert_eq!(s.metadata.name.as_deref(), Some("web-0"));
    let labels = s.metadata.labels.clone().unwrap();
    assert_eq!(labels[SERVICE_NAME_LABEL], "web");
    assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
    assert_eq!(s.metadata.owner_references.as_ref().unwrap()[0].uid, "svc-uid");
    let ports: Vec<_> = s
        .ports
        .clone()
        .unwrap()
        .iter()
        .map(|p| (p.name.clone().unwrap(), p.port.unwrap()))
        .collect();
    assert_eq!(ports, [("http".to_owned(), 8080), ("metrics".to_owned(), 9100)]);
    let e = &s.endpoints[0];
    assert_eq!(e.addresses, ["10.244.0.5"]);
    assert_eq!(conditions(e), (true, true, false));
    assert_eq!(e.node_name.as_deref(), Some("n1"));
    assert_eq!(e.zone.as_deref(), Some("zone-a"));
    assert_eq!(e.target_ref.as_ref().unwrap().name.as_deref(), Some("a"));
}

#[test]
fn not_ready_terminating_and_publish_not_ready() {
    let not_ready = pod("a", "10.0.0.1", false, 80);
    let mut terminating = pod("b", "10.0.0.2", true, 80);
    terminating.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    ));
    let out = slices(&svc(json!({})), &[&not_ready, &terminating], &zones());
    let c: Vec<_> = out[0].endpoints.iter().map(conditions).collect();
    assert_eq!(c, [(false, false, false), (false, true, true)]);
    let ep = endpoints(&svc(json!({})), &out);
    let subset = &ep.subsets.unwrap()[0];
    assert!(subset.addresses.is_none());
    assert_eq!(
        subset.not_ready_addresses.as_ref().unwrap().len(),
        1,
        "terminating pods are left out"
    );

    let publish = svc(json!({"spec": {"publishNotReadyAddresses": true}}));
    let out = slices(&publish, &[&not_ready, &terminating], &zones());
    let c: Vec<_> = out[0].endpoints.iter().map(conditions).collect();
    assert_eq!(c, [(true, true, false), (true, true, true)]);
}

#[test]
fn pods_without_ip_or_match_or_finished_are_left_out_and_empty_service_gets_one_slice() {
    let mut no_ip = pod("a", "", true, 80);
    no_ip.status.as_mut().unwrap().pod_ip = None;
    let mut other = pod("b", "10.0.0.2", true, 80);
    other.metadata.labels = Some([("app".to_owned(), "db".to_owned())].into());
    let mut done = pod("c", "10.0.0.3", true, 80);
    done.status.as_mut().unwrap().phase = Some("Succeeded".to_owned());
    let out = slices(&svc(json!({})), &[&no_ip, &other, &done], &zones());
    assert_eq!(out.len(), 1);
    assert!(out[0].endpoints.is_empty());
    assert_eq!(out[0].metadata.name.as_deref(), Some("web-0"));
    assert!(endpoints(&svc(json!({})), &out).subsets.is_none());
}

#[test]
fn packs_at_most_100_per_slice_and_splits_by_port_set() {
    let pods: Vec<Pod> = (0..250)
        .map(|i| {
            pod(
                &format!("p{i:03}"),
                &format!("10.0.{}.{}", i / 200, i % 200 + 1),
                true,
                8080,
            )
        })
        .collect();
    let mut odd = pod("zz", "10.1.0.1", true, 9999);
    odd.metadata.name = Some("zz".to_owned());
    let mut refs: Vec<&Pod> = pods.iter().collect();
    refs.push(&odd);
    let out = slices(&svc(json!({})), &refs, &zones());
    let sizes: Vec<_> = out.iter().map(|s| s.endpoints.len()).collect();
    assert_eq!(sizes, [100, 100, 50, 1]);
    let names: Vec<_> = out.iter().map(|s| s.metadata.name.clone().unwrap()).collect();
    assert_eq!(names, ["web-0", "web-1", "web-2", "web-3"]);
    assert_eq!(out[3].ports.as_ref().unwrap()[0].port, Some(9999));
    assert_eq!(
        out[0].endpoints[0].target_ref.as_ref().unwrap().name.as_deref(),
        Some("p000")
    );
    let ep = endpoints(&svc(json!({})), &out);
    let subsets = ep.subsets.unwrap();
    assert_eq!(subsets.len(), 2);
    assert_eq!(subsets[0].addresses.as_ref().unwrap().len(), 250);
}

#[test]
fn named_port_missing_on_a_pod_drops_only_that_port() {
    let mut p = pod("a", "10.0.0.1", true, 80);
    p.spec.as_mut().unwrap().containers[0].ports = None;
    let out = slices(&svc(json!({})), &[&p], &zones());
    let ports: Vec<_> = out[0]
        .ports
        .clone()
        .unwrap()
        .iter()
        .map(|p| p.port.unwrap())
        .collect();
    assert_eq!(ports, [9100]);
}

#[test]
fn services_without_selector_are_not_managed() {
    let mut s = svc(json!({}));
    assert!(is_managed(&s));
    s.spec.as_mut().unwrap().selector = None;
    assert!(!is_managed(&s));
    assert!(!selects(&s, &pod("a", "10.0.0.1", true, 80)));
}

#[test]
fn headless_label_and_hostname_for_subdomain() {
    let s = svc(json!({"spec": {"clusterIP": "None"}}));
    let mut p = pod("a", "10.0.0.1", true, 80);
    p.spec.as_mut().unwrap().hostname = Some("a-host".to_owned());
    p.spec.as_mut().unwrap().subdomain = Some("web".to_owned());
    let out = slices(&s, &[&p], &zones());
    assert!(
        out[0]
            .metadata
            .labels
            .as_ref()
            .unwrap()
            .contains_key(HEADLESS_LABEL)
    );
    assert_eq!(out[0].endpoints[0].hostname.as_deref(), Some("a-host"));
}
