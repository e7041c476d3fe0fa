//! Pod garbage collection: force-deletes pods bound to a Node that no longer exists, and terminating pods on a
//! not-ready Node tainted `node.kubernetes.io/out-of-service` (their kubelet will never finish them).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::DeleteParams;
use kube::{Api, Client, ResourceExt};

use crate::controllers::cache::{self, Caches};

pub const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";
const DEBOUNCE: Duration = Duration::from_millis(50);
const RETRY: Duration = Duration::from_secs(1);

/// Why a pod is collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Its Node is gone (confirmed against the API before deleting).
    Orphaned,
    /// It is terminating on an out-of-service Node.
    OutOfService,
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn out_of_service(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| {
            t.iter()
                .any(|t| t.key == OUT_OF_SERVICE && t.effect == "NoExecute")
        })
}

/// The pods to force-delete (pure): (namespace, name, reason).
pub fn select(nodes: &[&Node], pods: &[&Pod]) -> Vec<(String, String, Reason)> {
    let by_name: HashMap<&str, &Node> = nodes
        .iter()
        .filter_map(|n| Some((n.metadata.name.as_deref()?, *n)))
        .collect();
    pods.iter()
        .filter_map(|pod| {
            let node = pod
                .spec
                .as_ref()?
                .node_name
                .as_deref()
                .filter(|n| !n.is_empty())?;
            let reason = match by_name.get(node) {
                None => Reason::Orphaned,
                Some(n)
                    if pod.metadata.deletion_timestamp.is_some() && out_of_service(n) && !node_ready(n) =>
                {
                    Reason::OutOfService
                }
                Some(_) => return None,
            };
            Some((pod.namespace().unwrap_or_default(), pod.name_any(), reason))
        })
        .collect()
}

/// Runs until the caches stop.
pub async fn run(client: Client, caches: Arc<Caches>) {
    let mut rounds = cache::Rounds::start(&caches, DEBOUNCE, RETRY).await;
    loop {
        let unfinished = pass(&client, &caches).await;
        if !rounds.next(unfinished).await {
            return;
        }
    }
}

async fn pass(client: &Client, caches: &Caches) -> bool {
    let nodes = caches.nodes.state();
    let pods = caches.pods.state();
    let node_refs: Vec<&Node> = nodes.iter().map(|n| &**n).collect();
    let pod_refs: Vec<&Pod> = pods.iter().map(|p| &**p).collect();
    let node_api: Api<Node> = Api::all(client.clone());
    let mut failed = false;
    let mut confirmed_gone: HashMap<String, bool> = HashMap::new();
    for (ns, name, reason) in select(&node_refs, &pod_refs) {
        if reason == Reason::Orphaned {
            // The node cache may lag behind the pod cache: ask the API before deleting.
            let node = pod_refs
                .iter()
                .find(|p| p.namespace().as_deref() == Some(ns.as_str()) && p.name_any() == name)
                .and_then(|p| p.spec.as_ref()?.node_name.clone())
                .unwrap_or_default();
            let gone = match confirmed_gone.get(&node) {
                Some(g) => *g,
                None => {
                    let g = match node_api.get_opt(&node).await {
                        Ok(found) => found.is_none(),
                        Err(e) => {
                            tracing::debug!(%node, error = %e, "checking node");
                            failed = true;
                            false
                        }
                    };
                    confirmed_gone.insert(node.clone(), g);
                    g
                }
            };
            if !gone {
                continue;
            }
        }
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let force = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        match api.delete(&name, &force).await {
            Ok(_) => tracing::info!(%ns, pod = %name, ?reason, "force-deleted pod"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                tracing::warn!(%ns, pod = %name, error = %e, "force-deleting pod");
                failed = true;
            }
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node(name: &str, ready: bool, out_of_service: bool) -> Node {
        let taints = if out_of_service {
            json!([{"key": OUT_OF_SERVICE, "value": "nodeshutdown", "effect": "NoExecute"}])
        } else {
            json!([])
        };
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}}))
        .unwrap()
    }

    fn pod(name: &str, node: Option<&str>, terminating: bool) -> Pod {
        let mut p = json!({"metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [], "nodeName": node}});
        if terminating {
            p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        serde_json::from_value(p).unwrap()
    }

    #[test]
    fn orphans_and_terminating_pods_on_out_of_service_nodes() {
        let nodes = [
            node("up", true, false),
            node("oos", false, true),
            node("oos-ready", true, true),
        ];
        let pods = [
            pod("unbound", None, false),
            pod("fine", Some("up"), true),
            pod("orphan", Some("gone"), false),
            pod("stuck", Some("oos"), true),
            pod("running-on-oos", Some("oos"), false),
            pod("stuck-but-ready-node", Some("oos-ready"), true),
        ];
        let n: Vec<&Node> = nodes.iter().collect();
        let p: Vec<&Pod> = pods.iter().collect();
        let got: Vec<(String, Reason)> = select(&n, &p).into_iter().map(|(_, name, r)| (name, r)).collect();
        assert_eq!(
            got,
            [
                ("orphan".to_owned(), Reason::Orphaned),
                ("stuck".to_owned(), Reason::OutOfService)
            ]
        );
    }
}
