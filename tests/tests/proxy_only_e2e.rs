//! `skiff-agent --proxy-only` end to end (root), started with only what a DaemonSet pod of a real cluster gets: the
//! in-cluster environment (KUBERNETES_SERVICE_HOST/PORT, NODE_NAME) and a ServiceAccount token bound to the RBAC of
//! `deploy/rbac.yaml`, against skiff-control (TLS, RBAC) on loopback. The agent serves node1 of the `skt-` lab
//! network; Services, EndpointSlices and the Node come from the API server, written with kubectl as the admin.
//!
//! Run with `cargo test -p tests --test proxy_only_e2e -- --test-threads=1` after `cargo build` (shares the `skt-`
//! names and lock with dataplane_e2e: the two suites take turns).
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Duration,
};

use tests::{
    cluster::{
        EXT_CLIENT, Lab, SOCKET_CLIENT, TC_CLIENT, WEB_IP, WEB_NODE_PORT,
        agent::{IN_CLUSTER_HEALTHZ, InCluster, Mode},
        control::Control,
        endpoint,
        topology::{BACKENDS, BE1, NODE1},
        web,
    },
    netns::{ip, try_run, wait_for},
};

const REQUESTS: usize = 30;
/// Where deploy/rbac.yaml puts the agent's ServiceAccount.
const AGENT_NS: &str = "kube-system";
const AGENT_SA: &str = "skiff-agent";
/// A second address of node1's uplink, known to the agent only as the Node object's ExternalIP.
const NODE1_EXTERNAL_IP: &str = "10.99.0.21";
/// The managed-by label of the test's own EndpointSlices (so no controller claims them).
const SLICE_MANAGER: &str = "skiff-tests";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn names(hits: &BTreeMap<String, usize>) -> BTreeSet<&str> {
    hits.keys().map(String::as_str).collect()
}

fn backends(without: Option<&str>) -> BTreeSet<&'static str> {
    BACKENDS
        .iter()
        .map(|p| p.short)
        .filter(|b| Some(*b) != without)
        .collect()
}

/// skiff-control with the agent's namespace, node1's Node object (its InternalIP and ExternalIP are its NodePort
/// addresses) and the selector-less `web` Service with an EndpointSlice of every backend.
fn cluster(lab: &Lab) -> Control {
    let control = Control::start(&lab.dir().join("cluster"));
    control.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {AGENT_NS}\n"
    ));
    control.apply(&format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\n  labels:\n    kubernetes.io/hostname: {node}\n\
         status:\n  addresses:\n  - type: InternalIP\n    address: {ip}\n  - type: ExternalIP\n    address: \
         {ext}\n  - type: Hostname\n    address: {node}\n",
        node = NODE1.name,
        ip = NODE1.ip,
        ext = NODE1_EXTERNAL_IP,
    ));
    let address = control
        .kubectl(&[
            "get",
            "node",
            NODE1.name,
            "-o",
            "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
        ])
        .expect("kubectl get node");
    assert_eq!(address, NODE1.ip, "the Node's InternalIP was not stored");
    let all: Vec<_> = BACKENDS.iter().map(|p| endpoint(*p)).collect();
    control.apply(&web().selectorless_yaml());
    control.apply(&web().slice_yaml_managed_by(&all, SLICE_MANAGER));
    control
}

/// What a pod of the agent's DaemonSet would get for ServiceAccount `ns/sa`: the API server's Service address and
/// a token with the CA in a directory.
fn in_cluster(control: &Control, lab: &Lab, sa: &str) -> InCluster {
    InCluster {
        host: "127.0.0.1".into(),
        port: control.port(),
        serviceaccount_dir: control.serviceaccount_dir(AGENT_NS, sa, &lab.dir().join(format!("sa-{sa}"))),
    }
}

#[test]
fn least_privilege_agent_serves_clusterip_and_nodeport_and_follows_endpointslices() {
    let mut lab = Lab::start();
    lab.attach_xdp_pass();
    // Inside the lab's node namespace (deleted with it).
    ip(&[
        "-n",
        NODE1.name,
        "addr",
        "add",
        &format!("{NODE1_EXTERNAL_IP}/24"),
        "dev",
        "eth0",
    ]);
    let control = cluster(&lab);
    // Exactly the RBAC the DaemonSet's manifests grant: ServiceAccount, ClusterRole and ClusterRoleBinding.
    let rbac = std::fs::read_to_string(repo().join("deploy/rbac.yaml")).expect("reading deploy/rbac.yaml");
    control.apply(&rbac);
    let sa = in_cluster(&control, &lab, AGENT_SA);

    lab.start_agent_in_cluster(Mode::Both, TC_CLIENT, &sa);
    // Like kube-proxy's: healthy once synced, and the Node (from the API server) is eligible for load balancers.
    let health = try_run(std::process::Command::new("curl").args([
        "-sS",
        "--fail",
        "--max-time",
        "5",
        &format!("http://{IN_CLUSTER_HEALTHZ}/healthz"),
    ]))
    .unwrap_or_else(|e| panic!("/healthz of the synced agent: {e:#}"));
    let health: serde_json::Value = serde_json::from_str(&health).expect("/healthz answers JSON");
    assert_eq!(health["nodeEligible"], true, "/healthz: {health}");
    let cluster_ip = format!("http://{WEB_IP}/");
    let node_port = format!("http://{}:{WEB_NODE_PORT}/", NODE1.ip);
    // An address the agent learns only from the Node object.
    let external_node_port = format!("http://{NODE1_EXTERNAL_IP}:{WEB_NODE_PORT}/");
    for (client, url) in [
        (TC_CLIENT, &cluster_ip),
        (SOCKET_CLIENT, &cluster_ip),
        (EXT_CLIENT, &node_port),
        (EXT_CLIENT, &external_node_port),
    ] {
        let hits = client.http_spread(url, REQUESTS);
        assert_eq!(
            names(&hits),
            backends(None),
            "{url} via {client:?} was spread as {hits:?}"
        );
    }

    // be1 leaves the EndpointSlice: new flows, through the ClusterIP and the NodePort, reach only the others.
    let remaining: Vec<_> = BACKENDS
        .iter()
        .filter(|p| p.short != BE1.short)
        .map(|p| endpoint(*p))
        .collect();
    control.apply(&web().slice_yaml_managed_by(&remaining, SLICE_MANAGER));
    let mut streak = 0;
    let settled = wait_for(Duration::from_secs(15), || {
        match TC_CLIENT.http_get(&cluster_ip, 2) {
            Ok(name) if name != BE1.short => streak += 1,
            _ => streak = 0,
        }
        (streak >= 10).then_some(())
    });
    assert!(
        settled.is_some(),
        "new flows still reach {} 15 s after it left the EndpointSlice; agent log:\n{}",
        BE1.short,
        lab.agent().log_tail()
    );
    for (client, url) in [(TC_CLIENT, &cluster_ip), (EXT_CLIENT, &node_port)] {
        let hits = client.http_spread(url, REQUESTS);
        assert_eq!(
            names(&hits),
            backends(Some(BE1.short)),
            "after removing {}: {url} via {client:?} was spread as {hits:?}",
            BE1.short
        );
    }

    let agent = lab.agent();
    agent.assert_running();
    let log = agent.run_log();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the agent was refused something its ClusterRole does not grant:\n{log}"
    );
}

/// Starts the agent with ServiceAccount `sa`'s token and returns its log once it has exited with a failure
/// (at most 30 s).
fn refused_agent_log(lab: &mut Lab, control: &Control, sa: &str) -> String {
    let creds = in_cluster(control, lab, sa);
    let agent = lab.spawn_agent_in_cluster(Mode::Both, &creds);
    let status = agent.wait_exit(Duration::from_secs(30));
    let log = agent.run_log();
    let status =
        status.unwrap_or_else(|| panic!("the agent with {sa}'s token still runs after 30 s; log:\n{log}"));
    assert!(
        !status.success(),
        "the agent with {sa}'s token exited successfully; log:\n{log}"
    );
    lab.stop_agents();
    log
}

#[test]
fn agent_without_the_rbac_fails_with_a_clear_message() {
    let mut lab = Lab::start();
    let control = cluster(&lab);
    let user = |sa: &str| format!("system:serviceaccount:{AGENT_NS}:{sa}");

    // A ServiceAccount without any binding.
    control.apply(&format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: skt-nobody\n  namespace: {AGENT_NS}\n"
    ));
    let log = refused_agent_log(&mut lab, &control, "skt-nobody");
    for expected in [
        "forbidden: cannot list services",
        "ClusterRole skiff-agent",
        "deploy/rbac.yaml",
        &user("skt-nobody"),
    ] {
        assert!(
            log.contains(expected),
            "the agent's error does not say {expected:?}:\n{log}"
        );
    }

    // A ServiceAccount allowed everything but watching EndpointSlices: the message names exactly what is missing.
    control.apply(&format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: skt-partial\n  namespace: {AGENT_NS}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: skt-partial\nrules:\n\
         - apiGroups: [\"\"]\n  resources: [services, nodes]\n  verbs: [list, watch]\n\
         - apiGroups: [discovery.k8s.io]\n  resources: [endpointslices]\n  verbs: [list]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: skt-partial\n\
         roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: skt-partial\nsubjects:\n\
         - kind: ServiceAccount\n  name: skt-partial\n  namespace: {AGENT_NS}\n"
    ));
    let log = refused_agent_log(&mut lab, &control, "skt-partial");
    assert!(
        log.contains("forbidden: cannot watch endpointslices"),
        "the agent's error does not name the missing watch on endpointslices:\n{log}"
    );
    assert!(
        !log.contains("cannot list services") && !log.contains("cannot watch services"),
        "the agent blamed a permission it has:\n{log}"
    );
}
