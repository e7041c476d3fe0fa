//! RBAC with a real kubectl against an HTTPS server: default roles, a `view` user who can read but not
//! write (kube's 403 wording), `kubectl auth can-i` with and without `--as`, `auth whoami`, and bindings
//! whose creation and deletion take effect.

mod common;

use std::time::{Duration, Instant};

type Cluster = common::tls_cluster::TlsCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_roles_exist_and_admin_is_cluster_admin() {
    let c = Cluster::start().await;
    let admin = c.admin();
    let roles = c.ok(&admin, &["get", "clusterroles", "-o", "name"]).await;
    for role in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:node",
        "system:discovery",
        "system:basic-user",
    ] {
        assert!(
            roles.contains(&format!("clusterrole.rbac.authorization.k8s.io/{role}\n")),
            "{role} in {roles}"
        );
    }
    let binding = c
        .ok(
            &admin,
            &[
                "get",
                "clusterrolebinding",
                "cluster-admin",
                "-o",
                "jsonpath={.subjects[0].name}",
            ],
        )
        .await;
    assert_eq!(binding, "system:masters");
    assert_eq!(c.ok(&admin, &["auth", "can-i", "*", "*"]).await.trim(), "yes");
    // The aggregated view role carries the rules of system:aggregate-to-view.
    let view = c.ok(&admin, &["get", "clusterrole", "view", "-o", "json"]).await;
    assert!(view.contains("\"pods/log\""), "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_user_reads_but_cannot_write() {
    let c = Cluster::start().await;
    let (admin, jane) = (c.admin(), c.user("jane", &["devs"]));
    c.ok(&admin, &["create", "configmap", "existing", "--from-literal=a=b"])
        .await;

    // Authenticated, but nothing bound yet: discovery works, reading pods does not.
    assert_eq!(
        c.ok(
            &jane,
            &["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]
        )
        .await,
        "jane"
    );
    let denied = c.fails(&jane, &["get", "pods"]).await;
    assert!(
        denied.contains(
            "Error from server (Forbidden): pods is forbidden: User \"jane\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        ),
        "{denied}"
    );

    c.ok(
        &admin,
        &[
            "create",
            "rolebinding",
            "jane-view",
            "--clusterrole=view",
            "--group=devs",
        ],
    )
    .await;
    c.eventually_ok(&jane, &["get", "pods"]).await;
    let cm = c
        .ok(
            &jane,
            &["get", "configmap", "existing", "-o", "jsonpath={.data.a}"],
        )
        .await;
    assert_eq!(cm, "b");
    let create = c
        .fails(&jane, &["create", "configmap", "new", "--from-literal=x=y"])
        .await;
    assert!(
        create.contains(
            "configmaps is forbidden: User \"jane\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"default\""
        ),
        "{create}"
    );
    let secrets = c.fails(&jane, &["get", "secrets"]).await;
    assert!(secrets.contains("cannot list resource \"secrets\""), "{secrets}");
    // The binding is namespaced: other namespaces and cluster-scoped kinds stay closed.
    let other = c.fails(&jane, &["get", "pods", "-n", "kube-system"]).await;
    assert!(other.contains("in the namespace \"kube-system\""), "{other}");
    let nodes = c.fails(&jane, &["get", "nodes"]).await;
    assert!(
        nodes.contains("User \"jane\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"),
        "{nodes}"
    );

    // Deleting the binding takes the access away again.
    c.ok(&admin, &["delete", "rolebinding", "jane-view"]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.kubectl(&jane, &["get", "pods"]).await.status.success() {
        assert!(Instant::now() < deadline, "access survived deleting the binding");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn can_i_with_and_without_impersonation() {
    let c = Cluster::start().await;
    let (admin, jane) = (c.admin(), c.user("jane", &[]));
    c.ok(
        &admin,
        &[
            "create",
            "rolebinding",
            "jane-edit",
            "--clusterrole=edit",
            "--user=jane",
            "-n",
            "kube-public",
        ],
    )
    .await;
    c.eventually_ok(&jane, &["get", "configmaps", "-n", "kube-public"])
        .await;

    let no = c
        .kubectl(&admin, &["auth", "can-i", "create", "pods", "--as=jane"])
        .await;
    assert_eq!(String::from_utf8_lossy(&no.stdout).trim(), "no");
    assert!(!no.status.success());
    let yes = c
        .ok(
            &admin,
            &[
                "auth",
                "can-i",
                "create",
                "pods",
                "--as=jane",
                "-n",
                "kube-public",
            ],
        )
        .await;
    assert_eq!(yes.trim(), "yes");
    assert_eq!(
        c.ok(
            &jane,
            &["auth", "can-i", "delete", "deployments.apps", "-n", "kube-public"]
        )
        .await
        .trim(),
        "yes"
    );
    let own = c
        .kubectl(&jane, &["auth", "can-i", "create", "clusterroles"])
        .await;
    assert_eq!(String::from_utf8_lossy(&own.stdout).trim(), "no");
    assert_eq!(
        c.ok(&jane, &["auth", "can-i", "get", "/version"]).await.trim(),
        "yes"
    );
    let list = c
        .ok(&jane, &["auth", "can-i", "--list", "-n", "kube-public"])
        .await;
    assert!(list.contains("configmaps"), "{list}");

    // Impersonated requests act as the impersonated user.
    let as_jane = c.fails(&admin, &["get", "pods", "--as=jane"]).await;
    assert!(
        as_jane.contains("User \"jane\" cannot list resource \"pods\""),
        "{as_jane}"
    );
    c.ok(&admin, &["get", "pods", "-n", "kube-public", "--as=jane"])
        .await;
    // jane may not impersonate anyone.
    let escalate = c
        .fails(&jane, &["get", "pods", "--as=admin", "--as-group=system:masters"])
        .await;
    assert!(
        escalate.contains("users \"admin\" is forbidden: User \"jane\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"),
        "{escalate}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_allow_mode_lets_every_authenticated_user_in() {
    let c = Cluster::start_with(|config| {
        config.authorization = control::server::AuthorizationMode::AlwaysAllow;
    })
    .await;
    let nobody = c.user("nobody", &[]);
    c.ok(&nobody, &["create", "configmap", "c", "--from-literal=a=b"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cannot_modify_another_node_or_its_pods() {
    let c = Cluster::start().await;
    let (admin, n1) = (c.admin(), c.user("system:node:n1", &["system:nodes"]));
    let objects = c.write(
        "objects.yaml",
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n---\napiVersion: v1\nkind: Node\nmetadata:\n  name: n2\n\
         ---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: on-n2\nspec:\n  nodeName: n2\n  containers:\n  \
         - name: c\n    image: agnhost\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: on-n1\nspec:\n  \
         nodeName: n1\n  containers:\n  - name: c\n    image: agnhost\n",
    );
    c.ok(&admin, &["apply", "-f", objects.to_str().unwrap()]).await;

    assert!(
        c.ok(&n1, &["get", "nodes", "-o", "name"])
            .await
            .contains("node/n2")
    );
    c.ok(&n1, &["label", "node", "n1", "ready=yes"]).await;
    let other = c.fails(&n1, &["label", "node", "n2", "ready=yes"]).await;
    assert!(
        other.contains("nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\""),
        "{other}"
    );
    let status = r#"{"status":{"message":"seen"}}"#;
    c.ok(
        &n1,
        &[
            "patch",
            "pod",
            "on-n1",
            "--subresource=status",
            "--type=merge",
            "-p",
            status,
        ],
    )
    .await;
    let foreign = c
        .fails(
            &n1,
            &[
                "patch",
                "pod",
                "on-n2",
                "--subresource=status",
                "--type=merge",
                "-p",
                status,
            ],
        )
        .await;
    assert!(foreign.contains("pods \"on-n2\" is forbidden"), "{foreign}");
    let pod = c.fails(&n1, &["delete", "pod", "on-n2", "--wait=false"]).await;
    assert!(
        pod.contains("node \"n1\" can only modify pods with spec.nodeName set to itself"),
        "{pod}"
    );
    // RBAC still applies on top: the node role does not reach deployments.
    let deploy = c
        .fails(&n1, &["create", "deployment", "web", "--image=agnhost"])
        .await;
    assert!(
        deploy.contains("cannot create resource \"deployments\" in API group \"apps\""),
        "{deploy}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_admins_cannot_grant_more_than_they_hold() {
    let c = Cluster::start().await;
    let (admin, jane) = (c.admin(), c.user("jane", &[]));
    c.ok(&admin, &["create", "namespace", "team"]).await;
    c.ok(
        &admin,
        &[
            "create",
            "rolebinding",
            "jane-admin",
            "--clusterrole=admin",
            "--user=jane",
            "-n",
            "team",
        ],
    )
    .await;
    c.eventually_ok(&jane, &["get", "rolebindings", "-n", "team"])
        .await;

    c.ok(
        &jane,
        &[
            "create",
            "rolebinding",
            "bob-view",
            "--clusterrole=view",
            "--user=bob",
            "-n",
            "team",
        ],
    )
    .await;
    c.ok(
        &jane,
        &[
            "create",
            "role",
            "cm-reader",
            "--verb=get",
            "--resource=configmaps",
            "-n",
            "team",
        ],
    )
    .await;
    let escalate = c
        .fails(
            &jane,
            &[
                "create",
                "rolebinding",
                "bob-root",
                "--clusterrole=cluster-admin",
                "--user=bob",
                "-n",
                "team",
            ],
        )
        .await;
    assert!(
        escalate.contains("rolebindings.rbac.authorization.k8s.io \"bob-root\" is forbidden: user \"jane\"")
            && escalate.contains("is attempting to grant RBAC permissions not currently held"),
        "{escalate}"
    );
    let role = c
        .fails(
            &jane,
            &[
                "create",
                "role",
                "nodes",
                "--verb=get",
                "--resource=nodes",
                "-n",
                "kube-public",
            ],
        )
        .await;
    assert!(role.contains("forbidden"), "{role}");
    // The cluster admin may bind anything.
    c.ok(
        &admin,
        &[
            "create",
            "rolebinding",
            "bob-root",
            "--clusterrole=cluster-admin",
            "--user=bob",
            "-n",
            "team",
        ],
    )
    .await;
}
