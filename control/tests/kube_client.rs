//! kube-rs (the agent's client) against the server: typed CRUD, list, and watchers with and without streaming lists.

mod common;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Config};

async fn client(srv: &common::TestServer) -> Client {
    let config = Config::new(srv.server.url().parse().expect("url"));
    Client::try_from(config).expect("client")
}

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": "kube-test"}},
        "data": {"k": "v"}
    }))
    .unwrap()
}

#[tokio::test]
async fn typed_crud_and_list() {
    let srv = common::server().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&srv).await, "default");
    let created = api
        .create(&PostParams::default(), &cm("a"))
        .await
        .expect("create");
    assert!(created.metadata.resource_version.is_some());
    let err = api.create(&PostParams::default(), &cm("a")).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 409), "{err:?}");
    let patched = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"k": "patched"}})),
        )
        .await
        .expect("patch");
    assert_eq!(patched.data.unwrap()["k"], "patched");
    api.create(&PostParams::default(), &cm("b")).await.unwrap();
    let list = api
        .list(&ListParams::default().labels("app=kube-test"))
        .await
        .expect("list");
    let names: Vec<_> = list
        .items
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    api.delete("a", &DeleteParams::default()).await.expect("delete");
    let err = api.get("a").await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 404), "{err:?}");

    let services: Api<Service> = Api::namespaced(client(&srv).await, "default");
    let kubernetes = services.get("kubernetes").await.expect("kubernetes service");
    assert_eq!(kubernetes.spec.unwrap().cluster_ip.as_deref(), Some("10.96.0.1"));
}

async fn watch_sees_changes(config: watcher::Config) {
    let srv = common::server().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&srv).await, "default");
    api.create(&PostParams::default(), &cm("before")).await.unwrap();
    let mut stream = watcher::watcher(api.clone(), config).boxed();
    let mut initial = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match event {
            Event::Init => {}
            Event::InitApply(o) => initial.push(o.metadata.name.unwrap()),
            Event::InitDone => break,
            other => panic!("unexpected {other:?} during init"),
        }
    }
    assert_eq!(initial, ["before"]);
    api.create(&PostParams::default(), &cm("after")).await.unwrap();
    api.delete("before", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Event::Apply(o) => seen.push(format!("apply {}", o.metadata.name.unwrap())),
            Event::Delete(o) => seen.push(format!("delete {}", o.metadata.name.unwrap())),
            _ => {}
        }
    }
    assert_eq!(seen, ["apply after", "delete before"]);
}

#[tokio::test]
async fn watcher_with_list_then_watch() {
    watch_sees_changes(watcher::Config::default()).await;
}

#[tokio::test]
async fn watcher_with_streaming_lists() {
    watch_sees_changes(watcher::Config::default().streaming_lists()).await;
}

#[tokio::test]
async fn watcher_relists_after_410() {
    let srv = common::server_with(|c| c.store.history_limit = 4).await;
    let api: Api<ConfigMap> = Api::namespaced(client(&srv).await, "default");
    api.create(&PostParams::default(), &cm("first")).await.unwrap();
    // A short server-side timeout makes the watcher reconnect from the revision it last saw.
    let mut stream = watcher::watcher(api.clone(), watcher::Config::default().timeout(1)).boxed();
    let mut inits = 0;
    let mut relisted = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::time::Instant::now() < deadline {
        let item = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("watcher item")
            .unwrap();
        match item {
            Ok(Event::Init) => inits += 1,
            Ok(Event::InitApply(o)) if inits == 2 => relisted.push(o.metadata.name.unwrap()),
            Ok(Event::InitDone) if inits == 1 => {
                // Move the store far past the watcher's revision while it only sees ConfigMaps.
                let other: Api<Service> = Api::namespaced(client(&srv).await, "default");
                for i in 0..12 {
                    let svc: Service = serde_json::from_value(serde_json::json!({
                        "metadata": {"name": format!("s{i}")}, "spec": {"ports": [{"port": 80}]}
                    }))
                    .unwrap();
                    other.create(&PostParams::default(), &svc).await.unwrap();
                }
                api.create(&PostParams::default(), &cm("second")).await.unwrap();
            }
            Ok(Event::InitDone) if inits == 2 => break,
            Ok(_) | Err(_) => {}
        }
    }
    assert_eq!(inits, 2, "the watcher re-listed after its revision expired");
    assert_eq!(relisted, ["first", "second"]);
}
