//! The two-node test network, built only inside `skt-` namespaces: a wire bridge, two nodes, pods, an outside client.
//!
//! ```text
//!  skt-ext (10.99.0.100) ──┐
//!  skt-node1 eth0 (.11) ───┼── br0 in skt-wire (underlay 10.99.0.0/24)
//!  skt-node2 eth0 (.12) ───┘
//!  skt-node1: skp-n1-client, skp-n1-be1, skp-n1-be2 -> pods in 10.244.1.0/24 (gateway 10.244.1.1)
//!  skt-node2: skp-n2-be3                            -> pod in 10.244.2.0/24 (gateway 10.244.2.1)
//! ```
//! Pods have a /32 address and a default route via their node's gateway address, which sits on every host-side
//! veth; nodes route each other's pod CIDR via the underlay. Transmit checksum offload is off on every veth, since
//! frames redirected by XDP cannot have their checksum completed later (see EBPF-NOTES).
use std::{
    fs::{File, TryLockError},
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use super::agent;
use crate::netns::{self, Netns, exec, ip, wait_for};

/// Prefix of every namespace, cgroup and pin directory these tests create.
pub const PREFIX: &str = "skt-";
pub const WIRE: &str = "skt-wire";
pub const EXT: &str = "skt-ext";
pub const EXT_IP: &str = "10.99.0.100";

/// A node: its namespace, underlay address, the wire-side name of its uplink veth, pod gateway and CIDR.
#[derive(Clone, Copy, Debug)]
pub struct Node {
    pub name: &'static str,
    pub ip: &'static str,
    pub wire_peer: &'static str,
    pub gateway: &'static str,
    pub pod_cidr: &'static str,
}

pub const NODE1: Node = Node {
    name: "skt-node1",
    ip: "10.99.0.11",
    wire_peer: "skt-w-node1",
    gateway: "10.244.1.1",
    pod_cidr: "10.244.1.0/24",
};
pub const NODE2: Node = Node {
    name: "skt-node2",
    ip: "10.99.0.12",
    wire_peer: "skt-w-node2",
    gateway: "10.244.2.1",
    pod_cidr: "10.244.2.0/24",
};

/// A pod: its namespace, short name (what its servers answer), address, node and host-side veth.
#[derive(Clone, Copy, Debug)]
pub struct Pod {
    pub netns: &'static str,
    pub short: &'static str,
    pub ip: &'static str,
    pub node: Node,
    pub host_if: &'static str,
}

pub const CLIENT: Pod = Pod {
    netns: "skt-n1-client",
    short: "client",
    ip: "10.244.1.2",
    node: NODE1,
    host_if: "skp-n1-client",
};
pub const BE1: Pod = Pod {
    netns: "skt-n1-be1",
    short: "be1",
    ip: "10.244.1.3",
    node: NODE1,
    host_if: "skp-n1-be1",
};
pub const BE2: Pod = Pod {
    netns: "skt-n1-be2",
    short: "be2",
    ip: "10.244.1.4",
    node: NODE1,
    host_if: "skp-n1-be2",
};
pub const BE3: Pod = Pod {
    netns: "skt-n2-be3",
    short: "be3",
    ip: "10.244.2.3",
    node: NODE2,
    host_if: "skp-n2-be3",
};
pub const BACKENDS: [Pod; 3] = [BE1, BE2, BE3];

/// The cgroup whose processes node1's socket load balancer serves.
pub const CGROUP1: &str = "/sys/fs/cgroup/unified/skt-node1";
const CGROUP_ROOT: &str = "/sys/fs/cgroup/unified";

/// Only one topology can exist at a time (fixed names): tests in one binary take turns on this mutex, test
/// processes (two suites or two developers running them) on a lock file.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
const LOCK_FILE: &str = "/run/skt-e2e.lock";
const LOCK_WAIT: Duration = Duration::from_secs(600);

/// The built network. Dropping it deletes every namespace (and with them every veth) and the cgroup.
pub struct Topology {
    // Field order is drop order: namespaces, then the cgroup, then the lock.
    namespaces: Vec<Netns>,
    _cgroup: CgroupGuard,
    _process_turn: File,
    _turn: MutexGuard<'static, ()>,
}

impl Topology {
    pub fn build() -> Topology {
        let turn = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let process_turn = lock_across_processes();
        sweep();
        let cgroup = CgroupGuard::create(CGROUP1);
        let mut namespaces = Vec::new();

        let wire = Netns::create(WIRE);
        ip(&["-n", WIRE, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", WIRE, "link", "set", "br0", "up"]);
        namespaces.push(wire);

        for node in [NODE1, NODE2] {
            let ns = Netns::create(node.name);
            ns.sysctl(&[
                "net.ipv4.ip_forward=1",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
            ]);
            uplink(node.name, node.wire_peer, &format!("{}/24", node.ip));
            namespaces.push(ns);
        }
        let ext = Netns::create(EXT);
        uplink(EXT, "skt-w-ext", &format!("{EXT_IP}/24"));
        namespaces.push(ext);

        ip(&["-n", NODE1.name, "route", "add", NODE2.pod_cidr, "via", NODE2.ip]);
        ip(&["-n", NODE2.name, "route", "add", NODE1.pod_cidr, "via", NODE1.ip]);

        for pod in [CLIENT, BE1, BE2, BE3] {
            namespaces.push(Netns::create(pod.netns));
            pod_link(pod);
        }
        // Underlay neighbours are static: XDP forwarding looks them up and cannot resolve them itself.
        let underlay = [(NODE1.name, NODE1.ip), (NODE2.name, NODE2.ip), (EXT, EXT_IP)];
        for (ns, _) in underlay {
            for (peer_ns, peer_ip) in underlay.iter().filter(|(p, _)| *p != ns) {
                let mac = mac_of(peer_ns, "eth0");
                ip(&[
                    "-n",
                    ns,
                    "neigh",
                    "replace",
                    peer_ip,
                    "lladdr",
                    &mac,
                    "dev",
                    "eth0",
                    "nud",
                    "permanent",
                ]);
            }
        }
        Topology {
            namespaces,
            _cgroup: cgroup,
            _process_turn: process_turn,
            _turn: turn,
        }
    }

    /// Names of the namespaces this topology owns.
    pub fn namespaces(&self) -> Vec<&str> {
        self.namespaces.iter().map(Netns::name).collect()
    }
}

/// Waits (bounded) for the exclusive lock on `LOCK_FILE`; the kernel releases it when the process ends.
fn lock_across_processes() -> File {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .unwrap_or_else(|e| panic!("opening {LOCK_FILE}: {e}"));
    let got = wait_for(LOCK_WAIT, || match file.try_lock() {
        Ok(()) => Some(()),
        Err(TryLockError::WouldBlock) => None,
        Err(TryLockError::Error(e)) => panic!("locking {LOCK_FILE}: {e}"),
    });
    assert!(
        got.is_some(),
        "another process held {LOCK_FILE} (an e2e run with the skt- names) for {LOCK_WAIT:?}"
    );
    file
}

/// `eth0` in `ns` with `addr`, its peer `wire_peer` in the wire bridge.
fn uplink(ns: &str, wire_peer: &str, addr: &str) {
    ip(&[
        "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", wire_peer, "netns", WIRE,
    ]);
    ip(&["-n", WIRE, "link", "set", wire_peer, "master", "br0", "up"]);
    ip(&["-n", ns, "addr", "add", addr, "dev", "eth0"]);
    ip(&["-n", ns, "link", "set", "eth0", "up"]);
    tx_csum_off(ns, "eth0");
    tx_csum_off(WIRE, wire_peer);
}

/// The pod's `eth0` and its host-side veth in the node.
fn pod_link(pod: Pod) {
    netns::wire_pod(pod.node.name, pod.node.gateway, pod.netns, pod.host_if, pod.ip);
}

/// The MAC address of `dev` in `ns`.
fn mac_of(ns: &str, dev: &str) -> String {
    let out = ip(&["-n", ns, "link", "show", dev]);
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC address for {dev} in {ns}: {out}"))
        .to_owned()
}

fn tx_csum_off(ns: &str, dev: &str) {
    exec(ns, &["ethtool", "-K", dev, "tx", "off"]);
}

/// Removes what an interrupted earlier run left: agents' pins and links, `skt-` namespaces and cgroups.
fn sweep() {
    for node in [NODE1.name, NODE2.name] {
        agent::cleanup_stale(node);
    }
    netns::sweep(PREFIX);
    if let Ok(entries) = std::fs::read_dir(CGROUP_ROOT) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(PREFIX) {
                netns::remove_cgroup(&format!("{CGROUP_ROOT}/{name}"));
            }
        }
    }
}

/// A cgroup v2 directory created for the test and removed (after killing what is left in it) on drop.
struct CgroupGuard {
    path: &'static str,
}

impl CgroupGuard {
    fn create(path: &'static str) -> Self {
        std::fs::create_dir_all(path).unwrap_or_else(|e| {
            panic!(
                "creating cgroup {path}: {e} (is cgroup2 mounted at {CGROUP_ROOT}? run `cargo xtask setup`)"
            )
        });
        Self { path }
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        netns::remove_cgroup(self.path);
    }
}
