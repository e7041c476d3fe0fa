//! RBAC objects: roleRef, subjects and policy rules.

use super::field::FieldError;

/// RBAC objects: a binding's roleRef names a ClusterRole (or a Role, for RoleBindings) in the RBAC group and
/// cannot change; subjects are Users, Groups or ServiceAccounts with names; rules list verbs and either
/// resources (with API groups) or, in ClusterRoles only, non-resource URLs.
pub fn rbac(plural: &str, object: &serde_json::Value, old: Option<&serde_json::Value>) -> Vec<FieldError> {
    use serde_json::Value;
    let mut errors = Vec::new();
    let str_at = |v: &Value, p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let list_len = |v: &Value, key: &str| v.get(key).and_then(Value::as_array).map_or(0, Vec::len);
    match plural {
        "rolebindings" | "clusterrolebindings" => {
            let role_ref = object.get("roleRef").cloned().unwrap_or(Value::Null);
            let group = str_at(&role_ref, "/apiGroup");
            if group != "rbac.authorization.k8s.io" {
                errors.push(FieldError::not_supported(
                    "roleRef.apiGroup",
                    format!("{group:?}"),
                    &["rbac.authorization.k8s.io"],
                ));
            }
            let kinds: &[&str] = if plural == "rolebindings" {
                &["ClusterRole", "Role"]
            } else {
                &["ClusterRole"]
            };
            let kind = str_at(&role_ref, "/kind");
            if !kinds.contains(&kind.as_str()) {
                errors.push(FieldError::not_supported(
                    "roleRef.kind",
                    format!("{kind:?}"),
                    kinds,
                ));
            }
            if str_at(&role_ref, "/name").is_empty() {
                errors.push(FieldError::required("roleRef.name", ""));
            }
            if let Some(old) = old
                && old.get("roleRef") != object.get("roleRef")
            {
                errors.push(FieldError::invalid("roleRef", role_ref, "cannot change roleRef"));
            }
            for (i, subject) in object
                .get("subjects")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let kind = str_at(subject, "/kind");
                if !["User", "Group", "ServiceAccount"].contains(&kind.as_str()) {
                    errors.push(FieldError::not_supported(
                        format!("subjects[{i}].kind"),
                        format!("{kind:?}"),
                        &["Group", "ServiceAccount", "User"],
                    ));
                }
                if str_at(subject, "/name").is_empty() {
                    errors.push(FieldError::required(format!("subjects[{i}].name"), ""));
                }
                if kind == "ServiceAccount"
                    && plural == "clusterrolebindings"
                    && str_at(subject, "/namespace").is_empty()
                {
                    errors.push(FieldError::required(format!("subjects[{i}].namespace"), ""));
                }
            }
        }
        "roles" | "clusterroles" => {
            for (i, rule) in object
                .get("rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                if list_len(rule, "verbs") == 0 {
                    errors.push(FieldError::required(
                        format!("rules[{i}].verbs"),
                        "verbs must contain at least one value",
                    ));
                }
                let urls = list_len(rule, "nonResourceURLs");
                if urls > 0 && plural == "roles" {
                    errors.push(FieldError::invalid(
                        format!("rules[{i}].nonResourceURLs"),
                        rule["nonResourceURLs"].clone(),
                        "namespaced rules cannot apply to non-resource URLs",
                    ));
                }
                if urls > 0 && (list_len(rule, "resources") > 0 || list_len(rule, "apiGroups") > 0) {
                    errors.push(FieldError::invalid(
                        format!("rules[{i}].nonResourceURLs"),
                        rule["nonResourceURLs"].clone(),
                        "rules cannot apply to both regular resources and non-resource URLs",
                    ));
                }
                if urls == 0 && list_len(rule, "apiGroups") == 0 {
                    errors.push(FieldError::required(
                        format!("rules[{i}].apiGroups"),
                        "resource rules must supply at least one api group",
                    ));
                }
                if urls == 0 && list_len(rule, "resources") == 0 {
                    errors.push(FieldError::required(
                        format!("rules[{i}].resources"),
                        "resource rules must supply at least one resource",
                    ));
                }
            }
        }
        _ => {}
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rbac_bindings_and_rules() {
        use serde_json::json;
        let binding = json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "robot"}]});
        assert!(rbac("rolebindings", &binding, None).is_empty());
        let errors = rbac("clusterrolebindings", &binding, None);
        assert_eq!(errors[0].to_string(), "subjects[0].namespace: Required value");
        let mut changed = binding.clone();
        changed["roleRef"]["name"] = json!("edit");
        let errors = rbac("rolebindings", &changed, Some(&binding));
        assert!(
            errors[0].to_string().ends_with("cannot change roleRef"),
            "{errors:?}"
        );
        let role = json!({"rules": [{"verbs": ["get"], "nonResourceURLs": ["/x"]}, {"verbs": [], "apiGroups": [""], "resources": ["pods"]}]});
        assert!(rbac("clusterroles", &json!({"rules": [role["rules"][0]]}), None).is_empty());
        let errors = rbac("roles", &role, None);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(
            errors[1].to_string(),
            "rules[1].verbs: Required value: verbs must contain at least one value"
        );
    }
}
