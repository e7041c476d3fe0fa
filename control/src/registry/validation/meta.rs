//! ObjectMeta rules for every kind (labels, annotations, finalizers, ownerReferences) and label selectors.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

use super::field::FieldError;
use super::names::{label_value, qualified_name, quote};

/// kube-apiserver's limit on the summed size of all annotation keys and values.
pub const TOTAL_ANNOTATION_SIZE: usize = 256 * 1024;

/// `ValidateLabels`: qualified-name keys and label values, errors at `path` (kube does not index the key).
pub fn labels(labels: Option<&BTreeMap<String, String>>, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (key, value) in labels.into_iter().flatten() {
        errors.extend(label_key(key, path));
        for why in label_value(value) {
            errors.push(FieldError::invalid(path, quote(value), why));
        }
    }
    errors
}

/// `ValidateLabelName`.
pub fn label_key(key: &str, path: &str) -> Vec<FieldError> {
    qualified_name(key)
        .into_iter()
        .map(|why| FieldError::invalid(path, quote(key), why))
        .collect()
}

/// `ValidateAnnotations`: keys are qualified names (case-insensitively), the total size at most 256 KiB.
pub fn annotations(annotations: Option<&BTreeMap<String, String>>, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut total = 0;
    for (key, value) in annotations.into_iter().flatten() {
        for why in qualified_name(&key.to_lowercase()) {
            errors.push(FieldError::invalid(path, quote(key), why));
        }
        total += key.len() + value.len();
    }
    if total > TOTAL_ANNOTATION_SIZE {
        errors.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE));
    }
    errors
}

/// `ValidateFinalizers`: qualified names, and not both `orphan` and `foregroundDeletion`.
pub fn finalizers(finalizers: &[String], path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for finalizer in finalizers {
        for why in qualified_name(finalizer) {
            errors.push(FieldError::invalid(path, quote(finalizer), why));
        }
    }
    let has = |f: &str| finalizers.iter().any(|x| x == f);
    if has("orphan") && has("foregroundDeletion") {
        errors.push(FieldError::invalid(
            path,
            json(&finalizers),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    errors
}

fn owner_reference(owner: &OwnerReference, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let version = owner.api_version.rsplit('/').next().unwrap_or_default();
    if version.is_empty() {
        errors.push(FieldError::invalid(
            format!("{path}.apiVersion"),
            quote(&owner.api_version),
            "version must not be empty",
        ));
    }
    let required = [("kind", &owner.kind), ("name", &owner.name), ("uid", &owner.uid)];
    for (field, value) in required {
        if value.is_empty() {
            errors.push(FieldError::invalid(
                format!("{path}.{field}"),
                "\"\"",
                format!("{field} must not be empty"),
            ));
        }
    }
    if owner.api_version == "v1" && owner.kind == "Event" {
        errors.push(FieldError::invalid(
            path,
            json(owner),
            "/v1, Kind=Event is disallowed from being an owner",
        ));
    }
    errors
}

/// `ValidateOwnerReferences`: required fields and at most one controller.
pub fn owner_references(owners: &[OwnerReference], path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut controller: Option<String> = None;
    for owner in owners {
        errors.extend(owner_reference(owner, path));
        if owner.controller == Some(true) {
            let this = format!("{}/{}", owner.kind, owner.name);
            match &controller {
                Some(first) => errors.push(FieldError::invalid(
                    path,
                    json(&owners),
                    format!(
                        "Only one reference can have Controller set to true. Found \"true\" in references for \
                         {first} and {this}"
                    ),
                )),
                None => controller = Some(this),
            }
        }
    }
    errors
}

/// The user-settable metadata of any object (names are checked when the object is created, in `registry::meta`).
pub fn object_meta(meta: &ObjectMeta) -> Vec<FieldError> {
    let mut errors = labels(meta.labels.as_ref(), "metadata.labels");
    errors.extend(annotations(meta.annotations.as_ref(), "metadata.annotations"));
    errors.extend(finalizers(
        meta.finalizers.as_deref().unwrap_or_default(),
        "metadata.finalizers",
    ));
    errors.extend(owner_references(
        meta.owner_references.as_deref().unwrap_or_default(),
        "metadata.ownerReferences",
    ));
    errors
}

/// `ValidateLabelSelector`: operators and their values, keys, label values.
pub fn label_selector(selector: &LabelSelector, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
        let at = format!("{path}.matchExpressions[{i}]");
        let values = expr.values.as_deref().unwrap_or_default();
        match expr.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => errors.push(FieldError::required(
                format!("{at}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if !values.is_empty() => errors.push(FieldError::forbidden(
                format!("{at}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => errors.push(FieldError::invalid(
                format!("{at}.operator"),
                quote(other),
                "not a valid selector operator",
            )),
        }
        errors.extend(label_key(&expr.key, &format!("{at}.key")));
        for (j, value) in values.iter().enumerate() {
            for why in label_value(value) {
                errors.push(FieldError::invalid(
                    format!("{at}.values[{j}]"),
                    quote(value),
                    why,
                ));
            }
        }
    }
    errors.extend(labels(
        selector.match_labels.as_ref(),
        &format!("{path}.matchLabels"),
    ));
    errors
}

/// A bad value that is not a number or a string, as kube-apiserver (1.34 and later) shows it: compact JSON.
pub fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn meta(value: serde_json::Value) -> ObjectMeta {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn label_keys_and_values() {
        let errors = object_meta(&meta(json!({"labels": {"a b": "c", "ok": "-bad", "x": "fine"}})));
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert!(shown[0].starts_with(
            "metadata.labels: Invalid value: \"a b\": name part must consist of alphanumeric characters"
        ));
        assert!(shown[1].starts_with(
            "metadata.labels: Invalid value: \"-bad\": a valid label must be an empty string or consist of"
        ));
        let long = "v".repeat(64);
        let errors = object_meta(&meta(json!({"labels": {"k": long}})));
        assert_eq!(
            errors[0].message(),
            format!("Invalid value: \"{long}\": must be no more than 63 characters")
        );
    }

    #[test]
    fn annotation_keys_are_case_insensitive_and_sized() {
        assert!(object_meta(&meta(json!({"annotations": {"Example.com/Note": "x"}}))).is_empty());
        let errors = object_meta(&meta(json!({"annotations": {"bad key": "x"}})));
        assert_eq!(errors[0].field, "metadata.annotations");
        let big = "x".repeat(TOTAL_ANNOTATION_SIZE);
        let errors = object_meta(&meta(json!({"annotations": {"k": big}})));
        assert_eq!(
            errors[0].to_string(),
            "metadata.annotations: Too long: may not be more than 262144 bytes"
        );
    }

    #[test]
    fn finalizers_and_owner_references() {
        assert!(
            object_meta(&meta(
                json!({"finalizers": ["kubernetes", "example.com/cleanup"]})
            ))
            .is_empty()
        );
        let errors = object_meta(&meta(
            json!({"finalizers": ["a/b/c", "orphan", "foregroundDeletion"]}),
        ));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[1]
                .to_string()
                .ends_with("finalizer orphan and foregroundDeletion cannot be both set")
        );
        let errors = object_meta(&meta(json!({"ownerReferences": [
            {"apiVersion": "apps/", "kind": "", "name": "rs", "uid": ""},
        ]})));
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "metadata.ownerReferences.apiVersion: Invalid value: \"apps/\": version must not be empty",
                "metadata.ownerReferences.kind: Invalid value: \"\": kind must not be empty",
                "metadata.ownerReferences.uid: Invalid value: \"\": uid must not be empty",
            ]
        );
        let two = json!({"ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "a", "uid": "1", "controller": true},
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "b", "uid": "2", "controller": true},
        ]});
        let errors = object_meta(&meta(two));
        assert!(
            errors[0].detail.ends_with("for ReplicaSet/a and ReplicaSet/b"),
            "{errors:?}"
        );
    }

    #[test]
    fn selectors() {
        let sel: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In"},
                {"key": "x", "operator": "Exists", "values": ["a"]},
                {"key": "y", "operator": "Near"},
            ]
        }))
        .unwrap();
        let shown: Vec<String> = label_selector(&sel, "spec.selector")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            shown,
            [
                "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
                "spec.selector.matchExpressions[1].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                "spec.selector.matchExpressions[2].operator: Invalid value: \"Near\": not a valid selector operator",
            ]
        );
        assert_eq!(
            json(&LabelSelector {
                match_labels: Some([("app".to_owned(), "web".to_owned())].into()),
                match_expressions: None
            }),
            "{\"matchLabels\":{\"app\":\"web\"}}"
        );
    }
}
