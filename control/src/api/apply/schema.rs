//! What server-side apply needs to know about a field: list type, list-map keys and atomic structs.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::api::strategic::{SET_LISTS, key_default, list_map_keys};

/// How a list merges and how its items are owned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListType {
    /// Items are identified by these key fields and owned one by one.
    Map(&'static [&'static str]),
    /// Scalar items owned one by one.
    Set,
    /// The whole list is one value.
    Atomic,
}

/// The type of the list stored in `field` holding `items`.
pub fn list_type(field: &str, items: &[Value]) -> ListType {
    if SET_LISTS.contains(&field) && items.iter().all(|i| !i.is_object() && !i.is_array()) {
        return ListType::Set;
    }
    match list_map_keys(field, items.first()) {
        Some(keys) if items.iter().all(|i| item_key(i, keys).is_some()) => ListType::Map(keys),
        _ => ListType::Atomic,
    }
}

/// Structs and maps that are replaced as a whole (`+structType=atomic`, `+mapType=atomic`).
pub fn is_atomic_struct(field: &str) -> bool {
    matches!(field, "selector" | "nodeSelector")
}

/// A JSON object with sorted keys, as kube writes list-map keys.
pub fn canonical(fields: BTreeMap<String, Value>) -> String {
    Value::Object(fields.into_iter().collect::<Map<String, Value>>()).to_string()
}

/// The key of a list-map item (`{"containerPort":80,"protocol":"TCP"}`); `None` when a key field is missing.
pub fn item_key(item: &Value, keys: &[&str]) -> Option<String> {
    let object = item.as_object()?;
    let mut fields = BTreeMap::new();
    for key in keys {
        let value = match object.get(*key).filter(|v| !v.is_null()) {
            Some(v) => v.clone(),
            None => key_default(key)?,
        };
        fields.insert((*key).to_owned(), value);
    }
    Some(canonical(fields))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn list_types() {
        assert_eq!(list_type("finalizers", &[json!("a")]), ListType::Set);
        assert_eq!(
            list_type("ports", &[json!({"containerPort": 80})]),
            ListType::Map(&["containerPort", "protocol"])
        );
        assert_eq!(list_type("args", &[json!("a")]), ListType::Atomic);
        assert_eq!(
            list_type("containers", &[json!({"image": "no-name"})]),
            ListType::Atomic,
            "items without keys make the list atomic"
        );
        assert_eq!(
            item_key(&json!({"port": 80, "name": "http"}), &["port", "protocol"]).unwrap(),
            r#"{"port":80,"protocol":"TCP"}"#
        );
    }
}
