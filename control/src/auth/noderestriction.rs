//! Node restriction (kube's NodeRestriction admission): a node identity (`system:node:<name>` in
//! `system:nodes`) may only change its own Node and Lease, only pods bound to it, and may request ServiceAccount
//! tokens only for the accounts of pods bound to it.

use axum::http::{Method, Uri};
use serde_json::Value;

use super::{Attributes, UserInfo};
use crate::api::router::ApiState;
use crate::api::status::ApiError;
use crate::registry::kinds;

/// The node a node identity speaks for.
pub fn node_name(user: &UserInfo) -> Option<&str> {
    let name = user.name.strip_prefix("system:node:")?;
    (user.in_group("system:nodes") && !name.is_empty()).then_some(name)
}

/// What the attributes alone decide.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    Allowed,
    Denied(String),
    /// Allowed when the named pod is bound to the node (needs the stored pod).
    PodBoundToNode,
    /// Allowed when a pod bound to the node runs as the named ServiceAccount (needs the stored pods).
    AccountOfPodOnNode,
}

const WRITES: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

/// The decision for `node` doing `attrs`, from the attributes alone.
pub fn check(node: &str, attrs: &Attributes) -> Check {
    if !attrs.resource_request || !WRITES.contains(&attrs.verb.as_str()) {
        return Check::Allowed;
    }
    match (attrs.api_group.as_str(), attrs.resource.as_str()) {
        ("", "nodes") if attrs.verb == "create" || attrs.name == node => Check::Allowed,
        ("", "nodes") => Check::Denied(format!(
            "node {node:?} is not allowed to modify node {:?}",
            attrs.name
        )),
        ("coordination.k8s.io", "leases") if attrs.namespace == "kube-node-lease" => {
            if attrs.name == node || attrs.verb == "create" {
                Check::Allowed
            } else {
                Check::Denied("can only access node lease with the same name as the requesting node".into())
            }
        }
        ("", "pods") if attrs.verb == "create" || attrs.name.is_empty() => Check::Denied(format!(
            "node {node:?} can only modify pods with spec.nodeName set to itself, one at a time"
        )),
        ("", "pods") => Check::PodBoundToNode,
        ("", "serviceaccounts") if attrs.subresource == "token" && attrs.verb == "create" => {
            Check::AccountOfPodOnNode
        }
        ("", "serviceaccounts") => Check::Denied(format!("node {node:?} may not modify ServiceAccounts")),
        _ => Check::Allowed,
    }
}

fn denied(attrs: &Attributes, message: &str) -> ApiError {
    let qualified = if attrs.api_group.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}.{}", attrs.resource, attrs.api_group)
    };
    ApiError::forbidden(format!("{qualified} {:?} is forbidden: {message}", attrs.name))
}

/// Refuses writes of a node identity to other nodes' objects (every other user passes untouched).
pub async fn admit(state: &ApiState, user: &UserInfo, method: &Method, uri: &Uri) -> Result<(), ApiError> {
    let Some(node) = node_name(user) else {
        return Ok(());
    };
    let attrs = Attributes::from_request(method, uri.path(), uri.query());
    match check(node, &attrs) {
        Check::Allowed => Ok(()),
        Check::Denied(message) => Err(denied(&attrs, &message)),
        Check::AccountOfPodOnNode => {
            let pods = kinds::find("", "v1", "pods").expect("pods are served");
            let prefix = pods.key(Some(&attrs.namespace), "");
            let list = state
                .store
                .list(&prefix, crate::store::ListOptions::default())
                .await
                .map_err(|e| ApiError::from_store(e, pods, &attrs.name))?;
            let runs_as = |pod: &Value| {
                let account = pod
                    .pointer("/spec/serviceAccountName")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .unwrap_or("default");
                pod.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node) && account == attrs.name
            };
            let found = list
                .items
                .iter()
                .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
                .any(|pod| runs_as(&pod));
            if found {
                Ok(())
            } else {
                Err(denied(
                    &attrs,
                    &format!(
                        "node {node:?} can only create tokens for service accounts of pods scheduled to it"
                    ),
                ))
            }
        }
        Check::PodBoundToNode => {
            let pods = kinds::find("", "v1", "pods").expect("pods are served");
            let key = pods.key(Some(&attrs.namespace), &attrs.name);
            let stored = state
                .store
                .get(&key)
                .await
                .map_err(|e| ApiError::from_store(e, pods, &attrs.name))?;
            let Some(kv) = stored else {
                // Let the request fail as it would for anyone (404).
                return Ok(());
            };
            let pod: Value =
                serde_json::from_slice(&kv.value).map_err(|e| ApiError::internal(e.to_string()))?;
            if pod.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node) {
                Ok(())
            } else {
                Err(denied(
                    &attrs,
                    &format!("node {node:?} can only modify pods with spec.nodeName set to itself"),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_touch_only_their_own_objects() {
        let n1 = UserInfo::authenticated("system:node:n1".into(), vec!["system:nodes".into()]);
        assert_eq!(node_name(&n1), Some("n1"));
        assert_eq!(
            node_name(&UserInfo::authenticated("system:node:n1".into(), vec![])),
            None
        );
        let req = |verb: &str, group: &str, resource: &str, ns: &str, name: &str| {
            check("n1", &Attributes::resource(verb, group, resource, ns, name))
        };
        assert_eq!(req("patch", "", "nodes/status", "", "n1"), Check::Allowed);
        assert_eq!(req("get", "", "nodes", "", "n2"), Check::Allowed);
        assert_eq!(
            req("patch", "", "nodes/status", "", "n2"),
            Check::Denied("node \"n1\" is not allowed to modify node \"n2\"".into())
        );
        assert_eq!(
            req("update", "coordination.k8s.io", "leases", "kube-node-lease", "n1"),
            Check::Allowed
        );
        assert!(matches!(
            req("update", "coordination.k8s.io", "leases", "kube-node-lease", "n2"),
            Check::Denied(_)
        ));
        assert_eq!(
            req("patch", "", "pods/status", "default", "p"),
            Check::PodBoundToNode
        );
        assert!(matches!(
            req("deletecollection", "", "pods", "default", ""),
            Check::Denied(_)
        ));
        assert_eq!(req("create", "", "events", "default", ""), Check::Allowed);
        assert_eq!(
            req("create", "", "serviceaccounts/token", "default", "robot"),
            Check::AccountOfPodOnNode
        );
        assert!(matches!(
            req("update", "", "serviceaccounts", "default", "robot"),
            Check::Denied(_)
        ));
        assert_eq!(
            req("get", "", "serviceaccounts", "default", "robot"),
            Check::Allowed
        );
    }
}
