//! Kubernetes validation per kind: pure checks `(object[, old]) -> Vec<FieldError>` in kube-apiserver's wording.

pub mod apps;
pub mod cluster;
pub mod config;
pub mod container;
pub mod discovery;
pub mod field;
pub mod meta;
pub mod names;
pub mod pod;
pub mod rbac;
pub mod resources;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

pub use field::{FieldError, FieldErrorKind};
pub use names::{dns1035_label, dns1123_label, dns1123_subdomain, path_segment_name, port_name};
pub use rbac::rbac;

use super::kinds::Kind;

/// The object without metadata and status: what a spec-changing write changes.
fn body(object: &Value) -> Value {
    let mut body = object.clone();
    if let Some(map) = body.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    body
}

/// Kinds that are answered, not stored (access and token reviews), carry nothing to validate.
fn is_review(kind: &Kind) -> bool {
    matches!(kind.group, "authorization.k8s.io" | "authentication.k8s.io")
}

/// Validates a defaulted object of `kind` on create (`old` is `None`) or update. Metadata is checked on every
/// write; the kind's own rules when the object is created or its body (everything but metadata and status)
/// changes, so a status or finalizer update never fails over a spec stored before a rule existed; status
/// counters when the status changes. Services are validated by `registry::service`.
pub fn validate(kind: &Kind, object: &Value, old: Option<&Value>) -> Vec<FieldError> {
    if is_review(kind) {
        return Vec::new();
    }
    let mut errors = object
        .get("metadata")
        .and_then(|m| serde_json::from_value::<ObjectMeta>(m.clone()).ok())
        .map(|m| meta::object_meta(&m))
        .unwrap_or_default();
    let changed = old.is_none_or(|old| body(old) != body(object));
    let status_changed = old.is_none_or(|old| old.get("status") != object.get("status"));
    match (kind.group, kind.plural) {
        ("rbac.authorization.k8s.io", plural) => errors.extend(rbac(plural, object, old)),
        ("", "pods") => {
            if changed {
                errors.extend(match old {
                    None => pod::pod(object),
                    Some(old) => pod::update(object, old),
                });
            }
            if status_changed {
                errors.extend(pod::status(object));
            }
        }
        ("apps", plural @ ("deployments" | "replicasets" | "daemonsets")) => {
            if changed {
                errors.extend(match plural {
                    "deployments" => apps::deployment(object),
                    "replicasets" => apps::replica_set(object),
                    _ => apps::daemon_set(object),
                });
                if let Some(old) = old {
                    errors.extend(apps::selector_update(object, old));
                }
            }
            if status_changed {
                errors.extend(apps::status(object));
            }
        }
        ("discovery.k8s.io", "endpointslices") if changed => {
            errors.extend(discovery::endpoint_slice(object));
            if let Some(old) = old {
                errors.extend(discovery::endpoint_slice_update(object, old));
            }
        }
        ("", "configmaps") if changed => {
            errors.extend(config::config_map(object));
            if let Some(old) = old {
                errors.extend(config::immutable_update(object, old, &["data", "binaryData"]));
            }
        }
        ("", "secrets") if changed => {
            errors.extend(config::secret(object));
            if let Some(old) = old {
                errors.extend(config::secret_update(object, old));
            }
        }
        ("", "namespaces") if changed => errors.extend(cluster::namespace(object)),
        ("", "nodes") if changed => {
            errors.extend(cluster::node(object));
            if let Some(old) = old {
                errors.extend(cluster::node_update(object, old));
            }
        }
        ("coordination.k8s.io", "leases") if changed => errors.extend(cluster::lease(object)),
        _ => {}
    }
    errors
}

/// Field errors as the messages clients see (for tests).
#[cfg(test)]
pub(crate) fn shown(errors: &[FieldError]) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::registry::kinds::find;

    #[test]
    fn metadata_is_checked_for_every_kind() {
        for (group, plural) in [
            ("", "configmaps"),
            ("", "services"),
            ("apps", "deployments"),
            ("", "events"),
        ] {
            let kind = find(group, "v1", plural).unwrap();
            let errors = validate(
                kind,
                &json!({"metadata": {"name": "x", "labels": {"a b": "c"}}}),
                None,
            );
            assert!(
                errors.iter().any(|e| e.field == "metadata.labels"),
                "{plural}: {errors:?}"
            );
        }
        let review = find("authorization.k8s.io", "v1", "selfsubjectaccessreviews").unwrap();
        assert!(validate(review, &json!({"metadata": {"labels": {"a b": "c"}}}), None).is_empty());
    }

    #[test]
    fn kind_rules_run_on_create_and_on_body_changes_only() {
        let pods = find("", "v1", "pods").unwrap();
        let bad = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}});
        assert_eq!(
            validate(pods, &bad, None)[0].to_string(),
            "spec.containers[0].image: Required value"
        );
        // A status update of an object stored before the rule existed still goes through.
        let mut status = bad.clone();
        status["status"] = json!({"phase": "Running"});
        status["metadata"]["finalizers"] = json!([]);
        assert!(validate(pods, &status, Some(&bad)).is_empty());
        let cms = find("", "v1", "configmaps").unwrap();
        let old = json!({"metadata": {"name": "c"}, "immutable": true, "data": {"k": "v"}});
        let new = json!({"metadata": {"name": "c"}, "immutable": true, "data": {"k": "w"}});
        assert_eq!(
            validate(cms, &new, Some(&old))[0].to_string(),
            "data: Forbidden: field is immutable when `immutable` is set"
        );
    }

    #[test]
    fn workload_status_counters() {
        let rs = find("apps", "v1", "replicasets").unwrap();
        let old = json!({"metadata": {"name": "r"}, "spec": {"selector": {}}});
        let mut new = old.clone();
        new["status"] = json!({"replicas": -2});
        assert_eq!(
            validate(rs, &new, Some(&old))[0].to_string(),
            "status.replicas: Invalid value: -2: must be greater than or equal to 0"
        );
    }

    /// The install manifests shipped in `deploy/` are valid as kube-apiserver sees them.
    #[test]
    fn shipped_manifests_pass() {
        use serde::Deserialize;
        let manifests = [
            include_str!("../../../../deploy/daemonset.yaml"),
            include_str!("../../../../deploy/configmap.yaml"),
            include_str!("../../../../deploy/rbac.yaml"),
        ];
        let mut checked = 0;
        for text in manifests {
            for doc in serde_yaml::Deserializer::from_str(text) {
                let object = Value::deserialize(doc).unwrap();
                let (group, version) = match object["apiVersion"].as_str().unwrap().split_once('/') {
                    Some((g, v)) => (g, v),
                    None => ("", object["apiVersion"].as_str().unwrap()),
                };
                let kind = crate::registry::kinds::KINDS
                    .iter()
                    .find(|k| k.group == group && k.version == version && k.kind == object["kind"])
                    .unwrap();
                let mut object = (kind.normalize)(object).unwrap();
                crate::registry::defaults::apply(kind, &mut object);
                assert_eq!(validate(kind, &object, None), Vec::new(), "{}", kind.kind);
                checked += 1;
            }
        }
        assert_eq!(checked, 5);
    }
}
