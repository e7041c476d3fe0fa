//! The lab network: a wire namespace holding the bridge, one namespace per node and a client namespace, all
//! created and removed by name; `unreachable` routes in the root namespace keep every lab range on this machine.
use std::{path::Path, process::Command};

use anyhow::{Result, bail};

use super::plan::{LabPlan, NodePlan};
use crate::cmd;

const BRIDGE: &str = "br0";

fn ip(args: &[&str]) -> Result<String> {
    cmd::output(Command::new("ip").args(args))
}

pub fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

fn add_netns(name: &str) -> Result<()> {
    if !netns_exists(name) {
        ip(&["netns", "add", name])?;
    }
    ip(&["-n", name, "link", "set", "lo", "up"])?;
    Ok(())
}

fn link_exists(netns: &str, link: &str) -> bool {
    ip(&["-n", netns, "link", "show", link]).is_ok()
}

/// Creates the wire namespace with its bridge and the client namespace (idempotent).
pub fn create_base(plan: &LabPlan) -> Result<()> {
    let wire = plan.wire_netns();
    add_netns(&wire)?;
    if !link_exists(&wire, BRIDGE) {
        ip(&["-n", &wire, "link", "add", BRIDGE, "type", "bridge"])?;
    }
    ip(&["-n", &wire, "link", "set", BRIDGE, "up"])?;
    let client = plan.client_netns();
    add_netns(&client)?;
    let addr = format!("{}/{}", plan.client_ip(), plan.underlay_len());
    attach(plan, &client, "v-client", &addr)
}

/// Creates a node's namespace and its uplink `eth0` on the bridge (idempotent).
pub fn create_node(plan: &LabPlan, n: &NodePlan) -> Result<()> {
    add_netns(&n.name)?;
    let addr = format!("{}/{}", n.ip, plan.underlay_len());
    attach(plan, &n.name, &n.wire_port, &addr)
}

/// `eth0` in `netns`, its peer `port` on the bridge, `addr` on eth0; tx checksum offload off (XDP-forwarded
/// frames need full checksums).
fn attach(plan: &LabPlan, netns: &str, port: &str, addr: &str) -> Result<()> {
    let wire = plan.wire_netns();
    if !link_exists(netns, "eth0") {
        ip(&[
            "link", "add", "eth0", "netns", netns, "type", "veth", "peer", "name", port, "netns", &wire,
        ])?;
    }
    ip(&["-n", &wire, "link", "set", port, "master", BRIDGE, "up"])?;
    let have = ip(&["-n", netns, "-4", "-o", "addr", "show", "dev", "eth0"])?;
    if !have.contains(&format!(" {addr} ")) {
        ip(&["-n", netns, "addr", "add", addr, "dev", "eth0"])?;
    }
    ip(&["-n", netns, "link", "set", "eth0", "up"])?;
    cmd::output(Command::new("ip").args(["netns", "exec", netns, "ethtool", "-K", "eth0", "tx", "off"]))?;
    Ok(())
}

/// Deletes a namespace by name (its veths go with it).
pub fn delete_netns(name: &str) -> Result<bool> {
    if !netns_exists(name) {
        return Ok(false);
    }
    ip(&["netns", "del", name])?;
    Ok(true)
}

/// Lab ranges already routed in the root namespace (by anything), as `ip route` prints them.
fn root_routes() -> Result<String> {
    ip(&["-4", "route", "show", "table", "all"])
}

/// Whether the root namespace holds our `unreachable` route for `cidr`.
fn has_guard(routes: &str, cidr: &str) -> bool {
    routes
        .lines()
        .any(|l| l.starts_with(&format!("unreachable {cidr} ")) || l == format!("unreachable {cidr}"))
}

/// Routes the lab ranges to `unreachable` in the root namespace. Refuses when the machine already routes one of
/// them some other way (another cluster or network uses it).
pub fn add_guards(plan: &LabPlan) -> Result<()> {
    let routes = root_routes()?;
    for cidr in plan.guarded_ranges() {
        if has_guard(&routes, &cidr) {
            continue;
        }
        if let Some(l) = routes
            .lines()
            .find(|l| l.split(' ').next() == Some(cidr.as_str()))
        {
            bail!(
                "this machine already routes {cidr} (`{l}`); choose other lab ranges or remove that route first"
            );
        }
        ip(&["route", "add", "unreachable", &cidr])?;
    }
    Ok(())
}

/// Removes exactly the `unreachable` routes `add_guards` created. Returns how many it removed.
pub fn remove_guards(plan: &LabPlan) -> Result<usize> {
    let routes = root_routes()?;
    let mut removed = 0;
    for cidr in plan.guarded_ranges() {
        if has_guard(&routes, &cidr) {
            ip(&["route", "del", "unreachable", &cidr])?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Which guard routes are present (for `lab status` and stale-lab checks).
pub fn guards_present(plan: &LabPlan) -> Vec<String> {
    let routes = root_routes().unwrap_or_default();
    plan.guarded_ranges()
        .into_iter()
        .filter(|c| has_guard(&routes, c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_routes_are_recognised_exactly() {
        let routes = "default via 10.0.0.1 dev eth0\nunreachable 10.244.0.0/16 \nunreachable 10.96.0.0/16\n";
        assert!(has_guard(routes, "10.244.0.0/16"));
        assert!(has_guard(routes, "10.96.0.0/16"));
        assert!(!has_guard(routes, "10.99.0.0/24"));
        assert!(!has_guard("unreachable 10.244.0.0/160 ", "10.244.0.0/16"));
    }
}
