//! Workloads on a 3-node `cargo xtask lab` (root), driven with the real kubectl: a Deployment behind a ClusterIP
//! scaled 3 -> 6 -> 2 with endpoints and traffic following, a rolling update under constant load with zero failed
//! requests, a stopped node whose pods are evicted and replaced (short lab timings) and which rejoins, a DaemonSet
//! following a node added later, ClientIP session affinity, and externalTrafficPolicy Local on a NodePort keeping
//! the client's source address. Names use the `skw-` prefix and their own ranges and ports.
use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tests::lab_client::{IMAGE, LabUnderTest, PodHandle, reaches_all, wait};

const LAB: LabUnderTest = LabUnderTest {
    dir: "/run/skw-e2e",
    prefix: "skw-",
    api_port: 16444,
    kubelet_port: 20251,
    pod_cidr: "10.243.0.0/16",
    service_cidr: "10.92.0.0/16",
    underlay: "10.91.0.0/24",
    lb_pool: "10.91.0.192/27",
    // A node is Unknown 4 s after its last heartbeat and its pods are evicted 4 s later.
    extra: &["--node-grace-seconds", "4", "--eviction-seconds", "4"],
};
/// The lab's `--node-grace-seconds` and `--eviction-seconds` above.
const NODE_GRACE_SECONDS: u64 = 4;
const EVICTION_SECONDS: u64 = 4;
const VIP: &str = "10.92.0.80";
const AFFINITY_VIP: &str = "10.92.0.81";
const LOCAL_NODE_PORT: u16 = 30082;
/// The client namespace's address on the lab bridge (the lab gives it .250 of the underlay).
const CLIENT_IP: &str = "10.91.0.250";

fn web(replicas: usize) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: default}}
spec:
  replicas: {replicas}
  strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}}}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - name: netexec
        image: {IMAGE}
        args: [netexec, --http-port=8080, --delay-shutdown=3]
        readinessProbe: {{httpGet: {{path: /healthz, port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  clusterIP: {VIP}
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-sticky, namespace: default}}
spec:
  clusterIP: {AFFINITY_VIP}
  sessionAffinity: ClientIP
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: default}}
spec:
  nodeName: skw-node1
  containers: [{{name: main, image: {IMAGE}, args: [pause]}}]
"#
    )
}

const DAEMONSET: &str = r#"apiVersion: apps/v1
kind: DaemonSet
metadata: {name: local, namespace: default}
spec:
  selector: {matchLabels: {app: local}}
  template:
    metadata: {labels: {app: local}}
    spec:
      containers:
      - name: netexec
        image: registry.k8s.io/e2e-test-images/agnhost:2.53
        args: [netexec, --http-port=8080]
        readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: local, namespace: default}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {app: local}
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30082}]
"#;

fn kubectl(args: &[&str]) -> String {
    LAB.kubectl(args)
        .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
}

/// Ready endpoint addresses of a Service, from its EndpointSlices.
fn ready_endpoints(service: &str) -> BTreeSet<String> {
    let out = LAB.jsonpath(
        &[
            "endpointslices",
            "-l",
            &format!("kubernetes.io/service-name={service}"),
        ],
        "{range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]}{\"\\n\"}{end}",
    );
    out.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

/// Names and IPs of the Ready, not terminating pods with label `app`.
fn ready_pods(app: &str) -> Vec<(String, String, String)> {
    let out = LAB.jsonpath(
        &["pods", "-l", &format!("app={app}")],
        "{range .items[*]}{.metadata.name} {.status.podIP} {.spec.nodeName} {.metadata.deletionTimestamp} \
         {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
    );
    out.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            // name ip node True (a deletionTimestamp would add a column)
            (cols.len() == 4 && cols[3] == "True")
                .then(|| (cols[0].to_owned(), cols[1].to_owned(), cols[2].to_owned()))
        })
        .collect()
}

/// Waits until `want` pods of the Deployment are Ready and exactly their IPs are the Service's ready endpoints.
fn wait_serving(want: usize) -> Vec<(String, String, String)> {
    wait(
        &format!("{want} web pods Ready and in the EndpointSlices"),
        120,
        || {
            let pods = ready_pods("web");
            let ips: BTreeSet<String> = pods.iter().map(|p| p.1.clone()).collect();
            (pods.len() == want && ready_endpoints("web") == ips).then_some(pods)
        },
    )
}

fn get_from_client(url: &str) -> Option<String> {
    client().curl(url)
}

fn client() -> PodHandle {
    // Retried: one kubectl call behind the handle may fail while the apiserver is busy.
    wait("the client pod's sandbox", 30, || LAB.pod_handle("client"))
}

fn assert_traffic_reaches_exactly(pods: &[(String, String, String)]) {
    let names: Vec<&str> = pods.iter().map(|p| p.0.as_str()).collect();
    reaches_all("the ClusterIP from the client pod", &names, |_| {
        get_from_client(&format!("http://{VIP}/hostname"))
    });
    for _ in 0..20 {
        let answer = get_from_client(&format!("http://{VIP}/hostname"))
            .expect("a request through the ClusterIP failed");
        assert!(
            names.contains(&answer.as_str()),
            "{answer} answered; serving pods are {names:?}"
        );
    }
}

/// Constant load on the ClusterIP from the client pod (one request at a time), counting answers and failures.
struct Load {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<LoadFigures>,
}

/// What a [`Load`] saw.
#[derive(Debug)]
struct LoadFigures {
    ok: usize,
    failed: usize,
    /// When the last failed request ended.
    last_failure: Option<Instant>,
    /// Every answer (pod name) and when it came.
    answers: Vec<(Instant, String)>,
}

impl Load {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let client = client();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut f = LoadFigures {
                ok: 0,
                failed: 0,
                last_failure: None,
                answers: Vec::new(),
            };
            // Bounded: every step below has its own timeout; 6000 requests is far more than they need.
            for _ in 0..6000 {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                match client.curl(&format!("http://{VIP}/hostname")) {
                    Some(name) => {
                        f.ok += 1;
                        f.answers.push((Instant::now(), name));
                    }
                    None => {
                        f.failed += 1;
                        f.last_failure = Some(Instant::now());
                    }
                }
            }
            f
        });
        Self { stop, thread }
    }

    fn finish(self) -> LoadFigures {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// The client pod's ServiceAccount files as its container sees them: (token, ca.crt, namespace).
fn client_service_account_files() -> (String, String, String) {
    let uid = LAB.jsonpath(&["pod", "client"], "{.metadata.uid}");
    let run = format!(
        "{}/nodes/skw-node1/pods/{uid}/containers/main/run-0.json",
        LAB.dir
    );
    let run: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&run).unwrap()).unwrap();
    let pid = run["pid"].as_u64().unwrap().to_string();
    let read = |f: &str| {
        let path = format!("/var/run/secrets/kubernetes.io/serviceaccount/{f}");
        let out = std::process::Command::new("nsenter")
            .args(["-t", &pid, "-m", "--", "cat", &path])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{path} in the client pod: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let host = format!(
        "{}/nodes/skw-node1/pods/{uid}/volumes/kube-api-access/token",
        LAB.dir
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&host).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{host} is {mode:o}");
    (read("token"), read("ca.crt"), read("namespace"))
}

/// `kubectl auth whoami` with only a bearer token and a CA file (no kubeconfig credentials).
fn whoami_with_token(token: &str, ca: &str) -> Result<String, String> {
    let ca_file = format!("{}/client-ca.crt", LAB.dir);
    std::fs::write(&ca_file, ca).unwrap();
    let out = std::process::Command::new(format!("{}/bin/kubectl", LAB.dir))
        .args([
            "--kubeconfig",
            "/dev/null",
            "--server",
            &format!("https://127.0.0.1:{}", LAB.api_port),
        ])
        .args(["--certificate-authority", &ca_file, "--token", token])
        .args(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn workloads_follow_scaling_rollouts_node_loss_and_node_joins() {
    let _guard = LAB.fresh();
    LAB.lab(&["up", "--nodes", "3"]);
    assert_eq!(LAB.ready_nodes(), LAB.node_names(3));

    // Deploy 3, scale to 6: endpoints and traffic follow.
    LAB.apply(&web(3));
    LAB.wait_pod_ip("client");
    // The client pod got its ServiceAccount token like kubelet projects it, and it authenticates as the account.
    let (token, ca, namespace) = client_service_account_files();
    assert_eq!(namespace, "default");
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "ca.crt: {ca}");
    assert_eq!(
        whoami_with_token(&token, &ca).as_deref(),
        Ok("system:serviceaccount:default:default")
    );
    let pods = wait_serving(3);
    assert_traffic_reaches_exactly(&pods);
    let out = kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    kubectl(&["scale", "deployment/web", "--replicas=6"]);
    let pods = wait_serving(6);
    let nodes: BTreeSet<&str> = pods.iter().map(|p| p.2.as_str()).collect();
    assert_eq!(nodes.len(), 3, "6 replicas spread over every node: {pods:?}");
    assert_traffic_reaches_exactly(&pods);
    let line = kubectl(&["get", "deployment", "web", "--no-headers"]);
    assert!(line.split_whitespace().nth(1) == Some("6/6"), "{line}");

    // Session affinity: one client sticks to one backend.
    let first =
        get_from_client(&format!("http://{AFFINITY_VIP}/hostname")).expect("the sticky Service answers");
    for _ in 0..10 {
        assert_eq!(
            get_from_client(&format!("http://{AFFINITY_VIP}/hostname")).as_deref(),
            Some(first.as_str())
        );
    }

    // Rolling update under constant load: zero failed requests.
    let load = Load::start();
    std::thread::sleep(Duration::from_secs(1));
    kubectl(&["set", "env", "deployment/web", "ROLLOUT=2"]);
    let out = kubectl(&["rollout", "status", "deployment/web", "--timeout=180s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    std::thread::sleep(Duration::from_secs(1));
    let LoadFigures { ok, failed, .. } = load.finish();
    println!("rolling update under load: {ok} requests succeeded, {failed} failed");
    assert!(ok > 20, "too few requests during the rollout: {ok}");
    assert_eq!(
        failed, 0,
        "requests failed during the rolling update ({ok} succeeded)"
    );
    let pods = wait_serving(6);
    assert_traffic_reaches_exactly(&pods);

    // Node loss: node3's pods are evicted and replaced elsewhere; traffic recovers; the node rejoins.
    let on_node3: Vec<String> = pods
        .iter()
        .filter(|p| p.2 == "skw-node3")
        .map(|p| p.0.clone())
        .collect();
    assert!(!on_node3.is_empty(), "no web pod on skw-node3: {pods:?}");
    let node3_ips: BTreeSet<String> = pods
        .iter()
        .filter(|p| p.2 == "skw-node3")
        .map(|p| p.1.clone())
        .collect();
    let load = Load::start();
    LAB.lab(&["stop-node", "skw-node3"]);
    let started = Instant::now();
    let mut endpoints_gone = None;
    let pods = wait(&format!("replacements for {on_node3:?}"), 90, || {
        let pods = ready_pods("web");
        let ips: BTreeSet<String> = pods.iter().map(|p| p.1.clone()).collect();
        let endpoints = ready_endpoints("web");
        if endpoints_gone.is_none() && endpoints.is_disjoint(&node3_ips) {
            endpoints_gone = Some(Instant::now());
        }
        (pods.len() == 6 && pods.iter().all(|p| p.2 != "skw-node3") && endpoints == ips).then_some(pods)
    });
    let replaced = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let figures = load.finish();
    // Traffic has recovered when the last failed request is behind us; the bound is the lab's node grace plus its
    // eviction delay plus 10 s.
    let recovery = figures.last_failure.map_or(Duration::ZERO, |t| t - started);
    let bound = Duration::from_secs(NODE_GRACE_SECONDS + EVICTION_SECONDS + 10);
    println!(
        "node loss: {} requests succeeded, {} failed; traffic recovered after {:.1} s (bound {} s); 6 serving \
         replicas off skw-node3 after {:.1} s",
        figures.ok,
        figures.failed,
        recovery.as_secs_f64(),
        bound.as_secs(),
        replaced.as_secs_f64()
    );
    assert!(recovery <= bound, "traffic recovered only after {recovery:?}");
    // No answer from the lost node's pods once their endpoints were removed (plus two seconds for the agents).
    if let Some(gone) = endpoints_gone {
        let late: Vec<&(Instant, String)> = figures
            .answers
            .iter()
            .filter(|(t, name)| *t > gone + Duration::from_secs(2) && on_node3.contains(name))
            .collect();
        assert!(
            late.is_empty(),
            "answers from skw-node3's pods after their endpoints went: {late:?}"
        );
    }
    let taints = LAB.jsonpath(&["node", "skw-node3"], "{.spec.taints[*].key}");
    assert!(
        taints.contains("node.kubernetes.io/unreachable"),
        "taints of skw-node3: {taints}"
    );
    assert_traffic_reaches_exactly(&pods);
    let started = LAB.lab(&["start-node", "skw-node3"]);
    assert!(started.contains("node Ready ... skw-node3"), "{started}");
    wait("the evicted pods to be finished by skw-node3's agent", 60, || {
        let left = LAB.jsonpath(
            &[
                "pods",
                "-l",
                "app=web",
                "--field-selector",
                "spec.nodeName=skw-node3",
            ],
            "{.items[*].metadata.name}",
        );
        on_node3.iter().all(|p| !left.contains(p.as_str())).then_some(())
    });
    let taints = LAB.jsonpath(&["node", "skw-node3"], "{.spec.taints[*].key}");
    assert!(
        !taints.contains("unreachable"),
        "skw-node3 still tainted: {taints}"
    );

    // Scale down 6 -> 2 under constant load: zero failed requests; then only the two left answer.
    let load = Load::start();
    std::thread::sleep(Duration::from_secs(1));
    let t = Instant::now();
    kubectl(&["scale", "deployment/web", "--replicas=2"]);
    let pods = wait_serving(2);
    wait("the scaled-down pods to be gone", 60, || {
        (LAB.jsonpath(&["pods", "-l", "app=web"], "{.items[*].metadata.name}")
            .split_whitespace()
            .count()
            == 2)
            .then_some(())
    });
    let took = t.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let LoadFigures { ok, failed, .. } = load.finish();
    println!(
        "scale-down 6 -> 2 under load: {ok} requests succeeded, {failed} failed ({:.1} s until 2 pods were left)",
        took.as_secs_f64()
    );
    assert!(ok > 20, "too few requests during the scale-down: {ok}");
    assert_eq!(
        failed, 0,
        "requests failed during the scale-down ({ok} succeeded)"
    );
    assert_traffic_reaches_exactly(&pods);

    // A DaemonSet: one pod per node, also on a node added later; Local NodePort keeps the client address.
    LAB.apply(DAEMONSET);
    let per_node = |n: usize| {
        wait(&format!("{n} DaemonSet pods Ready"), 90, || {
            let pods = ready_pods("local");
            let nodes: BTreeSet<String> = pods.iter().map(|p| p.2.clone()).collect();
            (pods.len() == n && nodes == LAB.node_names(n)).then_some(pods)
        })
    };
    per_node(3);
    LAB.lab(&["add-node"]);
    let pods = per_node(4);
    let line = kubectl(&["get", "daemonset", "local", "--no-headers"]);
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cols[1..4], ["4", "4", "4"], "{line}");
    let on_node1 = pods.iter().find(|p| p.2 == "skw-node1").unwrap().0.clone();
    let url = |path: &str| format!("http://{}:{LOCAL_NODE_PORT}/{path}", LAB.node_ip(1));
    wait("the Local NodePort to answer", 30, || {
        LAB.curl_from_client_netns(&url("hostname"))
    });
    for _ in 0..10 {
        assert_eq!(
            LAB.curl_from_client_netns(&url("hostname")).as_deref(),
            Some(on_node1.as_str())
        );
    }
    let client = LAB
        .curl_from_client_netns(&url("clientip"))
        .expect("clientip answers");
    assert!(
        client.starts_with(&format!("{CLIENT_IP}:")),
        "the pod saw {client}, not the client address"
    );

    // The client pod's token dies with the pod.
    kubectl(&["delete", "pod", "client", "--wait=true", "--timeout=60s"]);
    let refused = wait("the deleted pod's token to be refused", 20, || {
        whoami_with_token(&token, &ca).err()
    });
    assert!(
        refused.contains("Unauthorized") || refused.contains("must be logged in"),
        "{refused}"
    );
    println!(
        "ServiceAccount token: authenticated as system:serviceaccount:default:default; refused after the pod was deleted"
    );

    LAB.lab(&["down", "--purge"]);
    LAB.assert_nothing_left(4);
}
