//! End-to-end dataplane tests (root): a two-node cluster in `skt-` network namespaces, real backends and clients,
//! and the `skiff-agent` binary under test. Nothing is created in the root network namespace.
//!
//! Run with `cargo xtask test --suite dataplane_e2e` (or `cargo test -p tests --test dataplane_e2e --
//! --test-threads=1` after `cargo build`).
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    process::Command,
    time::Duration,
};

use tests::{
    cluster::{
        EMPTY_IP, EXT_CLIENT, Lab, SOCKET_CLIENT, TC_CLIENT, WEB_IP, WEB_LOCAL_NODE_PORT, WEB_NODE_PORT,
        agent::{Mode, pin_dir},
        endpoint,
        topology::{BACKENDS, NODE1, WIRE},
        web,
        workload::{CURL_COULDNT_CONNECT, Client},
    },
    netns::{try_run, wait_for},
};

const REQUESTS: usize = 30;

fn names(hits: &BTreeMap<String, usize>) -> BTreeSet<&str> {
    hits.keys().map(String::as_str).collect()
}

fn all_backends() -> BTreeSet<&'static str> {
    BACKENDS.iter().map(|p| p.short).collect()
}

#[test]
fn clusterip_via_tc_reaches_every_backend() {
    let mut lab = Lab::start();
    lab.start_agent(Mode::Tc, TC_CLIENT);
    let hits = TC_CLIENT.http_spread(&format!("http://{WEB_IP}/"), REQUESTS);
    assert_eq!(
        names(&hits),
        all_backends(),
        "{REQUESTS} new connections were spread as {hits:?}"
    );
}

#[test]
fn clusterip_via_socket_hooks_reaches_every_backend() {
    let mut lab = Lab::start();
    lab.start_agent(Mode::Socket, SOCKET_CLIENT);
    let hits = SOCKET_CLIENT.http_spread(&format!("http://{WEB_IP}/"), REQUESTS);
    assert_eq!(
        names(&hits),
        all_backends(),
        "{REQUESTS} new connections were spread as {hits:?}"
    );
    // In socket mode only processes in the cgroup are load-balanced: the same pod outside it gets nowhere.
    let outside = TC_CLIENT.http_get(&format!("http://{WEB_IP}/"), 2);
    assert!(
        outside.is_err(),
        "a client outside the cgroup reached the ClusterIP in socket mode: {outside:?}"
    );
}

#[test]
fn nodeport_via_xdp_reaches_local_and_remote_backends() {
    let mut lab = Lab::start();
    lab.attach_xdp_pass();
    lab.start_agent(Mode::Both, TC_CLIENT);
    let url = format!("http://{}:{WEB_NODE_PORT}/", NODE1.ip);
    let hits = EXT_CLIENT.http_spread(&url, REQUESTS);
    assert_eq!(
        names(&hits),
        all_backends(),
        "NodePort from outside was spread as {hits:?}"
    );
}

#[test]
fn nodeport_with_external_policy_local_only_reaches_local_backends() {
    let mut lab = Lab::start();
    lab.attach_xdp_pass();
    lab.start_agent(Mode::Both, TC_CLIENT);
    let url = format!("http://{}:{WEB_LOCAL_NODE_PORT}/", NODE1.ip);
    let hits = EXT_CLIENT.http_spread(&url, REQUESTS);
    let local: BTreeSet<_> = BACKENDS
        .iter()
        .filter(|p| p.node.name == NODE1.name)
        .map(|p| p.short)
        .collect();
    assert_eq!(
        names(&hits),
        local,
        "externalTrafficPolicy Local was spread as {hits:?}"
    );
}

fn udp_spread(client: Client<'_>) {
    let mut seen = BTreeSet::new();
    for i in 0..REQUESTS {
        let (name, from) = client
            .udp_request(WEB_IP, 53)
            .unwrap_or_else(|e| panic!("UDP request {i} via {client:?} got no answer: {e}"));
        assert_eq!(
            from,
            format!("{WEB_IP}:53"),
            "the answer must come from the ClusterIP, not the backend"
        );
        seen.insert(name);
    }
    assert_eq!(
        seen.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        all_backends(),
        "UDP flows via {client:?} reached only {seen:?}"
    );
}

#[test]
fn udp_through_the_clusterip_on_both_paths() {
    let mut lab = Lab::start();
    lab.start_agent(Mode::Both, TC_CLIENT);
    udp_spread(TC_CLIENT);
    udp_spread(SOCKET_CLIENT);
}

#[test]
fn service_without_endpoints_is_refused_at_once() {
    let mut lab = Lab::start();
    lab.start_agent(Mode::Both, TC_CLIENT);
    lab.wait_ready(SOCKET_CLIENT);
    for client in [TC_CLIENT, SOCKET_CLIENT] {
        let result = client.http_get(&format!("http://{EMPTY_IP}/"), 5);
        let err = result.expect_err("a Service without endpoints answered");
        assert_eq!(
            err.code,
            Some(CURL_COULDNT_CONNECT),
            "expected 'connection refused' via {client:?}, got {err:?}"
        );
        assert!(
            err.elapsed < Duration::from_secs(1),
            "refusal via {client:?} took {:?}",
            err.elapsed
        );
    }
}

#[test]
fn removed_endpoint_gets_no_new_flows_but_keeps_established_ones() {
    let mut lab = Lab::start();
    lab.start_agent(Mode::Tc, TC_CLIENT);
    let mut conn = TC_CLIENT.long_lived(WEB_IP, 80);
    let pinned_to = conn.backend();

    let remaining: Vec<_> = BACKENDS
        .iter()
        .filter(|p| p.short != pinned_to)
        .map(|p| endpoint(*p))
        .collect();
    web().write_endpoints(&lab.manifests(), &remaining);

    let url = format!("http://{WEB_IP}/");
    let mut streak = 0;
    let settled = wait_for(Duration::from_secs(15), || {
        match TC_CLIENT.http_get(&url, 2) {
            Ok(name) if name != pinned_to => streak += 1,
            _ => streak = 0,
        }
        (streak >= 10).then_some(())
    });
    assert!(
        settled.is_some(),
        "new flows still reach {pinned_to} 15 s after it left the EndpointSlice"
    );
    let hits = TC_CLIENT.http_spread(&url, REQUESTS);
    let expected: BTreeSet<_> = all_backends().into_iter().filter(|b| *b != pinned_to).collect();
    assert_eq!(names(&hits), expected, "after removing {pinned_to}: {hits:?}");

    conn.assert_keeps_serving(&pinned_to, Duration::from_secs(2));
}

#[test]
fn agent_restart_keeps_established_connections() {
    let mut lab = Lab::start();
    lab.start_agent(Mode::Tc, TC_CLIENT);
    let mut conn = TC_CLIENT.long_lived(WEB_IP, 80);
    let backend = conn.backend();

    lab.agent().kill9();
    conn.assert_keeps_serving(&backend, Duration::from_secs(1));

    lab.agent().restart();
    lab.wait_ready(TC_CLIENT);
    conn.assert_keeps_serving(&backend, Duration::from_secs(2));
    let hits = TC_CLIENT.http_spread(&format!("http://{WEB_IP}/"), REQUESTS);
    assert_eq!(
        names(&hits),
        all_backends(),
        "after the restart new flows were spread as {hits:?}"
    );
}

/// Kernel object ids (links and maps) behind the pins under `dir`.
fn pinned_object_ids(dir: &str) -> Vec<(&'static str, String)> {
    let mut ids = Vec::new();
    let mut stack = vec![std::path::PathBuf::from(dir)];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let p = path.to_string_lossy().into_owned();
            for kind in ["link", "map"] {
                if let Ok(out) = try_run(Command::new("bpftool").args([kind, "show", "pinned", &p]))
                    && let Some(id) = out
                        .split(':')
                        .next()
                        .filter(|id| id.trim().parse::<u32>().is_ok())
                {
                    ids.push((kind, id.trim().to_owned()));
                    break;
                }
            }
        }
    }
    ids
}

fn object_exists(kind: &str, id: &str) -> bool {
    try_run(Command::new("bpftool").args([kind, "show", "id", id])).is_ok()
}

#[test]
fn cleanup_leaves_no_pins_links_or_translation() {
    let mut lab = Lab::start();
    lab.attach_xdp_pass();
    lab.start_agent(Mode::Both, TC_CLIENT);
    lab.wait_ready(SOCKET_CLIENT);
    let dir = pin_dir(NODE1.name);
    let objects = pinned_object_ids(&dir);
    assert!(
        objects.iter().any(|(k, _)| *k == "link") && objects.iter().any(|(k, _)| *k == "map"),
        "expected pinned links and maps under {dir}, found {objects:?}"
    );

    let out = lab
        .agent()
        .stop_and_cleanup()
        .expect("skiff-agent cleanup failed");
    assert!(
        !std::path::Path::new(&dir).exists(),
        "{dir} still exists after cleanup ({out})"
    );
    let leftover = wait_for(Duration::from_secs(5), || {
        let alive: Vec<_> = objects.iter().filter(|(k, id)| object_exists(k, id)).collect();
        alive.is_empty().then_some(())
    });
    assert!(
        leftover.is_some(),
        "kernel objects still alive after cleanup: {:?}",
        objects
            .iter()
            .filter(|(k, id)| object_exists(k, id))
            .collect::<Vec<_>>()
    );
    for (ns, dev) in [(NODE1.name, "eth0"), (WIRE, NODE1.wire_peer)] {
        let link = try_run(Command::new("ip").args(["-n", ns, "link", "show", dev])).unwrap();
        assert!(
            !link.contains(" xdp"),
            "XDP still attached to {dev} in {ns}: {link}"
        );
    }
    let cgroup = try_run(Command::new("bpftool").args(["cgroup", "show", tests::cluster::topology::CGROUP1]))
        .unwrap_or_default();
    assert!(cgroup.trim().is_empty(), "cgroup programs left: {cgroup}");
    for client in [TC_CLIENT, SOCKET_CLIENT] {
        let r = client.http_get(&format!("http://{WEB_IP}/"), 2);
        assert!(
            r.is_err(),
            "the ClusterIP still answers via {client:?} after cleanup: {r:?}"
        );
    }
}

#[test]
fn test_network_routes_pods_across_nodes_without_an_agent() {
    let _lab = Lab::start();
    // Pod to pod across the underlay, and the outside client to node1: plain routing, no Skiff involved.
    let direct = TC_CLIENT.http_get(&format!("http://{}:8080/", BACKENDS[2].ip), 2);
    assert_eq!(
        direct.as_deref().ok(),
        Some("be3"),
        "client -> be3 directly: {direct:?}"
    );
    // Something answers on node1 (a refusal proves the route; a timeout would not).
    let ext = EXT_CLIENT
        .http_get(&format!("http://{}:1/", NODE1.ip), 2)
        .expect_err("nothing listens on port 1");
    assert_eq!(ext.code, Some(CURL_COULDNT_CONNECT), "skt-ext -> node1: {ext:?}");
    // Without an agent the ClusterIP goes nowhere.
    assert!(TC_CLIENT.http_get(&format!("http://{WEB_IP}/"), 1).is_err());
}

/// iperf3 through the ClusterIP on both paths: its control and data connections (one backend, so they meet) carry
/// a bulk transfer, and with the socket hooks iperf3 sees the ClusterIP as its peer.
#[test]
fn iperf3_bulk_transfer_through_the_clusterip_on_both_paths() {
    const IPERF_IP: &str = "10.96.0.30";
    let mut lab = Lab::start();
    let server_pod = BACKENDS[0];
    tests::cluster::manifests::Service {
        name: "iperf",
        cluster_ip: IPERF_IP,
        ports: vec![tests::cluster::manifests::Port {
            name: "iperf",
            protocol: "TCP",
            port: 5201,
            target_port: 5201,
            node_port: None,
        }],
        external_local: false,
    }
    .write(&lab.manifests(), &[endpoint(server_pod)]);
    let _server = tests::netns::Proc::spawn(
        tests::netns::in_ns(server_pod.netns, &["iperf3", "-s", "-p", "5201"])
            .stdout(std::process::Stdio::null()),
        "iperf3 server",
    );
    for (mode, client) in [(Mode::Tc, TC_CLIENT), (Mode::Socket, SOCKET_CLIENT)] {
        lab.start_agent(mode, client);
        let out = wait_for(Duration::from_secs(10), || {
            try_run(&mut client.command(&["iperf3", "-c", IPERF_IP, "-p", "5201", "-t", "2", "-J"])).ok()
        })
        .unwrap_or_else(|| panic!("iperf3 through {IPERF_IP} in {mode:?} mode never succeeded"));
        let report: serde_json::Value = serde_json::from_str(&out).expect("iperf3 -J prints JSON");
        let received = report["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
        assert!(
            received > 1_000_000,
            "iperf3 in {mode:?} mode moved only {received} bytes: {out}"
        );
        if matches!(mode, Mode::Socket) {
            assert_eq!(
                report["start"]["connected"][0]["remote_host"], IPERF_IP,
                "with the socket hooks the application must see the ClusterIP as its peer"
            );
        }
        lab.stop_agents();
    }
}
