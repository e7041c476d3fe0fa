//! Label and field selectors: parsing the query syntax and matching JSON objects against it.

use serde_json::Value;

/// A parse error in a selector, reported to clients as 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelOp {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

/// A parsed label selector (all requirements must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<(String, LabelOp)>);

fn split_top_level(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter().map(str::trim).filter(|p| !p.is_empty()).collect()
}

fn check_key(key: &str, whole: &str) -> Result<String, SelectorError> {
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if ok {
        Ok(key.to_owned())
    } else {
        Err(SelectorError(format!(
            "invalid label selector requirement {whole:?}"
        )))
    }
}

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (x,y),f notin (z),g,!h`.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        for part in split_top_level(s) {
            let req = if let Some(key) = part.strip_prefix('!') {
                (check_key(key.trim(), part)?, LabelOp::NotExists)
            } else if let Some(open) = part.find('(') {
                let close = part.rfind(')').filter(|c| *c > open);
                let close = close.ok_or_else(|| SelectorError(format!("unclosed set in {part:?}")))?;
                let head: Vec<&str> = part[..open].split_whitespace().collect();
                let values: Vec<String> = part[open + 1..close]
                    .split(',')
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty())
                    .collect();
                match head.as_slice() {
                    [key, "in"] => (check_key(key, part)?, LabelOp::In(values)),
                    [key, "notin"] => (check_key(key, part)?, LabelOp::NotIn(values)),
                    _ => return Err(SelectorError(format!("invalid set requirement {part:?}"))),
                }
            } else if let Some((k, v)) = part.split_once("!=") {
                (check_key(k.trim(), part)?, LabelOp::NotEq(v.trim().to_owned()))
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (check_key(k.trim(), part)?, LabelOp::Eq(v.trim().to_owned()))
            } else {
                (check_key(part, part)?, LabelOp::Exists)
            };
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    /// Whether the object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        self.0.iter().all(|(key, op)| {
            let value = labels.and_then(|l| l.get(key)).and_then(Value::as_str);
            match op {
                LabelOp::Eq(v) => value == Some(v.as_str()),
                LabelOp::NotEq(v) => value != Some(v.as_str()),
                LabelOp::In(vs) => value.is_some_and(|x| vs.iter().any(|v| v == x)),
                LabelOp::NotIn(vs) => !value.is_some_and(|x| vs.iter().any(|v| v == x)),
                LabelOp::Exists => value.is_some(),
                LabelOp::NotExists => value.is_none(),
            }
        })
    }
}

/// A parsed field selector: `path=value` and `path!=value` terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// Fields every kind supports.
const COMMON_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

/// Extra selectable fields per resource (as kube-apiserver registers them).
fn kind_fields(plural: &str) -> &'static [&'static str] {
    match plural {
        "pods" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "events" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
            "regarding.kind",
            "regarding.name",
            "regarding.namespace",
        ],
        "nodes" => &["spec.unschedulable"],
        "namespaces" => &["status.phase"],
        "secrets" => &["type"],
        "services" => &["spec.clusterIP", "spec.type"],
        "replicasets" => &["status.replicas"],
        _ => &[],
    }
}

impl FieldSelector {
    /// Parses `metadata.name=x,spec.nodeName!=` for the given resource.
    pub fn parse(s: &str, plural: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for part in split_top_level(s) {
            let (path, negate, value) = if let Some((k, v)) = part.split_once("!=") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (k, false, v)
            } else {
                return Err(SelectorError(format!(
                    "invalid field selector: {part:?} is not key=value"
                )));
            };
            let path = path.trim();
            if !COMMON_FIELDS.contains(&path) && !kind_fields(plural).contains(&path) {
                return Err(SelectorError(format!("field label not supported: {path}")));
            }
            terms.push((path.to_owned(), negate, value.trim().to_owned()));
        }
        Ok(Self(terms))
    }

    /// Whether the object satisfies every term (a missing field compares as the empty string).
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, negate, want)| {
            let path = if path == "source" {
                "source.component"
            } else {
                path.as_str()
            };
            let pointer = format!("/{}", path.replace('.', "/"));
            let actual = match object.pointer(&pointer) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            (actual == *want) != *negate
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "p1", "namespace": "d", "labels": labels}, "spec": {"nodeName": "n1"}})
    }

    #[test]
    fn label_equality_and_sets() {
        let o = obj(json!({"app": "web", "tier": "fe"}));
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&o);
        assert!(m("app=web"));
        assert!(m("app==web,tier"));
        assert!(!m("app!=web"));
        assert!(m("app in (web, db),tier notin (be)"));
        assert!(!m("app in (db)"));
        assert!(m("!missing"));
        assert!(!m("!app"));
        assert!(
            m("missing!=x"),
            "!= matches objects without the label, as in Kubernetes"
        );
        assert!(m("missing notin (x)"), "notin matches objects without the label");
        assert!(m(""));
    }

    #[test]
    fn label_parse_errors() {
        assert!(LabelSelector::parse("app in (web").is_err());
        assert!(LabelSelector::parse("a b c").is_err());
        assert!(LabelSelector::parse("app foo (x)").is_err());
    }

    #[test]
    fn field_selectors() {
        let o = obj(json!({}));
        let m = |s: &str| FieldSelector::parse(s, "pods").unwrap().matches(&o);
        assert!(m("metadata.name=p1"));
        assert!(!m("metadata.name!=p1"));
        assert!(m("spec.nodeName=n1,metadata.namespace=d"));
        assert!(m("status.phase="), "a missing field is the empty string");
        assert!(!m("status.phase=Running"));
        assert_eq!(
            FieldSelector::parse("spec.foo=x", "pods"),
            Err(SelectorError("field label not supported: spec.foo".into()))
        );
        assert!(FieldSelector::parse("spec.nodeName=x", "configmaps").is_err());
        assert!(FieldSelector::parse("metadata.name", "pods").is_err());
    }

    #[test]
    fn event_source_aliases_component() {
        let ev = json!({"source": {"component": "kubelet"}, "involvedObject": {"name": "p1", "kind": "Pod"}});
        let sel = FieldSelector::parse("source=kubelet,involvedObject.name=p1", "events").unwrap();
        assert!(sel.matches(&ev));
    }
}
