//! Installing the routes to other nodes' podCIDRs, marked with Skiff's route protocol so only ours are touched.
use std::net::Ipv4Addr;

use futures::TryStreamExt;
use rtnetlink::{
    RouteMessageBuilder,
    packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol},
};

use super::{
    cidr::Ipv4Cidr,
    nl::{self, NetError, Netns, SKIFF_ROUTE_PROTOCOL, nl_err},
    routes::{NodeRoute, diff},
};

fn as_node_route(m: &RouteMessage) -> Option<NodeRoute> {
    if m.header.protocol != RouteProtocol::from(SKIFF_ROUTE_PROTOCOL) {
        return None;
    }
    let mut dst = None;
    let mut via = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => via = Some(*ip),
            _ => {}
        }
    }
    let dst = Ipv4Cidr::new(dst?, m.header.destination_prefix_length).ok()?;
    Some(NodeRoute { dst, via: via? })
}

/// The node routes currently installed by Skiff in `ns` (pod /32 routes have no gateway and are not included).
pub fn installed(ns: &Netns) -> Result<Vec<NodeRoute>, NetError> {
    nl::run_in(ns, |h| async move {
        let mut routes = h
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        let mut out = Vec::new();
        while let Some(m) = routes.try_next().await.map_err(nl_err("listing routes"))? {
            out.extend(as_node_route(&m));
        }
        Ok(out)
    })
}

/// Makes Skiff's node routes in `ns` equal to `desired`; returns (added, removed).
pub fn sync(ns: &Netns, desired: &[NodeRoute]) -> Result<(Vec<NodeRoute>, Vec<NodeRoute>), NetError> {
    let current = installed(ns)?;
    let (add, del) = diff(&current, desired);
    let (a, d) = (add.clone(), del.clone());
    nl::run_in(ns, move |h| async move {
        for r in &d {
            let msg = route_msg(r);
            match h.route().del(msg).execute().await {
                Ok(()) => {}
                Err(e) if nl::is_not_found(&e) => {}
                Err(e) => return Err(nl_err(format!("removing route {} via {}", r.dst, r.via))(e)),
            }
        }
        for r in &a {
            h.route()
                .add(route_msg(r))
                .replace()
                .execute()
                .await
                .map_err(nl_err(format!("adding route {} via {}", r.dst, r.via)))?;
        }
        Ok(())
    })?;
    Ok((add, del))
}

fn route_msg(r: &NodeRoute) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(r.dst.network(), r.dst.prefix())
        .gateway(r.via)
        .protocol(RouteProtocol::from(SKIFF_ROUTE_PROTOCOL))
        .build()
}
