//! Routes to the other nodes' podCIDRs via their node IPs, kept in line with the Node objects (watched).
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, reflector, watcher},
};
use tokio::sync::watch;

use super::node_status::routable_ip;
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
pub fn wanted(me: &str, my_cidr: Option<Ipv4Cidr>, nodes: &[Node]) -> Vec<NodeRoute> {
    let peers: Vec<PeerNode> = nodes.iter().map(peer).collect();
    desired_routes(me, my_cidr, &peers)
}

/// Watches Nodes and syncs the routes in `ns`; `ready` turns true after the first successful sync.
pub async fn run(
    client: Client,
    me: String,
    my_cidr: Ipv4Cidr,
    ns: Netns,
    ready: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let (store, writer) = reflector::store::<Node>();
    let stream = reflector::reflector(
        writer,
        watcher(Api::<Node>::all(client), watcher::Config::default()).default_backoff(),
    );
    let mut stream = std::pin::pin!(stream);
    let mut applied: Option<Vec<NodeRoute>> = None;
    let mut listed = false;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            ev = stream.next() => match ev {
                Some(Ok(watcher::Event::InitDone)) => listed = true,
                Some(Ok(_)) => {}
                Some(Err(e)) => tracing::warn!(error = %e, "watching Nodes failed; retrying"),
                None => return,
            },
            // Re-check now and then: a failed sync is retried, a route removed by hand comes back.
            _ = tokio::time::sleep(Duration::from_secs(10)) => applied = None,
        }
        // The store is complete only after the initial list (never wait for it here: that would stop the
        // stream that fills it).
        if !listed {
            continue;
        }
        let nodes: Vec<Node> = store.state().iter().map(|n| (**n).clone()).collect();
        let want = wanted(&me, Some(my_cidr), &nodes);
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

    fn node(name: &str, ips: &[&str], cidr: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": ips.iter().map(|ip| serde_json::json!({"type": "InternalIP", "address": ip})).collect::<Vec<_>>()}
        }))
        .unwrap()
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
