//! Compatibility with a real kubectl v1.35: apply with default validation, get -o wide/yaml, get -w, delete.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

const MANIFEST: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: c1
data:
  greeting: hello
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web
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
        args: ["netexec", "--http-port=8080"]
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: 8080
"#;

struct Kubectl {
    binary: std::path::PathBuf,
    home: tempfile::TempDir,
}

impl Kubectl {
    fn new(srv: &common::TestServer) -> Self {
        let binary = common::kubectl::kubectl();
        let home = tempfile::Builder::new()
            .prefix("skiff-ctl-home-")
            .tempdir()
            .unwrap();
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: {}\ncontexts:\n- name: t\n  context:\n    cluster: t\n    user: u\n    namespace: default\ncurrent-context: t\nusers:\n- name: u\n  user: {{}}\n",
            srv.server.url()
        );
        std::fs::write(home.path().join("config"), config).unwrap();
        std::fs::write(home.path().join("manifest.yaml"), MANIFEST).unwrap();
        Self { binary, home }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.args(args)
            .env("KUBECONFIG", self.home.path().join("config"))
            .env("HOME", self.home.path())
            .current_dir(self.home.path())
            .args(["--request-timeout=10s"]);
        cmd
    }

    /// Runs kubectl off the async runtime and returns stdout; panics with stderr on failure.
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

    async fn output(&self, args: &[&str]) -> Output {
        let mut cmd = self.command(args);
        tokio::task::spawn_blocking(move || cmd.output().expect("run kubectl"))
            .await
            .unwrap()
    }

    fn path(&self, name: &str) -> String {
        self.home.path().join(name).display().to_string()
    }
}

fn line_with<'a>(output: &'a str, needle: &str) -> &'a str {
    output
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{output}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_get_watch_delete() {
    let srv = common::server().await;
    let k = Kubectl::new(&srv);
    let manifest = k.path("manifest.yaml");

    let out = k.ok(&["apply", "-f", &manifest]).await;
    assert!(out.contains("configmap/c1 created"), "{out}");
    assert!(out.contains("deployment.apps/web created"), "{out}");
    assert!(out.contains("service/web created"), "{out}");
    let again = k.ok(&["apply", "-f", &manifest]).await;
    assert!(again.contains("configmap/c1 unchanged"), "{again}");
    assert!(again.contains("service/web unchanged"), "{again}");

    let svc = k.ok(&["get", "svc", "-o", "wide"]).await;
    let header = svc.lines().next().unwrap();
    for column in [
        "NAME",
        "TYPE",
        "CLUSTER-IP",
        "EXTERNAL-IP",
        "PORT(S)",
        "AGE",
        "SELECTOR",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let web = line_with(&svc, "web");
    assert!(
        web.contains("NodePort") && web.contains("10.96.") && web.contains("app=web"),
        "{web}"
    );
    assert!(web.contains("80:3"), "a NodePort is shown: {web}");

    let deploy = k.ok(&["get", "deploy", "web", "-o", "wide"]).await;
    let row = line_with(&deploy, "web");
    assert!(
        row.contains("0/2") && row.contains("agnhost:2.52") && row.contains("app=web"),
        "{deploy}"
    );

    let yaml = k.ok(&["get", "cm", "c1", "-o", "yaml"]).await;
    assert!(
        yaml.contains("greeting: hello") && yaml.contains("name: c1") && yaml.contains("resourceVersion:"),
        "{yaml}"
    );

    let ns = k.ok(&["get", "ns"]).await;
    assert!(line_with(&ns, "kube-system").contains("Active"), "{ns}");

    // get -w streams changes made by another client.
    let mut watch = k.command(&["get", "cm", "-w", "--request-timeout=0"]);
    watch.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = watch.spawn().expect("kubectl get -w");
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Not `kubectl create configmap`: typed clients in kubectl 1.35 send protobuf bodies (not served yet).
    let streamed = k.path("streamed.yaml");
    std::fs::write(
        &streamed,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: streamed\n",
    )
    .unwrap();
    k.ok(&["apply", "-f", &streamed]).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    child.kill().expect("stop kubectl get -w");
    let watched = child.wait_with_output().unwrap();
    let watched = String::from_utf8_lossy(&watched.stdout);
    assert!(watched.contains("c1"), "initial list: {watched}");
    assert!(watched.contains("streamed"), "streamed event: {watched}");

    let out = k.ok(&["delete", "-f", &manifest, "--timeout=10s"]).await;
    assert!(out.contains("configmap \"c1\" deleted"), "{out}");
    assert!(out.contains("service \"web\" deleted"), "{out}");
    let after = k.output(&["get", "cm", "c1"]).await;
    assert!(!after.status.success());
    assert!(
        String::from_utf8_lossy(&after.stderr).contains("NotFound"),
        "{after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_annotate_scale_describe_and_discovery() {
    let srv = common::server().await;
    let k = Kubectl::new(&srv);
    k.ok(&["apply", "-f", &k.path("manifest.yaml")]).await;

    let out = k.ok(&["label", "cm", "c1", "team=blue"]).await;
    assert!(out.contains("configmap/c1 labeled"), "{out}");
    let out = k.ok(&["get", "cm", "-l", "team=blue", "-o", "name"]).await;
    assert_eq!(out.trim(), "configmap/c1");
    let out = k.ok(&["annotate", "svc", "web", "note=hi"]).await;
    assert!(out.contains("service/web annotated"), "{out}");
    let out = k
        .ok(&["get", "svc", "web", "-o", "jsonpath={.metadata.annotations.note}"])
        .await;
    assert_eq!(out, "hi");

    let out = k.ok(&["scale", "deploy", "web", "--replicas=5"]).await;
    assert!(out.contains("deployment.apps/web scaled"), "{out}");
    let out = k
        .ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"])
        .await;
    assert_eq!(out, "5");

    let out = k.ok(&["describe", "svc", "web"]).await;
    assert!(
        out.contains("Name:") && out.contains("web") && out.contains("Selector:") && out.contains("app=web"),
        "{out}"
    );
    assert!(out.contains("NodePort:"), "{out}");

    let out = k.ok(&["api-resources"]).await;
    let deployments = line_with(&out, "deployments");
    assert!(
        deployments.contains("deploy") && deployments.contains("apps/v1") && deployments.contains("true"),
        "{out}"
    );
    assert!(
        line_with(&out, "endpointslices").contains("discovery.k8s.io/v1"),
        "{out}"
    );

    let out = k.ok(&["get", "all", "-A"]).await;
    assert!(out.contains("service/kubernetes"), "{out}");
    assert!(out.contains("deployment.apps/web"), "{out}");

    let out = k.ok(&["explain", "deployment.spec.replicas"]).await;
    assert!(
        out.contains("KIND:") && out.contains("Deployment") && out.contains("replicas"),
        "{out}"
    );
    let out = k.ok(&["explain", "pods.spec.containers"]).await;
    assert!(out.contains("FIELDS:") && out.contains("image"), "{out}");

    let out = k.ok(&["cluster-info"]).await;
    assert!(out.contains("is running at"), "{out}");
}

const NODE_AND_POD: &str = r#"
apiVersion: v1
kind: Node
metadata:
  name: node-1
  labels:
    node-role.kubernetes.io/worker: ""
---
apiVersion: v1
kind: Pod
metadata:
  name: p1
  labels:
    app: web
spec:
  containers:
  - name: c
    image: registry.k8s.io/pause:3.10
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_server_side_apply_json_and_describe() {
    let srv = common::server().await;
    let k = Kubectl::new(&srv);
    let extra = k.path("node-pod.yaml");
    std::fs::write(&extra, NODE_AND_POD).unwrap();
    let out = k.ok(&["create", "-f", &extra]).await;
    assert!(
        out.contains("node/node-1 created") && out.contains("pod/p1 created"),
        "{out}"
    );

    let out = k
        .ok(&["apply", "--server-side", "-f", &k.path("manifest.yaml")])
        .await;
    assert!(out.contains("deployment.apps/web serverside-applied"), "{out}");
    let out = k
        .ok(&["apply", "--server-side", "-f", &k.path("manifest.yaml")])
        .await;
    assert!(out.contains("configmap/c1 serverside-applied"), "{out}");

    let json = k.ok(&["get", "cm", "c1", "-o", "json"]).await;
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["data"]["greeting"], "hello");

    let out = k.ok(&["get", "nodes"]).await;
    let row = line_with(&out, "node-1");
    assert!(row.contains("Unknown") && row.contains("worker"), "{out}");
    for (what, needle) in [("node", "node-1"), ("pod", "p1"), ("deployment", "web")] {
        let out = k.ok(&["describe", what, needle]).await;
        assert!(
            out.contains("Name:") && out.contains(needle),
            "describe {what}: {out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_changes_merge_strategically() {
    let srv = common::server().await;
    let k = Kubectl::new(&srv);
    k.ok(&["apply", "-f", &k.path("manifest.yaml")]).await;
    let changed = MANIFEST
        .replace("agnhost:2.52", "agnhost:2.53")
        .replace(
            "    app: web\nspec:\n  replicas: 2",
            "    tier: frontend\nspec:\n  replicas: 3",
        )
        .replace(
            "  - name: http\n    port: 80\n    targetPort: 8080\n",
            "  - name: http\n    port: 80\n    targetPort: 8080\n  - name: metrics\n    port: 9090\n",
        );
    assert_ne!(changed, MANIFEST);
    let path = k.path("changed.yaml");
    std::fs::write(&path, changed).unwrap();
    let out = k.ok(&["apply", "-f", &path]).await;
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    assert!(out.contains("service/web configured"), "{out}");
    assert!(out.contains("configmap/c1 unchanged"), "{out}");

    let deploy = k.ok(&["get", "deploy", "web", "-o", "json"]).await;
    let deploy: serde_json::Value = serde_json::from_str(&deploy).unwrap();
    assert_eq!(deploy["spec"]["replicas"], 3);
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.k8s.io/e2e-test-images/agnhost:2.53"
    );
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
        8080
    );
    assert_eq!(
        deploy["metadata"]["labels"],
        serde_json::json!({"tier": "frontend"}),
        "the removed label is gone"
    );
    assert_eq!(deploy["metadata"]["generation"], 2);

    let ports = k
        .ok(&["get", "svc", "web", "-o", "jsonpath={.spec.ports[*].port}"])
        .await;
    assert_eq!(ports, "80 9090");
    let node_ports = k
        .ok(&["get", "svc", "web", "-o", "jsonpath={.spec.ports[*].nodePort}"])
        .await;
    assert_eq!(
        node_ports.split(' ').count(),
        2,
        "both ports have NodePorts: {node_ports}"
    );
}
