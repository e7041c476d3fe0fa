//! Field errors in Kubernetes' wording, and the name/port checks shared by all kinds.

use std::fmt;

/// The category of a field error (the `reason` of a Status cause).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    Invalid,
    Required,
    Duplicate,
    NotSupported,
    Forbidden,
}

/// One invalid field, rendered like kube-apiserver: `spec.ports[0].port: Invalid value: 0: must be ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub kind: FieldErrorKind,
    pub field: String,
    /// The offending value, already rendered (strings quoted).
    pub value: Option<String>,
    pub detail: String,
}

impl FieldError {
    pub fn invalid(field: impl Into<String>, value: impl fmt::Display, detail: impl Into<String>) -> Self {
        Self {
            kind: FieldErrorKind::Invalid,
            field: field.into(),
            value: Some(value.to_string()),
            detail: detail.into(),
        }
    }

    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            kind: FieldErrorKind::Required,
            field: field.into(),
            value: None,
            detail: detail.into(),
        }
    }

    pub fn duplicate(field: impl Into<String>, value: impl fmt::Display) -> Self {
        Self {
            kind: FieldErrorKind::Duplicate,
            field: field.into(),
            value: Some(value.to_string()),
            detail: String::new(),
        }
    }

    pub fn not_supported(field: impl Into<String>, value: impl fmt::Display, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        let detail = format!("supported values: {}", list.join(", "));
        Self {
            kind: FieldErrorKind::NotSupported,
            field: field.into(),
            value: Some(value.to_string()),
            detail,
        }
    }

    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            kind: FieldErrorKind::Forbidden,
            field: field.into(),
            value: None,
            detail: detail.into(),
        }
    }

    /// The Status cause reason (`FieldValueInvalid`, ...).
    pub fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
        }
    }

    /// The message without the field path.
    pub fn message(&self) -> String {
        let head = match self.kind {
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::Forbidden => "Forbidden",
        };
        match (&self.value, self.detail.is_empty()) {
            (Some(v), false) => format!("{head}: {v}: {}", self.detail),
            (Some(v), true) => format!("{head}: {v}"),
            (None, false) => format!("{head}: {}", self.detail),
            (None, true) => head.to_owned(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message())
    }
}

/// Checks a DNS-1123 subdomain (most object names): lowercase alphanumerics, '-' and '.', at most 253.
pub fn dns1123_subdomain(name: &str) -> Option<String> {
    let ok = name.len() <= 253
        && !name.is_empty()
        && name
            .split('.')
            .all(|label| label_chars_ok(label) && !label.is_empty());
    (!ok).then(|| {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must \
         start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is \
         '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            .to_owned()
    })
}

/// kube-apiserver's rule for names that only need to be one URL path segment (RBAC roles and bindings,
/// whose names carry colons like `system:node`).
pub fn path_segment_name(name: &str) -> Option<String> {
    if name == "." || name == ".." {
        return Some(format!("may not be '{name}'"));
    }
    for bad in ["/", "%"] {
        if name.contains(bad) {
            return Some(format!("may not contain '{bad}'"));
        }
    }
    None
}

/// Checks a DNS-1123 label (namespaces, ports' names): at most 63 characters, no dots.
pub fn dns1123_label(name: &str) -> Option<String> {
    let ok = !name.is_empty() && name.len() <= 63 && label_chars_ok(name);
    (!ok).then(|| {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and \
         end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is \
         '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
            .to_owned()
    })
}

/// Checks a DNS-1035 label (Service names): like a DNS-1123 label but starting with a letter.
pub fn dns1035_label(name: &str) -> Option<String> {
    let ok = dns1123_label(name).is_none() && name.starts_with(|c: char| c.is_ascii_lowercase());
    (!ok).then(|| {
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic \
         character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for \
         validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
            .to_owned()
    })
}

fn label_chars_ok(label: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    label.chars().all(|c| alnum(c) || c == '-') && label.starts_with(alnum) && label.ends_with(alnum)
}

/// Checks an IANA service name (a port name): at most 15 characters, a letter, no double hyphens.
pub fn port_name(name: &str) -> Option<String> {
    let ok = name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.chars().any(|c| c.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    (!ok).then(|| {
        "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-), contain at least one letter, \
         must not start or end with a hyphen, no two adjacent hyphens, and be no more than 15 characters"
            .to_owned()
    })
}

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
    fn messages_match_kube_apiserver_wording() {
        let e = FieldError::invalid("spec.ports[0].port", 0, "must be between 1 and 65535, inclusive");
        assert_eq!(
            e.to_string(),
            "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
        );
        let r = FieldError::required("metadata.name", "name or generateName is required");
        assert_eq!(
            r.to_string(),
            "metadata.name: Required value: name or generateName is required"
        );
        let n = FieldError::not_supported("spec.type", "\"Foo\"", &["ClusterIP", "NodePort"]);
        assert_eq!(
            n.to_string(),
            "spec.type: Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"NodePort\""
        );
        assert_eq!(
            FieldError::duplicate("spec.ports[1]", "x").reason(),
            "FieldValueDuplicate"
        );
    }

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

    #[test]
    fn names() {
        assert_eq!(path_segment_name("system:node"), None);
        assert!(path_segment_name("a/b").is_some());
        assert!(path_segment_name("..").is_some());
        assert!(dns1123_subdomain("web.example-1").is_none());
        assert!(dns1123_subdomain("Web").is_some());
        assert!(dns1123_subdomain("-a").is_some());
        assert!(dns1123_subdomain("a..b").is_some());
        assert!(dns1123_label("kube-system").is_none());
        assert!(dns1123_label("a.b").is_some());
        assert!(dns1123_label(&"a".repeat(64)).is_some());
        assert!(dns1035_label("1web").is_some());
        assert!(dns1035_label("web-1").is_none());
        assert!(port_name("http").is_none());
        assert!(port_name("http--x").is_some());
        assert!(port_name("8080").is_some());
        assert!(port_name("a-very-long-port-name").is_some());
    }
}
