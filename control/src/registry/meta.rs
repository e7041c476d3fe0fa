//! Object metadata rules shared by every kind: names, generateName, uid, timestamps, generation.

use k8s_openapi::jiff::Timestamp;
use rand::Rng;
use serde_json::{Value, json};

use super::kinds::Kind;
use super::validation::{FieldError, dns1035_label, dns1123_label, dns1123_subdomain, path_segment_name};

/// Characters kube-apiserver uses for generateName suffixes (no vowels, no confusable digits).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
}

/// The current time as Kubernetes serialises it (RFC 3339, whole seconds, UTC).
pub fn now() -> String {
    Timestamp::from_second(unix_now())
        .map(|t| t.to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// A random RFC 4122 version 4 UUID.
pub fn new_uid(rng: &mut impl Rng) -> String {
    let mut b: [u8; 16] = rng.random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Whether the kind tracks `metadata.generation` (bumped on spec changes).
pub fn has_generation(kind: &Kind) -> bool {
    matches!(kind.plural, "deployments" | "replicasets" | "daemonsets" | "pods")
}

fn name_rule(kind: &Kind) -> fn(&str) -> Option<String> {
    match kind.plural {
        "namespaces" => dns1123_label,
        "services" => dns1035_label,
        "roles" | "clusterroles" | "rolebindings" | "clusterrolebindings" => path_segment_name,
        _ => dns1123_subdomain,
    }
}

/// Fills and checks metadata on create: name (or generateName), namespace, uid, creationTimestamp, generation.
/// `namespace` is the namespace from the URL (`None` for cluster-scoped kinds).
pub fn prepare_create(
    kind: &Kind,
    object: &mut Value,
    namespace: Option<&str>,
    rng: &mut impl Rng,
) -> Result<(), Vec<FieldError>> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    let meta = &mut object["metadata"];
    let mut errors = Vec::new();
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let generate = meta
        .get("generateName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let name = if !name.is_empty() {
        name
    } else if !generate.is_empty() {
        let suffix: String = (0..5)
            .map(|_| SUFFIX_ALPHABET[rng.random_range(0..SUFFIX_ALPHABET.len())] as char)
            .collect();
        let base: String = generate.chars().take(63 - 5).collect();
        format!("{base}{suffix}")
    } else {
        return Err(vec![FieldError::required(
            "metadata.name",
            "name or generateName is required",
        )]);
    };
    if let Some(why) = name_rule(kind)(&name) {
        errors.push(FieldError::invalid("metadata.name", format!("{name:?}"), why));
    }
    meta["name"] = json!(name);
    match namespace {
        Some(ns) if kind.namespaced => meta["namespace"] = json!(ns),
        _ => {
            if let Some(m) = meta.as_object_mut() {
                m.remove("namespace");
            }
        }
    }
    meta["uid"] = json!(new_uid(rng));
    meta["creationTimestamp"] = json!(now());
    if let Some(m) = meta.as_object_mut() {
        m.remove("resourceVersion");
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
        m.remove("selfLink");
    }
    if has_generation(kind) {
        meta["generation"] = json!(1);
    } else if let Some(m) = meta.as_object_mut() {
        m.remove("generation");
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// Carries server-owned metadata over from the stored object on update and bumps generation on spec changes.
pub fn prepare_update(kind: &Kind, old: &Value, new: &mut Value) {
    if !new.get("metadata").is_some_and(Value::is_object) {
        new["metadata"] = json!({});
    }
    for field in [
        "uid",
        "creationTimestamp",
        "namespace",
        "name",
        "deletionTimestamp",
        "generation",
    ] {
        match old.pointer(&format!("/metadata/{field}")) {
            Some(v) => new["metadata"][field] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(field);
                }
            }
        }
    }
    if let Some(m) = new["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    if has_generation(kind) && old.get("spec") != new.get("spec") {
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        new["metadata"]["generation"] = json!(generation + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::kinds::find;
    use rand::SeedableRng;

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

    #[test]
    fn generate_name_appends_five_chars() {
        let cm = find("", "v1", "configmaps").unwrap();
        let mut obj = json!({"metadata": {"generateName": "web-"}});
        prepare_create(cm, &mut obj, Some("default"), &mut rng()).unwrap();
        let name = obj["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
        assert_eq!(obj["metadata"]["namespace"], "default");
        assert_eq!(obj["metadata"]["uid"].as_str().unwrap().len(), 36);
        assert!(
            obj["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap()
                .ends_with('Z')
        );
    }

    #[test]
    fn missing_or_bad_names_are_field_errors() {
        let cm = find("", "v1", "configmaps").unwrap();
        let err = prepare_create(cm, &mut json!({}), Some("d"), &mut rng()).unwrap_err();
        assert_eq!(err[0].field, "metadata.name");
        let svc = find("", "v1", "services").unwrap();
        let err = prepare_create(
            svc,
            &mut json!({"metadata": {"name": "1abc"}}),
            Some("d"),
            &mut rng(),
        )
        .unwrap_err();
        assert!(
            err[0]
                .to_string()
                .starts_with("metadata.name: Invalid value: \"1abc\": a DNS-1035 label")
        );
        let ns = find("", "v1", "namespaces").unwrap();
        let mut obj = json!({"metadata": {"name": "team-a", "namespace": "x"}});
        prepare_create(ns, &mut obj, None, &mut rng()).unwrap();
        assert!(obj["metadata"].get("namespace").is_none());
    }

    #[test]
    fn update_keeps_server_fields_and_bumps_generation() {
        let deploy = find("apps", "v1", "deployments").unwrap();
        let old = json!({"metadata": {"name": "w", "uid": "u1", "generation": 3, "creationTimestamp": "t"}, "spec": {"replicas": 1}});
        let mut same = json!({"metadata": {"name": "w", "uid": "forged"}, "spec": {"replicas": 1}});
        prepare_update(deploy, &old, &mut same);
        assert_eq!(same["metadata"]["uid"], "u1");
        assert_eq!(same["metadata"]["generation"], 3);
        let mut changed = json!({"metadata": {"name": "w"}, "spec": {"replicas": 2}});
        prepare_update(deploy, &old, &mut changed);
        assert_eq!(changed["metadata"]["generation"], 4);
        assert_eq!(changed["metadata"]["creationTimestamp"], "t");
    }

    #[test]
    fn uids_are_version_4() {
        let uid = new_uid(&mut rng());
        assert_eq!(&uid[14..15], "4");
        assert!(matches!(&uid[19..20], "8" | "9" | "a" | "b"));
    }
}
