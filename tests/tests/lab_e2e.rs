//! `cargo xtask lab` end to end (root): a 3-node lab, Services over pods on every node reached through the
//! ClusterIP from a client pod and through the NodePort from the client namespace, pods placed by the scheduler,
//! stop-node / start-node,
//! add-node, `lab down` leaving no namespace, route, pin, cgroup or process, and `lab up` restoring the cluster.
//! Names use the `skl-` prefix and their own ranges and ports, so a developer's lab is never touched.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

const DIR: &str = "/run/skl-e2e";
const VIP: &str = "10.94.0.80";
const NODE_PORT: &str = "30080";
const IMAGE: &str = "registry.k8s.io/e2e-test-images/agnhost:2.53";
const NODE_IPS: [&str; 3] = ["10.93.0.11", "10.93.0.12", "10.93.0.13"];
const RANGES: [&str; 3] = ["10.247.0.0/16", "10.94.0.0/16", "10.93.0.0/24"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `xtask lab <args>` with the test's lab options; panics with the output when it fails.
fn lab(args: &[&str]) -> String {
    let xtask = workspace().join("target/debug/xtask");
    assert!(
        xtask.is_file(),
        "{} is missing: run `cargo build` first",
        xtask.display()
    );
    let debug = workspace().join("target/debug");
    let out = Command::new(&xtask)
        .arg("lab")
        .args(args)
        .args([
            "--data-dir",
            DIR,
            "--name-prefix",
            "skl-",
            "--api-port",
            "16443",
            "--kubelet-port",
            "20250",
        ])
        .args([
            "--pod-cidr",
            RANGES[0],
            "--service-cidr",
            RANGES[1],
            "--underlay",
            RANGES[2],
        ])
        .args(["--lb-pool", "10.93.0.192/27", "--binaries"])
        .arg(&debug)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("running xtask");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "xtask lab {args:?} failed:\n{text}");
    text
}

/// Brings the lab down (and purges it) when the test ends, also on failure.
struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        if Path::new(DIR).join("lab.json").exists() {
            let _ = Command::new(workspace().join("target/debug/xtask"))
                .args(["lab", "down", "--purge", "--data-dir", DIR])
                .status();
        }
    }
}

fn kubectl(args: &[&str]) -> Result<String, String> {
    let out = Command::new(Path::new(DIR).join("bin/kubectl"))
        .arg("--kubeconfig")
        .arg(Path::new(DIR).join("kubeconfig"))
        .args(args)
        .output()
        .expect("running kubectl");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn apply(yaml: &str) {
    let f = Path::new(DIR).join("test-manifest.yaml");
    std::fs::write(&f, yaml).unwrap();
    kubectl(&["apply", "-f", &f.to_string_lossy()]).unwrap_or_else(|e| panic!("kubectl apply: {e}\n{yaml}"));
}

fn jsonpath(what: &[&str], jp: &str) -> String {
    let jp = format!("jsonpath={jp}");
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend(["-o", &jp]);
    kubectl(&args).unwrap_or_default()
}

fn wait<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            started.elapsed().as_secs() < secs,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Names of the nodes `kubectl get nodes` lists as exactly Ready.
fn ready_nodes() -> BTreeSet<String> {
    kubectl(&["get", "nodes", "--no-headers"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.get(1) == Some(&"Ready")).then(|| cols[0].to_string())
        })
        .collect()
}

fn names(n: usize) -> BTreeSet<String> {
    (1..=n).map(|i| format!("skl-node{i}")).collect()
}

fn pod(name: &str, node: &str, args: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default, labels: {{app: skl-web}}}}\n\
         spec:\n  nodeName: {node}\n  containers: [{{name: main, image: {IMAGE}, args: [{args}]}}]\n"
    )
}

fn wait_pod_ip(name: &str) -> String {
    wait(&format!("pod {name} Ready"), 90, || {
        let ready = jsonpath(
            &["pod", name],
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        );
        let ip = jsonpath(&["pod", name], "{.status.podIP}");
        (ready == "True" && !ip.is_empty()).then_some(ip)
    })
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

/// curl from the client pod on skl-node1, inside its container cgroup (the socket hooks see it).
fn curl_from_client_pod(url: &str) -> Option<String> {
    let uid = jsonpath(&["pod", "skl-client"], "{.metadata.uid}");
    let record = std::fs::read_to_string(format!("{DIR}/nodes/skl-node1/pods/{uid}/sandbox.json")).ok()?;
    let pid = record
        .split("\"pid\":")
        .nth(1)?
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .to_string();
    let cg = format!("/sys/fs/cgroup/unified/skiff/skl-node1/pods/pod{uid}/main");
    let script = format!("echo $$ > {cg}/cgroup.procs && exec \"$@\"");
    let out = Command::new("nsenter")
        .args([
            "-t", &pid, "-n", "--", "sh", "-c", &script, "sh", "curl", "-sf", "-m", "2", url,
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn curl_from_client_netns(url: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", "skl-client", "curl", "-sf", "-m", "2", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Requests until every name in `want` answered (bounded).
fn reaches_all(what: &str, want: &[&str], mut request: impl FnMut(usize) -> Option<String>) {
    let mut seen = BTreeSet::new();
    let mut i = 0;
    wait(&format!("{what} reaching {want:?} (seen {seen:?})"), 60, || {
        if let Some(h) = request(i) {
            seen.insert(h);
        }
        i += 1;
        want.iter().all(|w| seen.contains(*w)).then_some(())
    });
}

fn processes_matching(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if e.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(cmdline);
        }
    }
    found
}

/// Asserts nothing of the lab is left on the machine.
fn assert_nothing_left() {
    let netns = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(!netns.contains("skl-"), "namespaces left: {netns}");
    let routes = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["-4", "route", "show", "table", "all"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    for r in RANGES {
        assert!(!routes.contains(r), "route for {r} left:\n{routes}");
    }
    for n in 1..=4 {
        let pins = format!("/sys/fs/bpf/skiff/skl-node{n}");
        assert!(!Path::new(&pins).exists(), "{pins} left");
        let cg = format!("/sys/fs/cgroup/unified/skiff/skl-node{n}");
        assert!(!Path::new(&cg).exists(), "{cg} left");
    }
    let procs = processes_matching(DIR);
    assert!(procs.is_empty(), "processes left: {procs:?}");
    let pods = processes_matching("--hostname skl-");
    assert!(pods.is_empty(), "pod processes left: {pods:?}");
}

#[test]
fn lab_up_serves_services_survives_node_changes_and_goes_down_cleanly() {
    let _guard = Guard;
    if Path::new(DIR).join("lab.json").exists() {
        lab(&["down", "--purge"]);
    }

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
        curl_from_client_pod(&format!("http://{VIP}/hostname"))
    });
    reaches_all("the NodePort from the client namespace", &web, |i| {
        curl_from_client_netns(&format!("http://{}:{NODE_PORT}/hostname", NODE_IPS[i % 3]))
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
        curl_from_client_netns(&format!("http://{ip4}:8080/hostname")),
        None,
        "the client namespace has no pod routes"
    );

    // down removes everything; up brings back the same cluster (4 nodes, the pods).
    lab(&["down"]);
    assert_nothing_left();
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
    assert_nothing_left();
    assert!(!Path::new(DIR).exists());
}
