//! Field sets: which fields of an object a manager owns, and their `FieldsV1` JSON encoding.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Bound;

use serde_json::{Map, Value};

use super::schema::{self, ListType};

/// One step of a path into an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Element {
    /// A field of a struct or a key of a map (`f:name`).
    Field(String),
    /// An item of a list-map, by its key fields as a canonical JSON object (`k:{"name":"x"}`).
    Key(String),
    /// An item of a set list, as canonical JSON (`v:"a"`).
    Value(String),
}

/// A path from the object root.
pub type Path = Vec<Element>;

/// Renders a path like kube's conflict messages: `.spec.containers[name="web"].image`.
pub fn display(path: &[Element]) -> String {
    let mut out = String::new();
    for element in path {
        match element {
            Element::Field(name) => {
                out.push('.');
                out.push_str(name);
            }
            Element::Key(json) => {
                let fields: Map<String, Value> = serde_json::from_str(json).unwrap_or_default();
                let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!("[{}]", parts.join(",")));
            }
            Element::Value(json) => out.push_str(&format!("[={json}]")),
        }
    }
    out
}

/// Which top-level parts of an object a write may own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every field (kinds without a status subresource).
    All,
    /// The main resource of a kind with a status subresource: everything but `status`.
    NoStatus,
    /// The status subresource: only `status`.
    StatusOnly,
}

/// Metadata the server owns; no manager ever owns these.
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
];

/// A set of owned field paths. A path is a member when the manager owns that field or list item itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet(BTreeSet<Path>);

impl FieldSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, path: Path) {
        self.0.insert(path);
    }

    pub fn contains(&self, path: &[Element]) -> bool {
        self.0.contains(path)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Path> {
        self.0.iter()
    }

    pub fn union(&self, other: &Self) -> Self {
        Self(self.0.union(&other.0).cloned().collect())
    }

    pub fn difference(&self, other: &Self) -> Self {
        Self(self.0.difference(&other.0).cloned().collect())
    }

    pub fn intersection(&self, other: &Self) -> Self {
        Self(self.0.intersection(&other.0).cloned().collect())
    }

    /// Whether some member lies strictly below `path`.
    pub fn has_descendant(&self, path: &[Element]) -> bool {
        self.0
            .range::<[Element], _>((Bound::Excluded(path), Bound::Unbounded))
            .next()
            .is_some_and(|next| next.len() > path.len() && next.starts_with(path))
    }

    /// Whether `path` or something below it is a member.
    pub fn touches(&self, path: &[Element]) -> bool {
        self.contains(path) || self.has_descendant(path)
    }

    /// The fields an object sets, as a manager writing exactly this object would own them.
    pub fn of(object: &Value, scope: Scope) -> Self {
        let mut set = Self::new();
        let Value::Object(root) = object else {
            return set;
        };
        for (key, value) in root {
            let tracked = match (key.as_str(), scope) {
                ("apiVersion" | "kind", _) => false,
                ("status", Scope::NoStatus) => false,
                (k, Scope::StatusOnly) => k == "status",
                _ => true,
            };
            if !tracked || value.is_null() {
                continue;
            }
            let path = vec![Element::Field(key.clone())];
            if key == "metadata" {
                if let Value::Object(meta) = value {
                    for (field, v) in meta {
                        if !SERVER_METADATA.contains(&field.as_str()) && !v.is_null() {
                            let mut p = path.clone();
                            p.push(Element::Field(field.clone()));
                            walk(v, field, p, &mut set);
                        }
                    }
                }
                continue;
            }
            walk(value, key, path, &mut set);
        }
        set
    }

    /// Encodes as `FieldsV1` JSON (`{"f:spec": {"f:replicas": {}}}`).
    pub fn to_fields_v1(&self) -> Value {
        let mut root = Node::default();
        for path in &self.0 {
            let mut node = &mut root;
            for element in path {
                node = node.children.entry(element.clone()).or_default();
            }
            node.member = true;
        }
        root.to_json()
    }

    /// Decodes `FieldsV1` JSON; any malformed part is an error.
    pub fn from_fields_v1(value: &Value) -> Result<Self, String> {
        let mut set = Self::new();
        read_node(value, &mut Vec::new(), &mut set)?;
        Ok(set)
    }
}

impl fmt::Display for FieldSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let paths: Vec<String> = self.0.iter().map(|p| display(p)).collect();
        write!(f, "{}", paths.join(", "))
    }
}

impl FromIterator<Path> for FieldSet {
    fn from_iter<I: IntoIterator<Item = Path>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// Adds the fields of `value` (found at `path`, in a field called `field`) to `set`.
fn walk(value: &Value, field: &str, path: Path, set: &mut FieldSet) {
    match value {
        Value::Object(m) if !m.is_empty() && !schema::is_atomic_struct(field) => {
            for (key, v) in m {
                if v.is_null() {
                    continue;
                }
                let mut p = path.clone();
                p.push(Element::Field(key.clone()));
                walk(v, key, p, set);
            }
        }
        Value::Array(items) if !items.is_empty() => match schema::list_type(field, items) {
            ListType::Map(keys) => {
                for item in items {
                    let mut p = path.clone();
                    p.push(Element::Key(schema::item_key(item, keys).unwrap_or_default()));
                    set.insert(p.clone());
                    if let Value::Object(m) = item {
                        for (key, v) in m {
                            if !v.is_null() {
                                let mut q = p.clone();
                                q.push(Element::Field(key.clone()));
                                walk(v, key, q, set);
                            }
                        }
                    }
                }
            }
            ListType::Set => {
                for item in items {
                    let mut p = path.clone();
                    p.push(Element::Value(item.to_string()));
                    set.insert(p);
                }
            }
            ListType::Atomic => set.insert(path),
        },
        _ => set.insert(path),
    }
}

#[derive(Default)]
struct Node {
    member: bool,
    children: std::collections::BTreeMap<Element, Node>,
}

impl Node {
    fn to_json(&self) -> Value {
        let mut out = Map::new();
        if self.member && !self.children.is_empty() {
            out.insert(".".into(), Value::Object(Map::new()));
        }
        for (element, child) in &self.children {
            let key = match element {
                Element::Field(name) => format!("f:{name}"),
                Element::Key(json) => format!("k:{json}"),
                Element::Value(json) => format!("v:{json}"),
            };
            out.insert(key, child.to_json());
        }
        Value::Object(out)
    }
}

fn read_node(value: &Value, path: &mut Path, set: &mut FieldSet) -> Result<(), String> {
    let Value::Object(m) = value else {
        return Err(format!("expected an object at {:?}", display(path)));
    };
    if m.is_empty() {
        if !path.is_empty() {
            set.insert(path.clone());
        }
        return Ok(());
    }
    for (key, child) in m {
        if key == "." {
            if path.is_empty() {
                return Err("\".\" at the root".into());
            }
            set.insert(path.clone());
            continue;
        }
        let element = if let Some(name) = key.strip_prefix("f:") {
            Element::Field(name.to_owned())
        } else if let Some(json) = key.strip_prefix("k:") {
            let fields: Map<String, Value> =
                serde_json::from_str(json).map_err(|e| format!("invalid key {key:?}: {e}"))?;
            Element::Key(schema::canonical(fields.into_iter().collect()))
        } else if let Some(json) = key.strip_prefix("v:") {
            let v: Value = serde_json::from_str(json).map_err(|e| format!("invalid value {key:?}: {e}"))?;
            Element::Value(v.to_string())
        } else {
            return Err(format!("unexpected key {key:?}"));
        };
        path.push(element);
        read_node(child, path, set)?;
        path.pop();
    }
    Ok(())
}

/// The value at `path` in `object`, if present.
pub fn value_at<'a>(object: &'a Value, path: &[Element]) -> Option<&'a Value> {
    let mut cur = object;
    let mut field = "";
    for element in path {
        cur = match element {
            Element::Field(name) => {
                field = name;
                cur.get(name)?
            }
            Element::Key(key) => {
                let items = cur.as_array()?;
                let keys = match schema::list_type(field, items) {
                    ListType::Map(keys) => keys,
                    _ => return None,
                };
                items
                    .iter()
                    .find(|item| schema::item_key(item, keys).as_deref() == Some(key.as_str()))?
            }
            Element::Value(json) => cur.as_array()?.iter().find(|item| item.to_string() == *json)?,
        };
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn field(name: &str) -> Element {
        Element::Field(name.into())
    }

    #[test]
    fn fields_of_a_deployment() {
        let deploy = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "uid": "u", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": {"spec": {"containers": [
                {"name": "web", "image": "nginx", "ports": [{"containerPort": 80}], "args": ["a"]}
            ]}}},
            "status": {"replicas": 1}
        });
        let set = FieldSet::of(&deploy, Scope::NoStatus);
        let encoded = set.to_fields_v1();
        assert_eq!(
            encoded,
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {"f:replicas": {}, "f:selector": {}, "f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"web\"}": {".": {}, "f:args": {}, "f:image": {}, "f:name": {}, "f:ports": {
                        "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}
                    }}
                }}}}
            })
        );
        assert_eq!(FieldSet::from_fields_v1(&encoded).unwrap(), set);
        let status = FieldSet::of(&deploy, Scope::StatusOnly);
        assert_eq!(status.to_fields_v1(), json!({"f:status": {"f:replicas": {}}}));
    }

    #[test]
    fn sets_values_and_lookup() {
        let obj = json!({"metadata": {"finalizers": ["a/b"]}, "spec": {"containers": [{"name": "x", "image": "i"}]}});
        let set = FieldSet::of(&obj, Scope::All);
        assert_eq!(
            set.to_fields_v1(),
            json!({"f:metadata": {"f:finalizers": {"v:\"a/b\"": {}}}, "f:spec": {"f:containers": {"k:{\"name\":\"x\"}": {".": {}, "f:image": {}, "f:name": {}}}}})
        );
        let image = vec![
            field("spec"),
            field("containers"),
            Element::Key(r#"{"name":"x"}"#.into()),
            field("image"),
        ];
        assert!(set.contains(&image));
        assert_eq!(value_at(&obj, &image), Some(&json!("i")));
        assert_eq!(display(&image), ".spec.containers[name=\"x\"].image");
        assert!(set.has_descendant(&[field("spec")]));
        assert!(!set.has_descendant(&image));
    }

    #[test]
    fn malformed_fields_v1_is_rejected() {
        assert!(FieldSet::from_fields_v1(&json!({"f:a": 1})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"x:a": {}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!([])).is_err());
        assert!(FieldSet::from_fields_v1(&json!({})).unwrap().is_empty());
    }
}
