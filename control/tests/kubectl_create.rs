//! kubectl's generator subcommands send protobuf bodies: `kubectl create namespace|configmap|secret|deployment` work.

mod common;

use std::process::Command;

fn kubectl(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(common::kubectl::kubectl())
        .args(["--request-timeout=10s"])
        .args(args)
        .env("KUBECONFIG", home.join("config"))
        .env("HOME", home)
        .output()
        .expect("run kubectl")
}

async fn ok(home: &std::path::Path, args: &[&str]) -> String {
    let (home, owned) = (
        home.to_path_buf(),
        args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>(),
    );
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = owned.iter().map(String::as_str).collect();
        kubectl(&home, &args)
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generator_subcommands_create_objects_from_protobuf() {
    let srv = common::server().await;
    let home = tempfile::Builder::new()
        .prefix("skiff-ctl-home-")
        .tempdir()
        .unwrap();
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: {}\ncontexts:\n- name: t\n  context:\n    cluster: t\n    user: u\n    namespace: default\ncurrent-context: t\nusers:\n- name: u\n  user: {{}}\n",
        srv.server.url()
    );
    std::fs::write(home.path().join("config"), config).unwrap();
    let home = home.path();

    assert_eq!(
        ok(home, &["create", "namespace", "x"]).await.trim(),
        "namespace/x created"
    );
    let (_, ns) = common::call(&srv, "GET", "/api/v1/namespaces/x", None).await;
    assert_eq!(ns["status"]["phase"], "Active", "{ns}");

    let out = ok(
        home,
        &[
            "create",
            "configmap",
            "c",
            "-n",
            "x",
            "--from-literal=a=b",
            "--from-literal=n=1",
        ],
    )
    .await;
    assert_eq!(out.trim(), "configmap/c created");
    let (_, cm) = common::call(&srv, "GET", "/api/v1/namespaces/x/configmaps/c", None).await;
    assert_eq!(cm["data"], serde_json::json!({"a": "b", "n": "1"}));

    ok(home, &["create", "secret", "generic", "s", "--from-literal=k=v"]).await;
    let (_, secret) = common::call(&srv, "GET", "/api/v1/namespaces/default/secrets/s", None).await;
    assert_eq!(
        (secret["data"]["k"].as_str(), secret["type"].as_str()),
        (Some("dg=="), Some("Opaque"))
    );

    let out = ok(
        home,
        &[
            "create",
            "deployment",
            "d",
            "--image=agnhost",
            "--replicas=3",
            "--port=8080",
            "--",
            "netexec",
        ],
    )
    .await;
    assert_eq!(out.trim(), "deployment.apps/d created");
    let (_, d) = common::call(
        &srv,
        "GET",
        "/apis/apps/v1/namespaces/default/deployments/d",
        None,
    )
    .await;
    assert_eq!(d["spec"]["replicas"], 3, "{d}");
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "d", "{d}");
    assert_eq!(d["spec"]["template"]["metadata"]["labels"]["app"], "d", "{d}");
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        (c["name"].as_str(), c["image"].as_str()),
        (Some("agnhost"), Some("agnhost")),
        "{d}"
    );
    assert_eq!(c["command"], serde_json::json!(["netexec"]), "{d}");
    assert_eq!(c["ports"][0]["containerPort"], 8080, "{d}");

    // `kubectl create service`: ports named "<port>-<target>" (DNS labels), selector app=<name>, the type.
    let out = ok(
        home,
        &[
            "create",
            "service",
            "nodeport",
            "web",
            "--tcp=80:8080",
            "--node-port=30555",
        ],
    )
    .await;
    assert_eq!(out.trim(), "service/web created");
    let (_, svc) = common::call(&srv, "GET", "/api/v1/namespaces/default/services/web", None).await;
    assert_eq!(svc["spec"]["type"], "NodePort", "{svc}");
    assert_eq!(svc["spec"]["selector"]["app"], "web", "{svc}");
    let port = &svc["spec"]["ports"][0];
    assert_eq!(
        (
            &port["name"],
            &port["port"],
            &port["targetPort"],
            &port["nodePort"]
        ),
        (
            &serde_json::json!("80-8080"),
            &serde_json::json!(80),
            &serde_json::json!(8080),
            &serde_json::json!(30555)
        ),
        "{svc}"
    );
    assert!(
        svc["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.96.")),
        "{svc}"
    );
    let out = ok(
        home,
        &["create", "service", "clusterip", "headless", "--clusterip=None"],
    )
    .await;
    assert_eq!(out.trim(), "service/headless created");
    let out = ok(
        home,
        &[
            "create",
            "service",
            "externalname",
            "ext",
            "--external-name=example.org",
        ],
    )
    .await;
    assert_eq!(out.trim(), "service/ext created");
    let (_, ext) = common::call(&srv, "GET", "/api/v1/namespaces/default/services/ext", None).await;
    assert_eq!(ext["spec"]["externalName"], "example.org", "{ext}");

    // Same name again: the protobuf path reports AlreadyExists like the JSON one.
    let again = kubectl(home, &["create", "namespace", "x"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("AlreadyExists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}
