//! Invalid objects get a 422 Status naming the field in kube-apiserver's words; valid ones and status writes pass.

mod common;

use common::{TestServer, call, server};
use hyper::StatusCode;
use serde_json::{Value, json};

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";
const PODS: &str = "/api/v1/namespaces/default/pods";

fn deployment(name: &str, selector: Value, labels: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": labels},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]}}}
    })
}

/// Sends `body` and expects a 422 Invalid Status whose causes name exactly `fields`; returns the Status.
async fn invalid(srv: &TestServer, method: &str, path: &str, body: Value, fields: &[&str]) -> Value {
    let (code, status) = call(srv, method, path, Some(body)).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{status}");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(status["code"], 422);
    let causes: Vec<&str> = status["details"]["causes"]
        .as_array()
        .expect("causes")
        .iter()
        .map(|c| c["field"].as_str().expect("field"))
        .collect();
    assert_eq!(causes, fields, "{status}");
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_objects_are_refused_with_the_field_named() {
    let srv = server().await;

    let status = invalid(
        &srv,
        "POST",
        DEPLOYMENTS,
        deployment("web", json!({"app": "web"}), json!({"app": "other"})),
        &["spec.template.metadata.labels"],
    )
    .await;
    assert_eq!(
        status["message"],
        "Deployment \"web\" is invalid: spec.template.metadata.labels: Invalid value: \
         {\"app\":\"other\"}: `selector` does not match template `labels`"
    );
    assert_eq!(status["details"]["causes"][0]["reason"], "FieldValueInvalid");

    let mut zero = deployment("zero", json!({"app": "web"}), json!({"app": "web"}));
    zero["spec"]["strategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}});
    zero["spec"]["replicas"] = json!(-1);
    let status = invalid(
        &srv,
        "POST",
        DEPLOYMENTS,
        zero,
        &["spec.replicas", "spec.strategy.rollingUpdate.maxUnavailable"],
    )
    .await;
    assert_eq!(
        status["details"]["causes"][1]["message"],
        "Invalid value: 0: may not be 0 when `maxSurge` is 0"
    );

    let pod = json!({"metadata": {"name": "p", "labels": {"a b": "c"}}, "spec": {"containers": [
        {"name": "c", "image": "busybox", "ports": [{"containerPort": 70000}]},
        {"name": "c", "image": ""},
    ]}});
    let status = invalid(
        &srv,
        "POST",
        PODS,
        pod,
        &[
            "metadata.labels",
            "spec.containers[0].ports[0].containerPort",
            "spec.containers[1].name",
            "spec.containers[1].image",
        ],
    )
    .await;
    let reasons: Vec<&Value> = status["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["reason"])
        .collect();
    assert_eq!(
        reasons,
        [
            "FieldValueInvalid",
            "FieldValueInvalid",
            "FieldValueDuplicate",
            "FieldValueRequired"
        ]
    );

    let cm = json!({"metadata": {"name": "c"}, "data": {"a/b": "x"}});
    invalid(
        &srv,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        cm,
        &["data[a/b]"],
    )
    .await;

    let slice =
        json!({"metadata": {"name": "s"}, "addressType": "IP", "endpoints": [{"addresses": ["10.0.0.1"]}]});
    let status = invalid(
        &srv,
        "POST",
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
        slice,
        &["addressType"],
    )
    .await;
    assert_eq!(status["details"]["causes"][0]["reason"], "FieldValueNotSupported");

    // Nothing of the refused objects was stored.
    let (code, _) = call(&srv, "GET", &format!("{DEPLOYMENTS}/web"), None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_keep_immutable_fields_and_status_writes_pass() {
    let srv = server().await;
    let (code, created) = call(
        &srv,
        "POST",
        DEPLOYMENTS,
        Some(deployment("web", json!({"app": "web"}), json!({"app": "web"}))),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{created}");

    let mut moved = created.clone();
    moved["spec"]["selector"] = json!({"matchLabels": {"app": "web", "v": "2"}});
    moved["spec"]["template"]["metadata"]["labels"] = json!({"app": "web", "v": "2"});
    let status = invalid(
        &srv,
        "PUT",
        &format!("{DEPLOYMENTS}/web"),
        moved,
        &["spec.selector"],
    )
    .await;
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .ends_with("field is immutable"),
        "{status}"
    );

    // A status write does not re-run the spec rules, and counters are checked.
    let mut with_status = created.clone();
    with_status["status"] = json!({"replicas": 1, "observedGeneration": 1});
    let (code, body) = call(
        &srv,
        "PUT",
        &format!("{DEPLOYMENTS}/web/status"),
        Some(with_status),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let mut negative = body.clone();
    negative["status"]["replicas"] = json!(-1);
    invalid(
        &srv,
        "PUT",
        &format!("{DEPLOYMENTS}/web/status"),
        negative,
        &["status.replicas"],
    )
    .await;

    let pod =
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}});
    let (code, pod) = call(&srv, "POST", PODS, Some(pod)).await;
    assert_eq!(code, StatusCode::CREATED, "{pod}");
    let mut image = pod.clone();
    image["spec"]["containers"][0]["image"] = json!("busybox:2");
    image["metadata"]["labels"] = json!({"tier": "debug"});
    let (code, image) = call(&srv, "PUT", &format!("{PODS}/p"), Some(image)).await;
    assert_eq!(code, StatusCode::OK, "{image}");
    let mut port = image.clone();
    port["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80}]);
    let status = invalid(&srv, "PUT", &format!("{PODS}/p"), port, &["spec"]).await;
    assert_eq!(status["details"]["causes"][0]["reason"], "FieldValueForbidden");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("pod updates may not change fields other than `spec.containers[*].image`"),
        "{status}"
    );

    // The scheduler's binding still assigns the node.
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n1"}});
    let (code, body) = call(&srv, "POST", &format!("{PODS}/p/binding"), Some(binding)).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_shows_the_invalid_field() {
    let srv = server().await;
    let binary = common::kubectl::kubectl();
    let home = tempfile::Builder::new()
        .prefix("skiff-ctl-home-")
        .tempdir()
        .unwrap();
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: {}\ncontexts:\n- name: t\n  \
         context:\n    cluster: t\n    user: u\n    namespace: default\ncurrent-context: t\nusers:\n- name: u\n  user: {{}}\n",
        srv.server.url()
    );
    std::fs::write(home.path().join("config"), config).unwrap();
    let manifest =
        serde_json::to_string(&deployment("bad", json!({"app": "web"}), json!({"app": "other"}))).unwrap();
    std::fs::write(home.path().join("bad.json"), manifest).unwrap();
    let mut cmd = std::process::Command::new(binary);
    cmd.args(["apply", "-f", "bad.json", "--request-timeout=10s"])
        .env("KUBECONFIG", home.path().join("config"))
        .env("HOME", home.path())
        .current_dir(home.path());
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run kubectl"))
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "The Deployment \"bad\" is invalid: spec.template.metadata.labels: Invalid value: \
             {\"app\":\"other\"}: `selector` does not match template `labels`"
        ),
        "{stderr}"
    );
}
