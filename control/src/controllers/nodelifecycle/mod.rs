//! Node lifecycle controller: Lease heartbeats -> Ready=Unknown, not-ready/unreachable taints, pods marked
//! not ready and evicted once their toleration runs out (kube-controller-manager's node lifecycle and taint
//! eviction controllers).

pub mod decide;
pub mod podgc;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::cache::{self, Caches};
use super::events;

const DEBOUNCE: Duration = Duration::from_millis(10);
/// The longest sleep between passes; also the retry delay after failed writes.
const MAX_SLEEP: Duration = Duration::from_secs(5);
const RETRY: Duration = Duration::from_secs(1);

/// How long a silent node is trusted, and how long pods without their own toleration stay on a bad node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// `--node-monitor-grace-period`: a Lease older than this makes the node Unknown.
    pub grace: Duration,
    /// `--default-not-ready-toleration-seconds`.
    pub not_ready_toleration: Duration,
    /// `--default-unreachable-toleration-seconds`.
    pub unreachable_toleration: Duration,
}

impl Timings {
    /// Kubernetes' defaults: 50 s grace, 300 s tolerations.
    pub const DEFAULT: Self = Self {
        grace: Duration::from_secs(50),
        not_ready_toleration: Duration::from_secs(300),
        unreachable_toleration: Duration::from_secs(300),
    };
}

/// Parses a Go-style duration as kube-controller-manager flags take them: `50s`, `2m30s`, `1500ms`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration like 50s, 2m or 500ms");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value * 60),
            "h" => Duration::from_secs(value * 3600),
            _ => return Err(bad()),
        };
        total += part;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

fn now_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

/// Runs until the caches stop.
pub async fn run(client: Client, caches: Arc<Caches>, timings: Timings) {
    let mut changes = caches.subscribe();
    caches.ready().await;
    loop {
        let (failed, recheck_at) = pass(&client, &caches, &timings).await;
        let mut sleep = recheck_at.map_or(MAX_SLEEP, |at| {
            Duration::from_millis(u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0))
        });
        if failed {
            sleep = sleep.min(RETRY);
        }
        let sleep = sleep.min(MAX_SLEEP);
        let more = tokio::time::timeout(sleep, cache::next_change(&mut changes, DEBOUNCE))
            .await
            .unwrap_or(true);
        if !more {
            return;
        }
    }
}

/// One pass over every node; returns whether a write failed and when to look again.
async fn pass(client: &Client, caches: &Caches, timings: &Timings) -> (bool, Option<i64>) {
    let nodes = caches.nodes.state();
    let leases: HashMap<String, i64> = caches
        .leases
        .state()
        .iter()
        .filter_map(|l| {
            let renew = l.spec.as_ref()?.renew_time.as_ref()?;
            Some((l.name_any(), renew.0.as_millisecond()))
        })
        .collect();
    let pods = caches.pods.state();
    let mut by_node: HashMap<&str, Vec<&Pod>> = HashMap::new();
    for pod in &pods {
        if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            by_node.entry(node).or_default().push(pod);
        }
    }
    let mut failed = false;
    let mut recheck: Option<i64> = None;
    let now = now_ms();
    for node in &nodes {
        let name = node.name_any();
        let on_node = by_node.get(name.as_str()).map(Vec::as_slice).unwrap_or_default();
        let actions = decide::decide(node, leases.get(&name).copied(), on_node, now, timings);
        if let Some(at) = actions.recheck_at {
            recheck = Some(recheck.map_or(at, |r| r.min(at)));
        }
        failed |= !apply(client, node, actions).await;
    }
    (failed, recheck)
}

#[cfg(test)]
#[test]
fn durations_parse_like_go() {
    assert_eq!(parse_duration("50s"), Ok(Duration::from_secs(50)));
    assert_eq!(parse_duration("2m30s"), Ok(Duration::from_secs(150)));
    assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    assert!(parse_duration("50").is_err());
    assert!(parse_duration("5x").is_err());
    assert!(parse_duration("").is_err());
}

/// Writes one node's actions; false when a write failed.
async fn apply(client: &Client, node: &Node, actions: decide::Actions) -> bool {
    let name = node.name_any();
    let nodes: Api<Node> = Api::all(client.clone());
    let mut ok = true;
    let gone = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 404);
    if let Some(conditions) = actions.conditions {
        tracing::info!(node = %name, "node stopped renewing its lease; marking it Unknown");
        let patch = json!({"status": {"conditions": conditions}});
        if let Err(e) = nodes
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            && !gone(&e)
        {
            tracing::warn!(node = %name, error = %e, "updating node conditions");
            ok = false;
        }
    }
    if let Some(taints) = actions.taints {
        tracing::info!(node = %name, taints = ?taints.iter().map(|t| format!("{}:{}", t.key, t.effect)).collect::<Vec<_>>(), "updating node taints");
        let patch = json!({"spec": {"taints": taints}});
        if let Err(e) = nodes
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            && !gone(&e)
        {
            tracing::warn!(node = %name, error = %e, "updating node taints");
            ok = false;
        }
    }
    for (ns, pod, conditions) in actions.mark_not_ready {
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let patch = json!({"status": {"conditions": conditions}});
        if let Err(e) = api
            .patch_status(&pod, &PatchParams::default(), &Patch::Merge(patch))
            .await
            && !gone(&e)
        {
            tracing::warn!(%ns, %pod, error = %e, "marking pod not ready");
            ok = false;
        }
    }
    for (ns, pod) in actions.evict {
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        match api.delete(&pod, &DeleteParams::default()).await {
            Ok(either) => {
                tracing::info!(%ns, %pod, node = %name, "evicting pod from tainted node");
                let object = either.left().unwrap_or_else(|| Pod {
                    metadata: kube::api::ObjectMeta {
                        name: Some(pod.clone()),
                        namespace: Some(ns.clone()),
                        ..Default::default()
                    },
                    ..Pod::default()
                });
                let note = format!("Marking for deletion Pod {ns}/{pod}");
                events::record(client, &object, "Normal", "TaintManagerEviction", "Delete", &note).await;
            }
            Err(e) if gone(&e) => {}
            Err(e) => {
                tracing::warn!(%ns, %pod, error = %e, "evicting pod");
                ok = false;
            }
        }
    }
    ok
}
