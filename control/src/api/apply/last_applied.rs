//! The hand-over from client-side to server-side apply through kubectl's last-applied annotation.
//!
//! Like kube-apiserver, only the manager `kubectl` gets this: its applies may take fields the
//! last-applied configuration lists without a conflict, and keep that annotation in sync.

use serde_json::{Value, json};

use super::fieldset::{FieldSet, Scope};
use super::managed::Conflict;

/// The annotation `kubectl apply` (client-side) keeps its last applied configuration in.
pub const ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The manager name kubectl's server-side apply uses by default.
const KUBECTL: &str = "kubectl";

fn last_applied(object: &Value) -> Option<Value> {
    let text = object
        .pointer("/metadata/annotations")?
        .get(ANNOTATION)?
        .as_str()?;
    serde_json::from_str(text).ok().filter(Value::is_object)
}

/// The conflicts that remain once fields of the last-applied configuration are allowed to move to `kubectl`.
pub fn remaining_conflicts(
    manager: &str,
    live: &Value,
    conflicts: Vec<Conflict>,
    scope: Scope,
) -> Vec<Conflict> {
    let Some(config) = last_applied(live).filter(|_| manager == KUBECTL) else {
        return conflicts;
    };
    let allowed = FieldSet::of(&config, scope);
    conflicts
        .into_iter()
        .filter(|c| !allowed.contains(&c.path))
        .collect()
}

/// After an apply by `kubectl`, an existing last-applied annotation is set to the applied configuration.
pub fn sync(manager: &str, live: &Value, merged: &mut Value, config: &Value) {
    if manager != KUBECTL || last_applied(live).is_none() {
        return;
    }
    let mut recorded = config.clone();
    if let Some(annotations) = recorded
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.remove(ANNOTATION);
        if annotations.is_empty()
            && let Some(meta) = recorded["metadata"].as_object_mut()
        {
            meta.remove("annotations");
        }
    }
    merged["metadata"]["annotations"][ANNOTATION] = json!(recorded.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::apply::fieldset::Element;

    fn conflict(path: &[&str]) -> Conflict {
        Conflict {
            manager: "\"kubectl-client-side-apply\" using apps/v1".into(),
            path: path.iter().map(|f| Element::Field((*f).into())).collect(),
        }
    }

    #[test]
    fn kubectl_may_take_what_it_applied_client_side() {
        let live = json!({"metadata": {"annotations": {ANNOTATION: r#"{"spec":{"replicas":2}}"#}}, "spec": {"replicas": 2, "paused": true}});
        let conflicts = vec![conflict(&["spec", "replicas"]), conflict(&["spec", "paused"])];
        let left = remaining_conflicts("kubectl", &live, conflicts.clone(), Scope::All);
        assert_eq!(left, vec![conflict(&["spec", "paused"])]);
        assert_eq!(
            remaining_conflicts("other", &live, conflicts.clone(), Scope::All),
            conflicts
        );
        assert_eq!(
            remaining_conflicts("kubectl", &json!({}), conflicts.clone(), Scope::All),
            conflicts
        );
    }

    #[test]
    fn the_annotation_follows_the_applied_configuration() {
        let live = json!({"metadata": {"annotations": {ANNOTATION: "{}"}}});
        let mut merged = live.clone();
        let config =
            json!({"metadata": {"name": "x", "annotations": {ANNOTATION: "old"}}, "spec": {"replicas": 3}});
        sync("kubectl", &live, &mut merged, &config);
        let text = merged["metadata"]["annotations"][ANNOTATION].as_str().unwrap();
        let recorded: Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            recorded,
            json!({"metadata": {"name": "x"}, "spec": {"replicas": 3}})
        );
        let mut untouched = json!({});
        sync("kubectl", &json!({}), &mut untouched, &config);
        assert_eq!(untouched, json!({}), "no annotation, nothing to keep in sync");
    }
}
