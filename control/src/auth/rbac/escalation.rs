//! Privilege-escalation prevention: a user may only create or update a Role with rules they hold, and bind
//! a role whose rules they hold, unless they have the `escalate` (roles) or `bind` (roles, for bindings) verb.

use k8s_openapi::api::rbac::v1::PolicyRule;
use serde_json::Value;

use crate::auth::{Attributes, Authorizer, UserInfo};

const GROUP: &str = "rbac.authorization.k8s.io";

/// The request attributes one rule grants (every verb x group x resource x name combination).
fn grants(rule: &PolicyRule, namespace: &str) -> Vec<Attributes> {
    let mut out = Vec::new();
    for verb in &rule.verbs {
        for url in rule.non_resource_urls.iter().flatten() {
            out.push(Attributes::non_resource(verb, url));
        }
        let names = match &rule.resource_names {
            Some(names) if !names.is_empty() => names.clone(),
            _ => vec![String::new()],
        };
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for name in &names {
                    out.push(Attributes::resource(verb, group, resource, namespace, name));
                }
            }
        }
    }
    out
}

/// The rules among `rules` that `user` does not hold in `namespace` (empty: none are new).
pub fn not_held(
    authz: &dyn Authorizer,
    user: &UserInfo,
    rules: &[PolicyRule],
    namespace: &str,
) -> Vec<String> {
    rules
        .iter()
        .filter(|rule| {
            grants(rule, namespace)
                .iter()
                .any(|attrs| authz.authorize(user, attrs).is_err())
        })
        .map(|rule| {
            let list = |v: &Option<Vec<String>>| format!("{:?}", v.clone().unwrap_or_default());
            if rule.non_resource_urls.as_ref().is_some_and(|u| !u.is_empty()) {
                format!(
                    "{{NonResourceURLs:{}, Verbs:{:?}}}",
                    list(&rule.non_resource_urls),
                    rule.verbs
                )
            } else {
                format!(
                    "{{APIGroups:{}, Resources:{}, ResourceNames:{}, Verbs:{:?}}}",
                    list(&rule.api_groups),
                    list(&rule.resources),
                    list(&rule.resource_names),
                    rule.verbs
                )
            }
        })
        .collect()
}

fn rules_of(object: &Value) -> Vec<PolicyRule> {
    object
        .get("rules")
        .cloned()
        .and_then(|r| serde_json::from_value(r).ok())
        .unwrap_or_default()
}

/// Checks a Role/ClusterRole/binding write by `user`; `Err` carries kube-apiserver's explanation.
pub fn check(
    authz: &dyn Authorizer,
    user: &UserInfo,
    plural: &str,
    namespace: &str,
    object: &Value,
) -> Result<(), String> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let missing = match plural {
        "roles" | "clusterroles" => {
            let escalate = Attributes::resource("escalate", GROUP, plural, namespace, name);
            if authz.authorize(user, &escalate).is_ok() {
                return Ok(());
            }
            if object.get("aggregationRule").is_some_and(|a| !a.is_null()) {
                return Err(format!(
                    "user {:?} must have cluster-admin privileges (the escalate verb) to create an aggregated ClusterRole",
                    user.name
                ));
            }
            not_held(authz, user, &rules_of(object), namespace)
        }
        "rolebindings" | "clusterrolebindings" => {
            let kind = object
                .pointer("/roleRef/kind")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let role = object
                .pointer("/roleRef/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let (role_plural, role_ns) = if kind == "Role" {
                ("roles", namespace)
            } else {
                ("clusterroles", "")
            };
            let bind = Attributes::resource("bind", GROUP, role_plural, role_ns, role);
            if authz.authorize(user, &bind).is_ok() {
                return Ok(());
            }
            let Some(rules) = authz.role_rules(kind, role_ns, role) else {
                return Err(format!("{} {role:?} not found", kind.to_lowercase()));
            };
            not_held(authz, user, &rules, namespace)
        }
        _ => Vec::new(),
    };
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "user {:?} (groups={:?}) is attempting to grant RBAC permissions not currently held:\n{}",
            user.name,
            user.groups,
            missing.join("\n")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::rbac::Policy;
    use serde_json::json;

    struct Fixed(Policy);

    impl Authorizer for Fixed {
        fn authorize(&self, user: &UserInfo, attrs: &Attributes) -> Result<(), String> {
            self.0.authorize(user, attrs)
        }

        fn role_rules(&self, kind: &str, namespace: &str, name: &str) -> Option<Vec<PolicyRule>> {
            self.0.role(kind, namespace, name).map(<[PolicyRule]>::to_vec)
        }
    }

    #[test]
    fn only_held_permissions_can_be_granted() {
        let p = crate::auth::rbac::policy::PREFIX;
        let objects = [
            (format!("{p}clusterroles/pods"), json!({"metadata": {"name": "pods"},
                "rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]},
                          {"verbs": ["create", "update"], "apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"]}]})),
            (format!("{p}clusterroles/secrets"), json!({"metadata": {"name": "secrets"},
                "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}]})),
            (format!("{p}rolebindings/dev/jane"), json!({"metadata": {"name": "jane", "namespace": "dev"},
                "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "pods"},
                "subjects": [{"kind": "User", "name": "jane"}]})),
        ]
        .into_iter()
        .collect();
        let authz = Fixed(Policy::build(&objects));
        let jane = UserInfo::authenticated("jane".into(), vec![]);
        let role = |resource: &str| json!({"metadata": {"name": "r"}, "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": [resource]}]});
        assert!(check(&authz, &jane, "roles", "dev", &role("pods")).is_ok());
        let err = check(&authz, &jane, "roles", "dev", &role("secrets")).unwrap_err();
        assert!(
            err.contains("attempting to grant RBAC permissions not currently held"),
            "{err}"
        );
        assert!(err.contains("secrets"), "{err}");
        assert!(check(&authz, &jane, "roles", "prod", &role("pods")).is_err());
        let binding = |role: &str| json!({"metadata": {"name": "b"}, "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role}});
        assert!(check(&authz, &jane, "rolebindings", "dev", &binding("pods")).is_ok());
        assert!(check(&authz, &jane, "rolebindings", "dev", &binding("secrets")).is_err());
        let admin = UserInfo::authenticated("root".into(), vec![]);
        assert!(check(&authz, &admin, "rolebindings", "dev", &binding("secrets")).is_err());
    }
}
