//! Attaching a pod to its node: a veth pair, the pod side as eth0 with the pod IP, routes both ways.
//!
//! Layout (no bridge): the node side `skp<hash>` carries the gateway address (`.1/32`, the same on every pod veth)
//! and a /32 route to the pod; inside the pod, eth0 has `podIP/32`, a link-scope route to the gateway and the default
//! route via it. ARP for the gateway is answered by the node side because it owns that address.
use std::{net::Ipv4Addr, path::PathBuf};

use rtnetlink::{
    Handle, LinkUnspec, LinkVeth, RouteMessageBuilder,
    packet_route::route::{RouteProtocol, RouteScope},
};

use super::{
    names,
    nl::{self, NetError, Netns, SKIFF_ROUTE_PROTOCOL, add_addr, link_index, link_up, nl_err},
};

/// Name of the pod-side interface.
pub const POD_IFACE: &str = "eth0";

/// What to attach.
#[derive(Debug, Clone)]
pub struct PodNetSpec {
    pub uid: String,
    /// The pod's network namespace (`/proc/<sandbox pid>/ns/net`).
    pub pod_netns: PathBuf,
    pub pod_ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub mtu: Option<u32>,
}

/// What was attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAttachment {
    pub host_veth: String,
    pub pod_ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
}

/// Creates the veth pair in `node`, moves its peer into the pod and configures both ends. Safe to retry: a leftover
/// pair from an earlier attempt is deleted first.
pub fn attach(node: &Netns, spec: &PodNetSpec) -> Result<PodAttachment, NetError> {
    let host = names::host_veth(&spec.uid);
    let peer = names::peer_veth(&spec.uid);
    {
        let (host, peer, spec) = (host.clone(), peer.clone(), spec.clone());
        nl::run_in(
            node,
            move |h| async move { node_side(&h, &host, &peer, &spec).await },
        )?;
    }
    {
        let (peer, spec) = (peer.clone(), spec.clone());
        let pod = Netns::Path(spec.pod_netns.clone());
        nl::run_in(&pod, move |h| async move { pod_side(&h, &peer, &spec).await })?;
    }
    Ok(PodAttachment {
        host_veth: host,
        pod_ip: spec.pod_ip,
        gateway: spec.gateway,
    })
}

async fn node_side(h: &Handle, host: &str, peer: &str, spec: &PodNetSpec) -> Result<(), NetError> {
    nl::delete_link(h, host).await?;
    nl::delete_link(h, peer).await?;
    let mut veth = LinkVeth::new(host, peer);
    if let Some(mtu) = spec.mtu {
        veth = veth.mtu(mtu);
    }
    h.link()
        .add(veth.build())
        .execute()
        .await
        .map_err(nl_err(format!("creating veth {host}")))?;
    let peer_idx = link_index(h, peer)
        .await?
        .ok_or_else(|| NetError::NoLink(peer.to_string()))?;
    let pod_ns = nl::open_ns(&spec.pod_netns)?;
    {
        use std::os::fd::AsRawFd;
        h.link()
            .set(
                LinkUnspec::new_with_index(peer_idx)
                    .setns_by_fd(pod_ns.as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .map_err(nl_err(format!("moving {peer} into {}", spec.pod_netns.display())))?;
    }
    let idx = link_index(h, host)
        .await?
        .ok_or_else(|| NetError::NoLink(host.to_string()))?;
    add_addr(h, idx, spec.gateway, 32, host).await?;
    link_up(h, idx, host).await?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(spec.pod_ip, 32)
        .output_interface(idx)
        .scope(RouteScope::Link)
        .protocol(RouteProtocol::from(SKIFF_ROUTE_PROTOCOL))
        .build();
    h.route()
        .add(route)
        .replace()
        .execute()
        .await
        .map_err(nl_err(format!("routing {} to {host}", spec.pod_ip)))
}

async fn pod_side(h: &Handle, peer: &str, spec: &PodNetSpec) -> Result<(), NetError> {
    if let Some(lo) = link_index(h, "lo").await? {
        link_up(h, lo, "lo").await?;
    }
    let idx = link_index(h, peer)
        .await?
        .ok_or_else(|| NetError::NoLink(peer.to_string()))?;
    h.link()
        .set(
            LinkUnspec::new_with_index(idx)
                .name(POD_IFACE.to_string())
                .build(),
        )
        .execute()
        .await
        .map_err(nl_err(format!("renaming {peer} to {POD_IFACE}")))?;
    add_addr(h, idx, spec.pod_ip, 32, POD_IFACE).await?;
    link_up(h, idx, POD_IFACE).await?;
    let to_gw = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(spec.gateway, 32)
        .output_interface(idx)
        .scope(RouteScope::Link)
        .build();
    h.route()
        .add(to_gw)
        .replace()
        .execute()
        .await
        .map_err(nl_err("adding the gateway route in the pod"))?;
    let default = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
        .gateway(spec.gateway)
        .output_interface(idx)
        .build();
    h.route()
        .add(default)
        .replace()
        .execute()
        .await
        .map_err(nl_err("adding the default route in the pod"))
}

/// Removes the pod's veth pair from `node` (its /32 route goes with it). Returns whether there was one.
pub fn detach(node: &Netns, uid: &str) -> Result<bool, NetError> {
    let host = names::host_veth(uid);
    let peer = names::peer_veth(uid);
    nl::run_in(node, move |h| async move {
        let a = nl::delete_link(&h, &host).await?;
        let b = nl::delete_link(&h, &peer).await?;
        Ok(a || b)
    })
}

/// Host-side pod veths present in `node` (for garbage collection of pods that no longer exist).
pub fn list_host_veths(node: &Netns) -> Result<Vec<String>, NetError> {
    nl::run_in(node, |h| async move {
        Ok(nl::links_with_prefix(&h, names::HOST_VETH_PREFIX)
            .await?
            .into_iter()
            .map(|(_, n)| n)
            .collect())
    })
}
