//! The RBAC policy of the cluster as one immutable index (roles with aggregated rules, bindings by
//! namespace), built from the stored rbac.authorization.k8s.io objects, and the decision for a request.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use serde_json::Value;

use super::rules;
use crate::auth::{Attributes, UserInfo};
use crate::controllers::selector;

/// Store key prefix of every RBAC object.
pub const PREFIX: &str = "/rbac.authorization.k8s.io/";

struct Binding {
    /// Namespace of a RoleBinding; empty for ClusterRoleBindings.
    namespace: String,
    role_ref: RoleRef,
    subjects: Vec<Subject>,
}

/// Everything needed to authorize a request, without touching the store.
#[derive(Default)]
pub struct Policy {
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    cluster_bindings: Vec<Binding>,
    bindings: HashMap<String, Vec<Binding>>,
}

fn parse<T: serde::de::DeserializeOwned>(key: &str, value: &Value) -> Option<T> {
    match serde_json::from_value(value.clone()) {
        Ok(typed) => Some(typed),
        Err(e) => {
            tracing::warn!(%key, error = %e, "ignoring an unreadable RBAC object");
            None
        }
    }
}

/// ClusterRole rules with aggregation applied: a role with an aggregationRule gets the rules of every
/// ClusterRole whose labels match one of its selectors (one level, as the aggregation controller does).
fn effective_cluster_rules(roles: &[ClusterRole]) -> HashMap<String, Vec<PolicyRule>> {
    let mut out = HashMap::new();
    for role in roles {
        let name = role.metadata.name.clone().unwrap_or_default();
        let mut rules = role.rules.clone().unwrap_or_default();
        let selectors = role
            .aggregation_rule
            .as_ref()
            .and_then(|a| a.cluster_role_selectors.clone())
            .unwrap_or_default();
        if !selectors.is_empty() {
            for other in roles {
                let other_name = other.metadata.name.as_deref().unwrap_or_default();
                if other_name == name || other.aggregation_rule.is_some() {
                    continue;
                }
                let labels = other.metadata.labels.as_ref();
                let matched = selectors
                    .iter()
                    .any(|s| !selector::is_empty(s) && selector::matches(s, labels));
                if matched {
                    for rule in other.rules.iter().flatten() {
                        if !rules.contains(rule) {
                            rules.push(rule.clone());
                        }
                    }
                }
            }
        }
        out.insert(name, rules);
    }
    out
}

impl Policy {
    /// Builds the index from stored objects keyed by store key.
    pub fn build(objects: &BTreeMap<String, Value>) -> Self {
        let mut policy = Self::default();
        let mut cluster_roles = Vec::new();
        for (key, value) in objects {
            let Some(rest) = key.strip_prefix(PREFIX) else {
                continue;
            };
            let plural = rest.split('/').next().unwrap_or_default();
            match plural {
                "clusterroles" => cluster_roles.extend(parse::<ClusterRole>(key, value)),
                "roles" => {
                    if let Some(role) = parse::<Role>(key, value) {
                        let ns = role.metadata.namespace.clone().unwrap_or_default();
                        let name = role.metadata.name.clone().unwrap_or_default();
                        policy.roles.insert((ns, name), role.rules.unwrap_or_default());
                    }
                }
                "clusterrolebindings" => {
                    if let Some(b) = parse::<ClusterRoleBinding>(key, value) {
                        policy.cluster_bindings.push(Binding {
                            namespace: String::new(),
                            role_ref: b.role_ref,
                            subjects: b.subjects.unwrap_or_default(),
                        });
                    }
                }
                "rolebindings" => {
                    if let Some(b) = parse::<RoleBinding>(key, value) {
                        let ns = b.metadata.namespace.clone().unwrap_or_default();
                        policy.bindings.entry(ns.clone()).or_default().push(Binding {
                            namespace: ns,
                            role_ref: b.role_ref,
                            subjects: b.subjects.unwrap_or_default(),
                        });
                    }
                }
                _ => {}
            }
        }
        policy.cluster_roles = effective_cluster_rules(&cluster_roles);
        policy
    }

    fn role_rules(&self, binding: &Binding) -> Result<&[PolicyRule], String> {
        let r = &binding.role_ref;
        let found = match r.kind.as_str() {
            "ClusterRole" => self.cluster_roles.get(&r.name),
            "Role" if !binding.namespace.is_empty() => {
                self.roles.get(&(binding.namespace.clone(), r.name.clone()))
            }
            _ => None,
        };
        match found {
            Some(rules) => Ok(rules),
            None if r.kind == "Role" => Err(format!("role.rbac.authorization.k8s.io {:?} not found", r.name)),
            None => Err(format!(
                "clusterrole.rbac.authorization.k8s.io {:?} not found",
                r.name
            )),
        }
    }

    /// The effective rules of a ClusterRole (`namespace` ignored) or a Role.
    pub fn role(&self, kind: &str, namespace: &str, name: &str) -> Option<&[PolicyRule]> {
        match kind {
            "ClusterRole" => self.cluster_roles.get(name).map(Vec::as_slice),
            "Role" => self
                .roles
                .get(&(namespace.to_owned(), name.to_owned()))
                .map(Vec::as_slice),
            _ => None,
        }
    }

    /// The bindings that can apply to a request in `namespace` (cluster-wide ones first).
    fn bindings_for<'a>(&'a self, namespace: &str) -> impl Iterator<Item = &'a Binding> {
        let local = if namespace.is_empty() {
            None
        } else {
            self.bindings.get(namespace)
        };
        self.cluster_bindings.iter().chain(local.into_iter().flatten())
    }

    /// Allows when a rule of a role bound to the user (cluster-wide, or in the request's namespace) covers the
    /// request; the denial reason names bindings whose role is missing, like kube-apiserver's.
    pub fn authorize(&self, user: &UserInfo, attrs: &Attributes) -> Result<(), String> {
        let mut errors = Vec::new();
        for binding in self.bindings_for(&attrs.namespace) {
            if !binding
                .subjects
                .iter()
                .any(|s| rules::subject_matches(s, user, &binding.namespace))
            {
                continue;
            }
            match self.role_rules(binding) {
                Ok(rules) if rules.iter().any(|rule| rules::allows(rule, attrs)) => return Ok(()),
                Ok(_) => {}
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Err(String::new())
        } else {
            Err(format!("RBAC: [{}]", errors.join(", ")))
        }
    }

    /// Every rule that applies to `user` in `namespace` (cluster-wide grants included), for rules reviews.
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> Vec<PolicyRule> {
        let mut out: Vec<PolicyRule> = Vec::new();
        for binding in self.bindings_for(namespace) {
            if binding
                .subjects
                .iter()
                .any(|s| rules::subject_matches(s, user, &binding.namespace))
                && let Ok(rules) = self.role_rules(binding)
            {
                for rule in rules {
                    if !out.contains(rule) {
                        out.push(rule.clone());
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn objects(items: &[(&str, Value)]) -> BTreeMap<String, Value> {
        items
            .iter()
            .map(|(k, v)| (format!("{PREFIX}{k}"), v.clone()))
            .collect()
    }

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo::authenticated(name.into(), groups.iter().map(|g| (*g).to_owned()).collect())
    }

    fn sample() -> Policy {
        Policy::build(&objects(&[
            (
                "clusterroles/reader",
                json!({"metadata": {"name": "reader", "labels": {"agg": "view"}},
                "rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]}),
            ),
            (
                "clusterroles/viewer",
                json!({"metadata": {"name": "viewer"},
                "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"agg": "view"}}]}}),
            ),
            (
                "clusterroles/admin",
                json!({"metadata": {"name": "admin"},
                "rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}, {"verbs": ["*"], "nonResourceURLs": ["*"]}]}),
            ),
            (
                "roles/dev/cm-writer",
                json!({"metadata": {"name": "cm-writer", "namespace": "dev"},
                "rules": [{"verbs": ["create"], "apiGroups": [""], "resources": ["configmaps"]}]}),
            ),
            (
                "clusterrolebindings/admins",
                json!({"metadata": {"name": "admins"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
                "subjects": [{"kind": "Group", "name": "system:masters"}]}),
            ),
            (
                "clusterrolebindings/broken",
                json!({"metadata": {"name": "broken"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "gone"},
                "subjects": [{"kind": "User", "name": "bob"}]}),
            ),
            (
                "rolebindings/dev/view",
                json!({"metadata": {"name": "view", "namespace": "dev"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "viewer"},
                "subjects": [{"kind": "User", "name": "jane"}, {"kind": "ServiceAccount", "name": "robot"}]}),
            ),
            (
                "rolebindings/dev/write",
                json!({"metadata": {"name": "write", "namespace": "dev"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-writer"},
                "subjects": [{"kind": "User", "name": "jane"}]}),
            ),
        ]))
    }

    #[test]
    fn cluster_bindings_apply_everywhere() {
        let policy = sample();
        let admin = user("admin", &["system:masters"]);
        assert!(
            policy
                .authorize(
                    &admin,
                    &Attributes::resource("delete", "apps", "deployments", "x", "d")
                )
                .is_ok()
        );
        assert!(
            policy
                .authorize(&admin, &Attributes::non_resource("get", "/metrics"))
                .is_ok()
        );
        assert!(
            policy
                .authorize(
                    &user("nobody", &[]),
                    &Attributes::resource("get", "", "pods", "dev", "p")
                )
                .is_err()
        );
    }

    #[test]
    fn role_bindings_apply_in_their_namespace_with_aggregated_rules() {
        let policy = sample();
        let jane = user("jane", &[]);
        assert!(
            policy
                .authorize(&jane, &Attributes::resource("list", "", "pods", "dev", ""))
                .is_ok()
        );
        assert!(
            policy
                .authorize(
                    &jane,
                    &Attributes::resource("create", "", "configmaps", "dev", "")
                )
                .is_ok()
        );
        assert_eq!(
            policy.authorize(&jane, &Attributes::resource("create", "", "pods", "dev", "")),
            Err(String::new())
        );
        assert!(
            policy
                .authorize(&jane, &Attributes::resource("list", "", "pods", "prod", ""))
                .is_err()
        );
        assert!(
            policy
                .authorize(&jane, &Attributes::resource("list", "", "pods", "", ""))
                .is_err()
        );
        let robot = user("system:serviceaccount:dev:robot", &[]);
        assert!(
            policy
                .authorize(&robot, &Attributes::resource("get", "", "pods", "dev", "p"))
                .is_ok()
        );
        assert_eq!(policy.rules_for(&jane, "dev").len(), 2);
    }

    #[test]
    fn missing_roles_are_named_in_the_reason() {
        let policy = sample();
        assert_eq!(
            policy.authorize(
                &user("bob", &[]),
                &Attributes::resource("get", "", "pods", "dev", "p")
            ),
            Err("RBAC: [clusterrole.rbac.authorization.k8s.io \"gone\" not found]".into())
        );
    }
}
