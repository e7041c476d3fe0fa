//! Node controllers against a running server with fake nodes: pod CIDRs (distinct, kept across a restart,
//! freed on delete, exhaustion reported), Lease-driven lifecycle (Unknown, unreachable taint, pods not ready
//! and out of EndpointSlices, eviction after the toleration, recovery) and pod GC. The test renews the Leases
//! itself, as node agents would.

mod controllers_common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use control::controllers::{self, ControllerOptions, nodeipam::IpamConfig, nodelifecycle::Timings};
use controllers_common::{cluster, create_pod, eventually, fake_node, set_pod_status};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

const ALLOCATABLE: &str = r#"{"cpu": "4", "memory": "8Gi", "pods": "110"}"#;

async fn node(client: &Client, name: &str) {
    fake_node(
        client,
        name,
        json!({}),
        serde_json::from_str(ALLOCATABLE).unwrap(),
    )
    .await;
}

fn pod_cidr(n: &Node) -> Option<String> {
    n.spec.as_ref()?.pod_cidr.clone()
}

/// Waits until every named node has a pod CIDR; returns them in the same order.
async fn cidrs(client: &Client, names: &[&str]) -> Vec<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    eventually(10, &format!("pod CIDRs for {names:?}"), || async {
        let mut out = Vec::new();
        for n in names {
            let node = nodes.get(n).await.ok()?;
            let cidr = pod_cidr(&node)?;
            assert_eq!(
                node.spec.as_ref().unwrap().pod_cidrs.as_deref(),
                Some(std::slice::from_ref(&cidr)),
                "podCIDRs mirrors podCIDR"
            );
            out.push(cidr);
        }
        Some(out)
    })
    .await
}

const IPAM_ONLY: ControllerOptions = ControllerOptions {
    nodeipam: true,
    ..ControllerOptions::NONE
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_cidrs_are_distinct_kept_across_restart_and_freed() {
    let dir = tempfile::Builder::new().prefix("skiff-ctl-").tempdir().unwrap();
    let config = control::server::ServerConfig::for_tests(dir.path().to_path_buf());
    let first = {
        let server = control::server::start(config.clone()).await.unwrap();
        let ctl = controllers::start_for(&server, IPAM_ONLY).await.unwrap();
        let client = controllers::client(&server.url(), None).await.unwrap();
        for n in ["n1", "n2", "n3"] {
            node(&client, n).await;
        }
        let got = cidrs(&client, &["n1", "n2", "n3"]).await;
        let distinct: BTreeSet<&String> = got.iter().collect();
        assert_eq!(distinct.len(), 3, "{got:?}");
        for c in &got {
            assert!(c.starts_with("10.244.") && c.ends_with(".0/24"), "{c}");
        }
        Api::<Node>::all(client.clone())
            .delete("n2", &DeleteParams::default())
            .await
            .unwrap();
        drop(ctl);
        drop(server);
        got
    };
    // Restarted: the survivors keep their ranges, the freed one is reused, and nothing is handed out twice.
    let server = controllers_common::common::restart(config).await;
    let _ctl = controllers::start_for(&server, IPAM_ONLY).await.unwrap();
    let client = controllers::client(&server.url(), None).await.unwrap();
    let kept = cidrs(&client, &["n1", "n3"]).await;
    assert_eq!(kept, [first[0].clone(), first[2].clone()]);
    node(&client, "n4").await;
    node(&client, "n5").await;
    let all = cidrs(&client, &["n1", "n3", "n4", "n5"]).await;
    let distinct: BTreeSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), 4, "{all:?}");
    assert!(
        all[2..].contains(&first[1]),
        "the deleted node's range is reused: {all:?} {first:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_cluster_cidr_is_reported() {
    let options = ControllerOptions {
        ipam: IpamConfig {
            cluster_cidr: "10.250.0.0/23".parse().unwrap(),
            node_mask: 24,
        },
        ..IPAM_ONLY
    };
    let c = cluster(options).await;
    for n in ["a", "b", "c"] {
        node(&c.client, n).await;
    }
    let got = cidrs(&c.client, &["a", "b"]).await;
    assert_eq!(got, ["10.250.0.0/24", "10.250.1.0/24"]);
    let events: Api<Event> = Api::namespaced(c.client.clone(), "default");
    let note = eventually(10, "CIDRNotAvailable event", || async {
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("CIDRNotAvailable"))
            .and_then(|e| {
                assert_eq!(e.regarding.as_ref()?.name.as_deref(), Some("c"));
                e.note
            })
    })
    .await;
    assert!(note.contains("10.250.0.0/23"), "{note}");
    let nodes: Api<Node> = Api::all(c.client.clone());
    assert_eq!(pod_cidr(&nodes.get("c").await.unwrap()), None);
    // Deleting a node frees a range for the waiting one.
    nodes.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(cidrs(&c.client, &["c"]).await, ["10.250.0.0/24"]);
}

/// Renews the Leases of the named nodes every 300 ms while their flag is set.
fn heartbeats(client: &Client, nodes: &[(&str, Arc<AtomicBool>)]) -> tokio::task::JoinHandle<()> {
    let client = client.clone();
    let nodes: Vec<(String, Arc<AtomicBool>)> =
        nodes.iter().map(|(n, f)| ((*n).to_owned(), f.clone())).collect();
    tokio::spawn(async move {
        let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
        loop {
            for (name, alive) in &nodes {
                if !alive.load(Ordering::SeqCst) {
                    continue;
                }
                let now = Timestamp::now().to_string();
                let renew = json!({"spec": {"holderIdentity": name, "renewTime": now}});
                match leases
                    .patch(name, &PatchParams::default(), &Patch::Merge(renew))
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        let lease: Lease = serde_json::from_value(json!({
                            "metadata": {"name": name, "namespace": "kube-node-lease"},
                            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now}}))
                        .unwrap();
                        let _ = leases.create(&PostParams::default(), &lease).await;
                    }
                    Err(e) => eprintln!("renewing lease {name}: {e}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
}

fn condition<'a>(n: &'a Node, type_: &str) -> Option<&'a k8s_openapi::api::core::v1::NodeCondition> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn pod_ready(p: &Pod) -> Option<bool> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    Some(c.status == "True")
}

/// Ready endpoint addresses of the Service's slices.
async fn ready_endpoints(client: &Client, service: &str) -> BTreeSet<String> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let list = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .unwrap();
    list.items
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .flat_map(|e| e.addresses.iter().cloned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_node_becomes_unknown_tainted_and_its_pods_are_evicted() {
    let options = ControllerOptions {
        endpointslice: true,
        nodelifecycle: true,
        node_timings: Timings {
            grace: Duration::from_secs(2),
            not_ready_toleration: Duration::from_secs(3),
            unreachable_toleration: Duration::from_secs(3),
        },
        ..ControllerOptions::NONE
    };
    let c = cluster(options).await;
    let alive1 = Arc::new(AtomicBool::new(true));
    let alive2 = Arc::new(AtomicBool::new(true));
    let beats = heartbeats(&c.client, &[("n1", alive1.clone()), ("n2", alive2.clone())]);
    node(&c.client, "n1").await;
    node(&c.client, "n2").await;
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
    )
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Service>::namespaced(c.client.clone(), "default")
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    let pods = [
        ("on-n1", "n1", json!([]), "10.244.1.2"),
        ("default-toleration", "n2", json!([]), "10.244.2.2"),
        (
            "tolerates-forever",
            "n2",
            json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}]),
            "10.244.2.3",
        ),
    ];
    for (name, node, tolerations, ip) in &pods {
        create_pod(
            &c.client,
            json!({"metadata": {"name": name, "labels": {"app": "web"}},
                "spec": {"nodeName": node, "tolerations": tolerations,
                    "containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}]}]}}),
        )
        .await;
        set_pod_status(&c.client, name, ip, true).await;
    }
    let all: BTreeSet<String> = pods.iter().map(|p| p.3.to_owned()).collect();
    eventually(10, "three ready endpoints", || async {
        (ready_endpoints(&c.client, "web").await == all).then_some(())
    })
    .await;
    // Heartbeats keep both nodes healthy past the grace period.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let nodes: Api<Node> = Api::all(c.client.clone());
    for n in ["n1", "n2"] {
        let node = nodes.get(n).await.unwrap();
        assert_eq!(condition(&node, "Ready").unwrap().status, "True", "{n}");
        assert!(
            node.spec.and_then(|s| s.taints).unwrap_or_default().is_empty(),
            "{n}"
        );
    }

    // n2 goes silent.
    alive2.store(false, Ordering::SeqCst);
    let silenced = std::time::Instant::now();
    let tainted = eventually(10, "n2 Unknown and tainted", || async {
        let node = nodes.get("n2").await.unwrap();
        let ready = condition(&node, "Ready")?;
        let taints = node.spec.as_ref()?.taints.clone().unwrap_or_default();
        (ready.status == "Unknown" && taints.len() == 2).then_some(node)
    })
    .await;
    assert!(
        silenced.elapsed() >= Duration::from_millis(1200),
        "tainted before the grace period"
    );
    let ready = condition(&tainted, "Ready").unwrap();
    assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
    assert_eq!(
        ready.message.as_deref(),
        Some("Kubelet stopped posting node status.")
    );
    let taints = tainted.spec.unwrap().taints.unwrap();
    let no_execute = taints
        .iter()
        .find(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute")
        .expect("unreachable NoExecute taint");
    assert!(
        taints
            .iter()
            .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoSchedule")
    );
    let tainted_at = no_execute.time_added.clone().expect("timeAdded").0;

    // Its pods turn not ready and leave the Service's endpoints; n1's pod stays.
    let api: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    eventually(10, "n2's pods not ready", || async {
        let a = api.get("default-toleration").await.ok()?;
        let b = api.get("tolerates-forever").await.ok()?;
        (pod_ready(&a) == Some(false) && pod_ready(&b) == Some(false)).then_some(())
    })
    .await;
    eventually(10, "only n1's endpoint ready", || async {
        (ready_endpoints(&c.client, "web").await == BTreeSet::from(["10.244.1.2".to_owned()])).then_some(())
    })
    .await;
    assert_eq!(pod_ready(&api.get("on-n1").await.unwrap()), Some(true));
    assert_eq!(
        condition(&nodes.get("n1").await.unwrap(), "Ready")
            .unwrap()
            .status,
        "True"
    );

    // After the 3 s default toleration the plain pod is evicted; the tolerating one stays.
    let evicted = |p: Option<Pod>| p.is_none_or(|p| p.metadata.deletion_timestamp.is_some());
    eventually(10, "eviction", || async {
        evicted(api.get_opt("default-toleration").await.unwrap()).then_some(())
    })
    .await;
    let waited = Timestamp::now().duration_since(tainted_at);
    assert!(
        waited >= k8s_openapi::jiff::SignedDuration::from_millis(2900),
        "evicted {waited:?} after the taint"
    );
    assert!(!evicted(api.get_opt("tolerates-forever").await.unwrap()));
    assert!(!evicted(api.get_opt("on-n1").await.unwrap()));
    let events: Api<Event> = Api::namespaced(c.client.clone(), "default");
    let eviction = eventually(5, "TaintManagerEviction event", || async {
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("TaintManagerEviction"))
    })
    .await;
    assert_eq!(
        eviction.note.as_deref(),
        Some("Marking for deletion Pod default/default-toleration")
    );

    // Heartbeats again: the taints go.
    alive2.store(true, Ordering::SeqCst);
    eventually(10, "n2 untainted", || async {
        let node = nodes.get("n2").await.unwrap();
        node.spec?.taints.unwrap_or_default().is_empty().then_some(())
    })
    .await;
    assert!(!evicted(api.get_opt("tolerates-forever").await.unwrap()));
    beats.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_gc_force_deletes_orphans_and_out_of_service_pods() {
    let c = cluster(ControllerOptions {
        podgc: true,
        ..ControllerOptions::NONE
    })
    .await;
    node(&c.client, "n1").await;
    let api: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let spec = |node: &str| json!({"nodeName": node, "containers": [{"name": "c", "image": "nginx"}]});
    create_pod(
        &c.client,
        json!({"metadata": {"name": "orphan"}, "spec": spec("ghost")}),
    )
    .await;
    create_pod(
        &c.client,
        json!({"metadata": {"name": "kept"}, "spec": spec("n1")}),
    )
    .await;
    create_pod(
        &c.client,
        json!({"metadata": {"name": "stuck"}, "spec": spec("n1")}),
    )
    .await;
    eventually(10, "orphan force-deleted", || async {
        api.get_opt("orphan").await.unwrap().is_none().then_some(())
    })
    .await;

    // n1 shuts down: not ready and out-of-service; the pod being deleted there is finished by pod GC.
    let nodes: Api<Node> = Api::all(c.client.clone());
    let status =
        json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Shutdown"}]}});
    nodes
        .patch_status("n1", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
    let taint = json!({"spec": {"taints": [{"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown",
        "effect": "NoExecute"}]}});
    nodes
        .patch("n1", &PatchParams::default(), &Patch::Merge(taint))
        .await
        .unwrap();
    api.delete("stuck", &DeleteParams::default()).await.unwrap();
    eventually(10, "terminating pod force-deleted", || async {
        api.get_opt("stuck").await.unwrap().is_none().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kept = api.get("kept").await.unwrap();
    assert!(
        kept.metadata.deletion_timestamp.is_none(),
        "pods not being deleted stay"
    );
    assert_eq!(kept.name_any(), "kept");
}
