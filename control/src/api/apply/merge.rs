//! The apply merge: an applied configuration over a live object, field removal and change comparison.

use serde_json::{Value, json};

use super::fieldset::{Element, FieldSet, Scope, value_at};
use super::schema::{self, ListType};

/// Merges `config` into `live`: maps and structs field by field, list-maps by key, sets as a union,
/// atomic lists and structs replaced.
pub fn merge(live: &mut Value, config: &Value) {
    merge_field(live, config, "");
}

fn merge_field(live: &mut Value, config: &Value, field: &str) {
    match config {
        Value::Object(c) if !schema::is_atomic_struct(field) => {
            if !live.is_object() {
                *live = json!({});
            }
            let l = live.as_object_mut().expect("made an object above");
            for (key, value) in c {
                if value.is_null() {
                    l.remove(key);
                    continue;
                }
                let slot = l.entry(key.clone()).or_insert(Value::Null);
                merge_field(slot, value, key);
            }
        }
        Value::Array(items) => merge_list(live, items, field),
        other => *live = other.clone(),
    }
}

fn merge_list(live: &mut Value, items: &[Value], field: &str) {
    let ty = match live.as_array() {
        Some(existing) if !existing.is_empty() => {
            let all: Vec<Value> = items.iter().chain(existing).cloned().collect();
            schema::list_type(field, &all)
        }
        _ => schema::list_type(field, items),
    };
    let Some(list) = live.as_array_mut().filter(|_| ty != ListType::Atomic) else {
        *live = Value::Array(items.to_vec());
        return;
    };
    match ty {
        ListType::Set => {
            for item in items {
                if !list.contains(item) {
                    list.push(item.clone());
                }
            }
        }
        ListType::Map(keys) => {
            for item in items {
                let key = schema::item_key(item, keys);
                match list.iter_mut().find(|e| schema::item_key(e, keys) == key) {
                    Some(existing) => merge_field(existing, item, ""),
                    None => list.push(item.clone()),
                }
            }
        }
        ListType::Atomic => unreachable!("handled above"),
    }
}

/// Removes the field or item at `path`; then drops parents left empty unless `keep` owns them.
pub fn remove(object: &mut Value, path: &[Element], keep: &FieldSet) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let Some(parent) = value_at_mut(object, parents) else {
        return;
    };
    let field = parents.iter().rev().find_map(|e| match e {
        Element::Field(f) => Some(f.as_str()),
        _ => None,
    });
    match (last, parent) {
        (Element::Field(name), Value::Object(m)) => {
            m.remove(name);
        }
        (Element::Key(key), Value::Array(items)) => {
            if let ListType::Map(keys) = schema::list_type(field.unwrap_or(""), items) {
                items.retain(|i| schema::item_key(i, keys).as_deref() != Some(key.as_str()));
            }
        }
        (Element::Value(json), Value::Array(items)) => {
            // A set element is named by its JSON; compare as values, not as text.
            if let Ok(element) = serde_json::from_str::<Value>(json) {
                items.retain(|i| *i != element);
            }
        }
        _ => return,
    }
    let now_empty = value_at(object, parents).is_some_and(|v| match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    });
    if now_empty && !parents.is_empty() && !keep.touches(parents) {
        remove(object, parents, keep);
    }
}

fn value_at_mut<'a>(object: &'a mut Value, path: &[Element]) -> Option<&'a mut Value> {
    let mut cur = object;
    let mut field = String::new();
    for element in path {
        cur = match element {
            Element::Field(name) => {
                field = name.clone();
                cur.get_mut(name.as_str())?
            }
            Element::Key(key) => {
                let items = cur.as_array_mut()?;
                let ListType::Map(keys) = schema::list_type(&field, items) else {
                    return None;
                };
                items
                    .iter_mut()
                    .find(|i| schema::item_key(i, keys).as_deref() == Some(key.as_str()))?
            }
            Element::Value(json) => cur.as_array_mut()?.iter_mut().find(|i| i.to_string() == *json)?,
        };
    }
    Some(cur)
}

/// What a write changed, as field sets.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

impl Comparison {
    /// Fields set by the write: added or given a new value.
    pub fn changed(&self) -> FieldSet {
        self.added.union(&self.modified)
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }
}

/// Compares two versions of an object within `scope`.
pub fn compare(old: &Value, new: &Value, scope: Scope) -> Comparison {
    let before = FieldSet::of(old, scope);
    let after = FieldSet::of(new, scope);
    let modified = before
        .intersection(&after)
        .iter()
        .filter(|p| !after.has_descendant(p) && value_at(old, p) != value_at(new, p))
        .cloned()
        .collect();
    Comparison {
        added: after.difference(&before),
        modified,
        removed: before.difference(&after),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_list_maps_by_key_and_replaces_atomic_lists() {
        let mut live = json!({"spec": {"selector": {"matchLabels": {"a": "1"}}, "template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:1", "args": ["x", "y"], "ports": [{"containerPort": 80, "protocol": "TCP"}]},
            {"name": "side", "image": "busybox"}
        ]}}}});
        let config = json!({"spec": {"selector": {"matchLabels": {"b": "2"}}, "template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:2", "args": ["z"], "ports": [{"containerPort": 80}, {"containerPort": 81}]}
        ]}}}});
        merge(&mut live, &config);
        let containers = &live["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], "nginx:2");
        assert_eq!(containers[0]["args"], json!(["z"]));
        assert_eq!(
            containers[0]["ports"],
            json!([{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 81}])
        );
        assert_eq!(containers[1]["name"], "side");
        assert_eq!(
            live["spec"]["selector"],
            json!({"matchLabels": {"b": "2"}}),
            "selectors are atomic"
        );
    }

    #[test]
    fn removal_drops_empty_parents_not_owned_by_anyone() {
        let mut obj = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"containers": [{"name": "x"}, {"name": "y"}]}});
        let label = vec![
            Element::Field("metadata".into()),
            Element::Field("labels".into()),
            Element::Field("a".into()),
        ];
        remove(&mut obj, &label, &FieldSet::new());
        assert_eq!(obj.get("metadata"), None);
        let item = vec![
            Element::Field("spec".into()),
            Element::Field("containers".into()),
            Element::Key(r#"{"name":"y"}"#.into()),
        ];
        remove(&mut obj, &item, &FieldSet::new());
        assert_eq!(obj["spec"]["containers"], json!([{"name": "x"}]));
    }

    #[test]
    fn comparison_reports_leaf_changes() {
        let old = json!({"spec": {"replicas": 1, "paused": false, "template": {"metadata": {"labels": {"a": "1"}}}}});
        let new = json!({"spec": {"replicas": 2, "paused": false, "minReadySeconds": 5}});
        let cmp = compare(&old, &new, Scope::All);
        assert_eq!(cmp.modified.to_string(), ".spec.replicas");
        assert_eq!(cmp.added.to_string(), ".spec.minReadySeconds");
        assert_eq!(cmp.removed.to_string(), ".spec.template.metadata.labels.a");
        assert!(compare(&old, &old, Scope::All).is_empty());
    }
}
