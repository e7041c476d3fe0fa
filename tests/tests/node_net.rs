//! Node networking end to end (root): masquerade for pod traffic leaving the cluster (the nftables table on its own
//! in `skm-` namespaces, then in the node lab with an outside namespace only the node routes to), and
//! `skiff-agent cleanup --node` removing everything a killed node agent left.
//!
//! Run with `cargo build -p agent -p control && cargo test -p tests --test node_net -- --test-threads=1`.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use skiff_agent::net::{
    masquerade::{self, MasqueradeRules},
    nft,
    nl::Netns as NsRef,
    teardown,
};
use tests::{
    cluster::agent::agent_bin,
    netns::{self, Netns, Proc, exec, in_ns, ip, try_run, wait_for},
    node_lab::{NODES, NodeLab, WIRE},
};

const AGNHOST: &str = "registry.k8s.io/e2e-test-images/agnhost:2.53";
/// An address outside every cluster range (TEST-NET-3), served by the outside namespace.
const OUTSIDE: &str = "203.0.113.10";
const CGROUP2: &str = "/sys/fs/cgroup/unified";

/// Runs `skiff-agent agnhost netexec` on port 8080 inside `ns` (answers /clientip with the peer address).
fn netexec_in(ns: &str) -> Proc {
    let bin = agent_bin();
    Proc::spawn(
        in_ns(
            ns,
            &[&bin.to_string_lossy(), "agnhost", "netexec", "--http-port=8080"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null()),
        "netexec",
    )
}

/// `curl /clientip` from `ns` (no proxy, bounded); the client address the server saw.
fn client_ip_from(ns: &str, server: &str) -> Option<String> {
    let url = format!("http://{server}:8080/clientip");
    let out = try_run(&mut in_ns(ns, &["curl", "-sf", "-m", "2", &url])).ok()?;
    out.rsplit_once(':').map(|(ip, _)| ip.to_string())
}

fn nft_table(ns: &str) -> Option<String> {
    try_run(&mut in_ns(ns, &["nft", "list", "table", "ip", masquerade::TABLE])).ok()
}

/// The nat table alone: a pod namespace behind a node namespace that routes to an "outside" namespace. Traffic to
/// an outside address leaves with the node's address; traffic to a cluster range keeps the pod's.
#[test]
fn masquerade_table_rewrites_only_traffic_leaving_the_cluster() {
    netns::sweep("skm-t");
    let (pod, node, out) = (
        Netns::create("skm-t-pod"),
        Netns::create("skm-t-node"),
        Netns::create("skm-t-out"),
    );
    let (pod, node, out) = (pod.name(), node.name(), out.name());
    ip(&[
        "link", "add", "eth0", "netns", pod, "type", "veth", "peer", "name", "tpod", "netns", node,
    ]);
    ip(&[
        "link", "add", "eth0", "netns", out, "type", "veth", "peer", "name", "tout", "netns", node,
    ]);
    ip(&["-n", pod, "addr", "add", "10.245.9.2/24", "dev", "eth0"]);
    ip(&["-n", node, "addr", "add", "10.245.9.1/24", "dev", "tpod"]);
    ip(&["-n", node, "addr", "add", "198.51.100.1/24", "dev", "tout"]);
    ip(&["-n", out, "addr", "add", "198.51.100.2/24", "dev", "eth0"]);
    for (ns, dev) in [(pod, "eth0"), (node, "tpod"), (node, "tout"), (out, "eth0")] {
        ip(&["-n", ns, "link", "set", dev, "up"]);
    }
    // The outside holds an outside address and one in another node's pod range (as if it were that node).
    ip(&["-n", out, "addr", "add", &format!("{OUTSIDE}/32"), "dev", "eth0"]);
    ip(&["-n", out, "addr", "add", "10.245.8.5/32", "dev", "eth0"]);
    ip(&["-n", out, "route", "add", "10.245.9.0/24", "via", "198.51.100.1"]);
    ip(&["-n", pod, "route", "add", "default", "via", "10.245.9.1"]);
    ip(&[
        "-n",
        node,
        "route",
        "add",
        &format!("{OUTSIDE}/32"),
        "via",
        "198.51.100.2",
    ]);
    ip(&["-n", node, "route", "add", "10.245.8.0/24", "via", "198.51.100.2"]);
    exec(node, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let _server = netexec_in(out);

    let ns = NsRef::named(node);
    let rules = MasqueradeRules::new(
        "10.245.9.0/24".parse().unwrap(),
        &["10.96.0.0/12".parse().unwrap()],
    );
    nft::replace(&ns, &rules).unwrap();
    let listing = nft_table(node).expect("the table exists");
    assert!(
        listing.contains("ip saddr 10.245.9.0/24 ip daddr != @cluster-ranges counter"),
        "{listing}"
    );
    assert!(listing.contains("masquerade"), "{listing}");
    let seen = wait_for(Duration::from_secs(10), || client_ip_from(pod, OUTSIDE));
    assert_eq!(
        seen.as_deref(),
        Some("198.51.100.1"),
        "an outside server sees the node"
    );
    // Without 10.245.8.0/24 among the ranges it is outside too; with it, the pod's address is kept.
    assert_eq!(client_ip_from(pod, "10.245.8.5").as_deref(), Some("198.51.100.1"));
    let with_peer = MasqueradeRules::new(
        "10.245.9.0/24".parse().unwrap(),
        &["10.96.0.0/12".parse().unwrap(), "10.245.8.0/24".parse().unwrap()],
    );
    nft::replace(&ns, &with_peer).unwrap();
    nft::replace(&ns, &with_peer).unwrap();
    let listing = nft_table(node).unwrap();
    assert_eq!(
        listing.matches("daddr != @cluster-ranges").count(),
        1,
        "one rule after two writes:\n{listing}"
    );
    assert!(listing.contains("10.245.8.0/24"), "{listing}");
    // A new connection (conntrack keeps NAT decisions per flow).
    assert_eq!(client_ip_from(pod, "10.245.8.5").as_deref(), Some("10.245.9.2"));
    assert_eq!(client_ip_from(pod, OUTSIDE).as_deref(), Some("198.51.100.1"));

    assert!(nft::remove(&ns).unwrap());
    assert!(nft_table(node).is_none());
    assert!(!nft::remove(&ns).unwrap(), "removing twice is a no-op");
    assert_eq!(
        client_ip_from(pod, OUTSIDE).as_deref(),
        Some("10.245.9.2"),
        "without the table the outside sees the pod"
    );
}

/// An outside namespace on the lab wire holding `OUTSIDE`; only node1's namespace routes to it.
struct Outside {
    _ns: Netns,
    _server: Proc,
}

impl Outside {
    fn start() -> Outside {
        netns::sweep("skm-out");
        let ns = Netns::create("skm-out");
        ip(&[
            "link",
            "add",
            "eth0",
            "netns",
            ns.name(),
            "type",
            "veth",
            "peer",
            "name",
            "skm-w-out",
            "netns",
            WIRE,
        ]);
        ip(&["-n", WIRE, "link", "set", "skm-w-out", "master", "br0", "up"]);
        ip(&["-n", ns.name(), "addr", "add", "10.98.0.200/24", "dev", "eth0"]);
        ip(&[
            "-n",
            ns.name(),
            "addr",
            "add",
            &format!("{OUTSIDE}/32"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", ns.name(), "link", "set", "eth0", "up"]);
        exec(ns.name(), &["ethtool", "-K", "eth0", "tx", "off"]);
        ip(&[
            "-n",
            NODES[0].name,
            "route",
            "replace",
            &format!("{OUTSIDE}/32"),
            "via",
            "10.98.0.200",
        ]);
        let server = netexec_in(ns.name());
        Outside {
            _ns: ns,
            _server: server,
        }
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ =
            try_run(Command::new("ip").args(["-n", NODES[0].name, "route", "del", &format!("{OUTSIDE}/32")]));
    }
}

fn pod(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: web\n    \
         image: {AGNHOST}\n    args: [netexec, --http-port=8080]\n"
    )
}

/// Waits until pod `name` on `node` has an IP and a running sandbox (its network is then in place, whatever its
/// containers do); returns the IP.
fn wait_pod_network(lab: &NodeLab, node: &str, name: &str) -> String {
    lab.wait(&format!("pod {name} with an IP and a sandbox"), 60, || {
        let ip = lab.get(&["pod", name], "{.status.podIP}");
        let uid = lab.get(&["pod", name], "{.metadata.uid}");
        let sandbox = lab.dir.join(node).join("pods").join(uid).join("sandbox.json");
        (!ip.is_empty() && sandbox.exists()).then_some(ip)
    })
}

fn curl_in_pod(lab: &NodeLab, node: &str, pod: &str, url: &str) -> Option<String> {
    lab.in_pod(node, pod, None, &["curl", "-sf", "-m", "2", url]).ok()
}

fn ip_only(hostport: &str) -> String {
    hostport
        .rsplit_once(':')
        .map_or(hostport, |(ip, _)| ip)
        .to_string()
}

/// A third node, started by this test on the lab's control plane and wire: `skm-node3`.
const NODE3: &str = "skm-node3";
const NODE3_IP: &str = "10.98.0.13";

/// Removes node3's things whatever happens to the test (the cleanup under test, run from the library).
struct Node3Guard {
    state: PathBuf,
}

impl Drop for Node3Guard {
    fn drop(&mut self) {
        let r = teardown::teardown(&teardown::Target {
            node: NODE3.into(),
            state_dir: self.state.clone(),
            netns: Some(NODE3.into()),
            cgroup2: CGROUP2.into(),
            network: true,
        });
        if !r.errors.is_empty() {
            eprintln!("node3 guard: {:?}", r.errors);
        }
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

fn spawn_node3(lab: &NodeLab, state: &Path) -> Proc {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let log = std::fs::File::create(lab.dir.join("skm-node3.log")).expect("node3 log");
    Proc::spawn(
        Command::new(agent_bin())
            .args(["node", "--kubeconfig"])
            .arg(&lab.kubeconfig)
            .args(["--node-name", NODE3, "--netns", NODE3, "--uplink", "eth0"])
            .args([
                "--pod-cidr",
                "10.245.3.0/24",
                "--capacity",
                "cpu=2,memory=4Gi,pods=110",
            ])
            .args([
                "--kubelet-address",
                "127.0.0.1",
                "--kubelet-port",
                &port.to_string(),
            ])
            .arg("--state-dir")
            .arg(state)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log),
        NODE3,
    )
}

fn links_in(ns: &str) -> String {
    try_run(Command::new("ip").args(["-n", ns, "-o", "link", "show"])).unwrap_or_default()
}

fn skiff_routes_in(ns: &str) -> String {
    try_run(Command::new("ip").args(["-n", ns, "route", "show", "proto", "157"])).unwrap_or_default()
}

fn cleanup_node3(state: &Path) -> String {
    try_run(
        Command::new(agent_bin())
            .args(["cleanup", "--node", NODE3, "--state-dir"])
            .arg(state),
    )
    .unwrap_or_else(|e| panic!("skiff-agent cleanup --node {NODE3}: {e:#}"))
}

#[test]
fn masquerade_in_the_lab_and_cleanup_of_a_killed_node() {
    let lab = NodeLab::start();
    let (n1, n2) = (NODES[0].name, NODES[1].name);

    // The node IP is an InternalIP; the address the apiserver reaches the agent at is in an annotation.
    let internal = lab.get(
        &["node", n1],
        "{.status.addresses[?(@.type==\"InternalIP\")].address}",
    );
    assert!(
        internal.split_whitespace().any(|a| a == NODES[0].ip),
        "{internal}"
    );
    assert_eq!(
        lab.get(
            &["node", n1],
            "{.metadata.annotations.skiff\\.dev/kubelet-address}"
        ),
        "127.0.0.1"
    );

    // Masquerade: node1's pod reaches an outside address as node1; node2's pod still sees the pod's own address.
    let outside = Outside::start();
    lab.apply(&pod("skm-client", n1));
    lab.apply(&pod("skm-far", n2));
    let client_ip = wait_pod_network(&lab, n1, "skm-client");
    let far_ip = lab.wait_pod_ready("skm-far");
    let table = nft_table(n1).unwrap_or_default();
    assert!(
        table.contains("masquerade") && table.contains(NODES[0].pod_cidr),
        "{table}"
    );
    let seen = lab.wait("the outside server answering node1's pod", 30, || {
        curl_in_pod(&lab, n1, "skm-client", &format!("http://{OUTSIDE}:8080/clientip"))
    });
    assert_eq!(ip_only(&seen), NODES[0].ip, "the outside sees the node's address");
    let seen = lab.wait("node1's pod reaching node2's pod", 30, || {
        curl_in_pod(&lab, n1, "skm-client", &format!("http://{far_ip}:8080/clientip"))
    });
    assert_eq!(ip_only(&seen), client_ip, "pod to pod keeps the pod's address");
    drop(outside);

    // Cleanup of a node whose agent was killed: nothing of it remains, and a second run removes nothing.
    netns::sweep("skm-node");
    let node3_ns = Netns::create(NODE3);
    ip(&[
        "link",
        "add",
        "eth0",
        "netns",
        NODE3,
        "type",
        "veth",
        "peer",
        "name",
        "skm-w-node3",
        "netns",
        WIRE,
    ]);
    ip(&["-n", WIRE, "link", "set", "skm-w-node3", "master", "br0", "up"]);
    ip(&[
        "-n",
        NODE3,
        "addr",
        "add",
        &format!("{NODE3_IP}/24"),
        "dev",
        "eth0",
    ]);
    ip(&["-n", NODE3, "link", "set", "eth0", "up"]);
    exec(NODE3, &["ethtool", "-K", "eth0", "tx", "off"]);
    let state = lab.dir.join(NODE3);
    let _guard = Node3Guard { state: state.clone() };
    let mut agent = spawn_node3(&lab, &state);
    lab.wait("skm-node3 Ready", 60, || {
        (lab.get(
            &["node", NODE3],
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        ) == "True")
            .then_some(())
    });
    lab.apply(&pod("skm-doomed", NODE3));
    wait_pod_network(&lab, NODE3, "skm-doomed");
    let sandbox = lab.sandbox_pid(NODE3, "skm-doomed");
    let uid = lab.get(&["pod", "skm-doomed"], "{.metadata.uid}");
    let veth = skiff_agent::net::names::host_veth(&uid);
    let cgroup = Path::new(CGROUP2).join("skiff").join(NODE3);
    let pins = Path::new(skiff_common::PIN_ROOT).join(NODE3);
    lab.wait("node3's route to node1's pods", 30, || {
        skiff_routes_in(NODE3).contains(NODES[0].pod_cidr).then_some(())
    });
    assert!(links_in(NODE3).contains(&veth), "{}", links_in(NODE3));
    assert!(nft_table(NODE3).is_some(), "node3 has its nat table");
    assert!(cgroup.join("pods").join(format!("pod{uid}")).exists());
    assert!(pins.exists(), "pins of node3");

    agent.kill();
    let out = cleanup_node3(&state);
    for want in [
        format!("stopped and removed pod {uid}"),
        format!("deleted route {} via {}", NODES[0].pod_cidr, NODES[0].ip),
        "deleted nftables table ip skiff-nat".to_string(),
        format!("removed cgroup {}", cgroup.display()),
        format!("detached link {}", pins.join("links").display()),
    ] {
        assert!(out.contains(&want), "cleanup output lacks {want:?}:\n{out}");
    }
    let gone = wait_for(Duration::from_secs(5), || {
        (!Path::new(&format!("/proc/{sandbox}")).exists()).then_some(())
    });
    assert!(gone.is_some(), "the pod's sandbox {sandbox} still runs");
    assert!(!links_in(NODE3).contains("skp"), "{}", links_in(NODE3));
    assert_eq!(skiff_routes_in(NODE3).trim(), "", "routes left");
    assert!(nft_table(NODE3).is_none(), "nat table left");
    assert!(!cgroup.exists(), "cgroups left");
    assert!(!pins.exists(), "pins left");
    let left: Vec<_> = std::fs::read_dir(&state)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "state left: {left:?}");
    assert_eq!(
        cleanup_node3(&state).trim(),
        format!("nothing to remove for node {NODE3}")
    );

    let _ = lab.kubectl(&[
        "delete",
        "pod",
        "skm-doomed",
        "--wait=false",
        "--grace-period=0",
        "--force",
    ]);
    let _ = lab.kubectl(&["delete", "node", NODE3, "--wait=false"]);
    drop(node3_ns);
}
