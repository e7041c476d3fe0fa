//! EndpointSlice controller against a running server: slices and Endpoints follow Services and pod state.

mod controllers_common;

use control::controllers::ControllerOptions;
use controllers_common::{cluster, create_pod, eventually, fake_node, set_pod_status};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

const NO_SCHEDULER: ControllerOptions = ControllerOptions {
    endpointslice: true,
    replicaset: false,
    scheduler: false,
    ..ControllerOptions::NONE
};

async fn create_service(client: &Client, name: &str, selector: Option<serde_json::Value>) {
    let mut spec = json!({"ports": [{"name": "http", "port": 80, "targetPort": "web"}]});
    if let Some(sel) = selector {
        spec["selector"] = sel;
    }
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap();
    Api::<Service>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &svc)
        .await
        .expect("create service");
}

async fn slices_of(client: &Client, svc: &str) -> Vec<EndpointSlice> {
    Api::<EndpointSlice>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={svc}")))
        .await
        .expect("list slices")
        .items
}

fn web_pod(name: &str, port: i32) -> serde_json::Value {
    json!({"metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx",
            "ports": [{"name": "web", "containerPort": port}]}]}})
}

#[tokio::test]
async fn slices_follow_pods_and_service_lifecycle() {
    let c = cluster(NO_SCHEDULER).await;
    fake_node(
        &c.client,
        "n1",
        json!({"topology.kubernetes.io/zone": "z1"}),
        json!({"cpu": "4", "memory": "8Gi", "pods": "110"}),
    )
    .await;
    create_service(&c.client, "web", Some(json!({"app": "web"}))).await;

    // No pods yet: one empty slice.
    let empty = eventually(10, "empty slice", || async {
        slices_of(&c.client, "web").await.into_iter().next()
    })
    .await;
    assert!(empty.endpoints.is_empty());
    assert_eq!(
        empty.metadata.labels.as_ref().unwrap()["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );

    create_pod(&c.client, web_pod("a", 8080)).await;
    create_pod(&c.client, web_pod("b", 8081)).await;
    set_pod_status(&c.client, "a", "10.244.0.10", true).await;
    set_pod_status(&c.client, "b", "10.244.0.11", false).await;

    // Named target port resolved per pod: two port sets, two slices.
    let slices = eventually(10, "two slices with endpoints", || async {
        let s = slices_of(&c.client, "web").await;
        (s.len() == 2 && s.iter().all(|s| s.endpoints.len() == 1)).then_some(s)
    })
    .await;
    let mut seen: Vec<(String, i32, bool, Option<String>)> = slices
        .iter()
        .map(|s| {
            let e = &s.endpoints[0];
            (
                e.addresses[0].clone(),
                s.ports.as_ref().unwrap()[0].port.unwrap(),
                e.conditions.as_ref().unwrap().ready.unwrap(),
                e.zone.clone(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("10.244.0.10".to_owned(), 8080, true, Some("z1".to_owned())),
            ("10.244.0.11".to_owned(), 8081, false, Some("z1".to_owned())),
        ]
    );

    // Legacy Endpoints mirror the slices.
    let endpoints: Api<Endpoints> = Api::namespaced(c.client.clone(), "default");
    let ep = eventually(10, "endpoints with both pods", || async {
        let ep = endpoints.get_opt("web").await.unwrap()?;
        let count: usize = ep
            .subsets
            .iter()
            .flatten()
            .map(|s| s.addresses.iter().flatten().count() + s.not_ready_addresses.iter().flatten().count())
            .sum();
        (count == 2).then_some(ep)
    })
    .await;
    let subsets = ep.subsets.unwrap();
    let ready: Vec<_> = subsets
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .map(|a| a.ip.clone())
        .collect();
    let not_ready: Vec<_> = subsets
        .iter()
        .flat_map(|s| s.not_ready_addresses.iter().flatten())
        .map(|a| a.ip.clone())
        .collect();
    assert_eq!(
        (ready, not_ready),
        (vec!["10.244.0.10".to_owned()], vec!["10.244.0.11".to_owned()])
    );

    // Readiness changes reach the slice.
    set_pod_status(&c.client, "b", "10.244.0.11", true).await;
    eventually(10, "b ready", || async {
        let s = slices_of(&c.client, "web").await;
        s.iter()
            .all(|s| {
                s.endpoints
                    .iter()
                    .all(|e| e.conditions.as_ref().unwrap().ready == Some(true))
            })
            .then_some(())
    })
    .await;

    // Deleting the Service removes its slices and Endpoints.
    Api::<Service>::namespaced(c.client.clone(), "default")
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually(10, "slices gone", || async {
        slices_of(&c.client, "web").await.is_empty().then_some(())
    })
    .await;
    eventually(10, "endpoints gone", || async {
        endpoints.get_opt("web").await.unwrap().is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn services_without_selector_are_left_alone_and_many_pods_are_packed() {
    let c = cluster(NO_SCHEDULER).await;
    create_service(&c.client, "manual", None).await;
    create_service(&c.client, "web", Some(json!({"app": "web"}))).await;
    for i in 0..120 {
        create_pod(&c.client, web_pod(&format!("p{i:03}"), 8080)).await;
        set_pod_status(
            &c.client,
            &format!("p{i:03}"),
            &format!("10.244.1.{}", i + 1),
            true,
        )
        .await;
    }
    let slices = eventually(20, "120 endpoints in two slices", || async {
        let s = slices_of(&c.client, "web").await;
        let mut sizes: Vec<usize> = s.iter().map(|s| s.endpoints.len()).collect();
        sizes.sort();
        (sizes == [20, 100]).then_some(s)
    })
    .await;
    assert!(slices.iter().all(|s| s.endpoints.len() <= 100));
    assert!(slices_of(&c.client, "manual").await.is_empty());
    let endpoints: Api<Endpoints> = Api::namespaced(c.client.clone(), "default");
    assert!(endpoints.get_opt("manual").await.unwrap().is_none());
    // The bootstrap `kubernetes` Endpoints are not touched.
    assert!(endpoints.get_opt("kubernetes").await.unwrap().is_some());
}
