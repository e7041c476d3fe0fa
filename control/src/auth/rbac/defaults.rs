//! The default roles and bindings every cluster starts with (kube-apiserver's bootstrap policy, trimmed to
//! the resources this server serves): cluster-admin, admin/edit/view (aggregated), discovery, basic-user,
//! public-info-viewer, node, node-proxier and kubelet-api-admin (bound to the apiserver's kubelet client).

use serde_json::{Value, json};

const RBAC: &str = "rbac.authorization.k8s.io";
const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const ALL: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn rule(verbs: &[&str], group: &str, resources: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": [group], "resources": resources})
}

fn urls(verbs: &[&str], urls: &[&str]) -> Value {
    json!({"verbs": verbs, "nonResourceURLs": urls})
}

fn metadata(name: &str, labels: Value) -> Value {
    let mut all = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    if let (Some(all), Some(extra)) = (all.as_object_mut(), labels.as_object()) {
        all.extend(extra.clone());
    }
    json!({
        "name": name,
        "labels": all,
        "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
    })
}

fn cluster_role(name: &str, labels: Value, rules: Vec<Value>) -> Value {
    json!({"apiVersion": format!("{RBAC}/v1"), "kind": "ClusterRole", "metadata": metadata(name, labels), "rules": rules})
}

fn aggregated(name: &str, labels: Value, rules: Vec<Value>, from: &[&str]) -> Value {
    let selectors: Vec<Value> = from
        .iter()
        .map(|f| json!({"matchLabels": {format!("{RBAC}/aggregate-to-{f}"): "true"}}))
        .collect();
    let mut role = cluster_role(name, labels, rules);
    role["aggregationRule"] = json!({"clusterRoleSelectors": selectors});
    role
}

fn binding(name: &str, role: &str, subjects: &[(&str, &str)]) -> Value {
    let subjects: Vec<Value> = subjects
        .iter()
        .map(|(kind, name)| json!({"kind": kind, "apiGroup": RBAC, "name": name}))
        .collect();
    json!({
        "apiVersion": format!("{RBAC}/v1"),
        "kind": "ClusterRoleBinding",
        "metadata": metadata(name, json!({})),
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    })
}

fn aggregate_to(role: &str) -> Value {
    json!({format!("{RBAC}/aggregate-to-{role}"): "true"})
}

fn view_rules() -> Vec<Value> {
    vec![
        rule(
            READ,
            "",
            &[
                "configmaps",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/status",
                "bindings",
                "events",
                "limitranges",
                "namespaces/status",
                "pods/log",
                "pods/status",
                "replicationcontrollers/status",
                "resourcequotas",
                "resourcequotas/status",
                "namespaces",
            ],
        ),
        rule(READ, "discovery.k8s.io", &["endpointslices"]),
        rule(
            READ,
            "apps",
            &[
                "controllerrevisions",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "statefulsets",
                "statefulsets/scale",
                "statefulsets/status",
            ],
        ),
        rule(
            READ,
            "autoscaling",
            &["horizontalpodautoscalers", "horizontalpodautoscalers/status"],
        ),
        rule(
            READ,
            "batch",
            &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
        ),
        rule(
            READ,
            "policy",
            &["poddisruptionbudgets", "poddisruptionbudgets/status"],
        ),
        rule(
            READ,
            "networking.k8s.io",
            &["ingresses", "ingresses/status", "networkpolicies"],
        ),
    ]
}

fn edit_rules() -> Vec<Value> {
    vec![
        rule(&["impersonate"], "", &["serviceaccounts"]),
        rule(
            WRITE,
            "",
            &[
                "pods",
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
            ],
        ),
        rule(&["create"], "", &["pods/eviction"]),
        rule(
            WRITE,
            "",
            &[
                "configmaps",
                "events",
                "persistentvolumeclaims",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "secrets",
                "serviceaccounts",
                "services",
                "services/proxy",
            ],
        ),
        rule(&["create"], "", &["serviceaccounts/token"]),
        rule(
            READ,
            "",
            &[
                "secrets",
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
                "services/proxy",
            ],
        ),
        rule(
            WRITE,
            "apps",
            &[
                "daemonsets",
                "deployments",
                "deployments/rollback",
                "deployments/scale",
                "replicasets",
                "replicasets/scale",
                "statefulsets",
                "statefulsets/scale",
            ],
        ),
        rule(WRITE, "discovery.k8s.io", &["endpointslices"]),
        rule(WRITE, "autoscaling", &["horizontalpodautoscalers"]),
        rule(WRITE, "batch", &["cronjobs", "jobs"]),
        rule(WRITE, "policy", &["poddisruptionbudgets"]),
        rule(WRITE, "networking.k8s.io", &["ingresses", "networkpolicies"]),
        rule(ALL, "coordination.k8s.io", &["leases"]),
    ]
}

fn admin_rules() -> Vec<Value> {
    vec![
        rule(
            &["create"],
            "authorization.k8s.io",
            &["localsubjectaccessreviews"],
        ),
        rule(ALL, RBAC, &["rolebindings", "roles"]),
    ]
}

/// What a node agent (group `system:nodes`) needs: its Node and Lease, pods and their status, events,
/// and read access to what pods consume and what the proxy programs.
fn node_rules() -> Vec<Value> {
    vec![
        rule(
            &["create", "get", "list", "watch", "patch", "update", "delete"],
            "",
            &["nodes"],
        ),
        rule(&["get", "patch", "update"], "", &["nodes/status"]),
        rule(&["create", "patch", "update"], "", &["events"]),
        rule(&["create", "patch", "update"], "events.k8s.io", &["events"]),
        rule(&["get", "list", "watch", "create", "delete"], "", &["pods"]),
        rule(&["get", "patch", "update"], "", &["pods/status"]),
        rule(&["create"], "", &["pods/eviction"]),
        rule(
            READ,
            "",
            &["services", "endpoints", "configmaps", "secrets", "namespaces"],
        ),
        rule(READ, "discovery.k8s.io", &["endpointslices"]),
        rule(
            &["get", "create", "update", "patch", "delete", "list", "watch"],
            "coordination.k8s.io",
            &["leases"],
        ),
        rule(&["create"], "", &["serviceaccounts/token"]),
        rule(&["get"], "", &["serviceaccounts"]),
        // The kubelet endpoint's webhook authentication and authorization.
        rule(&["create"], "authentication.k8s.io", &["tokenreviews"]),
        rule(
            &["create"],
            "authorization.k8s.io",
            &["subjectaccessreviews", "localsubjectaccessreviews"],
        ),
    ]
}

/// Full use of the node agents' kubelet API (`system:kubelet-api-admin`).
fn kubelet_api_admin_rules() -> Vec<Value> {
    vec![
        rule(&["get", "list", "watch", "proxy"], "", &["nodes"]),
        rule(
            &["*"],
            "",
            &[
                "nodes/log",
                "nodes/metrics",
                "nodes/proxy",
                "nodes/stats",
                "nodes/spec",
            ],
        ),
    ]
}

/// kube-proxy's rules (`system:node-proxier`), which a `--proxy-only` agent needs as well.
fn proxier_rules() -> Vec<Value> {
    vec![
        rule(&["list", "watch"], "", &["endpoints", "services"]),
        rule(&["get", "list", "watch"], "", &["nodes"]),
        rule(&["create", "patch", "update"], "", &["events"]),
        rule(&["create", "patch", "update"], "events.k8s.io", &["events"]),
        rule(&["list", "watch"], "discovery.k8s.io", &["endpointslices"]),
    ]
}

fn union(parts: &[Vec<Value>]) -> Vec<Value> {
    parts.iter().flatten().cloned().collect()
}

/// Every default ClusterRole and ClusterRoleBinding, as `(plural, object)`.
pub fn objects() -> Vec<(&'static str, Value)> {
    let none = json!({});
    let discovery = [
        "/api",
        "/api/*",
        "/apis",
        "/apis/*",
        "/healthz",
        "/livez",
        "/openapi",
        "/openapi/*",
        "/readyz",
        "/version",
        "/version/",
    ];
    let public = ["/healthz", "/livez", "/readyz", "/version", "/version/"];
    let roles = vec![
        cluster_role(
            "cluster-admin",
            none.clone(),
            vec![rule(&["*"], "*", &["*"]), urls(&["*"], &["*"])],
        ),
        cluster_role("system:discovery", none.clone(), vec![urls(&["get"], &discovery)]),
        cluster_role(
            "system:public-info-viewer",
            none.clone(),
            vec![urls(&["get"], &public)],
        ),
        cluster_role(
            "system:basic-user",
            none.clone(),
            vec![
                rule(
                    &["create"],
                    "authorization.k8s.io",
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(&["create"], "authentication.k8s.io", &["selfsubjectreviews"]),
            ],
        ),
        cluster_role("system:aggregate-to-view", aggregate_to("view"), view_rules()),
        cluster_role("system:aggregate-to-edit", aggregate_to("edit"), edit_rules()),
        cluster_role("system:aggregate-to-admin", aggregate_to("admin"), admin_rules()),
        aggregated("view", aggregate_to("edit"), view_rules(), &["view"]),
        aggregated(
            "edit",
            aggregate_to("admin"),
            union(&[edit_rules(), view_rules()]),
            &["edit"],
        ),
        aggregated(
            "admin",
            none.clone(),
            union(&[admin_rules(), edit_rules(), view_rules()]),
            &["admin"],
        ),
        cluster_role("system:node", none.clone(), node_rules()),
        cluster_role("system:node-proxier", none.clone(), proxier_rules()),
        cluster_role(
            "system:kubelet-api-admin",
            none.clone(),
            kubelet_api_admin_rules(),
        ),
        cluster_role(
            "system:auth-delegator",
            none,
            vec![
                rule(&["create"], "authentication.k8s.io", &["tokenreviews"]),
                rule(&["create"], "authorization.k8s.io", &["subjectaccessreviews"]),
            ],
        ),
    ];
    let bindings = vec![
        binding("cluster-admin", "cluster-admin", &[("Group", "system:masters")]),
        binding(
            "system:discovery",
            "system:discovery",
            &[("Group", "system:authenticated")],
        ),
        binding(
            "system:basic-user",
            "system:basic-user",
            &[("Group", "system:authenticated")],
        ),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &[
                ("Group", "system:authenticated"),
                ("Group", "system:unauthenticated"),
            ],
        ),
        binding("system:node", "system:node", &[("Group", "system:nodes")]),
        binding(
            "system:node-proxier",
            "system:node-proxier",
            &[("User", "system:kube-proxy")],
        ),
        binding(
            "system:kube-apiserver-kubelet-client",
            "system:kubelet-api-admin",
            &[("User", crate::auth::pki::KUBELET_CLIENT_USER)],
        ),
    ];
    roles
        .into_iter()
        .map(|r| ("clusterroles", r))
        .chain(bindings.into_iter().map(|b| ("clusterrolebindings", b)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::rbac::Policy;
    use crate::auth::{Attributes, UserInfo};

    fn policy() -> Policy {
        let objects = objects()
            .into_iter()
            .map(|(plural, o)| {
                let name = o["metadata"]["name"].as_str().unwrap().to_owned();
                (format!("{}{plural}/{name}", crate::auth::rbac::policy::PREFIX), o)
            })
            .collect();
        Policy::build(&objects)
    }

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo::authenticated(name.into(), groups.iter().map(|g| (*g).to_owned()).collect())
    }

    #[test]
    fn defaults_grant_what_kube_grants() {
        let p = policy();
        let admin = user("admin", &["system:masters"]);
        assert!(
            p.authorize(&admin, &Attributes::resource("delete", "", "nodes", "", "n"))
                .is_ok()
        );
        let someone = user("someone", &[]);
        assert!(
            p.authorize(&someone, &Attributes::non_resource("get", "/apis/apps/v1"))
                .is_ok()
        );
        assert!(
            p.authorize(&someone, &Attributes::non_resource("get", "/version"))
                .is_ok()
        );
        let ssar = Attributes::resource(
            "create",
            "authorization.k8s.io",
            "selfsubjectaccessreviews",
            "",
            "",
        );
        assert!(p.authorize(&someone, &ssar).is_ok());
        assert!(
            p.authorize(&someone, &Attributes::resource("list", "", "pods", "default", ""))
                .is_err()
        );
        assert!(
            p.authorize(
                &UserInfo::anonymous(),
                &Attributes::non_resource("get", "/healthz")
            )
            .is_ok()
        );
        assert!(
            p.authorize(&UserInfo::anonymous(), &Attributes::non_resource("get", "/api"))
                .is_err()
        );
        let node = user("system:node:n1", &["system:nodes"]);
        assert!(
            p.authorize(
                &node,
                &Attributes::resource("patch", "", "nodes/status", "", "n1")
            )
            .is_ok()
        );
        assert!(
            p.authorize(
                &node,
                &Attributes::resource("update", "coordination.k8s.io", "leases", "kube-node-lease", "n1")
            )
            .is_ok()
        );
        assert!(
            p.authorize(
                &node,
                &Attributes::resource("create", "apps", "deployments", "default", "")
            )
            .is_err()
        );
        let kubelet_api = |u: &UserInfo, verb: &str, sub: &str| {
            p.authorize(
                u,
                &Attributes::resource(verb, "", &format!("nodes/{sub}"), "", "n1"),
            )
            .is_ok()
        };
        let apiserver = user(crate::auth::pki::KUBELET_CLIENT_USER, &[]);
        assert!(kubelet_api(&apiserver, "get", "proxy") && kubelet_api(&apiserver, "create", "proxy"));
        assert!(kubelet_api(&apiserver, "get", "log") && kubelet_api(&apiserver, "get", "stats"));
        assert!(
            !kubelet_api(&node, "get", "proxy"),
            "nodes do not read each other's kubelet API"
        );
        assert!(!kubelet_api(&user("viewer", &[]), "get", "proxy"));
        assert!(
            p.authorize(
                &node,
                &Attributes::resource("create", "authorization.k8s.io", "subjectaccessreviews", "", "")
            )
            .is_ok()
        );
        let proxy = user("system:kube-proxy", &[]);
        assert!(
            p.authorize(
                &proxy,
                &Attributes::resource("watch", "discovery.k8s.io", "endpointslices", "", "")
            )
            .is_ok()
        );
        assert!(
            p.authorize(&proxy, &Attributes::resource("list", "", "secrets", "", ""))
                .is_err()
        );
    }
}

/// What a stored default object needs so that it grants at least what this version's default grants (kube's
/// auto-reconciliation of bootstrap policy at start): missing rules or subjects are added, nothing is removed, and
/// objects annotated `rbac.authorization.kubernetes.io/autoupdate: "false"` are left alone. `None`: nothing to do.
pub fn reconciled(stored: &Value, default: &Value) -> Option<Value> {
    let annotation = stored
        .pointer("/metadata/annotations/rbac.authorization.kubernetes.io~1autoupdate")
        .and_then(Value::as_str);
    if annotation == Some("false") {
        return None;
    }
    let mut out = stored.clone();
    let mut changed = false;
    for list in ["rules", "subjects"] {
        let Some(wanted) = default.get(list).and_then(Value::as_array) else {
            continue;
        };
        let have = out[list].as_array().cloned().unwrap_or_default();
        let missing: Vec<Value> = wanted.iter().filter(|w| !have.contains(w)).cloned().collect();
        if !missing.is_empty() {
            out[list] = Value::Array(have.into_iter().chain(missing).collect());
            changed = true;
        }
    }
    changed.then_some(out)
}

#[cfg(test)]
mod reconcile_tests {
    use super::*;

    #[test]
    fn missing_rules_and_subjects_are_added_and_opted_out_objects_are_kept() {
        let default = json!({"rules": [rule(&["get"], "", &["pods"]), rule(&["create"], RBAC, &["roles"])],
            "subjects": [{"kind": "User", "name": "u"}]});
        let stored = json!({"metadata": {"name": "r"}, "rules": [rule(&["get"], "", &["pods"]), rule(&["list"], "", &["x"])]});
        let out = reconciled(&stored, &default).expect("a rule and a subject are missing");
        assert_eq!(
            out["rules"].as_array().unwrap().len(),
            3,
            "kept the extra rule, added the missing one"
        );
        assert_eq!(out["subjects"], json!([{"kind": "User", "name": "u"}]));
        assert_eq!(
            reconciled(&out, &default),
            None,
            "reconciled twice: nothing more to do"
        );
        let mut opted_out = stored.clone();
        opted_out["metadata"]["annotations"] =
            json!({"rbac.authorization.kubernetes.io/autoupdate": "false"});
        assert_eq!(reconciled(&opted_out, &default), None);
    }

    #[test]
    fn every_default_is_already_reconciled_with_itself() {
        for (_, object) in objects() {
            assert_eq!(
                reconciled(&object, &object),
                None,
                "{}",
                object["metadata"]["name"]
            );
        }
    }
}
