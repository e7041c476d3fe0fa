//! The lab node end to end (root): skiff-control and two `skiff-agent node` processes on `skn-` namespaces; pods
//! with shared localhost and emptyDir, readiness, crash back-off, `kubectl logs`, pod-to-pod across nodes, a
//! ClusterIP Service over both nodes through the TC and socket paths, `kubectl exec` (streams, stdin, exit code,
//! terminal, RBAC), re-adoption after an agent restart, a
//! Deployment behind a Service whose endpoints follow pod deletion, and agents riding out an apiserver crash.
//! The agents run as `system:node:<name>`; their kubelet endpoint is HTTPS with authentication (401 without
//! credentials, 403 for a view user or another node, 200 for the apiserver's kubelet client).
//!
//! Run with `cargo build -p agent -p control && cargo test -p tests --test node_e2e -- --test-threads=1`.
use std::{collections::BTreeSet, path::Path};

use tests::node_lab::{NODES, NodeLab};

const AGNHOST: &str = "registry.k8s.io/e2e-test-images/agnhost:2.53";
const VIP: &str = "10.96.120.10";
const APP_VIP: &str = "10.96.120.11";

/// An agnhost netexec Deployment behind a ClusterIP Service; the controllers write its EndpointSlices.
fn app(replicas: usize) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: skn-app, namespace: default}}\n\
         spec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: skn-app}}}}\n  template:\n    \
         metadata: {{labels: {{app: skn-app}}}}\n    spec:\n      containers:\n      - name: web\n        \
         image: {AGNHOST}\n        args: [netexec, --http-port=8080]\n        \
         readinessProbe: {{httpGet: {{path: /healthz, port: 8080}}, periodSeconds: 1}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: skn-app, namespace: default}}\n\
         spec:\n  clusterIP: {APP_VIP}\n  selector: {{app: skn-app}}\n  ports: [{{port: 80, targetPort: 8080}}]\n"
    )
}

/// (name, IP, node) of the app's Running pods as `kubectl get pods -o wide` shows them.
fn app_pods(lab: &NodeLab) -> Vec<(String, String, String)> {
    let wide = lab
        .kubectl(&["get", "pods", "-l", "app=skn-app", "-o", "wide", "--no-headers"])
        .unwrap_or_default();
    wide.lines()
        .filter_map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            // NAME READY STATUS RESTARTS AGE IP NODE ...
            (c.len() >= 7 && c[1] == "1/1" && c[2] == "Running")
                .then(|| (c[0].to_owned(), c[5].to_owned(), c[6].to_owned()))
        })
        .collect()
}

/// The ready addresses of the app Service's EndpointSlices.
fn app_endpoints(lab: &NodeLab) -> BTreeSet<String> {
    lab.get(
        &["endpointslices", "-l", "kubernetes.io/service-name=skn-app"],
        "{range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]} {end}",
    )
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

/// Waits until `n` replicas run and exactly their IPs are the Service's ready endpoints.
fn app_serving(lab: &NodeLab, n: usize) -> Vec<(String, String, String)> {
    lab.wait(
        &format!("{n} app replicas Running and in the EndpointSlices"),
        90,
        || {
            let pods = app_pods(lab);
            let ips: BTreeSet<String> = pods.iter().map(|p| p.1.clone()).collect();
            (pods.len() == n && app_endpoints(lab) == ips).then_some(pods)
        },
    )
}

fn netexec(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default, labels: {{app: skn-web}}}}\n\
         spec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: web\n    \
         image: {AGNHOST}\n    args: [netexec, --http-port=8080]\n"
    )
}

/// `web` serves; `side` reaches it over localhost and leaves the answer and a ready flag in the shared emptyDir;
/// `web` is ready only once it sees that flag (readiness gated by the sidecar).
const TWO: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: two, namespace: default}
spec:
  nodeName: skn-node1
  terminationGracePeriodSeconds: 2
  volumes: [{name: share, emptyDir: {}}]
  containers:
  - name: web
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: [netexec, --http-port=8080]
    readinessProbe: {exec: {command: [cat, /skn-share/ready]}, periodSeconds: 1}
    volumeMounts: [{name: share, mountPath: /skn-share}]
  - name: side
    image: skn-shell
    command: [/bin/sh, -c, "echo side-started; until curl -sf http://127.0.0.1:8080/hostname > /skn-share/h; do sleep 0.2; done; sleep 4; touch /skn-share/ready; echo side-done; exec sleep 100000"]
    volumeMounts: [{name: share, mountPath: /skn-share}]
"#;

const CRASH: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: crash, namespace: default}
spec:
  nodeName: skn-node2
  containers:
  - name: c
    image: skn-shell
    command: [/bin/sh, -c, "echo crash-run; exit 3"]
"#;

fn service() -> String {
    let mut eps = String::new();
    for (pod, node) in [("near", NODES[0].name), ("far", NODES[1].name)] {
        eps.push_str(&format!(
            "- addresses: [\"{{{pod}}}\"]\n  conditions: {{ready: true, serving: true, terminating: false}}\n  nodeName: {node}\n  targetRef: {{kind: Pod, name: {pod}, namespace: default}}\n"
        ));
    }
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: skn-web, namespace: default}}\n\
         spec:\n  clusterIP: {VIP}\n  ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: skn-web-1\n  namespace: default\n  \
         labels: {{kubernetes.io/service-name: skn-web}}\naddressType: IPv4\n\
         ports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n{eps}"
    )
}

fn curl(lab: &NodeLab, node: &str, pod: &str, cgroup: Option<&std::path::Path>, url: &str) -> Option<String> {
    lab.in_pod(node, pod, cgroup, &["curl", "-sf", "-m", "2", url])
        .ok()
}

/// The HTTP status of a request to the kubelet endpoint on 127.0.0.1:`port` (its certificate is self-signed,
/// hence `-k`), with extra curl arguments (credentials).
fn kubelet_status(port: &str, path: &str, extra: &[&str]) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"])
        .args(extra)
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .expect("running curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes the client certificate and key of a kubeconfig to `<kubeconfig>.crt` and `.key`.
fn cert_files(kubeconfig: &Path) -> (String, String) {
    use std::io::Write;
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let v: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let user = &v["users"][0]["user"];
    let mut paths = Vec::new();
    for (field, ext) in [("client-certificate-data", "crt"), ("client-key-data", "key")] {
        let data = user[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} in {text}"));
        let mut child = std::process::Command::new("base64")
            .arg("-d")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(data.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "base64 -d of {field}");
        let path = kubeconfig.with_extension(ext);
        std::fs::write(&path, out.stdout).unwrap();
        paths.push(path.to_string_lossy().into_owned());
    }
    (paths[0].clone(), paths[1].clone())
}

/// The agent's HTTPS endpoint authenticates (client certificate or TokenReview) and authorizes
/// (SubjectAccessReview on nodes/proxy) every request but /healthz; authorized requests for `logs` get
/// `authorized`.
fn kubelet_endpoint_is_authenticated(lab: &NodeLab, node: &str, logs: &str, authorized: &str) {
    let port = lab.get(&["node", node], "{.status.daemonEndpoints.kubeletEndpoint.Port}");
    assert!(!port.is_empty(), "node {node} publishes its kubelet port");
    assert_eq!(kubelet_status(&port, "/healthz", &[]), "200", "/healthz is open");
    assert_eq!(kubelet_status(&port, logs, &[]), "401", "no credentials");
    let bogus = ["-H", "Authorization: Bearer not-a-token"];
    assert_eq!(kubelet_status(&port, logs, &bogus), "401", "unknown token");

    let viewer = lab.dir.join("viewer.kubeconfig");
    if !viewer.exists() {
        lab.kubectl(&[
            "create",
            "clusterrolebinding",
            "skn-viewer",
            "--clusterrole=view",
            "--user=skn-viewer",
        ])
        .unwrap();
        lab.issue_kubeconfig("skn-viewer", &[], &viewer);
    }
    if authorized == "200" {
        assert!(
            lab.kubectl_as(&viewer, &["logs", "two", "-c", "side", "--tail=1"])
                .unwrap()
                .contains("side-done"),
            "a view user reads logs through the apiserver"
        );
    }
    let (crt, key) = cert_files(&viewer);
    assert_eq!(
        kubelet_status(&port, logs, &["--cert", &crt, "--key", &key]),
        "403",
        "a view user may not use the kubelet API directly"
    );
    let other = NODES.iter().find(|n| n.name != node).unwrap();
    let (crt, key) = cert_files(&lab.node_kubeconfig(other.name));
    assert_eq!(
        kubelet_status(&port, logs, &["--cert", &crt, "--key", &key]),
        "403",
        "another node may not read this node's pods' logs"
    );

    let pki = lab.dir.join("control/pki");
    let (crt, key) = (
        pki.join("apiserver-kubelet-client.crt"),
        pki.join("apiserver-kubelet-client.key"),
    );
    let (crt, key) = (crt.to_string_lossy(), key.to_string_lossy());
    assert_eq!(
        kubelet_status(&port, logs, &["--cert", &crt, "--key", &key]),
        authorized,
        "the apiserver's kubelet client"
    );
    let token = std::fs::read_to_string(pki.join("admin.token")).unwrap();
    let bearer = format!("Authorization: Bearer {}", token.trim());
    assert_eq!(
        kubelet_status(&port, logs, &["-H", &bearer]),
        authorized,
        "an admin token, checked with a TokenReview"
    );
}

/// Runs kubectl with `kubeconfig` and `stdin`; (exit code, stdout, stderr).
fn kubectl_run(kubeconfig: &Path, args: &[&str], stdin: &[u8]) -> (Option<i32>, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("timeout")
        .arg("60")
        .arg(tests::k8s_tools::kubectl())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running kubectl");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `kubectl exec` through the apiserver to the agent (WebSocket, v5.channel.k8s.io): output, stdin, the exit
/// code, the container's namespaces and cgroup, a terminal with its size, and RBAC (`create pods/exec`: edit may,
/// view may not).
fn exec_through_the_apiserver(lab: &NodeLab) {
    let admin = lab.kubeconfig.clone();
    let exec = |args: &[&str], stdin: &[u8]| {
        let mut all = vec!["exec"];
        all.extend_from_slice(args);
        kubectl_run(&admin, &all, stdin)
    };
    let (code, out, err) = exec(&["two", "-c", "side", "--", "hostname"], b"");
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "two\n"),
        "hostname in the pod: {err}"
    );
    let (code, out, err) = exec(&["-i", "two", "-c", "side", "--", "cat"], b"hi\n");
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "hi\n"),
        "stdin forwarded and closed: {err}"
    );
    let (code, out, err) = exec(
        &[
            "two",
            "-c",
            "side",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
        b"",
    );
    assert_eq!(code, Some(3), "the exit code propagates: {out} {err}");
    assert_eq!(out, "out\n");
    assert!(
        err.contains("err\n") && err.contains("command terminated with exit code 3"),
        "{err}"
    );
    let cgroup = lab.container_cgroup(NODES[0].name, "two", "side");
    let cgroup = cgroup.to_string_lossy();
    let (code, out, err) = exec(
        &[
            "two",
            "-c",
            "side",
            "--",
            "sh",
            "-c",
            "cat /proc/self/cgroup; ls /skn-share; echo $$",
        ],
        b"",
    );
    assert_eq!(code, Some(0), "{err}");
    let own = out.lines().find(|l| l.starts_with("0::")).unwrap_or("");
    assert!(
        cgroup.ends_with(own.trim_start_matches("0::")),
        "exec runs in the container's cgroup {cgroup}: {out}"
    );
    assert!(out.contains("ready\n"), "the container's mounts: {out}");
    let pid: u32 = out.lines().last().unwrap().trim().parse().unwrap();
    assert!(pid < 100, "the container's pid namespace: {out}");
    let (code, out, err) = exec(&["two", "-c", "side", "--", "seq", "1", "200000"], b"");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        (out.lines().count(), out.lines().last()),
        (200000, Some("200000")),
        "all output arrives before the final status"
    );
    let (code, _, err) = exec(&["two", "-c", "side", "--", "no-such-command"], b"");
    assert_eq!(code, Some(127), "{err}");
    let (code, _, err) = exec(&["crash", "--", "true"], b"");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("is not running"), "{err}");

    // A terminal (kubectl needs one on its side: `script` provides it) with the client's size.
    let command = format!(
        "stty cols 91 rows 17; {} --kubeconfig {} exec -it two -c side -- sh -c 'sleep 1; tty; stty size'",
        tests::k8s_tools::kubectl().display(),
        admin.display()
    );
    let tty = std::process::Command::new("timeout")
        .args(["60", "script", "-qec", &command, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&tty.stdout);
    assert!(tty.status.success(), "{shown}");
    assert!(shown.contains("/dev/pts/"), "a terminal: {shown}");
    assert!(
        shown.contains("17 91"),
        "the terminal has kubectl's size: {shown}"
    );
    // An interactive shell on that terminal: typed lines run, its exit code is kubectl's.
    let command = format!(
        "{} --kubeconfig {} exec -it two -c side -- sh",
        tests::k8s_tools::kubectl().display(),
        admin.display()
    );
    let mut shell = std::process::Command::new("timeout")
        .args(["60", "script", "-qec", &command, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut typed = shell.stdin.take().unwrap();
        typed.write_all(b"echo x$((6*7))\n").unwrap();
        std::thread::sleep(std::time::Duration::from_secs(2));
        typed.write_all(b"exit 5\n").unwrap();
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    let session = shell.wait_with_output().unwrap();
    let shown = String::from_utf8_lossy(&session.stdout);
    assert!(shown.contains("x42"), "the shell ran the typed line: {shown}");
    assert_eq!(session.status.code(), Some(5), "{shown}");

    let editor = lab.dir.join("editor.kubeconfig");
    lab.kubectl(&[
        "create",
        "rolebinding",
        "skn-editor",
        "--clusterrole=edit",
        "--user=skn-editor",
    ])
    .unwrap();
    lab.issue_kubeconfig("skn-editor", &[], &editor);
    let (code, out, err) = kubectl_run(&editor, &["exec", "two", "-c", "side", "--", "hostname"], b"");
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "two\n"),
        "an edit user may exec: {err}"
    );
    let viewer = lab.dir.join("viewer.kubeconfig");
    let (code, _, err) = kubectl_run(&viewer, &["exec", "two", "-c", "side", "--", "true"], b"");
    assert_eq!(code, Some(1));
    assert!(
        err.contains("Forbidden") && err.contains("cannot create resource \"pods/exec\""),
        "a view user may not exec: {err}"
    );
}

/// Each agent runs as `system:node:<name>`, and node restriction keeps one node's credentials off another's Node.
fn nodes_run_with_their_own_identity(lab: &NodeLab) {
    for n in NODES {
        let kubeconfig = lab.node_kubeconfig(n.name);
        let who = lab
            .kubectl_as(
                &kubeconfig,
                &["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"],
            )
            .unwrap();
        assert_eq!(who, format!("system:node:{}", n.name));
        let argv = lab.agent_command_line(n.name);
        let used = argv
            .iter()
            .position(|a| a == "--kubeconfig")
            .and_then(|i| argv.get(i + 1));
        assert_eq!(
            used.map(std::path::PathBuf::from),
            Some(kubeconfig.clone()),
            "the agent of {} runs with its node credentials: {argv:?}",
            n.name
        );
    }
    let (a, b) = (NODES[0].name, NODES[1].name);
    let a_config = lab.node_kubeconfig(a);
    lab.kubectl_as(&a_config, &["label", "node", a, "skn-own=yes"])
        .expect("a node labels its own Node");
    let refused = lab
        .kubectl_as(&a_config, &["label", "node", b, "skn-other=yes"])
        .expect_err("node A must not change node B");
    assert!(format!("{refused:#}").contains("forbidden"), "{refused:#}");
    assert!(
        lab.get(&["node", b], "{.metadata.labels.skn-other}").is_empty(),
        "node B is unchanged"
    );
    lab.kubectl(&["label", "node", a, "skn-own-"]).unwrap();
}

#[test]
fn lab_nodes_run_pods_and_services() {
    let mut lab = NodeLab::start();
    let (n1, n2) = (NODES[0].name, NODES[1].name);

    // Registration: podCIDR, capacity, labels, Lease.
    assert_eq!(lab.get(&["node", n1], "{.spec.podCIDR}"), NODES[0].pod_cidr);
    assert_eq!(lab.get(&["node", n2], "{.status.capacity.memory}"), "4Gi");
    assert_eq!(
        lab.get(&["node", n1], "{.metadata.labels.kubernetes\\.io/hostname}"),
        n1
    );
    assert_eq!(
        lab.get(&["lease", "-n", "kube-node-lease", n1], "{.spec.holderIdentity}"),
        n1
    );
    let conditions = lab.get(&["node", n1], "{.status.conditions[*].type}");
    for c in [
        "MemoryPressure",
        "DiskPressure",
        "PIDPressure",
        "NetworkUnavailable",
        "Ready",
    ] {
        assert!(conditions.contains(c), "{c} missing: {conditions}");
    }
    // The agents run as their nodes; the kubelet endpoint authenticates and authorizes before anything else
    // (an authorized request for a pod the node does not run is a 404 from the log handler).
    nodes_run_with_their_own_identity(&lab);
    kubelet_endpoint_is_authenticated(&lab, n1, "/containerLogs/default/absent/c", "404");

    // A 2-container pod: shared localhost and emptyDir; readiness gated until the sidecar's flag exists.
    lab.apply(TWO);
    lab.wait("two running but not ready", 60, || {
        let phase = lab.get(&["pod", "two"], "{.status.phase}");
        let ready = lab.get(
            &["pod", "two"],
            "{.status.conditions[?(@.type==\"ContainersReady\")].message}",
        );
        (phase == "Running" && ready.contains("[web]")).then_some(())
    });
    let two_ip = lab.wait_pod_ready("two");
    let share = lab.pod_dir(n1, "two").join("volumes/share/h");
    assert_eq!(
        std::fs::read_to_string(&share).unwrap(),
        "two",
        "answer over localhost in the emptyDir"
    );

    // kubectl logs through the apiserver: container choice, --tail, -f.
    let logs = lab.kubectl(&["logs", "two", "-c", "side"]).unwrap();
    assert!(
        logs.contains("side-started") && logs.contains("side-done"),
        "{logs}"
    );
    assert_eq!(
        lab.kubectl(&["logs", "two", "-c", "side", "--tail=1"]).unwrap(),
        "side-done\n"
    );
    let followed = std::process::Command::new("timeout")
        .arg("3")
        .arg(tests::k8s_tools::kubectl())
        .arg("--kubeconfig")
        .arg(&lab.kubeconfig)
        .args(["logs", "-f", "two", "-c", "side"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&followed.stdout).contains("side-done"));
    assert_eq!(
        followed.status.code(),
        Some(124),
        "-f keeps streaming while the container runs"
    );

    kubelet_endpoint_is_authenticated(&lab, n1, "/containerLogs/default/two/side?tailLines=1", "200");

    // A crashing container restarts with back-off; --previous shows the last run.
    lab.apply(CRASH);
    lab.wait("crash in CrashLoopBackOff after a restart", 60, || {
        let restarts: i32 = lab
            .get(&["pod", "crash"], "{.status.containerStatuses[0].restartCount}")
            .parse()
            .unwrap_or(0);
        let waiting = lab.get(
            &["pod", "crash"],
            "{.status.containerStatuses[0].state.waiting.reason}",
        );
        (restarts >= 1 && waiting == "CrashLoopBackOff").then_some(())
    });
    assert_eq!(
        lab.get(
            &["pod", "crash"],
            "{.status.containerStatuses[0].lastState.terminated.exitCode}"
        ),
        "3"
    );
    assert!(
        lab.kubectl(&["logs", "crash", "--previous"])
            .unwrap()
            .contains("crash-run")
    );

    // kubectl exec (the crash pod shows the error for a container that is not running).
    exec_through_the_apiserver(&lab);

    // Pod to pod across nodes.
    lab.apply(&netexec("far", n2));
    lab.apply(&netexec("near", n1));
    let far_ip = lab.wait_pod_ready("far");
    let near_ip = lab.wait_pod_ready("near");
    assert_eq!(
        curl(&lab, n1, "two", None, &format!("http://{far_ip}:8080/hostname")).as_deref(),
        Some("far")
    );
    assert_eq!(
        curl(&lab, n2, "far", None, &format!("http://{two_ip}:8080/hostname")).as_deref(),
        Some("two")
    );
    assert_eq!(
        lab.get(&["pod", "far"], "{.status.hostIP}"),
        NODES[1].ip,
        "hostIP is the node address"
    );

    // A ClusterIP Service over pods on both nodes, from both nodes, through the TC and the socket path.
    let svc = service().replace("{near}", &near_ip).replace("{far}", &far_ip);
    lab.apply(&svc);
    let url = format!("http://{VIP}/hostname");
    for (node, client) in [(n1, "two"), (n2, "far")] {
        let cgroup = lab.container_cgroup(node, client, "web");
        for (path, cg) in [("tc", None), ("socket", Some(cgroup.as_path()))] {
            let mut seen = BTreeSet::new();
            lab.wait(
                &format!("{url} from {client} on {node} ({path}) reaching both backends"),
                60,
                || {
                    if let Some(h) = curl(&lab, node, client, cg, &url) {
                        seen.insert(h);
                    }
                    (seen.contains("near") && seen.contains("far")).then_some(())
                },
            );
        }
    }

    // An agent restart re-adopts its running pods: same sandbox, still serving.
    let before = lab.sandbox_pid(n1, "two");
    lab.restart_agent(0);
    lab.wait_node_ready(n1);
    lab.wait("node1 agent re-adopting two", 30, || {
        lab.log("skn-node1.log")
            .contains("re-adopting a running pod")
            .then_some(())
    });
    assert_eq!(lab.sandbox_pid(n1, "two"), before);
    assert_eq!(
        curl(&lab, n2, "far", None, &format!("http://{two_ip}:8080/hostname")).as_deref(),
        Some("two")
    );
    assert_eq!(lab.get(&["pod", "two"], "{.status.phase}"), "Running");

    // Deleting a pod stops it and removes its sandbox, veth and address.
    let near_dir = lab.pod_dir(n1, "near");
    lab.kubectl(&["delete", "pod", "near", "--wait=false"]).unwrap();
    lab.wait("near torn down", 30, || (!near_dir.exists()).then_some(()));
    assert!(curl(&lab, n1, "two", None, &format!("http://{near_ip}:8080/hostname")).is_none());
    let events = lab
        .kubectl(&[
            "get",
            "events.events.k8s.io",
            "--field-selector",
            "regarding.name=near",
            "-o",
            "jsonpath={range .items[*]}{.reason} {.reportingInstance} {.note}{\"\\n\"}{end}",
        ])
        .unwrap();
    assert!(
        events.contains(&format!("Killing {n1} Stopping container web")),
        "the node's Killing event about near: {events}"
    );

    // A Deployment behind a Service: replicas on both nodes, every one reached through the ClusterIP.
    lab.apply(&app(4));
    let pods = app_serving(&lab, 4);
    let nodes: BTreeSet<&str> = pods.iter().map(|p| p.2.as_str()).collect();
    assert_eq!(
        nodes,
        BTreeSet::from([n1, n2]),
        "replicas spread over both nodes: {pods:?}"
    );
    let app_url = format!("http://{APP_VIP}/hostname");
    let reach_all = |lab: &NodeLab, pods: &[(String, String, String)]| {
        let cgroup = lab.container_cgroup(n1, "two", "web");
        for (path, cg) in [("tc", None), ("socket", Some(cgroup.as_path()))] {
            let mut seen = BTreeSet::new();
            lab.wait(&format!("{app_url} ({path}) reaching {pods:?}"), 60, || {
                if let Some(h) = curl(lab, n1, "two", cg, &app_url) {
                    seen.insert(h);
                }
                pods.iter().all(|p| seen.contains(&p.0)).then_some(())
            });
        }
    };
    reach_all(&lab, &pods);

    // Deleting a replica: a replacement starts and the endpoints follow.
    let (gone, gone_ip, _) = pods[0].clone();
    lab.kubectl(&["delete", "pod", &gone, "--wait=false"]).unwrap();
    let pods = lab.wait("a replacement replica serving", 90, || {
        let pods = app_pods(&lab);
        let ips: BTreeSet<String> = pods.iter().map(|p| p.1.clone()).collect();
        (pods.len() == 4 && pods.iter().all(|p| p.0 != gone) && app_endpoints(&lab) == ips).then_some(pods)
    });
    assert!(
        !app_endpoints(&lab).contains(&gone_ip),
        "{gone_ip} still an endpoint"
    );
    reach_all(&lab, &pods);

    // The apiserver crashes and comes back: the agents reconnect, keep serving, and act on new changes.
    lab.restart_control();
    lab.wait_node_ready(n1);
    lab.wait_node_ready(n2);
    assert_eq!(
        curl(&lab, n1, "two", None, &app_url).map(|h| pods.iter().any(|p| p.0 == h)),
        Some(true),
        "the Service kept answering across the apiserver restart"
    );
    lab.kubectl(&["scale", "deployment/skn-app", "--replicas=5"])
        .unwrap();
    let pods = app_serving(&lab, 5);
    reach_all(&lab, &pods);
}
