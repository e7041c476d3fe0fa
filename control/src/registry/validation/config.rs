//! ConfigMap and Secret: key syntax, the 1 MiB size limit, immutability, the keys each Secret type needs.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde_json::Value;

use super::field::FieldError;
use super::names::{config_map_key, quote};

/// The largest ConfigMap or Secret payload kube accepts.
pub const MAX_SIZE: usize = 1024 * 1024;

const IMMUTABLE: &str = "field is immutable when `immutable` is set";

fn keys<'a>(keys: impl Iterator<Item = &'a String>, path: &str, errors: &mut Vec<FieldError>) {
    for key in keys {
        for why in config_map_key(key) {
            errors.push(FieldError::invalid(format!("{path}[{key}]"), quote(key), why));
        }
    }
}

/// `ValidateConfigMap`.
pub fn config_map(object: &Value) -> Vec<FieldError> {
    let Ok(cm) = serde_json::from_value::<ConfigMap>(object.clone()) else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    let data = cm.data.unwrap_or_default();
    let binary = cm.binary_data.unwrap_or_default();
    keys(data.keys(), "data", &mut errors);
    for key in data.keys().filter(|k| binary.contains_key(*k)) {
        errors.push(FieldError::invalid(
            format!("data[{key}]"),
            quote(key),
            "duplicate of key present in binaryData",
        ));
    }
    keys(binary.keys(), "binaryData", &mut errors);
    for key in binary.keys().filter(|k| data.contains_key(*k)) {
        errors.push(FieldError::invalid(
            format!("binaryData[{key}]"),
            quote(key),
            "duplicate of key present in data",
        ));
    }
    let size: usize =
        data.values().map(String::len).sum::<usize>() + binary.values().map(|b| b.0.len()).sum::<usize>();
    if size > MAX_SIZE {
        errors.push(FieldError::too_long("[]", MAX_SIZE));
    }
    errors
}

/// ConfigMaps and Secrets marked `immutable` keep their payload and the mark.
pub fn immutable_update(new: &Value, old: &Value, payload: &[&str]) -> Vec<FieldError> {
    if old.get("immutable").and_then(Value::as_bool) != Some(true) {
        return Vec::new();
    }
    let mut errors = Vec::new();
    if new.get("immutable").and_then(Value::as_bool) != Some(true) {
        errors.push(FieldError::forbidden("immutable", IMMUTABLE));
    }
    for field in payload {
        if new.get(*field) != old.get(*field) {
            errors.push(FieldError::forbidden(*field, IMMUTABLE));
        }
    }
    errors
}

/// `ValidateSecret`: keys (of `data` and `stringData`), size, and the keys the well-known types require.
pub fn secret(object: &Value) -> Vec<FieldError> {
    let Ok(secret) = serde_json::from_value::<Secret>(object.clone()) else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    let data = secret.data.unwrap_or_default();
    let strings = secret.string_data.unwrap_or_default();
    keys(data.keys(), "data", &mut errors);
    keys(strings.keys(), "stringData", &mut errors);
    let size: usize =
        data.values().map(|b| b.0.len()).sum::<usize>() + strings.values().map(String::len).sum::<usize>();
    if size > MAX_SIZE {
        errors.push(FieldError::too_long("data", MAX_SIZE));
    }
    let has = |k: &str| data.contains_key(k) || strings.contains_key(k);
    let required: &[&str] = match secret.type_.as_deref().unwrap_or("Opaque") {
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        _ => &[],
    };
    for key in required.iter().filter(|k| !has(k)) {
        errors.push(FieldError::required(format!("data[{key}]"), ""));
    }
    if secret.type_.as_deref() == Some("kubernetes.io/service-account-token")
        && secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("kubernetes.io/service-account.name"))
            .is_none_or(String::is_empty)
    {
        errors.push(FieldError::required(
            "metadata.annotations[kubernetes.io/service-account.name]",
            "",
        ));
    }
    errors
}

/// A Secret's type cannot change.
pub fn secret_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let ty = |v: &Value| {
        v.get("type")
            .and_then(Value::as_str)
            .unwrap_or("Opaque")
            .to_owned()
    };
    let mut errors = Vec::new();
    if ty(new) != ty(old) {
        errors.push(FieldError::invalid("type", quote(&ty(new)), "field is immutable"));
    }
    errors.extend(immutable_update(new, old, &["data", "stringData"]));
    errors
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::registry::validation::shown;

    #[test]
    fn config_map_keys_and_size() {
        let cm = json!({"metadata": {"name": "c"}, "data": {"app.properties": "x", "a/b": "y", "dup": "1"},
            "binaryData": {"dup": "AAE="}});
        let errors = shown(&config_map(&cm));
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with(
            "data[a/b]: Invalid value: \"a/b\": a valid config key must consist of alphanumeric characters"
        ));
        assert_eq!(
            errors[1],
            "data[dup]: Invalid value: \"dup\": duplicate of key present in binaryData"
        );
        assert_eq!(
            errors[2],
            "binaryData[dup]: Invalid value: \"dup\": duplicate of key present in data"
        );
        let big = json!({"metadata": {"name": "c"}, "data": {"k": "x".repeat(MAX_SIZE + 1)}});
        assert_eq!(
            shown(&config_map(&big)),
            ["[]: Too long: may not be more than 1048576 bytes"]
        );
    }

    #[test]
    fn immutable_config_maps_keep_their_data() {
        let old = json!({"immutable": true, "data": {"k": "v"}});
        assert!(immutable_update(&old, &old, &["data", "binaryData"]).is_empty());
        let new = json!({"data": {"k": "w"}});
        assert_eq!(
            shown(&immutable_update(&new, &old, &["data", "binaryData"])),
            [
                "immutable: Forbidden: field is immutable when `immutable` is set",
                "data: Forbidden: field is immutable when `immutable` is set",
            ]
        );
        assert!(immutable_update(&new, &json!({"data": {}}), &["data"]).is_empty());
    }

    #[test]
    fn secrets() {
        let s = json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "AA=="},
            "stringData": {"bad key": "x"}});
        let errors = shown(&secret(&s));
        assert!(errors[0].starts_with("stringData[bad key]: Invalid value: \"bad key\": a valid config key"));
        assert_eq!(errors[1], "data[tls.key]: Required value");
        let sa = json!({"metadata": {"name": "s"}, "type": "kubernetes.io/service-account-token"});
        assert_eq!(
            shown(&secret(&sa)),
            ["metadata.annotations[kubernetes.io/service-account.name]: Required value"]
        );
        assert!(secret(&json!({"metadata": {"name": "s"}, "data": {"password": "cw=="}})).is_empty());
        assert_eq!(
            shown(&secret_update(&json!({"type": "x"}), &json!({}))),
            ["type: Invalid value: \"x\": field is immutable"]
        );
    }
}
