//! JSON object helpers: decoding bodies, unknown-field detection, resourceVersion, JSON merge and JSON patches.

use serde_json::{Value, json};

use super::status::ApiError;
use crate::registry::kinds::Kind;
use crate::store::{KeyValue, Revision};

/// Decodes a stored value and stamps `metadata.resourceVersion`.
pub fn from_store(value: &[u8], revision: Revision) -> Result<Value, ApiError> {
    let mut object: Value = serde_json::from_slice(value)
        .map_err(|e| ApiError::internal(format!("corrupt stored object: {e}")))?;
    object["metadata"]["resourceVersion"] = json!(revision.to_string());
    Ok(object)
}

/// Decodes a stored key-value at its own revision.
pub fn from_kv(kv: &KeyValue) -> Result<Value, ApiError> {
    from_store(&kv.value, kv.mod_revision)
}

/// The bytes to store: the object without `metadata.resourceVersion` (the store's revision is the truth).
pub fn to_store(object: &Value) -> Vec<u8> {
    let mut object = object.clone();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&object).expect("JSON values always serialise")
}

/// Decodes a stored value in `kind`'s shape (views convert) and stamps `metadata.resourceVersion`.
pub fn from_store_as(kind: &Kind, value: &[u8], revision: Revision) -> Result<Value, ApiError> {
    let object: Value = serde_json::from_slice(value)
        .map_err(|e| ApiError::internal(format!("corrupt stored object: {e}")))?;
    let mut object = kind.to_view(object);
    object["metadata"]["resourceVersion"] = json!(revision.to_string());
    Ok(object)
}

/// Decodes a stored key-value in `kind`'s shape at its own revision.
pub fn from_kv_as(kind: &Kind, kv: &KeyValue) -> Result<Value, ApiError> {
    from_store_as(kind, &kv.value, kv.mod_revision)
}

/// The bytes to store for an object of `kind` (views convert to the shape of the kind they view).
pub fn to_store_as(kind: &Kind, object: &Value) -> Vec<u8> {
    match kind.storage {
        Some(_) => to_store(&kind.to_storage(object.clone())),
        None => to_store(object),
    }
}

/// Parses a request body as a JSON object.
pub fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    Ok(value)
}

/// Checks apiVersion/kind in a body against the URL's kind and fills them in when absent.
pub fn check_type(kind: &Kind, object: &mut Value) -> Result<(), ApiError> {
    if !object.is_object() {
        return Err(ApiError::bad_request("the object must be a JSON object"));
    }
    let expected = kind.api_version();
    match object.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v != expected => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({expected})"
            )));
        }
        _ => object["apiVersion"] = json!(expected),
    }
    match object.get("kind").and_then(Value::as_str) {
        Some(k) if k != kind.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                kind.kind
            )));
        }
        _ => object["kind"] = json!(kind.kind),
    }
    Ok(())
}

/// Fields present in `input` that the typed round trip dropped (`spec.foo`, `spec.ports[0].bar`).
pub fn unknown_fields(input: &Value, typed: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk_unknown(input, typed, "", &mut out);
    out
}

fn walk_unknown(input: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(i), Value::Object(t)) => {
            for (key, value) in i {
                let sub = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match t.get(key) {
                    Some(tv) => walk_unknown(value, tv, &sub, out),
                    None if value.is_null() => {}
                    // Maps of free-form values (labels, data) keep every key, so a missing key is unknown.
                    None => out.push(sub),
                }
            }
        }
        (Value::Array(i), Value::Array(t)) => {
            for (n, (iv, tv)) in i.iter().zip(t).enumerate() {
                walk_unknown(iv, tv, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

/// Decodes `object` through the kind's typed schema, reporting unknown fields.
pub fn normalize(kind: &Kind, object: Value) -> Result<(Value, Vec<String>), ApiError> {
    let typed = (kind.normalize)(object.clone()).map_err(|e| {
        ApiError::bad_request(format!(
            "error decoding {} {}: {e}",
            kind.api_version(),
            kind.kind
        ))
    })?;
    let unknown = unknown_fields(&object, &typed);
    Ok((typed, unknown))
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("made an object above");
            for (key, value) in p {
                if value.is_null() {
                    t.remove(key);
                } else {
                    merge_patch(t.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn pointer_parts(path: &str) -> Result<Vec<String>, ApiError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| ApiError::bad_request(format!("invalid JSON pointer {path:?}")))?;
    Ok(rest
        .split('/')
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn parent_of<'a>(doc: &'a mut Value, parts: &[String]) -> Result<&'a mut Value, ApiError> {
    let mut cur = doc;
    for part in parts {
        cur = match cur {
            Value::Object(m) => m.get_mut(part),
            Value::Array(a) => part.parse::<usize>().ok().and_then(move |i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| ApiError::bad_request(format!("jsonpatch: path segment {part:?} does not exist")))?;
    }
    Ok(cur)
}

fn remove_at(doc: &mut Value, path: &str) -> Result<Value, ApiError> {
    let parts = pointer_parts(path)?;
    let (last, parents) = parts
        .split_last()
        .ok_or_else(|| ApiError::bad_request("jsonpatch: cannot remove the root"))?;
    let missing = || {
        ApiError::bad_request(format!(
            "jsonpatch remove operation does not apply: doc is missing path: {path}"
        ))
    };
    match parent_of(doc, parents)? {
        Value::Object(m) => m.remove(last).ok_or_else(missing),
        Value::Array(a) => {
            let i = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i < a.len())
                .ok_or_else(missing)?;
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

fn add_at(doc: &mut Value, path: &str, value: Value) -> Result<(), ApiError> {
    let parts = pointer_parts(path)?;
    let Some((last, parents)) = parts.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent_of(doc, parents)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>().unwrap_or(usize::MAX)
            };
            if i > a.len() {
                return Err(ApiError::bad_request(format!(
                    "jsonpatch add: index out of range in {path}"
                )));
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err(ApiError::bad_request(format!(
            "jsonpatch add: {path} has no container parent"
        ))),
    }
}

/// Most operations one JSON patch may carry (kube-apiserver's limit).
pub const MAX_JSON_PATCH_OPS: usize = 10_000;
/// Most bytes (as JSON) the copy operations of one JSON patch may add together (kube-apiserver's default
/// `JSONPatchMaxCopyBytes`): each copy can double the document, so without a budget a short patch grows it
/// exponentially.
pub const MAX_JSON_PATCH_COPY_BYTES: usize = 3 * 1024 * 1024;
/// Deepest nesting a JSON patch may give the document. Copies and moves can nest a document inside itself
/// (doubling its depth each time); a too deep document would overflow the stack of the recursive steps after the
/// patch, and its stored JSON could not be decoded again (the JSON decoder stops at 128 levels).
pub const MAX_JSON_PATCH_DEPTH: usize = 100;

/// Nesting depth of a value (a scalar is 0), measured without recursion.
fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, d)) = stack.pop() {
        deepest = deepest.max(d);
        match v {
            Value::Array(a) => stack.extend(a.iter().map(|c| (c, d + 1))),
            Value::Object(m) => stack.extend(m.values().map(|c| (c, d + 1))),
            _ => {}
        }
    }
    deepest
}

/// Length of a value's JSON encoding.
fn encoded_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).expect("JSON values always serialise");
    count.0
}

/// Refuses to put `value` at `path` when the document would nest deeper than [`MAX_JSON_PATCH_DEPTH`].
fn check_depth(path: &str, value: &Value) -> Result<(), ApiError> {
    let at = path.matches('/').count();
    if at + depth(value) > MAX_JSON_PATCH_DEPTH {
        return Err(ApiError::bad_request(format!(
            "jsonpatch: the document would be nested more than {MAX_JSON_PATCH_DEPTH} levels deep at {path}"
        )));
    }
    Ok(())
}

/// RFC 6902 JSON patch, within kube-apiserver's limits on operations and copied bytes (and a depth limit).
pub fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), ApiError> {
    let ops = ops
        .as_array()
        .ok_or_else(|| ApiError::bad_request("a JSON patch must be an array of operations"))?;
    if ops.len() > MAX_JSON_PATCH_OPS {
        let mut err = ApiError::too_large(0);
        err.message = format!(
            "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPS}, got {}",
            ops.len()
        );
        return Err(err);
    }
    let mut copied = 0usize;
    for op in ops {
        let field = |f: &str| op.get(f).and_then(Value::as_str).map(str::to_owned);
        let path = field("path").ok_or_else(|| ApiError::bad_request("jsonpatch: operation without path"))?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| ApiError::bad_request("jsonpatch: operation without value"))
        };
        match field("op").as_deref() {
            Some("add") => {
                let v = value()?;
                check_depth(&path, &v)?;
                add_at(doc, &path, v)?
            }
            Some("remove") => {
                remove_at(doc, &path)?;
            }
            Some("replace") => {
                let v = value()?;
                check_depth(&path, &v)?;
                remove_at(doc, &path)?;
                add_at(doc, &path, v)?;
            }
            Some("test") => {
                if doc.pointer(&path) != Some(&value()?) {
                    return Err(ApiError::bad_request(format!(
                        "jsonpatch test operation failed at {path}"
                    )));
                }
            }
            Some(op @ ("move" | "copy")) => {
                let from = field("from")
                    .ok_or_else(|| ApiError::bad_request("jsonpatch: move/copy without from"))?;
                let source = doc
                    .pointer(&from)
                    .ok_or_else(|| ApiError::bad_request(format!("jsonpatch: missing {from}")))?;
                check_depth(&path, source)?;
                if op == "copy" {
                    copied += encoded_len(source);
                    if copied > MAX_JSON_PATCH_COPY_BYTES {
                        return Err(ApiError::bad_request(format!(
                            "jsonpatch: the copy operations would add more than {MAX_JSON_PATCH_COPY_BYTES} bytes"
                        )));
                    }
                }
                let v = if op == "move" {
                    remove_at(doc, &from)?
                } else {
                    source.clone()
                };
                add_at(doc, &path, v)?;
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "jsonpatch: unsupported operation {other:?}"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::kinds::find;

    #[test]
    fn unknown_fields_are_reported_with_paths() {
        let svc = find("", "v1", "services").unwrap();
        let input = json!({"metadata": {"name": "s", "labels": {"a": "b"}}, "spec": {"ports": [{"port": 80, "bogus": 1}], "nope": true}, "extra": null});
        let (typed, unknown) = normalize(svc, input).unwrap();
        assert_eq!(
            unknown,
            vec!["spec.nope".to_owned(), "spec.ports[0].bogus".to_owned()]
        );
        assert_eq!(typed["metadata"]["labels"]["a"], "b");
        assert!(normalize(svc, json!({"spec": {"ports": "x"}})).is_err());
    }

    #[test]
    fn store_round_trip_sets_resource_version() {
        let obj = json!({"metadata": {"name": "a", "resourceVersion": "5"}});
        let bytes = to_store(&obj);
        assert!(!String::from_utf8_lossy(&bytes).contains("resourceVersion"));
        assert_eq!(from_store(&bytes, 9).unwrap()["metadata"]["resourceVersion"], "9");
    }

    #[test]
    fn views_convert_on_the_way_in_and_out() {
        let view = find("events.k8s.io", "v1", "events").unwrap();
        let core = find("", "v1", "events").unwrap();
        let event = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "resourceVersion": "3"}, "regarding": {"name": "p"}, "note": "hi"});
        let bytes = to_store_as(view, &event);
        let stored: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(stored["message"], "hi");
        assert_eq!(stored["apiVersion"], "v1");
        assert!(stored["metadata"].get("resourceVersion").is_none());
        let back = from_store_as(view, &bytes, 4).unwrap();
        assert_eq!(back["note"], "hi");
        assert_eq!(back["metadata"]["resourceVersion"], "4");
        assert_eq!(
            from_store_as(core, &bytes, 4).unwrap()["involvedObject"]["name"],
            "p"
        );
    }

    #[test]
    fn type_checks() {
        let cm = find("", "v1", "configmaps").unwrap();
        let mut ok = json!({});
        check_type(cm, &mut ok).unwrap();
        assert_eq!(
            (ok["apiVersion"].as_str(), ok["kind"].as_str()),
            (Some("v1"), Some("ConfigMap"))
        );
        assert!(check_type(cm, &mut json!({"apiVersion": "apps/v1"})).is_err());
        assert!(check_type(cm, &mut json!({"kind": "Secret"})).is_err());
    }

    /// Found by fuzzing: a merge patch that is a scalar replaces the whole object, and the type check then
    /// indexed a number as an object (a panic in the request handler).
    #[test]
    fn type_check_of_a_non_object_is_a_bad_request() {
        let cm = find("", "v1", "configmaps").unwrap();
        let mut doc = json!({"metadata": {"name": "a"}});
        merge_patch(&mut doc, &json!(5));
        assert_eq!(check_type(cm, &mut doc).unwrap_err().code, 400);
        assert_eq!(check_type(cm, &mut json!([1])).unwrap_err().code, 400);
    }

    #[test]
    fn merge_patch_rfc7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn json_patch_ops() {
        let mut doc = json!({"metadata": {"labels": {"a": "1"}}, "list": [1, 2]});
        json_patch(
            &mut doc,
            &json!([
                {"op": "add", "path": "/metadata/labels/b~1c", "value": "2"},
                {"op": "replace", "path": "/list/0", "value": 9},
                {"op": "add", "path": "/list/-", "value": 3},
                {"op": "remove", "path": "/metadata/labels/a"},
                {"op": "test", "path": "/list/2", "value": 3},
                {"op": "copy", "from": "/list/0", "path": "/first"}
            ]),
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"metadata": {"labels": {"b/c": "2"}}, "list": [9, 2, 3], "first": 9})
        );
        assert!(json_patch(&mut doc, &json!([{"op": "remove", "path": "/nope"}])).is_err());
        assert!(json_patch(&mut doc, &json!([{"op": "test", "path": "/first", "value": 1}])).is_err());
    }

    /// Each copy of the root into itself doubles the document: 60 operations asked for 2^60 copies of it (the
    /// server ran out of memory). Copying an object into itself nests it deeper with every operation.
    #[test]
    fn json_patch_copies_are_bounded_in_bytes_and_depth() {
        let doubling: Vec<Value> = (0..60)
            .map(|i| json!({"op": "copy", "from": "", "path": format!("/c{i}")}))
            .collect();
        let mut doc = json!({"metadata": {"name": "a"}, "data": {"k": "v".repeat(100)}});
        let err = json_patch(&mut doc, &Value::Array(doubling)).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(err.message.contains("copy operations"), "{}", err.message);

        let nesting: Vec<Value> = (0..100)
            .map(|_| json!({"op": "copy", "from": "/a", "path": "/a/a/a"}))
            .collect();
        let mut doc = json!({"a": {"a": {}}});
        let err = json_patch(&mut doc, &Value::Array(nesting)).unwrap_err();
        assert!(err.message.contains("nested more than"), "{}", err.message);
        assert!(depth(&doc) <= MAX_JSON_PATCH_DEPTH);

        let mut doc = json!({"a": {}});
        let deep_value = (0..MAX_JSON_PATCH_DEPTH).fold(json!(1), |v, _| json!([v]));
        assert!(
            json_patch(
                &mut doc,
                &json!([{"op": "add", "path": "/a/b", "value": deep_value}])
            )
            .is_err()
        );
        let many = vec![json!({"op": "test", "path": "", "value": 1}); MAX_JSON_PATCH_OPS + 1];
        assert_eq!(json_patch(&mut doc, &Value::Array(many)).unwrap_err().code, 413);
    }
}
