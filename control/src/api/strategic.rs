//! Strategic merge patch (what `kubectl apply`, `label` and `edit` send for built-in kinds).
//!
//! Lists of objects merge by their Kubernetes merge key (containers by `name`, container ports by
//! `containerPort`, Service ports by `port`, ...); `finalizers` merge as a set; other lists are replaced.
//! Directives: `$patch: replace|delete`, `$retainKeys`, `$setElementOrder/<list>` and
//! `$deleteFromPrimitiveList/<list>`.

use serde_json::{Map, Value, json};

/// The merge key of a list field, decided from its name and (for `ports`) its items.
fn merge_key(field: &str, sample: Option<&Value>) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => Some("name"),
        "ports" => Some(if sample.is_some_and(|s| s.get("containerPort").is_some()) {
            "containerPort"
        } else {
            "port"
        }),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "conditions" | "addresses" => Some("type"),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        "ownerReferences" => Some("uid"),
        _ => None,
    }
}

/// The key fields of a list that server-side apply merges as a map (kube's `x-kubernetes-list-map-keys`),
/// decided like [`merge_key`] from the field name and a sample item.
pub fn list_map_keys(field: &str, sample: Option<&Value>) -> Option<&'static [&'static str]> {
    match field {
        "ports" if sample.is_some_and(|s| s.get("containerPort").is_some()) => {
            Some(&["containerPort", "protocol"])
        }
        "ports" => Some(&["port", "protocol"]),
        "topologySpreadConstraints" => Some(&["topologyKey", "whenUnsatisfiable"]),
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => Some(&["name"]),
        "volumeMounts" => Some(&["mountPath"]),
        "volumeDevices" => Some(&["devicePath"]),
        "conditions" | "addresses" => Some(&["type"]),
        "hostAliases" => Some(&["ip"]),
        "ownerReferences" => Some(&["uid"]),
        _ => None,
    }
}

/// The value a list-map key field takes when an item omits it (kube's schema default for the key).
pub fn key_default(key: &str) -> Option<Value> {
    (key == "protocol").then(|| json!("TCP"))
}

/// Lists of scalars that merge as sets.
pub const SET_LISTS: &[&str] = &["finalizers"];

/// Applies a strategic merge patch to `target`.
pub fn apply(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *target = without_directives(patch);
            return;
        }
        Some("delete") => {
            *target = Value::Null;
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().expect("made an object above");
    for (key, value) in p {
        if key.starts_with('$') {
            continue;
        }
        match value {
            Value::Null => {
                t.remove(key);
            }
            Value::Array(items) => merge_list(t, key, items),
            Value::Object(_) => {
                let slot = t.entry(key.clone()).or_insert(Value::Null);
                apply(slot, value);
                if slot.is_null() {
                    t.remove(key);
                }
            }
            other => {
                t.insert(key.clone(), other.clone());
            }
        }
    }
    for (key, value) in p {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/")
            && let (Some(Value::Array(list)), Some(gone)) = (t.get_mut(field), value.as_array())
        {
            list.retain(|v| !gone.contains(v));
        }
        if let Some(field) = key.strip_prefix("$setElementOrder/")
            && let Some(order) = value.as_array()
        {
            reorder(t, field, order);
        }
    }
    if let Some(keep) = p.get("$retainKeys").and_then(Value::as_array) {
        t.retain(|k, _| keep.iter().any(|r| r.as_str() == Some(k)));
    }
}

fn without_directives(value: &Value) -> Value {
    match value {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), without_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_directives).collect()),
        other => other.clone(),
    }
}

fn merge_list(target: &mut Map<String, Value>, field: &str, items: &[Value]) {
    if SET_LISTS.contains(&field) {
        let list = target.entry(field.to_owned()).or_insert_with(|| json!([]));
        if let Some(list) = list.as_array_mut() {
            for item in items {
                if !list.contains(item) {
                    list.push(item.clone());
                }
            }
            return;
        }
    }
    let sample = items
        .first()
        .or_else(|| target.get(field).and_then(|l| l.as_array()?.first()));
    let key = merge_key(field, sample).filter(|_| items.iter().all(Value::is_object));
    let Some(key) = key else {
        target.insert(
            field.to_owned(),
            without_directives(&Value::Array(items.to_vec())),
        );
        return;
    };
    let existing = target.entry(field.to_owned()).or_insert_with(|| json!([]));
    if !existing.is_array() {
        *existing = json!([]);
    }
    let list = existing.as_array_mut().expect("made an array above");
    for item in items {
        if item.get("$patch").and_then(Value::as_str) == Some("replace") {
            *list = items.iter().map(without_directives).collect();
            return;
        }
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        let pos = list
            .iter()
            .position(|e| e.get(key).is_some() && e.get(key) == item.get(key));
        match (pos, delete) {
            (Some(i), true) => {
                list.remove(i);
            }
            (Some(i), false) => apply(&mut list[i], item),
            (None, false) => list.push(without_directives(item)),
            (None, true) => {}
        }
    }
}

/// Orders a merged list as `$setElementOrder` says; items it does not mention keep their place after.
fn reorder(target: &mut Map<String, Value>, field: &str, order: &[Value]) {
    let Some(Value::Array(list)) = target.get_mut(field) else {
        return;
    };
    let Some(key) = merge_key(field, order.first()) else {
        return;
    };
    let mut ordered = Vec::with_capacity(list.len());
    for wanted in order {
        if let Some(pos) = list.iter().position(|e| e.get(key) == wanted.get(key)) {
            ordered.push(list.remove(pos));
        }
    }
    ordered.append(list);
    *list = ordered;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_merge_by_name_and_ports_by_number() {
        let mut deploy = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}, {"containerPort": 443}]},
            {"name": "side", "image": "busybox"}
        ]}}}});
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "side"}],
            "containers": [{"name": "web", "image": "nginx:2", "ports": [{"containerPort": 8080}]}]
        }}}});
        apply(&mut deploy, &patch);
        let containers = &deploy["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], "nginx:2");
        assert_eq!(
            containers[0]["ports"],
            json!([{"containerPort": 80}, {"containerPort": 443}, {"containerPort": 8080}])
        );
        assert_eq!(containers[1]["name"], "side", "unmentioned items stay");
    }

    #[test]
    fn deletes_replaces_and_sets() {
        let mut svc = json!({"metadata": {"finalizers": ["a"]}, "spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}], "selector": {"app": "x", "tier": "y"}}});
        apply(
            &mut svc,
            &json!({
                "metadata": {"finalizers": ["b", "a"]},
                "spec": {"ports": [{"port": 443, "$patch": "delete"}], "selector": {"$patch": "replace", "app": "z"}}
            }),
        );
        assert_eq!(svc["spec"]["ports"], json!([{"port": 80, "name": "http"}]));
        assert_eq!(svc["spec"]["selector"], json!({"app": "z"}));
        assert_eq!(svc["metadata"]["finalizers"], json!(["a", "b"]));
        apply(
            &mut svc,
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        );
        assert_eq!(svc["metadata"]["finalizers"], json!(["b"]));
        let mut obj = json!({"spec": {"args": ["a", "b"], "strategy": {"type": "Recreate", "rollingUpdate": {"x": 1}}}});
        apply(
            &mut obj,
            &json!({"spec": {"args": ["c"], "strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
        );
        assert_eq!(obj["spec"]["args"], json!(["c"]), "plain lists are replaced");
        assert_eq!(obj["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn null_removes_and_scalars_replace() {
        let mut obj = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        apply(&mut obj, &json!({"metadata": {"labels": {"a": null, "c": "3"}}}));
        assert_eq!(obj["metadata"]["labels"], json!({"b": "2", "c": "3"}));
    }
}
