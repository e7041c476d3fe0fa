//! Matching a `LabelSelector` (matchLabels and matchExpressions) against labels.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` satisfy the selector; an empty selector matches everything (callers reject it where needed).
pub fn matches(selector: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k));
    let by_label = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| get(k) == Some(v));
    let by_expr = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => get(&e.key).is_some(),
            "DoesNotExist" => get(&e.key).is_none(),
            _ => false,
        }
    });
    by_label && by_expr
}

/// Whether the selector selects nothing at all (no labels and no expressions).
pub fn is_empty(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && selector.match_expressions.as_ref().is_none_or(Vec::is_empty)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn labels_and_expressions() {
        let sel: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]},
                                 {"key": "canary", "operator": "DoesNotExist"}]
        }))
        .unwrap();
        let l = |v: serde_json::Value| serde_json::from_value::<BTreeMap<String, String>>(v).unwrap();
        assert!(matches(&sel, Some(&l(json!({"app": "web", "tier": "a"})))));
        assert!(!matches(&sel, Some(&l(json!({"app": "web", "tier": "c"})))));
        assert!(!matches(
            &sel,
            Some(&l(json!({"app": "web", "tier": "a", "canary": "1"})))
        ));
        assert!(!matches(&sel, None));
        assert!(is_empty(&LabelSelector::default()));
        assert!(!is_empty(&sel));
    }
}
