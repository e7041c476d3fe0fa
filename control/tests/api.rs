//! HTTP API behaviour against a server on 127.0.0.1:0: discovery, CRUD, errors, lists, watches, tables.

mod common;

use std::time::Duration;

use common::{Lines, TABLE_ACCEPT, call, call_with, send, server, server_with};
use hyper::StatusCode;
use serde_json::{Value, json};

const CMS: &str = "/api/v1/namespaces/default/configmaps";

fn cm(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": name}})
}

fn rv(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion")
        .parse()
        .expect("numeric")
}

#[tokio::test]
async fn discovery_documents() {
    let srv = server().await;
    let (code, version) = call(&srv, "GET", "/version", None).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        (version["major"].as_str(), version["minor"].as_str()),
        (Some("1"), Some("35"))
    );
    let (_, api) = call(&srv, "GET", "/api", None).await;
    assert_eq!(api["versions"], json!(["v1"]));
    let (_, groups) = call(&srv, "GET", "/apis", None).await;
    assert!(
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "apps")
    );
    let (_, core) = call(&srv, "GET", "/api/v1", None).await;
    let services = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "services")
        .unwrap();
    assert_eq!(services["shortNames"], json!(["svc"]));
    let (code, status) = call(&srv, "GET", "/api/v1/namespaces/default/widgets", None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(status["kind"], "Status");
    let response = send(
        &srv,
        "GET",
        "/openapi/v2",
        &[(
            "accept",
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
        )],
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    );
}

#[tokio::test]
async fn system_objects_exist_at_start() {
    let srv = server().await;
    let (_, list) = call(&srv, "GET", "/api/v1/namespaces", None).await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    let (code, svc) = call(
        &srv,
        "GET",
        "/api/v1/namespaces/default/services/kubernetes",
        None,
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(svc["spec"]["clusterIP"], "10.96.0.1");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], srv.server.addr.port());
    let (code, slice) = call(
        &srv,
        "GET",
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes",
        None,
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(slice["endpoints"][0]["addresses"][0], "127.0.0.1");
    assert_eq!(slice["ports"][0]["port"], srv.server.addr.port());
    assert_eq!(
        slice["metadata"]["labels"]["kubernetes.io/service-name"],
        "kubernetes"
    );
    let (_, endpoints) = call(
        &srv,
        "GET",
        "/api/v1/namespaces/default/endpoints/kubernetes",
        None,
    )
    .await;
    assert_eq!(
        endpoints["subsets"][0]["ports"][0]["port"],
        srv.server.addr.port()
    );
}

#[tokio::test]
async fn crud_with_optimistic_concurrency() {
    let srv = server().await;
    let (code, created) = call(&srv, "POST", CMS, Some(cm("c1", json!({})))).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    assert_eq!(created["metadata"]["namespace"], "default");
    assert_eq!(created["metadata"]["uid"].as_str().unwrap().len(), 36);
    let (code, dup) = call(&srv, "POST", CMS, Some(cm("c1", json!({})))).await;
    assert_eq!(
        (code, dup["reason"].as_str()),
        (StatusCode::CONFLICT, Some("AlreadyExists"))
    );

    let mut stale = created.clone();
    stale["data"]["k"] = json!("v2");
    let (code, updated) = call(&srv, "PUT", &format!("{CMS}/c1"), Some(stale.clone())).await;
    assert_eq!(code, StatusCode::OK);
    assert!(rv(&updated) > rv(&created));
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);
    let (code, conflict) = call(&srv, "PUT", &format!("{CMS}/c1"), Some(stale)).await;
    assert_eq!(
        (code, conflict["reason"].as_str()),
        (StatusCode::CONFLICT, Some("Conflict"))
    );

    let (code, got) = call(&srv, "GET", &format!("{CMS}/c1"), None).await;
    assert_eq!((code, got["data"]["k"].as_str()), (StatusCode::OK, Some("v2")));
    let (code, deleted) = call(
        &srv,
        "DELETE",
        &format!("{CMS}/c1"),
        Some(json!({"propagationPolicy": "Background"})),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert!(rv(&deleted) > rv(&updated));
    let (code, missing) = call(&srv, "GET", &format!("{CMS}/c1"), None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(missing["message"], "configmaps \"c1\" not found");
}

#[tokio::test]
async fn generate_name_and_namespace_checks() {
    let srv = server().await;
    let body = json!({"metadata": {"generateName": "job-"}, "data": {}});
    let (code, created) = call(&srv, "POST", CMS, Some(body.clone())).await;
    assert_eq!(code, StatusCode::CREATED);
    let name = created["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("job-") && name.len() == 9, "{name}");
    let (code, status) = call(&srv, "POST", "/api/v1/namespaces/nope/configmaps", Some(body)).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(status["message"], "namespaces \"nope\" not found");
    let (code, _) = call(
        &srv,
        "POST",
        "/api/v1/namespaces",
        Some(json!({"metadata": {"name": "team-a"}})),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);
    let (code, _) = call(
        &srv,
        "POST",
        "/api/v1/namespaces/team-a/configmaps",
        Some(cm("x", json!({}))),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);
}

#[tokio::test]
async fn bad_input_gets_status_errors() {
    let srv = server_with(|c| c.api.max_body = 4096).await;
    let response = send(&srv, "POST", CMS, &[], Some(b"{not json".to_vec())).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let big = cm("big", json!({}))
        .to_string()
        .replace("\"k\":\"big\"", &format!("\"k\":\"{}\"", "x".repeat(8192)));
    let response = send(&srv, "POST", CMS, &[], Some(big.into_bytes())).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let svc = json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80, "name": "a"}, {"port": 70000, "name": "b"}]}});
    let (code, status) = call(&srv, "POST", "/api/v1/namespaces/default/services", Some(svc)).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(status["details"]["causes"][0]["field"], "spec.ports[1].port");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("spec.ports[1].port: Invalid value: 70000: must be between 1 and 65535, inclusive")
    );

    let mut unknown = cm("u", json!({}));
    unknown["spec"] = json!({"oops": 1});
    let (code, status) = call(
        &srv,
        "POST",
        &format!("{CMS}?fieldValidation=Strict"),
        Some(unknown.clone()),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(status["message"], "strict decoding error: unknown field \"spec\"");
    let response = send(
        &srv,
        "POST",
        CMS,
        &[],
        Some(serde_json::to_vec(&unknown).unwrap()),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(
        response.headers()["warning"]
            .to_str()
            .unwrap()
            .contains("unknown field")
    );
    let (code, _) = call(
        &srv,
        "POST",
        CMS,
        Some(json!({"apiVersion": "apps/v1", "metadata": {"name": "z"}})),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn services_get_cluster_ips_and_node_ports() {
    let srv = server_with(|c| c.registry.service_cidr = "10.96.0.0/24".parse().unwrap()).await;
    let svcs = "/api/v1/namespaces/default/services";
    let body = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80}]}});
    let (code, web) = call(&srv, "POST", svcs, Some(body)).await;
    assert_eq!(code, StatusCode::CREATED, "{web}");
    let ip = web["spec"]["clusterIP"].as_str().unwrap().to_owned();
    assert!(ip.starts_with("10.96.0.") && ip != "10.96.0.1");
    assert_eq!(web["spec"]["ports"][0]["targetPort"], 80);
    assert_eq!(web["spec"]["sessionAffinity"], "None");
    let node_port = web["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    assert!((30000..=32767).contains(&node_port));

    let taken = json!({"metadata": {"name": "other"}, "spec": {"clusterIP": ip, "ports": [{"port": 80}]}});
    let (code, status) = call(&srv, "POST", svcs, Some(taken)).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("provided IP is already allocated")
    );

    // Deleting frees the address for a requested allocation.
    call(&srv, "DELETE", &format!("{svcs}/web"), None).await;
    let reuse = json!({"metadata": {"name": "again"}, "spec": {"clusterIP": ip, "ports": [{"port": 80}]}});
    let (code, _) = call(&srv, "POST", svcs, Some(reuse)).await;
    assert_eq!(code, StatusCode::CREATED);

    let (_, table) = call_with(&srv, "GET", svcs, &[("accept", TABLE_ACCEPT)], None).await;
    assert_eq!(table["kind"], "Table");
    let row = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cells"][0] == "again")
        .unwrap();
    assert_eq!(row["cells"][2], ip.as_str());
    assert_eq!(row["cells"][4], "80/TCP");
}

#[tokio::test]
async fn list_selectors_and_pagination() {
    let srv = server().await;
    for i in 0..7 {
        let tier = if i % 2 == 0 { "fe" } else { "be" };
        call(
            &srv,
            "POST",
            CMS,
            Some(cm(&format!("c{i}"), json!({"tier": tier}))),
        )
        .await;
    }
    let (_, fe) = call(&srv, "GET", &format!("{CMS}?labelSelector=tier%3Dfe"), None).await;
    assert_eq!(fe["items"].as_array().unwrap().len(), 4);
    assert_eq!(fe["kind"], "ConfigMapList");
    let (_, one) = call(
        &srv,
        "GET",
        &format!("{CMS}?fieldSelector=metadata.name%3Dc3"),
        None,
    )
    .await;
    assert_eq!(one["items"][0]["metadata"]["name"], "c3");
    let (code, _) = call(&srv, "GET", &format!("{CMS}?fieldSelector=spec.bogus%3D1"), None).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);

    let mut names = Vec::new();
    let mut path = format!("{CMS}?limit=2&labelSelector=tier");
    let mut snapshot = None;
    for _ in 0..10 {
        let (_, page) = call(&srv, "GET", &path, None).await;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        names.extend(
            items
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned()),
        );
        let page_rv = page["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
        assert_eq!(
            snapshot.get_or_insert(page_rv.clone()),
            &page_rv,
            "all pages read one snapshot"
        );
        if snapshot.is_some() && names.len() == 2 {
            // A write between pages must not show up in later pages.
            call(&srv, "POST", CMS, Some(cm("c9", json!({"tier": "fe"})))).await;
        }
        match page["metadata"]["continue"].as_str() {
            Some(token) => path = format!("{CMS}?limit=2&labelSelector=tier&continue={token}"),
            None => break,
        }
    }
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]);
}

#[tokio::test]
async fn patches_and_status_subresource() {
    let srv = server().await;
    call(&srv, "POST", CMS, Some(cm("p", json!({"a": "1"})))).await;
    let merge = [("content-type", "application/merge-patch+json")];
    let (code, patched) = call_with(
        &srv,
        "PATCH",
        &format!("{CMS}/p"),
        &merge,
        Some(json!({"metadata": {"labels": {"b": "2", "a": null}}})),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{patched}");
    assert_eq!(patched["metadata"]["labels"], json!({"b": "2"}));
    let jp = [("content-type", "application/json-patch+json")];
    let ops = json!([{"op": "replace", "path": "/data/k", "value": "new"}]);
    let (_, patched) = call_with(&srv, "PATCH", &format!("{CMS}/p"), &jp, Some(ops)).await;
    assert_eq!(patched["data"]["k"], "new");
    let (code, _) = call_with(&srv, "PATCH", &format!("{CMS}/missing"), &merge, Some(json!({}))).await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    let deploys = "/apis/apps/v1/namespaces/default/deployments";
    let d = json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}},
        "status": {"replicas": 99}});
    let (code, created) = call(&srv, "POST", deploys, Some(d)).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    assert_eq!(created["spec"]["replicas"], 1, "defaulted");
    let mut status = created.clone();
    status["status"] = json!({"replicas": 1, "readyReplicas": 1});
    status["spec"]["replicas"] = json!(5);
    let (code, after) = call(&srv, "PUT", &format!("{deploys}/web/status"), Some(status)).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(after["status"]["readyReplicas"], 1);
    assert_eq!(after["spec"]["replicas"], 1, "a status update leaves spec alone");
    let mut spec = after.clone();
    spec["spec"]["replicas"] = json!(3);
    spec["status"] = json!({});
    let (_, after) = call(&srv, "PUT", &format!("{deploys}/web"), Some(spec)).await;
    assert_eq!(after["spec"]["replicas"], 3);
    assert_eq!(
        after["status"]["readyReplicas"], 1,
        "a main update leaves status alone"
    );
    assert_eq!(after["metadata"]["generation"], 2);
}

#[tokio::test]
async fn finalizers_delay_deletion() {
    let srv = server().await;
    let mut body = cm("f", json!({}));
    body["metadata"]["finalizers"] = json!(["example.com/hold"]);
    call(&srv, "POST", CMS, Some(body)).await;
    let (code, marked) = call(&srv, "DELETE", &format!("{CMS}/f"), None).await;
    assert_eq!(
        code,
        StatusCode::OK,
        "kube-apiserver answers 200 with the marked object"
    );
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    let merge = [("content-type", "application/merge-patch+json")];
    let (code, _) = call_with(
        &srv,
        "PATCH",
        &format!("{CMS}/f"),
        &merge,
        Some(json!({"metadata": {"finalizers": null}})),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let (code, _) = call(&srv, "GET", &format!("{CMS}/f"), None).await;
    assert_eq!(
        code,
        StatusCode::NOT_FOUND,
        "removing the last finalizer deletes the object"
    );
}

#[tokio::test]
async fn watch_replays_from_resource_version_and_filters_by_label() {
    let srv = server().await;
    let (_, list) = call(&srv, "GET", CMS, None).await;
    let start = list["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
    let (_, a) = call(&srv, "POST", CMS, Some(cm("a", json!({"app": "x"})))).await;
    let mut changed = a.clone();
    changed["metadata"]["labels"] = json!({"app": "y"});
    call(&srv, "PUT", &format!("{CMS}/a"), Some(changed)).await;
    call(&srv, "DELETE", &format!("{CMS}/a"), None).await;

    let response = send(
        &srv,
        "GET",
        &format!("{CMS}?watch=1&resourceVersion={start}"),
        &[],
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut all = Lines::new(response);
    let types: Vec<String> = [all.next().await, all.next().await, all.next().await]
        .into_iter()
        .map(|e| e.unwrap()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types, ["ADDED", "MODIFIED", "DELETED"]);

    let selected = format!("{CMS}?watch=true&resourceVersion={start}&labelSelector=app%3Dx");
    let mut only_x = Lines::new(send(&srv, "GET", &selected, &[], None).await);
    let first = only_x.next().await.unwrap();
    assert_eq!(
        (
            first["type"].as_str(),
            first["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("a"))
    );
    let second = only_x.next().await.unwrap();
    assert_eq!(
        second["type"], "DELETED",
        "leaving the selector is a deletion for this watcher"
    );
    assert_eq!(second["object"]["metadata"]["labels"]["app"], "y");

    // Live events follow.
    call(&srv, "POST", CMS, Some(cm("b", json!({"app": "x"})))).await;
    let live = all.next().await.unwrap();
    assert_eq!(
        (live["type"].as_str(), live["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("b"))
    );
}

#[tokio::test]
async fn watch_initial_events_bookmark_and_timeout() {
    let srv = server_with(|c| c.api.bookmark_interval = Duration::from_millis(200)).await;
    call(&srv, "POST", CMS, Some(cm("one", json!({})))).await;
    let path = format!(
        "{CMS}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=2"
    );
    let mut events = Lines::new(send(&srv, "GET", &path, &[], None).await);
    let added = events.next().await.unwrap();
    assert_eq!(
        (
            added["type"].as_str(),
            added["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("one"))
    );
    let end = events.next().await.unwrap();
    assert_eq!(end["type"], "BOOKMARK");
    assert_eq!(
        end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(end["object"]["kind"], "ConfigMap");
    let periodic = events.next().await.unwrap();
    assert_eq!(periodic["type"], "BOOKMARK");
    // A bookmark carries a resourceVersion the watch has reached: never older than the initial-events end (other
    // writes to the store, e.g. by background bootstrap, may move it on).
    let rv = |e: &Value| {
        e["object"]["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
            .expect("a numeric resourceVersion")
    };
    assert!(rv(&periodic) >= rv(&end), "{periodic} is older than {end}");
    let started = std::time::Instant::now();
    while let Some(event) = events.next().await {
        assert_eq!(event["type"], "BOOKMARK");
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "timeoutSeconds ends the stream"
    );
}

#[tokio::test]
async fn watch_from_compacted_revision_is_410_inside_200() {
    let srv = server_with(|c| c.store.history_limit = 4).await;
    for i in 0..12 {
        call(&srv, "POST", CMS, Some(cm(&format!("x{i}"), json!({})))).await;
    }
    let response = send(
        &srv,
        "GET",
        &format!("{CMS}?watch=1&resourceVersion=2"),
        &[],
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut events = Lines::new(response);
    let error = events.next().await.unwrap();
    assert_eq!(error["type"], "ERROR");
    assert_eq!(error["object"]["code"], 410);
    assert_eq!(error["object"]["reason"], "Expired");
    assert!(events.next().await.is_none(), "the stream ends after the error");
    let (code, _) = call(
        &srv,
        "GET",
        &format!("{CMS}?resourceVersion=2&resourceVersionMatch=Exact"),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::GONE);
}

#[tokio::test]
async fn watch_as_table_for_kubectl_get_w() {
    let srv = server().await;
    let (_, list) = call_with(
        &srv,
        "GET",
        &format!("{CMS}?limit=500"),
        &[("accept", TABLE_ACCEPT)],
        None,
    )
    .await;
    let start = list["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
    let path = format!("{CMS}?watch=1&resourceVersion={start}");
    let mut events = Lines::new(send(&srv, "GET", &path, &[("accept", TABLE_ACCEPT)], None).await);
    call(&srv, "POST", CMS, Some(cm("t", json!({})))).await;
    let event = events.next().await.unwrap();
    assert_eq!(event["type"], "ADDED");
    assert_eq!(event["object"]["kind"], "Table");
    assert_eq!(event["object"]["rows"][0]["cells"][0], "t");
    assert_eq!(event["object"]["rows"][0]["cells"][1], 1);
}

#[tokio::test]
async fn state_and_allocations_survive_restart() {
    let dir = tempfile::Builder::new().prefix("skiff-ctl-").tempdir().unwrap();
    let config = control::server::ServerConfig::for_tests(dir.path().to_path_buf());
    let svcs = "/api/v1/namespaces/default/services";
    let ip = {
        let srv = common::TestServer {
            server: control::server::start(config.clone()).await.unwrap(),
            dir: tempfile::tempdir().unwrap(),
        };
        let (_, web) = call(
            &srv,
            "POST",
            svcs,
            Some(json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}})),
        )
        .await;
        web["spec"]["clusterIP"].as_str().unwrap().to_owned()
    };
    let srv = common::TestServer {
        server: common::restart(config).await,
        dir,
    };
    let (code, web) = call(&srv, "GET", &format!("{svcs}/web"), None).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(web["spec"]["clusterIP"], ip.as_str());
    let clash = json!({"metadata": {"name": "clash"}, "spec": {"clusterIP": ip, "ports": [{"port": 80}]}});
    let (code, _) = call(&srv, "POST", svcs, Some(clash)).await;
    assert_eq!(
        code,
        StatusCode::UNPROCESSABLE_ENTITY,
        "the restored allocator knows the address is taken"
    );
    let (_, slice) = call(
        &srv,
        "GET",
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes",
        None,
    )
    .await;
    assert_eq!(
        slice["ports"][0]["port"],
        srv.server.addr.port(),
        "the new port is published after a restart"
    );
    let (_, kubernetes) = call(&srv, "GET", &format!("{svcs}/kubernetes"), None).await;
    assert_eq!(
        kubernetes["spec"]["ports"][0]["targetPort"],
        srv.server.addr.port()
    );
}

#[tokio::test]
async fn namespace_deletion_empties_then_removes_it() {
    let srv = server().await;
    let (code, status) = call(&srv, "DELETE", "/api/v1/namespaces/default", None).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert!(status["message"].as_str().unwrap().contains("may not be deleted"));

    call(
        &srv,
        "POST",
        "/api/v1/namespaces",
        Some(json!({"metadata": {"name": "team"}})),
    )
    .await;
    let team = "/api/v1/namespaces/team/configmaps";
    call(&srv, "POST", team, Some(cm("plain", json!({})))).await;
    let mut held = cm("held", json!({}));
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    call(&srv, "POST", team, Some(held)).await;

    let (code, ns) = call(&srv, "DELETE", "/api/v1/namespaces/team", None).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(ns["status"]["phase"], "Terminating");
    let (code, status) = call(&srv, "POST", team, Some(cm("late", json!({})))).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{status}");

    let wait_for = |path: String| {
        let srv = &srv;
        async move {
            for _ in 0..50 {
                if call(srv, "GET", &path, None).await.0 == StatusCode::NOT_FOUND {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        }
    };
    assert!(
        wait_for(format!("{team}/plain")).await,
        "objects without finalizers are deleted"
    );
    let (code, held) = call(&srv, "GET", &format!("{team}/held"), None).await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        held["metadata"]["deletionTimestamp"].is_string(),
        "held objects are marked for deletion"
    );
    let (code, _) = call(&srv, "GET", "/api/v1/namespaces/team", None).await;
    assert_eq!(code, StatusCode::OK, "the namespace waits for the finalizer");

    let merge = [("content-type", "application/merge-patch+json")];
    call_with(
        &srv,
        "PATCH",
        &format!("{team}/held"),
        &merge,
        Some(json!({"metadata": {"finalizers": null}})),
    )
    .await;
    assert!(
        wait_for("/api/v1/namespaces/team".to_owned()).await,
        "the namespace goes once it is empty"
    );
}

#[tokio::test]
async fn load_balancers_get_addresses_from_the_pool() {
    let srv = server_with(|c| c.registry.lb_pool = Some("192.168.77.0/29".parse().unwrap())).await;
    let svcs = "/api/v1/namespaces/default/services";
    let body = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}});
    let (code, lb) = call(&srv, "POST", svcs, Some(body)).await;
    assert_eq!(code, StatusCode::CREATED, "{lb}");
    let ip = lb["status"]["loadBalancer"]["ingress"][0]["ip"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(ip.starts_with("192.168.77."), "{ip}");
    assert!(
        lb["spec"]["ports"][0]["nodePort"].is_u64(),
        "LoadBalancers get NodePorts too"
    );
    let (_, table) = call_with(
        &srv,
        "GET",
        &format!("{svcs}/lb"),
        &[("accept", TABLE_ACCEPT)],
        None,
    )
    .await;
    assert_eq!(table["rows"][0]["cells"][3], ip.as_str());
    let pinned = json!({"metadata": {"name": "pinned"}, "spec": {"type": "LoadBalancer", "loadBalancerIP": ip, "ports": [{"port": 80}]}});
    let (code, _) = call(&srv, "POST", svcs, Some(pinned.clone())).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "the address is taken");
    call(&srv, "DELETE", &format!("{svcs}/lb"), None).await;
    let (code, again) = call(&srv, "POST", svcs, Some(pinned)).await;
    assert_eq!(
        code,
        StatusCode::CREATED,
        "deletion returned the address to the pool"
    );
    assert_eq!(again["status"]["loadBalancer"]["ingress"][0]["ip"], ip.as_str());
}

#[tokio::test]
async fn bookmarks_advance_with_writes_elsewhere() {
    let srv = server_with(|c| c.api.bookmark_interval = Duration::from_millis(300)).await;
    let (_, list) = call(&srv, "GET", CMS, None).await;
    let start: u64 = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let path = format!("{CMS}?watch=1&resourceVersion={start}&allowWatchBookmarks=true&timeoutSeconds=3");
    let mut events = Lines::new(send(&srv, "GET", &path, &[], None).await);
    let mut last_write = 0;
    for i in 0..5 {
        let (_, svc) = call(
            &srv,
            "POST",
            "/api/v1/namespaces/default/services",
            Some(json!({"metadata": {"name": format!("s{i}")}, "spec": {"ports": [{"port": 80}]}})),
        )
        .await;
        last_write = rv(&svc);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut newest = start;
    while let Some(event) = events.next().await {
        assert_eq!(event["type"], "BOOKMARK", "no configmap changed");
        newest = newest.max(
            event["object"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap(),
        );
    }
    assert!(
        newest > start,
        "bookmarks moved past the start ({start}) as other kinds changed"
    );
    assert!(newest <= last_write);
}

#[tokio::test]
async fn dry_run_and_delete_collection() {
    let srv = server().await;
    let (code, dry) = call(
        &srv,
        "POST",
        &format!("{CMS}?dryRun=All"),
        Some(cm("ghost", json!({}))),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);
    assert_eq!(dry["metadata"]["name"], "ghost");
    let (code, _) = call(&srv, "GET", &format!("{CMS}/ghost"), None).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "dry-run stores nothing");

    for (name, app) in [("a", "x"), ("b", "x"), ("c", "y")] {
        call(&srv, "POST", CMS, Some(cm(name, json!({"app": app})))).await;
    }
    let (code, deleted) = call(&srv, "DELETE", &format!("{CMS}?labelSelector=app%3Dx"), None).await;
    assert_eq!(code, StatusCode::OK);
    let names: Vec<&str> = deleted["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    let (_, left) = call(&srv, "GET", CMS, None).await;
    let left: Vec<&str> = left["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(left, ["c"]);
    let (code, _) = call(&srv, "DELETE", "/api/v1/namespaces", None).await;
    assert_eq!(
        code,
        StatusCode::METHOD_NOT_ALLOWED,
        "namespaces have no deletecollection"
    );
}

#[tokio::test]
async fn default_roles_regain_missing_rules_on_restart_unless_opted_out() {
    let dir = tempfile::Builder::new().prefix("skiff-ctl-").tempdir().unwrap();
    let config = control::server::ServerConfig::for_tests(dir.path().to_path_buf());
    let role = |name: &str| format!("/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}");
    let full_rules = {
        let srv = common::TestServer {
            server: control::server::start(config.clone()).await.unwrap(),
            dir: tempfile::tempdir().unwrap(),
        };
        // An older data dir: system:node lost its last rule; view was trimmed and opted out of updates.
        let (_, mut node) = call(&srv, "GET", &role("system:node"), None).await;
        let full = node["rules"].clone();
        node["rules"].as_array_mut().unwrap().pop();
        let (code, _) = call(&srv, "PUT", &role("system:node"), Some(node)).await;
        assert_eq!(code, StatusCode::OK);
        let (_, mut view) = call(&srv, "GET", &role("system:aggregate-to-view"), None).await;
        view["rules"] = json!([]);
        view["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] = json!("false");
        let (code, _) = call(&srv, "PUT", &role("system:aggregate-to-view"), Some(view)).await;
        assert_eq!(code, StatusCode::OK);
        full
    };
    let srv = common::TestServer {
        server: common::restart(config).await,
        dir,
    };
    let (_, node) = call(&srv, "GET", &role("system:node"), None).await;
    assert_eq!(node["rules"], full_rules, "the missing rule is back");
    let (_, view) = call(&srv, "GET", &role("system:aggregate-to-view"), None).await;
    assert_eq!(view["rules"], json!([]), "an opted-out role is left as it is");
}
