//! `cargo xtask lab` end to end (root): a 3-node lab, Services over pods on every node reached through the
//! ClusterIP from a client pod and through the NodePort from the client namespace, pods placed by the scheduler,
//! stop-node / start-node,
//! add-node, `lab down` leaving no namespace, route, pin, cgroup or process, and `lab up` restoring the cluster.
//! Names use the `skl-` prefix and their own ranges and ports, so a developer's lab is never touched.
use std::{path::Path, process::Command};

use tests::lab_client::{IMAGE, LabUnderTest, processes_matching, reaches_all};

const LAB: LabUnderTest = LabUnderTest {
    dir: "/run/skl-e2e",
    prefix: "skl-",
    api_port: 16443,
    kubelet_port: 20250,
    pod_cidr: "10.247.0.0/16",
    service_cidr: "10.94.0.0/16",
    underlay: "10.93.0.0/24",
    lb_pool: "10.93.0.192/27",
    extra: &[],
};
const DIR: &str = LAB.dir;
const VIP: &str = "10.94.0.80";
const NODE_PORT: &str = "30080";
const RANGES: [&str; 3] = [LAB.pod_cidr, LAB.service_cidr, LAB.underlay];

fn lab(args: &[&str]) -> String {
    LAB.lab(args)
}

fn kubectl(args: &[&str]) -> Result<String, String> {
    LAB.kubectl(args)
}

fn apply(yaml: &str) {
    LAB.apply(yaml)
}

fn ready_nodes() -> std::collections::BTreeSet<String> {
    LAB.ready_nodes()
}

fn names(n: usize) -> std::collections::BTreeSet<String> {
    LAB.node_names(n)
}

fn wait_pod_ip(name: &str) -> String {
    LAB.wait_pod_ip(name)
}

fn pod(name: &str, node: &str, args: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default, labels: {{app: skl-web}}}}\n\
         spec:\n  nodeName: {node}\n  containers: [{{name: main, image: {IMAGE}, args: [{args}]}}]\n"
    )
}

/// ClusterIP and NodePort Services over the web pods, with their EndpointSlices written by the test.
fn services(backends: &[(&str, &str)]) -> String {
    let eps: String = backends
        .iter()
        .map(|(ip, node)| format!("- {{addresses: [{ip}], conditions: {{ready: true}}, nodeName: {node}}}\n"))
        .collect();
    let mut out = String::new();
    for (name, spec) in [
        ("skl-web", format!("clusterIP: {VIP}")),
        (
            "skl-web-np",
            format!(
                "type: NodePort\n  ports: [{{name: http, port: 80, targetPort: 8080, nodePort: {NODE_PORT}}}]"
            ),
        ),
    ] {
        let ports = if spec.contains("ports:") {
            String::new()
        } else {
            "\n  ports: [{name: http, port: 80, targetPort: 8080}]".into()
        };
        out += &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  {spec}{ports}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-test\n  namespace: default\n  \
             labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\n\
             ports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n{eps}---\n"
        );
    }
    out
}

#[test]
fn lab_up_serves_services_survives_node_changes_and_goes_down_cleanly() {
    let _guard = LAB.fresh();

    // Up: three Ready nodes, the export lines, every lab range kept on this machine.
    let up = lab(&["up", "--nodes", "3"]);
    assert!(
        up.contains(&format!("export KUBECONFIG={DIR}/kubeconfig")),
        "{up}"
    );
    assert!(
        up.contains("nodes Ready ... skl-node1, skl-node2, skl-node3"),
        "{up}"
    );
    assert_eq!(ready_nodes(), names(3));
    let env = lab(&["env"]);
    assert_eq!(
        env.trim(),
        format!("export KUBECONFIG={DIR}/kubeconfig\nexport PATH={DIR}/bin:$PATH")
    );
    let routes = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["route", "show"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    for r in RANGES {
        assert!(
            routes.contains(&format!("unreachable {r}")),
            "no unreachable route for {r}:\n{routes}"
        );
    }
    let wide = kubectl(&["get", "nodes", "-o", "wide"]).unwrap();
    for n in names(3) {
        assert!(
            wide.lines().any(|l| l.starts_with(&n) && l.contains(" Ready ")),
            "{wide}"
        );
    }

    // One web pod per node behind a ClusterIP and a NodePort Service, and a client pod on node1.
    for i in 1..=3 {
        apply(&pod(
            &format!("skl-web{i}"),
            &format!("skl-node{i}"),
            "netexec, --http-port=8080",
        ));
    }
    apply(&pod("skl-client", "skl-node1", "pause").replace("app: skl-web", "app: skl-client"));
    let ips: Vec<String> = (1..=3).map(|i| wait_pod_ip(&format!("skl-web{i}"))).collect();
    let nodes = names(3).into_iter().collect::<Vec<_>>();
    let backends: Vec<(&str, &str)> = ips
        .iter()
        .map(String::as_str)
        .zip(nodes.iter().map(String::as_str))
        .collect();
    apply(&services(&backends));
    wait_pod_ip("skl-client");
    let web = ["skl-web1", "skl-web2", "skl-web3"];
    reaches_all("the ClusterIP from the client pod", &web, |_| {
        LAB.curl_from_pod("skl-client", &format!("http://{VIP}/hostname"))
    });
    reaches_all("the NodePort from the client namespace", &web, |i| {
        LAB.curl_from_client_netns(&format!("http://{}:{NODE_PORT}/hostname", LAB.node_ip(i % 3 + 1)))
    });
    let svc = kubectl(&["get", "service", "skl-web-np"]).unwrap();
    assert!(
        svc.contains(&format!("80:{NODE_PORT}/TCP")) && svc.contains("NodePort"),
        "{svc}"
    );

    // The scheduler places pods without a node on lab nodes.
    for i in 1..=3 {
        apply(
            &pod(&format!("skl-sel{i}"), "", "netexec, --http-port=8080")
                .replace("  nodeName: \n", "")
                .replace("app: skl-web", "app: skl-sel"),
        );
    }
    for i in 1..=3 {
        wait_pod_ip(&format!("skl-sel{i}"));
    }
    let wide = kubectl(&["get", "pods", "-l", "app=skl-sel", "-o", "wide", "--no-headers"]).unwrap();
    assert_eq!(
        wide.lines().filter(|l| l.contains(" skl-node")).count(),
        3,
        "{wide}"
    );

    // stop-node: the agent is gone and status says so; start-node: Ready again.
    lab(&["stop-node", "node3"]);
    assert!(
        processes_matching("--node-name skl-node3").is_empty(),
        "the agent of skl-node3 still runs"
    );
    let status = lab(&["status"]);
    assert!(
        status
            .lines()
            .any(|l| l.contains("skl-node3") && l.contains("stopped")),
        "{status}"
    );
    let started = lab(&["start-node", "skl-node3"]);
    assert!(started.contains("node Ready ... skl-node3"), "{started}");
    assert!(ready_nodes().contains("skl-node3"));

    // add-node: a fourth Ready node that runs pods.
    lab(&["add-node"]);
    assert_eq!(ready_nodes(), names(4));
    apply(&pod("skl-web4", "skl-node4", "netexec, --http-port=8080"));
    let ip4 = wait_pod_ip("skl-web4");
    assert!(ip4.starts_with("10.247.4."), "pod on node4 got {ip4}");
    assert_eq!(
        LAB.curl_from_client_netns(&format!("http://{ip4}:8080/hostname")),
        None,
        "the client namespace has no pod routes"
    );

    // down removes everything; up brings back the same cluster (4 nodes, the pods).
    lab(&["down"]);
    LAB.assert_nothing_left(4);
    assert!(
        Path::new(DIR).join("control").exists(),
        "down without --purge keeps the control data"
    );
    lab(&["up"]);
    assert_eq!(ready_nodes(), names(4));
    for name in [
        "skl-web1", "skl-web2", "skl-web3", "skl-web4", "skl-sel1", "skl-sel2", "skl-sel3",
    ] {
        wait_pod_ip(name);
    }
    lab(&["down", "--purge"]);
    LAB.assert_nothing_left(4);
    assert!(!Path::new(DIR).exists());
}
