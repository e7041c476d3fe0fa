//! Node registration and heartbeats: create or adopt the Node, renew its Lease in kube-node-lease every 10 s, and
//! post its status (conditions with heartbeat times) every 10 s; retries with backoff while the apiserver is away.
use std::time::Duration;

use k8s_openapi::{
    api::{coordination::v1::Lease, core::v1::Node},
    apimachinery::pkg::apis::meta::v1::{MicroTime, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use tokio::sync::watch;

use super::node_status::{self, Health, NodeFacts};

/// Namespace of node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// How often the Lease and the status are renewed by default (the kubelet's default).
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Lease duration announced (the kubelet's default).
pub const LEASE_SECONDS: i32 = 40;

/// Registration failures.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error("apiserver: {0}")]
    Api(#[from] kube::Error),
}

type Result<T, E = HeartbeatError> = std::result::Result<T, E>;

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Creates the Node when missing (labels, podCIDR) or adds what an existing one lacks; returns the Node as stored.
pub async fn register(client: &Client, f: &NodeFacts) -> Result<Node> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = match nodes.get_opt(&f.name).await? {
        Some(n) => n,
        None => match nodes
            .create(&PostParams::default(), &node_status::new_node(f))
            .await
        {
            Ok(n) => {
                tracing::info!(node = %f.name, "registered the Node");
                n
            }
            Err(kube::Error::Api(s)) if s.code == 409 => nodes.get(&f.name).await?,
            Err(e) => return Err(e.into()),
        },
    };
    // Labels and annotations as this agent runs now (an existing Node may come from an earlier configuration); a
    // kubelet-address annotation no longer wanted is removed (null in a merge patch).
    let mut annotations = json!({ node_status::KUBELET_ADDRESS_ANNOTATION: null });
    for (k, v) in node_status::annotations(f) {
        annotations[k] = json!(v);
    }
    let mut patch = json!({"metadata": {"labels": node_status::labels(&f.name), "annotations": annotations}});
    let has_cidr = node.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_some();
    if let (false, Some(c)) = (has_cidr, f.pod_cidr) {
        patch["spec"] = json!({"podCIDR": c.to_string(), "podCIDRs": [c.to_string()]});
    }
    Ok(nodes
        .patch(&f.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?)
}

/// Creates or renews the node's Lease.
pub async fn renew_lease(client: &Client, node: &str) -> Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let now = MicroTime(Timestamp::now());
    let body = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": node, "namespace": LEASE_NAMESPACE},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now},
    });
    match leases
        .patch(node, &PatchParams::default(), &Patch::Merge(&body))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => {
            let lease: Lease = serde_json::from_value(body).expect("a valid Lease");
            match leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Posts the node status with fresh conditions; a deleted Node is registered again.
pub async fn post_status(client: &Client, f: &NodeFacts, health: &Health) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let current = match nodes.get_opt(&f.name).await? {
        Some(n) => n,
        None => {
            tracing::warn!(node = %f.name, "the Node is gone; registering it again");
            register(client, f).await?
        }
    };
    let prev = current.status.and_then(|s| s.conditions).unwrap_or_default();
    let conditions = node_status::conditions(health, &prev, &Time(Timestamp::now()));
    let status = node_status::status(f, conditions);
    nodes
        .patch_status(
            &f.name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await?;
    Ok(())
}

/// What the node's health looks like right now (reads /proc and the state directory's file system).
pub fn measure(state_dir: &std::path::Path, network_ready: bool) -> Health {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let disk_free = nix::sys::statvfs::statvfs(state_dir)
        .ok()
        .filter(|s| s.blocks() > 0)
        .map(|s| s.blocks_available() as f64 / s.blocks() as f64);
    let threads = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().nth(3)?.split('/').nth(1)?.parse().ok());
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    Health {
        mem_available_kb: super::capacity::meminfo_kb(&meminfo, "MemAvailable"),
        disk_free,
        pids: threads.zip(pid_max),
        network_ready,
    }
}

/// The delay after `failures` consecutive failed rounds: 1 s doubling, at most the normal `interval`.
pub fn retry_delay(failures: u32, interval: Duration) -> Duration {
    Duration::from_secs(1u64 << failures.min(4)).min(interval)
}

/// Renews the Lease and posts status every `interval` until `stop` fires; reconnects with backoff.
pub async fn run(
    client: Client,
    facts: NodeFacts,
    interval: Duration,
    state_dir: std::path::PathBuf,
    mut network_ready: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    loop {
        let ready = *network_ready.borrow_and_update();
        let dir = state_dir.clone();
        let health = tokio::task::spawn_blocking(move || measure(&dir, ready))
            .await
            .unwrap_or_default();
        let round = async {
            renew_lease(&client, &facts.name).await?;
            post_status(&client, &facts, &health).await
        };
        let delay = match round.await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(node = %facts.name, "apiserver reachable again; heartbeats resumed");
                }
                failures = 0;
                interval
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let d = retry_delay(failures, interval);
                tracing::warn!(node = %facts.name, error = %e, retry_in = ?d, "heartbeat failed");
                d
            }
        };
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(delay) => {}
            // Report readiness changes at once.
            Ok(()) = network_ready.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_backs_off_up_to_the_interval() {
        assert_eq!(retry_delay(1, INTERVAL), Duration::from_secs(2));
        assert_eq!(retry_delay(2, INTERVAL), Duration::from_secs(4));
        assert_eq!(retry_delay(3, INTERVAL), Duration::from_secs(8));
        assert_eq!(retry_delay(30, INTERVAL), INTERVAL);
    }

    #[test]
    fn health_is_measured() {
        let h = measure(std::path::Path::new("/"), true);
        assert!(h.mem_available_kb.is_some_and(|kb| kb > 0));
        assert!(h.disk_free.is_some());
        assert!(h.pids.is_some_and(|(used, max)| used > 0 && max >= used));
    }
}
