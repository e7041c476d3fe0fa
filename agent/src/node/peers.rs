//! Routes to the other nodes' podCIDRs via their node IPs, kept in line with the Node objects (watched).
use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Node;
use tokio::sync::watch;

use super::{
    node_list::{self, Nodes},
    node_status::routable_ip,
};
use crate::net::{
    cidr::Ipv4Cidr,
    nl::Netns,
    node_routes,
    routes::{NodeRoute, PeerNode, desired_routes},
};

/// A Node as the route computation sees it.
pub fn peer(n: &Node) -> PeerNode {
    PeerNode {
        name: n.metadata.name.clone().unwrap_or_default(),
        ip: routable_ip(n),
        pod_cidr: n
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .and_then(|c| c.parse().ok()),
    }
}

/// The routes wanted for `me` given every Node.
pub fn wanted(me: &str, my_cidr: Option<Ipv4Cidr>, nodes: &[Arc<Node>]) -> Vec<NodeRoute> {
    let peers: Vec<PeerNode> = nodes.iter().map(|n| peer(n)).collect();
    desired_routes(me, my_cidr, &peers)
}

/// Follows the Node list and syncs the routes in `ns`; `ready` turns true after the first successful sync.
pub async fn run(
    mut nodes: watch::Receiver<Option<Nodes>>,
    me: String,
    my_cidr: Ipv4Cidr,
    ns: Netns,
    ready: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut current: Option<Nodes> = None;
    let mut applied: Option<Vec<NodeRoute>> = None;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            next = node_list::next(&mut nodes) => match next {
                Some(n) => current = Some(n),
                None => return,
            },
            // Re-check now and then: a failed sync is retried, a route removed by hand comes back.
            _ = tokio::time::sleep(Duration::from_secs(10)) => applied = None,
        }
        let Some(list) = &current else { continue };
        let want = wanted(&me, Some(my_cidr), list);
        if applied.as_ref() == Some(&want) {
            continue;
        }
        let (ns2, w) = (ns.clone(), want.clone());
        match tokio::task::spawn_blocking(move || node_routes::sync(&ns2, &w)).await {
            Ok(Ok((added, removed))) => {
                for r in &added {
                    tracing::info!(dst = %r.dst, via = %r.via, "route to a node's pods added");
                }
                for r in &removed {
                    tracing::info!(dst = %r.dst, via = %r.via, "route to a node's pods removed");
                }
                applied = Some(want);
                ready.send_if_modified(|r| !std::mem::replace(r, true));
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "syncing node routes"),
            Err(e) => tracing::warn!(error = %e, "node route task"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ips: &[&str], cidr: &str) -> Arc<Node> {
        Arc::new(serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": ips.iter().map(|ip| serde_json::json!({"type": "InternalIP", "address": ip})).collect::<Vec<_>>()}
        }))
        .unwrap())
    }

    #[test]
    fn routes_to_other_nodes_via_their_routable_address() {
        let nodes = [
            node("n1", &["127.0.0.1", "10.99.0.11"], "10.244.1.0/24"),
            node("n2", &["127.0.0.1", "10.99.0.12"], "10.244.2.0/24"),
        ];
        let r = wanted("n1", Some("10.244.1.0/24".parse().unwrap()), &nodes);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].dst.to_string(), "10.244.2.0/24");
        assert_eq!(r[0].via.to_string(), "10.99.0.12");
    }
}
