//! Server-side apply and managedFields with a real kubectl v1.35, kube-rs and raw HTTP; strict duplicate fields.

mod common;

use std::process::{Command, Output};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Config};
use serde_json::{Value, json};

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web
    tier: frontend
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: registry.k8s.io/e2e-test-images/agnhost:2.52
        ports:
        - containerPort: 8080
"#;

struct Kubectl {
    binary: std::path::PathBuf,
    home: tempfile::TempDir,
}

impl Kubectl {
    fn new(srv: &common::TestServer) -> Self {
        let binary = common::kubectl::kubectl();
        let home = tempfile::Builder::new()
            .prefix("skiff-ssa-home-")
            .tempdir()
            .unwrap();
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: {}\ncontexts:\n- name: t\n  context:\n    cluster: t\n    user: u\n    namespace: default\ncurrent-context: t\nusers:\n- name: u\n  user: {{}}\n",
            srv.server.url()
        );
        std::fs::write(home.path().join("config"), config).unwrap();
        Self { binary, home }
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.home.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    async fn output(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.binary);
        cmd.args(args)
            .env("KUBECONFIG", self.home.path().join("config"))
            .env("HOME", self.home.path())
            .args(["--request-timeout=10s"]);
        tokio::task::spawn_blocking(move || cmd.output().expect("run kubectl"))
            .await
            .unwrap()
    }

    async fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args).await;
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json", "--show-managed-fields"]);
        serde_json::from_str(&self.ok(&all).await).unwrap()
    }
}

fn managers(object: &Value) -> Vec<(String, String)> {
    object["metadata"]["managedFields"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    (
                        e["manager"].as_str().unwrap_or_default().to_owned(),
                        e["operation"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_server_side_apply_owns_removes_and_conflicts() {
    let srv = common::server().await;
    let k = Kubectl::new(&srv);
    let file = k.write("web.yaml", DEPLOYMENT);

    let out = k.ok(&["apply", "--server-side", "-f", &file]).await;
    assert!(out.contains("deployment.apps/web serverside-applied"), "{out}");
    let first = k.json(&["get", "deploy", "web"]).await;
    assert_eq!(managers(&first), vec![("kubectl".to_owned(), "Apply".to_owned())]);
    let fields = &first["metadata"]["managedFields"][0]["fieldsV1"];
    assert!(
        fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]["f:image"]
            .is_object(),
        "containers are owned by name: {fields}"
    );

    k.ok(&["apply", "--server-side", "-f", &file]).await;
    let again = k.json(&["get", "deploy", "web"]).await;
    assert_eq!(
        again["metadata"]["resourceVersion"], first["metadata"]["resourceVersion"],
        "re-applying the same manifest changes nothing"
    );

    let without_tier = k.write("web.yaml", &DEPLOYMENT.replace("    tier: frontend\n", ""));
    k.ok(&["apply", "--server-side", "-f", &without_tier]).await;
    let labels = k.json(&["get", "deploy", "web"]).await["metadata"]["labels"].clone();
    assert_eq!(
        labels,
        json!({"app": "web"}),
        "a label no longer applied is removed"
    );

    k.ok(&["scale", "deploy", "web", "--replicas=5"]).await;
    let scaled = k.json(&["get", "deploy", "web"]).await;
    let who = managers(&scaled);
    assert_eq!(who.len(), 2, "the applier and the scaler: {who:?}");
    assert!(
        who.contains(&("kubectl".to_owned(), "Apply".to_owned())),
        "{who:?}"
    );
    let scaler = who.iter().find(|(_, op)| op == "Update").unwrap().0.clone();
    let yaml = k
        .ok(&["get", "deploy", "web", "-o", "yaml", "--show-managed-fields"])
        .await;
    assert!(
        yaml.contains("manager: kubectl\n") && yaml.contains(&format!("manager: {scaler}\n")),
        "{yaml}"
    );

    let out = k.output(&["apply", "--server-side", "-f", &without_tier]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the apply must conflict");
    assert!(
        stderr.contains("conflict") && stderr.contains(".spec.replicas") && stderr.contains(&scaler),
        "{stderr}"
    );
    assert_eq!(k.json(&["get", "deploy", "web"]).await["spec"]["replicas"], 5);

    k.ok(&["apply", "--server-side", "--force-conflicts", "-f", &without_tier])
        .await;
    let forced = k.json(&["get", "deploy", "web"]).await;
    assert_eq!(forced["spec"]["replicas"], 2);
    assert_eq!(
        managers(&forced),
        vec![("kubectl".to_owned(), "Apply".to_owned())],
        "the scaler lost its only field"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_client_side_apply_keeps_working_and_is_recorded() {
    let srv = common::server().await;
    let k = Kubectl::new(&srv);
    let file = k.write("web.yaml", DEPLOYMENT);
    let out = k.ok(&["apply", "-f", &file]).await;
    assert!(out.contains("deployment.apps/web created"), "{out}");
    let created = k.json(&["get", "deploy", "web"]).await;
    assert!(
        created["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].is_string()
    );
    assert_eq!(
        managers(&created),
        vec![("kubectl-client-side-apply".to_owned(), "Update".to_owned())]
    );
    let changed = k.write("web.yaml", &DEPLOYMENT.replace("    tier: frontend\n", ""));
    let out = k.ok(&["apply", "-f", &changed]).await;
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    let after = k.json(&["get", "deploy", "web"]).await;
    assert_eq!(after["metadata"]["labels"], json!({"app": "web"}));
    let entry = &after["metadata"]["managedFields"][0];
    assert!(entry["fieldsV1"]["f:metadata"]["f:labels"]["f:app"].is_object());
    assert!(
        entry["fieldsV1"]["f:metadata"]["f:labels"]
            .get("f:tier")
            .is_none()
    );
    assert_eq!(entry["apiVersion"], "apps/v1");
    assert_eq!(entry["fieldsType"], "FieldsV1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_moves_from_client_side_to_server_side_apply() {
    let srv = common::server().await;
    let k = Kubectl::new(&srv);
    let file = k.write("web.yaml", DEPLOYMENT);
    k.ok(&["apply", "-f", &file]).await;
    let changed = k.write("web.yaml", &DEPLOYMENT.replace("replicas: 2", "replicas: 3"));
    let out = k.output(&["apply", "--server-side", "-f", &changed]).await;
    assert!(
        out.status.success(),
        "kubectl hands the client-side apply fields to the server-side manager: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = k.json(&["get", "deploy", "web"]).await;
    assert_eq!(after["spec"]["replicas"], 3);
    assert!(
        managers(&after).contains(&("kubectl".to_owned(), "Apply".to_owned())),
        "{:?}",
        managers(&after)
    );
}

async fn client(srv: &common::TestServer) -> Client {
    Client::try_from(Config::new(srv.server.url().parse().expect("url"))).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_patch_apply_creates_updates_and_conflicts() {
    let srv = common::server().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&srv).await, "default");
    let config = |value: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"mode": value}});
    let mine = PatchParams::apply("skiff-test");
    let created = api
        .patch("settings", &mine, &Patch::Apply(config("a")))
        .await
        .unwrap();
    assert_eq!(created.data.unwrap()["mode"], "a");
    let updated = api
        .patch("settings", &mine, &Patch::Apply(config("b")))
        .await
        .unwrap();
    assert_eq!(updated.data.unwrap()["mode"], "b");

    let theirs = PatchParams::apply("other");
    let err = api
        .patch("settings", &theirs, &Patch::Apply(config("c")))
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err:?}")
    };
    assert_eq!(status.code, 409);
    assert!(
        status
            .message
            .contains("conflict with \"skiff-test\": .data.mode"),
        "{}",
        status.message
    );
    let same = api
        .patch("settings", &theirs, &Patch::Apply(config("b")))
        .await
        .unwrap();
    let shared = same.metadata.managed_fields.unwrap();
    assert_eq!(shared.len(), 2, "both managers own data.mode with the same value");
    let forced = api
        .patch("settings", &theirs.clone().force(), &Patch::Apply(config("c")))
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["mode"], "c");
    let owners: Vec<String> = forced
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|e| e.manager)
        .collect();
    assert_eq!(owners, vec!["other".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_over_http_needs_a_manager_and_applies_status() {
    let srv = common::server().await;
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\ndata:\n  a: '1'\n";
    let path = "/api/v1/namespaces/default/configmaps/y";
    let apply = [("content-type", "application/apply-patch+yaml")];
    let response = common::send(&srv, "PATCH", path, &apply, Some(yaml.into())).await;
    assert_eq!(
        response.status(),
        422,
        "apply without fieldManager (PatchOptions are invalid)"
    );

    let with_manager = format!("{path}?fieldManager=yaml-test");
    let response = common::send(&srv, "PATCH", &with_manager, &apply, Some(yaml.into())).await;
    assert_eq!(response.status(), 201, "apply creates");
    let (code, cm) = common::call(&srv, "GET", path, None).await;
    assert_eq!(code, 200);
    assert_eq!(cm["data"], json!({"a": "1"}));
    assert_eq!(cm["metadata"]["managedFields"][0]["manager"], "yaml-test");
    assert_eq!(cm["metadata"]["managedFields"][0]["operation"], "Apply");

    let dup = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\ndata:\n  a: '1'\n  a: '2'\n";
    let strict = format!("{with_manager}&fieldValidation=Strict");
    let (code, status) = {
        let body = dup.as_bytes().to_vec();
        let response = common::send(&srv, "PATCH", &strict, &apply, Some(body)).await;
        let code = response.status();
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        (code, serde_json::from_slice::<Value>(&bytes).unwrap())
    };
    assert_eq!(code, 400);
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("duplicate field \"data.a\""),
        "{status}"
    );

    let (code, _) = common::call(
        &srv,
        "POST",
        "/api/v1/namespaces/default/pods",
        Some(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})),
    )
    .await;
    assert_eq!(code, 201);
    let status_apply =
        r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "status": {"phase": "Running"}}"#;
    let response = common::send(
        &srv,
        "PATCH",
        "/api/v1/namespaces/default/pods/p/status?fieldManager=kubelet",
        &apply,
        Some(status_apply.into()),
    )
    .await;
    assert_eq!(response.status(), 200);
    let (_, pod) = common::call(&srv, "GET", "/api/v1/namespaces/default/pods/p", None).await;
    assert_eq!(pod["status"]["phase"], "Running");
    let entries = pod["metadata"]["managedFields"].as_array().unwrap();
    let kubelet = entries.iter().find(|e| e["manager"] == "kubelet").unwrap();
    assert_eq!(kubelet["subresource"], "status");
    assert_eq!(kubelet["fieldsV1"], json!({"f:status": {"f:phase": {}}}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_decoding_rejects_duplicate_json_fields() {
    let srv = common::server().await;
    let body = br#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "d"}, "data": {"x": "1", "x": "2"}}"#;
    let strict = "/api/v1/namespaces/default/configmaps?fieldValidation=Strict";
    let response = common::send(&srv, "POST", strict, &[], Some(body.to_vec())).await;
    assert_eq!(response.status(), 400);
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let status: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        status["message"],
        "strict decoding error: duplicate field \"data.x\""
    );

    let warn = "/api/v1/namespaces/default/configmaps?fieldValidation=Warn";
    let response = common::send(&srv, "POST", warn, &[], Some(body.to_vec())).await;
    assert_eq!(response.status(), 201);
    let warning = response.headers()["warning"].to_str().unwrap().to_owned();
    assert!(warning.contains("duplicate field"), "{warning}");

    let (code, cm) = common::call(&srv, "GET", "/api/v1/namespaces/default/configmaps/d", None).await;
    assert_eq!(code, 200);
    assert_eq!(cm["data"]["x"], "2", "the last duplicate wins, like kube");
    let entry = &cm["metadata"]["managedFields"][0];
    assert_eq!(entry["operation"], "Update");
    assert_eq!(entry["fieldsV1"], json!({"f:data": {"f:x": {}}}));
}
