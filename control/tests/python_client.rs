//! The Python `kubernetes` client over HTTPS with the generated kubeconfig: list, create, watch pods.

mod common;

use control::server::{Security, ServerConfig, start};

const SCRIPT: &str = r#"
import sys
from kubernetes import client, config, watch

config.load_kube_config(config_file=sys.argv[1])
api = client.CoreV1Api()
names = sorted(n.metadata.name for n in api.list_namespace().items)
assert names == ["default", "kube-node-lease", "kube-public", "kube-system"], names
pod = client.V1Pod(
    metadata=client.V1ObjectMeta(name="py-pod", labels={"app": "py"}),
    spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="agnhost")]),
)
created = api.create_namespaced_pod("default", pod)
assert created.status.phase == "Pending", created.status
seen = []
w = watch.Watch()
for event in w.stream(api.list_namespaced_pod, "default", label_selector="app=py", timeout_seconds=10):
    seen.append(event["type"] + " " + event["object"].metadata.name)
    if len(seen) == 1:
        api.delete_namespaced_pod("py-pod", "default")
    if event["type"] == "DELETED":
        w.stop()
print(",".join(seen))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_create_and_watch_pods() {
    let python = tokio::task::spawn_blocking(common::python::python).await.unwrap();
    let dir = tempfile::Builder::new().prefix("skiff-ctl-").tempdir().unwrap();
    let mut config = ServerConfig::for_tests(dir.path().to_path_buf());
    config.security = Security::Tls { hosts: vec![] };
    let srv = start(config).await.expect("TLS server starts");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, srv.pki.as_ref().unwrap().kubeconfig(&srv.url())).unwrap();
    let script = dir.path().join("client.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(&script)
            .arg(&kubeconfig)
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "ADDED py-pod,DELETED py-pod");
}
