//! Parsing Kubernetes manifests (multi-document YAML or JSON, `kind: List`) into the objects the proxy uses.
use k8s_openapi::api::{core::v1::Node, core::v1::Service, discovery::v1::EndpointSlice};
use serde::Deserialize;

/// One object the proxy cares about.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    Node(Box<Node>),
}

/// Why a document could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("document {index}: not valid YAML/JSON: {source}")]
    Syntax {
        index: usize,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("document {index}: invalid {kind}{name}: {source}")]
    Object {
        index: usize,
        kind: String,
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("document {index}: {message}")]
    Shape { index: usize, message: String },
}

/// What one file yields: the objects, and what was skipped with a reason worth a warning.
#[derive(Debug, Default)]
pub struct Parsed {
    pub objects: Vec<Object>,
    pub skipped: Vec<String>,
}

/// Parses every document of a file. Any invalid document fails the whole file (so a half-written file never
/// replaces a good one). Objects of other kinds are ignored; objects without a namespace get `default`;
/// Services without a clusterIP are skipped (reported in `skipped`).
pub fn parse(text: &str) -> Result<Parsed, ParseError> {
    let mut parsed = Parsed::default();
    let skipped = parse_each(text, |obj, _| parsed.objects.push(obj))?;
    parsed.skipped = skipped;
    Ok(parsed)
}

/// Like `parse`, but hands each object to `each` as soon as it is read, with a hash of its document (equal
/// documents give equal hashes within a process), so that a large file never holds all its objects at once. On an
/// error, `each` may already have seen the objects before the invalid document: buffer what it does until the
/// result is known. Returns the skip reasons.
pub fn parse_each(text: &str, mut each: impl FnMut(Object, u64)) -> Result<Vec<String>, ParseError> {
    let mut skipped = Vec::new();
    if let Some(docs) = json_documents(text) {
        for (index, doc) in docs.into_iter().enumerate() {
            let value: serde_json::Value = serde_json::from_str(doc).map_err(|e| ParseError::Shape {
                index,
                message: format!("invalid JSON: {e}"),
            })?;
            collect(index, value, &mut skipped, &mut each)?;
        }
        return Ok(skipped);
    }
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value =
            serde_yaml::Value::deserialize(doc).map_err(|source| ParseError::Syntax { index, source })?;
        if value.is_null() {
            continue; // an empty document (e.g. a trailing `---`)
        }
        let value = serde_json::to_value(&value).map_err(|e| ParseError::Shape {
            index,
            message: format!("cannot convert to JSON: {e}"),
        })?;
        collect(index, value, &mut skipped, &mut each)?;
    }
    Ok(skipped)
}

/// The documents of a stream made only of JSON documents between `---` lines (what generators write), each
/// checked to be valid JSON; `None` for anything else, which goes through the YAML parser (several times slower).
fn json_documents(text: &str) -> Option<Vec<&str>> {
    let mut docs = Vec::new();
    let mut doc_start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" {
            docs.push(&text[doc_start..offset]);
            doc_start = offset + line.len();
        }
        offset += line.len();
    }
    docs.push(&text[doc_start..]);
    let docs: Vec<&str> = docs
        .into_iter()
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    let valid = docs
        .iter()
        .all(|d| d.starts_with('{') && serde_json::from_str::<serde::de::IgnoredAny>(d).is_ok());
    (valid && !docs.is_empty()).then_some(docs)
}

/// A hash of a JSON value (of its serialization; object keys are sorted, so equal values hash equally).
fn value_hash(value: &serde_json::Value) -> u64 {
    struct HashWriter(std::collections::hash_map::DefaultHasher);
    impl std::io::Write for HashWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            std::hash::Hasher::write(&mut self.0, buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut w = HashWriter(Default::default());
    let _ = serde_json::to_writer(&mut w, value);
    std::hash::Hasher::finish(&w.0)
}

fn collect(
    index: usize,
    value: serde_json::Value,
    skipped: &mut Vec<String>,
    each: &mut impl FnMut(Object, u64),
) -> Result<(), ParseError> {
    let Some(kind) = value.get("kind").and_then(|k| k.as_str()).map(str::to_owned) else {
        return Err(ParseError::Shape {
            index,
            message: "no `kind`".into(),
        });
    };
    let name = value
        .pointer("/metadata/name")
        .and_then(|n| n.as_str())
        .map(|n| format!(" {n:?}"))
        .unwrap_or_default();
    let invalid = |source| ParseError::Object {
        index,
        kind: kind.clone(),
        name: name.clone(),
        source,
    };
    match kind.as_str() {
        "List" | "ServiceList" | "EndpointSliceList" | "NodeList" => {
            let mut value = value;
            let items = match value.get_mut("items").map(serde_json::Value::take) {
                Some(serde_json::Value::Array(items)) => items,
                _ => Vec::new(),
            };
            for item in items {
                collect(index, item, skipped, each)?;
            }
        }
        "Service" => {
            let hash = value_hash(&value);
            let mut svc: Service = serde_json::from_value(value).map_err(invalid)?;
            let has_ip = svc
                .spec
                .as_ref()
                .and_then(|s| s.cluster_ip.as_deref())
                .is_some_and(|ip| !ip.is_empty())
                || svc
                    .spec
                    .as_ref()
                    .and_then(|s| s.cluster_ips.as_ref())
                    .is_some_and(|ips| !ips.is_empty());
            let is_external_name = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName");
            if !has_ip && !is_external_name {
                skipped.push(format!(
                    "document {index}: Service{name} has no clusterIP; skipped"
                ));
                return Ok(());
            }
            svc.metadata.namespace.get_or_insert_with(|| "default".into());
            each(Object::Service(Box::new(svc)), hash);
        }
        "EndpointSlice" => {
            let hash = value_hash(&value);
            let mut slice: EndpointSlice = serde_json::from_value(value).map_err(invalid)?;
            slice.metadata.namespace.get_or_insert_with(|| "default".into());
            each(Object::EndpointSlice(Box::new(slice)), hash);
        }
        "Node" => {
            let hash = value_hash(&value);
            each(
                Object::Node(Box::new(serde_json::from_value(value).map_err(invalid)?)),
                hash,
            );
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  clusterIP: 10.96.0.10\n  ports: [{port: 80}]\n";

    #[test]
    fn json_documents_take_the_fast_path_and_parse_like_yaml() {
        let svc = |name: &str| {
            format!(
                r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"{name}"}},"spec":{{"clusterIP":"10.96.0.1","ports":[{{"port":80}}]}}}}"#
            )
        };
        let json = format!("---\n{}\n---\n{}\n", svc("a"), svc("b"));
        assert_eq!(json_documents(&json).map(|d| d.len()), Some(2));
        // YAML, a comment, or invalid JSON: the YAML parser decides.
        assert_eq!(json_documents("kind: Service\n"), None);
        assert_eq!(json_documents(&format!("# c\n{}", svc("a"))), None);
        assert_eq!(json_documents("{\"kind\": \n"), None);
        assert_eq!(json_documents(""), None);
        let fast = parse(&json).unwrap();
        // The same documents through the YAML parser (a comment keeps them off the fast path).
        let yaml = format!("# yaml\n{}\n---\n{}\n", svc("a"), svc("b"));
        assert_eq!(json_documents(&yaml), None);
        let slow = parse(&yaml).unwrap();
        assert_eq!(fast.objects, slow.objects);
        assert_eq!(fast.objects.len(), 2);
        let hashes = |t: &str| {
            let mut h = Vec::new();
            parse_each(t, |_, x| h.push(x)).unwrap();
            h
        };
        assert_eq!(
            hashes(&json),
            hashes(&format!("--- \n {}\n--- \n {}\n", svc("a"), svc("b")))
        );
    }

    #[test]
    fn multi_document_yaml_with_other_kinds() {
        let text = format!(
            "{SVC}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: x}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-1, namespace: prod}}\n\
             addressType: IPv4\nendpoints: [{{addresses: [10.244.0.5]}}]\n---\n"
        );
        let p = parse(&text).unwrap();
        assert_eq!(p.objects.len(), 2);
        let Object::Service(s) = &p.objects[0] else {
            panic!()
        };
        assert_eq!(s.metadata.namespace.as_deref(), Some("default"));
        let Object::EndpointSlice(e) = &p.objects[1] else {
            panic!()
        };
        assert_eq!(e.metadata.namespace.as_deref(), Some("prod"));
    }

    #[test]
    fn json_and_lists() {
        let text = r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}, "spec": {"clusterIP": "10.96.0.1"}}]}"#;
        let p = parse(text).unwrap();
        assert!(matches!(p.objects[..], [Object::Node(_), Object::Service(_)]));
    }

    #[test]
    fn service_without_cluster_ip_is_skipped_with_a_reason() {
        let p = parse("kind: Service\nmetadata: {name: pending}\nspec: {ports: [{port: 80}]}\n").unwrap();
        assert!(p.objects.is_empty());
        assert!(
            p.skipped[0].contains("\"pending\" has no clusterIP"),
            "{:?}",
            p.skipped
        );
    }

    #[test]
    fn errors_name_the_document() {
        let err = parse(&format!("{SVC}---\nkind: Service\nspec: {{ports: nope}}\n")).unwrap_err();
        assert!(
            err.to_string().starts_with("document 1: invalid Service"),
            "{err}"
        );
        let err = parse("kind: Service\n  bad: : indentation\n").unwrap_err();
        assert!(err.to_string().starts_with("document 0:"), "{err}");
        let err = parse("metadata: {name: x}\n").unwrap_err();
        assert_eq!(err.to_string(), "document 0: no `kind`");
    }
}
