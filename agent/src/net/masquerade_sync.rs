//! Keeps the node's masquerade table in line with the cluster: watches Nodes (their podCIDRs and addresses join the
//! ranges that keep pod addresses) and rewrites the table when the ranges change or the table went missing.
use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Node;
use tokio::sync::watch;

use super::{
    cidr::Ipv4Cidr,
    masquerade::{MasqueradeArgs, MasqueradeRules, cluster_ranges},
    nft,
    nl::Netns,
};
use crate::node::{
    node_list::{self, Nodes},
    peers::peer,
};

/// How often the table's presence is checked (a table removed by hand comes back).
const RECHECK: Duration = Duration::from_secs(10);

/// What the task needs to know.
#[derive(Debug, Clone)]
pub struct MasqueradeConfig {
    pub ns: Netns,
    pub pod_cidr: Ipv4Cidr,
    /// Flags and the uplink subnet (see [`super::masquerade::MasqueradeArgs::static_ranges`]).
    pub static_ranges: Vec<Ipv4Cidr>,
}

/// The rules wanted for the current Nodes.
pub fn wanted(cfg: &MasqueradeConfig, nodes: &[Arc<Node>]) -> MasqueradeRules {
    let peers: Vec<_> = nodes.iter().map(|n| peer(n)).collect();
    MasqueradeRules::new(
        cfg.pod_cidr,
        &cluster_ranges(&cfg.static_ranges, cfg.pod_cidr, &peers),
    )
}

async fn write(cfg: &MasqueradeConfig, rules: &MasqueradeRules) -> bool {
    let (ns, r) = (cfg.ns.clone(), rules.clone());
    match tokio::task::spawn_blocking(move || nft::replace(&ns, &r)).await {
        Ok(Ok(())) => {
            let keep: Vec<String> = rules.keep.iter().map(ToString::to_string).collect();
            tracing::info!(pod_cidr = %rules.pod_cidr, keep = %keep.join(","), "masquerade table written");
            true
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "writing the masquerade table; retrying");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "masquerade task");
            false
        }
    }
}

async fn present(ns: &Netns) -> bool {
    let ns = ns.clone();
    matches!(
        tokio::task::spawn_blocking(move || nft::table_exists(&ns)).await,
        Ok(Ok(true))
    )
}

/// Writes the table at once from the static ranges, then follows the Node list until `stop`.
pub async fn run(
    mut nodes: watch::Receiver<Option<Nodes>>,
    cfg: MasqueradeConfig,
    mut stop: watch::Receiver<bool>,
) {
    // Pods may start before the Node list arrives: their traffic out of the cluster is masqueraded from the start.
    let first = wanted(&cfg, &[]);
    let mut applied = write(&cfg, &first).await.then_some(first);
    let mut current: Option<Nodes> = None;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            next = node_list::next(&mut nodes) => match next {
                Some(n) => current = Some(n),
                None => return,
            },
            _ = tokio::time::sleep(RECHECK) => {
                if !present(&cfg.ns).await {
                    applied = None;
                }
            }
        }
        let Some(list) = &current else { continue };
        let want = wanted(&cfg, list);
        if applied.as_ref() != Some(&want) && write(&cfg, &want).await {
            applied = Some(want);
        }
    }
}

/// The subnet of `iface`'s first IPv4 address inside `netns` (the node underlay).
pub fn iface_subnet(netns: Option<String>, iface: String) -> Option<Ipv4Cidr> {
    let h = crate::bpf::netns::spawn_in(netns, "skiff-subnet", move || {
        nix::ifaddrs::getifaddrs().ok()?.find_map(|a| {
            if a.interface_name != iface {
                return None;
            }
            let ip = a.address?.as_sockaddr_in()?.ip();
            let mask = a.netmask?.as_sockaddr_in()?.ip();
            Ipv4Cidr::new(ip, u32::from(mask).count_ones() as u8).ok()
        })
    })
    .ok()?;
    h.join().ok()?.ok()?
}

/// Starts masquerade for a node as its flags say: the sync task (the uplink's subnet joins the static ranges), or,
/// with `--masquerade=false`, the removal of a table an earlier run left.
pub async fn start(
    nodes: watch::Receiver<Option<Nodes>>,
    args: &MasqueradeArgs,
    netns: Option<String>,
    uplink: Option<String>,
    pod_cidr: Ipv4Cidr,
    stop: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let ns = netns.as_deref().map_or(Netns::Current, Netns::named);
    if !args.masquerade {
        let ns2 = ns.clone();
        match tokio::task::spawn_blocking(move || nft::remove(&ns2)).await {
            Ok(Ok(true)) => tracing::info!("masquerade off: removed the nat table of an earlier run"),
            Ok(Ok(false)) => tracing::info!("masquerade off"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "masquerade off, but the old nat table could not be checked")
            }
            Err(e) => tracing::warn!(error = %e, "masquerade task"),
        }
        return None;
    }
    let underlay = match uplink {
        Some(up) => tokio::task::spawn_blocking(move || iface_subnet(netns, up))
            .await
            .ok()
            .flatten(),
        None => None,
    };
    let cfg = MasqueradeConfig {
        ns,
        pod_cidr,
        static_ranges: args.static_ranges(underlay),
    };
    Some(tokio::spawn(run(nodes, cfg, stop)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_rules_follow_the_nodes() {
        let node = |name: &str, ip: &str, cidr: &str| -> Arc<Node> {
            Arc::new(
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name},
                    "spec": {"podCIDR": cidr},
                    "status": {"addresses": [{"type": "InternalIP", "address": ip}]}
                }))
                .unwrap(),
            )
        };
        let cfg = MasqueradeConfig {
            ns: Netns::Current,
            pod_cidr: "10.245.1.0/24".parse().unwrap(),
            static_ranges: vec!["10.96.0.0/12".parse().unwrap()],
        };
        let r = wanted(
            &cfg,
            &[
                node("n1", "192.168.7.11", "10.245.1.0/24"),
                node("n2", "192.168.7.12", "10.245.2.0/24"),
            ],
        );
        let keep: Vec<String> = r.keep.iter().map(ToString::to_string).collect();
        assert_eq!(
            keep,
            [
                "10.96.0.0/12",
                "10.245.1.0/24",
                "10.245.2.0/24",
                "192.168.7.11/32",
                "192.168.7.12/32"
            ]
        );
        assert_eq!(wanted(&cfg, &[]).keep.len(), 2);
    }
}
