//! ServiceAccount tokens with a real kubectl: every namespace gets a `default` ServiceAccount, `kubectl create
//! token` issues a JWT that authenticates as the account (and is authorized by its bindings), TokenReview
//! validates it, and expired, garbage and deleted-account tokens get 401.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use control::auth::tokens::{TokenIssuer, TokenSpec};
use serde_json::{Value, json};

type Cluster = common::tls_cluster::TlsCluster;

async fn unauthorized(c: &Cluster, config: &Path) {
    let out = c.kubectl(config, &["get", "pods"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("You must be logged in to the server") || stderr.contains("Unauthorized"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_namespace_gets_a_default_service_account() {
    let c = Cluster::start().await;
    let admin = c.admin();
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        c.eventually_ok(&admin, &["get", "serviceaccount", "default", "-n", ns])
            .await;
    }
    c.ok(&admin, &["create", "namespace", "team"]).await;
    c.eventually_ok(&admin, &["get", "serviceaccount", "default", "-n", "team"])
        .await;
    // Deleted, it comes back (with a new uid).
    let uid = c
        .ok(
            &admin,
            &[
                "get",
                "sa",
                "default",
                "-n",
                "team",
                "-o",
                "jsonpath={.metadata.uid}",
            ],
        )
        .await;
    c.ok(&admin, &["delete", "sa", "default", "-n", "team"]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = c
            .kubectl(
                &admin,
                &[
                    "get",
                    "sa",
                    "default",
                    "-n",
                    "team",
                    "-o",
                    "jsonpath={.metadata.uid}",
                ],
            )
            .await;
        if out.status.success() && String::from_utf8_lossy(&out.stdout) != uid {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the default ServiceAccount was not recreated"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_tokens_authenticate_as_the_service_account() {
    let c = Cluster::start().await;
    let admin = c.admin();
    c.ok(&admin, &["create", "serviceaccount", "robot"]).await;
    c.ok(
        &admin,
        &[
            "create",
            "rolebinding",
            "robot-view",
            "--clusterrole=view",
            "--serviceaccount=default:robot",
        ],
    )
    .await;
    let token = c
        .ok(&admin, &["create", "token", "robot", "--duration=20m"])
        .await;
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let robot = c.token("robot", token);
    c.eventually_ok(&robot, &["get", "pods"]).await;
    let whoami = c.ok(&robot, &["auth", "whoami", "-o", "json"]).await;
    let whoami: Value = serde_json::from_str(&whoami).unwrap();
    assert_eq!(
        whoami["status"]["userInfo"]["username"],
        "system:serviceaccount:default:robot"
    );
    let groups = whoami["status"]["userInfo"]["groups"].to_string();
    assert!(groups.contains("system:serviceaccounts:default"), "{groups}");
    let denied = c.kubectl(&robot, &["create", "configmap", "x"]).await;
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(
        stderr.contains(
            "configmaps is forbidden: User \"system:serviceaccount:default:robot\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"default\""
        ),
        "{stderr}"
    );

    // TokenReview (as kube's webhook consumers use it) agrees.
    let review = c.write(
        "review.json",
        &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}})
            .to_string(),
    );
    let out = c
        .ok(&admin, &["create", "-f", review.to_str().unwrap(), "-o", "json"])
        .await;
    let out: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["status"]["authenticated"], true, "{out}");
    assert_eq!(
        out["status"]["user"]["username"],
        "system:serviceaccount:default:robot"
    );
    assert!(out["spec"].get("token").is_none(), "the token is not echoed");

    // Deleting the account invalidates its tokens.
    c.ok(&admin, &["delete", "serviceaccount", "robot"]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.kubectl(&robot, &["get", "pods"]).await.status.success() {
        assert!(Instant::now() < deadline, "the token outlived its ServiceAccount");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unauthorized(&c, &robot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_garbage_and_foreign_tokens_get_401() {
    let c = Cluster::start().await;
    let admin = c.admin();
    c.ok(&admin, &["create", "serviceaccount", "robot"]).await;
    let uid = c
        .ok(&admin, &["get", "sa", "robot", "-o", "jsonpath={.metadata.uid}"])
        .await;
    let issuer = TokenIssuer::load_or_create(&c.dir.path().join("pki")).unwrap();
    let spec = TokenSpec {
        namespace: "default",
        name: "robot",
        uid: &uid,
        audiences: vec![],
        expiration_seconds: 600,
        pod: None,
    };
    let now = control::registry::meta::unix_now();
    // A valid token signed with the server's key works; the same token issued an hour ago has expired.
    let (fresh, _) = issuer.issue(&spec, now).unwrap();
    c.eventually_ok(&c.token("fresh", &fresh), &["auth", "whoami"])
        .await;
    let (expired, _) = issuer.issue(&spec, now - 3600).unwrap();
    unauthorized(&c, &c.token("expired", &expired)).await;
    unauthorized(&c, &c.token("garbage", "eyJhbGciOiJFUzI1NiJ9.e30.c2lnbmF0dXJl")).await;
    unauthorized(&c, &c.token("random", "not-a-token")).await;
    let other = tempfile::tempdir().unwrap();
    let (foreign, _) = TokenIssuer::load_or_create(other.path())
        .unwrap()
        .issue(&spec, now)
        .unwrap();
    unauthorized(&c, &c.token("foreign", &foreign)).await;
    // Too short a lifetime is refused like kube-apiserver does.
    let out = c
        .kubectl(&admin, &["create", "token", "robot", "--duration=1m"])
        .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("less than 10 minutes"));
    let missing = c.kubectl(&admin, &["create", "token", "nobody"]).await;
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
}

/// A pod bound to `node`, running as ServiceAccount `account`.
fn bound_pod(name: &str, node: &str, account: &str) -> String {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "serviceAccountName": account,
                 "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_bound_tokens_die_with_the_pod_and_nodes_get_tokens_only_for_their_pods() {
    let c = Cluster::start().await;
    let admin = c.admin();
    for sa in ["robot", "other"] {
        c.ok(&admin, &["create", "serviceaccount", sa]).await;
    }
    for (pod, node, sa) in [("p1", "n1", "robot"), ("p2", "n2", "other")] {
        let file = c.write(&format!("{pod}.json"), &bound_pod(pod, node, sa));
        c.ok(&admin, &["create", "-f", file.to_str().unwrap()]).await;
    }
    let uid = |pod: &'static str| {
        let (c, admin) = (&c, &admin);
        async move {
            c.ok(admin, &["get", "pod", pod, "-o", "jsonpath={.metadata.uid}"])
                .await
        }
    };
    let p1 = uid("p1").await;
    let bound = |node_or_admin: &Path, sa: &str, pod: &str, pod_uid: &str| {
        let args: Vec<String> = [
            "create",
            "token",
            sa,
            "--bound-object-kind=Pod",
            &format!("--bound-object-name={pod}"),
            &format!("--bound-object-uid={pod_uid}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let config = node_or_admin.to_path_buf();
        let c = &c;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            c.kubectl(&config, &args).await
        }
    };

    // Node restriction: node n1 gets a token for the account of its own pod, not for an account only n2 runs.
    let n1 = c.user("system:node:n1", &["system:nodes"]);
    let out = bound(&n1, "robot", "p1", &p1).await;
    assert!(
        out.status.success(),
        "node n1 may request robot's token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let node_token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let p2 = uid("p2").await;
    let out = bound(&n1, "other", "p2", &p2).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "node n1 got a token for n2's pod account");
    assert!(
        stderr.contains("can only create tokens for service accounts of pods scheduled to it"),
        "{stderr}"
    );

    // The pod-bound token authenticates as the account while the pod exists.
    let robot = c.token("robot", &node_token);
    let whoami = c.eventually_ok(&robot, &["auth", "whoami", "-o", "json"]).await;
    let whoami: Value = serde_json::from_str(&whoami).unwrap();
    assert_eq!(
        whoami["status"]["userInfo"]["username"],
        "system:serviceaccount:default:robot"
    );
    // Bound to a uid that is not the pod's: refused.
    let out = bound(&admin, "robot", "p1", "not-the-uid").await;
    assert!(out.status.success());
    let wrong = c.token("wrong", String::from_utf8_lossy(&out.stdout).trim());
    unauthorized(&c, &wrong).await;

    // Once the pod is gone, its token is refused.
    c.ok(&admin, &["delete", "pod", "p1", "--grace-period=0", "--force"])
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.kubectl(&robot, &["auth", "whoami"]).await.status.success() {
        assert!(Instant::now() < deadline, "the token outlived its pod");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unauthorized(&c, &robot).await;
    // And a node without pods of an account gets no token for it any more.
    let out = bound(&n1, "robot", "p1", &p1).await;
    assert!(!out.status.success(), "n1 runs no pod of robot any more");
}
