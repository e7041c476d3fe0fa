//! Pod runtime end to end (root): pods in a throwaway node namespace `skiff-podtest-<pid>`, attached with a veth,
//! running the built-in agnhost and host commands. Everything created is removed by name, also on failure.
//!
//! Run with `cargo build -p agent && cargo test -p tests --test pods_runtime -- --test-threads=1`.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use skiff_agent::{
    net::{
        cidr::Ipv4Cidr,
        ipam::IpamStore,
        names,
        nl::Netns,
        node_routes,
        routes::NodeRoute,
        veth::{self, PodNetSpec},
    },
    pods::{
        backoff::BackoffConfig,
        logs,
        plan::{PodContext, RuntimePlan, SERVICE_ACCOUNT_MOUNT, SERVICE_ACCOUNT_VOLUME, plan},
        runtime::{PodHandle, PodRuntime, RuntimeConfig},
        sa_token,
        status::{PodView, State},
    },
};
use tests::{
    cluster::agent::agent_bin,
    netns::{self, Netns as TestNetns, try_run},
};

const POD_CIDR: &str = "10.244.77.0/24";

/// A state directory (and cgroup root) for one test, removed when dropped.
struct Scratch {
    dir: PathBuf,
    cgroup: PathBuf,
}

impl Scratch {
    fn new(tag: &str) -> Self {
        let name = format!("skiff-podtest-{}-{tag}", std::process::id());
        let dir = PathBuf::from("/run").join(&name);
        let cgroup = Path::new("/sys/fs/cgroup/unified").join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir, cgroup }
    }

    fn config(&self, node: &str) -> RuntimeConfig {
        RuntimeConfig {
            node_name: node.into(),
            state_root: self.dir.join("pods"),
            agent_exe: agent_bin(),
            cgroup_root: Some(self.cgroup.join("pods")),
            backoff: BackoffConfig::default(),
            poll: Duration::from_millis(100),
            log_max_bytes: 1 << 20,
            log_keep: 2,
            cluster_ca: None,
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Kill whatever a failed test left running from this state directory (by recorded pid), then remove it.
        let runtime = PodRuntime::new(self.config("cleanup"));
        if let Ok(entries) = std::fs::read_dir(self.dir.join("pods")) {
            for e in entries.flatten() {
                let uid = e.file_name().to_string_lossy().into_owned();
                if let Err(e) = runtime.remove_uid(&uid) {
                    eprintln!("could not remove pod {uid}: {e}");
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        for d in [self.cgroup.join("pods")] {
            if let Ok(pods) = std::fs::read_dir(&d) {
                for p in pods.flatten() {
                    if let Ok(cs) = std::fs::read_dir(p.path()) {
                        for c in cs.flatten().filter(|c| c.path().is_dir()) {
                            let _ = std::fs::remove_dir(c.path());
                        }
                    }
                    let _ = std::fs::remove_dir(p.path());
                }
            }
            let _ = std::fs::remove_dir(&d);
        }
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

fn pod(yaml: &str) -> Pod {
    serde_yaml::from_str(yaml).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Waits (bounded) until `cond` holds for the pod's status.
async fn wait_status(h: &PodHandle, what: &str, secs: u64, cond: impl Fn(&PodView) -> bool) -> PodView {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = h.status();
        if cond(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; status: {v:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn exit_of(v: &PodView, name: &str) -> (i32, Option<i32>) {
    match &v.container(name).unwrap().state {
        State::Terminated {
            exit_code, signal, ..
        } => (*exit_code, *signal),
        other => panic!("{name} is not terminated: {other:?}"),
    }
}

/// Runs `script` with `sh -c` inside container `name` of pod `uid` (`__enter-pod exec`, as exec probes and
/// `kubectl exec` do); its stdout, trimmed.
fn in_container(runtime: &PodRuntime, uid: &str, name: &str, script: &str) -> String {
    let run = std::fs::read_to_string(runtime.pod_dir(uid).run_file(name, 0)).unwrap();
    let run: serde_json::Value = serde_json::from_str(&run).unwrap();
    let pid = run["pid"].as_u64().unwrap().to_string();
    let out = std::process::Command::new(agent_bin())
        .args(["__enter-pod", "exec", "--pid", &pid, "--", "sh", "-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "exec {script:?} in {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Every container sees the ServiceAccount files read-only at kubelet's path, a rewrite of the token shows
/// through, and each container has its own pid namespace: its process is pid 1 and it sees no other process.
fn check_token_mount_and_pid_namespace(runtime: &PodRuntime, uid: &str, token_dir: &Path) {
    let dir = SERVICE_ACCOUNT_MOUNT;
    for c in ["web", "sidecar", "stubborn"] {
        assert_eq!(
            in_container(runtime, uid, c, &format!("cat {dir}/token")),
            "token-1"
        );
        assert_eq!(
            in_container(runtime, uid, c, &format!("cat {dir}/namespace")),
            "lab"
        );
        let write = in_container(
            runtime,
            uid,
            c,
            &format!("touch {dir}/x 2>/dev/null && echo rw || echo ro"),
        );
        assert_eq!(write, "ro", "the token volume is read-only in {c}");
    }
    sa_token::write_volume(token_dir, "token-2", b"CA", "lab").unwrap();
    assert_eq!(
        in_container(runtime, uid, "web", &format!("cat {dir}/token")),
        "token-2"
    );

    let first = in_container(runtime, uid, "sidecar", "tr '\\0' ' ' < /proc/1/cmdline");
    assert!(
        first.starts_with("sh -c until curl") || first.starts_with("sleep 1000"),
        "pid 1 is {first:?}"
    );
    let web_first = in_container(runtime, uid, "web", "tr '\\0' ' ' < /proc/1/cmdline");
    assert!(web_first.contains("netexec"), "pid 1 of web is {web_first:?}");
    // Only pid 1, this shell and its pipeline: nothing of the host or of the other containers.
    let pids = in_container(
        runtime,
        uid,
        "web",
        "ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' '",
    );
    let pids: Vec<u32> = pids.split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert!(
        pids.contains(&1) && pids.len() <= 6,
        "processes visible in web: {pids:?}"
    );
    let all = in_container(runtime, uid, "web", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '");
    assert!(
        !all.contains("trap"),
        "web sees the stubborn container's processes: {all}"
    );
}

#[test]
fn two_containers_share_localhost_and_an_emptydir_reachable_from_the_node() {
    netns::sweep(&format!("skiff-podtest-{}", std::process::id()));
    let node_name = format!("skiff-podtest-{}", std::process::id());
    let node = TestNetns::create(&node_name);
    let scratch = Scratch::new("share");
    let share = format!("/run/skiff-podtest-{}-mnt/share", std::process::id());
    let cfg = scratch.config(&node_name);
    let runtime = PodRuntime::new(cfg.clone());
    let uid = format!("skiff-podtest-uid-{}", std::process::id());

    let cidr: Ipv4Cidr = POD_CIDR.parse().unwrap();
    let ipam = IpamStore::new(scratch.dir.join("ipam.json"));
    let (pod_ip, gateway) = ipam
        .update(cidr, |i| Ok((i.allocate(&uid)?, i.gateway())))
        .unwrap();
    let spec = pod(&format!(
        r#"
metadata: {{name: web-0, namespace: lab, uid: {uid}}}
spec:
  terminationGracePeriodSeconds: 2
  volumes: [{{name: share, emptyDir: {{}}}}]
  containers:
  - name: web
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: [netexec, --http-port=8080, --udp-port=8081]
    readinessProbe: {{httpGet: {{path: /healthz, port: 8080}}, periodSeconds: 1}}
  - name: sidecar
    image: busybox
    command: [sh, -c, 'until curl -sf http://127.0.0.1:8080/hostname > {share}/seen; do sleep 0.2; done; echo "$(MSG)"; exec sleep 1000']
    env:
    - {{name: POD, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: NODE, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}
    - {{name: MSG, value: "pod $(POD) on $(NODE)"}}
    volumeMounts: [{{name: share, mountPath: {share}}}]
  - name: stubborn
    image: busybox
    command: [sh, -c, "trap '' TERM; while true; do sleep 0.2; done"]
"#
    ));
    let ctx = PodContext {
        node_name: node_name.clone(),
        pod_ip: Some(pod_ip),
        agent_exe: cfg.agent_exe.clone(),
        service_account_automount: None,
    };
    let plan: RuntimePlan = plan(&spec, &ctx).unwrap();
    let node_ns = Netns::named(&node_name);
    let host_veth = names::host_veth(&uid);

    rt().block_on(async {
        let sandbox = runtime.create_sandbox(&plan).unwrap();
        veth::attach(
            &node_ns,
            &PodNetSpec {
                uid: uid.clone(),
                pod_netns: sandbox.netns_path(),
                pod_ip,
                gateway,
                mtu: None,
            },
        )
        .unwrap();
        // What the node writes before the containers start (the token volume is the runtime's, the TokenRequest
        // the node's).
        let token_dir = runtime.pod_dir(&uid).volume(SERVICE_ACCOUNT_VOLUME);
        sa_token::write_volume(&token_dir, "token-1", b"CA", "lab").unwrap();
        let h = runtime.run(plan.clone(), sandbox, Some(pod_ip));
        let v = wait_status(&h, "a ready pod", 30, PodView::ready).await;
        assert_eq!(v.phase.as_str(), "Running");
        check_token_mount_and_pid_namespace(&runtime, &uid, &token_dir);

        // The sidecar reached netexec over the pod's localhost and wrote through the shared emptyDir.
        let seen = runtime.pod_dir(&uid).volume("share").join("seen");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !seen.exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(std::fs::read_to_string(&seen).unwrap(), "web-0");
        let log = logs::read(&runtime.pod_dir(&uid).log_file("sidecar", 0), None).unwrap();
        assert_eq!(log.trim(), format!("pod web-0 on {node_name}"));

        // netexec is reachable from the node namespace on the pod IP; the node side speaks from the gateway.
        let url = |p: &str| format!("http://{pod_ip}:8080{p}");
        let curl = |u: String| try_run(&mut netns::in_ns(&node_name, &["curl", "-sS", "-m", "5", &u]));
        assert_eq!(curl(url("/hostname")).unwrap(), "web-0");
        assert!(
            curl(url("/clientip"))
                .unwrap()
                .starts_with(&format!("{gateway}:"))
        );
        let udp = try_run(&mut netns::in_ns(
            &node_name,
            &[
                "sh",
                "-c",
                &format!("echo 'echo udp-ok' | socat -t2 - UDP:{pod_ip}:8081"),
            ],
        ))
        .unwrap();
        assert_eq!(udp.trim(), "udp-ok");

        // Routes to other nodes' podCIDRs are installed and removed again (only Skiff's own routes are touched).
        let other = NodeRoute {
            dst: "10.244.78.0/24".parse().unwrap(),
            via: pod_ip,
        };
        assert_eq!(
            node_routes::sync(&node_ns, &[other]).unwrap(),
            (vec![other], vec![])
        );
        assert_eq!(node_routes::installed(&node_ns).unwrap(), vec![other]);
        let shown = netns::exec(&node_name, &["ip", "route", "show", "10.244.78.0/24"]);
        assert!(shown.contains(&format!("via {pod_ip}")), "{shown}");
        assert_eq!(node_routes::sync(&node_ns, &[]).unwrap(), (vec![], vec![other]));
        assert!(node_routes::installed(&node_ns).unwrap().is_empty());

        // An agent restart: the worker goes away, the containers keep running and are re-adopted.
        let (plan, _) = h.detach();
        let (live, dead) = runtime.adoptable();
        assert!(dead.is_empty(), "dead pods after detach: {dead:?}");
        let (adopted_plan, adopted_sb) = live
            .into_iter()
            .find(|(p, _)| p.uid == uid)
            .expect("pod is adoptable");
        assert_eq!(adopted_plan, plan);
        let h = runtime.run(adopted_plan, adopted_sb, Some(pod_ip));
        let v = wait_status(&h, "the re-adopted pod ready", 15, PodView::ready).await;
        // Exec into a re-adopted container still lands in its namespaces.
        let first = in_container(&runtime, &uid, "sidecar", "tr '\\0' ' ' < /proc/1/cmdline");
        assert!(
            first.starts_with("sleep 1000"),
            "pid 1 of the re-adopted sidecar is {first:?}"
        );
        assert!(
            v.containers.iter().all(|c| c.restart_count == 0),
            "re-adoption restarted something: {v:#?}"
        );
        assert_eq!(curl(url("/hostname")).unwrap(), "web-0");

        // Graceful stop: netexec exits on SIGTERM; the container ignoring SIGTERM is killed after the grace period.
        let t = Instant::now();
        let (plan, sandbox, v) = h.stop(None).await;
        let took = t.elapsed();
        assert_eq!(exit_of(&v, "web"), (0, None), "netexec stops cleanly on SIGTERM");
        assert_eq!(exit_of(&v, "stubborn"), (137, Some(9)), "{v:#?}");
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(10),
            "stop took {took:?}"
        );

        assert!(veth::detach(&node_ns, &uid).unwrap(), "the host veth existed");
        runtime.remove(&plan, &sandbox).unwrap();
        ipam.update(cidr, |i| Ok(i.release(&uid))).unwrap();
    });
    // Everything is gone: veth, state, mount point, cgroups.
    let links = netns::exec(&node_name, &["ip", "-o", "link"]);
    assert!(!links.contains(&host_veth), "{host_veth} left behind: {links}");
    assert!(!runtime.pod_dir(&uid).path().exists());
    assert!(!Path::new(&share).exists(), "mount point {share} left behind");
    assert!(!scratch.cgroup.join("pods").join(format!("pod{uid}")).exists());
    let _ = std::fs::remove_dir(Path::new(&share).parent().unwrap());
    drop(node);
}

#[test]
fn crashing_container_restarts_with_backoff_and_unrunnable_images_wait() {
    let scratch = Scratch::new("crash");
    let mut cfg = scratch.config("skiff-podtest-node");
    cfg.backoff = BackoffConfig {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(4),
        reset_after: Duration::from_secs(600),
    };
    let runtime = PodRuntime::new(cfg.clone());
    let uid = format!("skiff-podtest-crash-{}", std::process::id());
    let spec = pod(&format!(
        r#"
metadata: {{name: crasher, uid: {uid}}}
spec:
  terminationGracePeriodSeconds: 1
  initContainers:
  - {{name: init, image: busybox, command: [sh, -c, "echo init done"]}}
  containers:
  - {{name: crash, image: busybox, command: [sh, -c, "echo attempt; exit 3"]}}
  - {{name: missing, image: example.com/not-built-in:1}}
"#
    ));
    let ctx = PodContext {
        node_name: "skiff-podtest-node".into(),
        pod_ip: None::<Ipv4Addr>,
        agent_exe: cfg.agent_exe.clone(),
        service_account_automount: None,
    };
    let plan = plan(&spec, &ctx).unwrap();
    rt().block_on(async {
        let sandbox = runtime.create_sandbox(&plan).unwrap();
        let h = runtime.run(plan.clone(), sandbox, None);
        let mut restarts = vec![];
        let mut rx = h.subscribe();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = 0;
        while restarts.len() < 2 {
            assert!(Instant::now() < deadline, "no 2 restarts in time: {:#?}", h.status());
            let _ = tokio::time::timeout(Duration::from_secs(1), rx.changed()).await;
            let count = rx.borrow().container("crash").unwrap().restart_count;
            if count != last {
                restarts.push(Instant::now());
                last = count;
            }
        }
        let gap = restarts[1] - restarts[0];
        assert!(gap >= Duration::from_millis(1800), "second back-off was only {gap:?}");
        let v = wait_status(&h, "CrashLoopBackOff", 10, |v| {
            matches!(&v.container("crash").unwrap().state, State::Waiting { reason, .. } if reason == "CrashLoopBackOff")
        })
        .await;
        let crash = v.container("crash").unwrap();
        assert!(
            matches!(&crash.last_state, Some(State::Terminated { exit_code: 3, reason, .. }) if reason == "Error"),
            "{crash:#?}"
        );
        assert_eq!(v.phase.as_str(), "Running");
        assert!(v.initialized);
        assert!(matches!(&v.init_containers[0].state, State::Terminated { exit_code: 0, reason, .. } if reason == "Completed"));
        match &v.container("missing").unwrap().state {
            State::Waiting { reason, message } => {
                assert_eq!(reason, "ErrImagePull");
                assert!(message.contains("example.com/not-built-in:1"), "{message}");
            }
            other => panic!("missing image is {other:?}"),
        }
        let dir = runtime.pod_dir(&uid);
        // The latest run's log, and the one before it (`--previous`); older runs' logs are pruned.
        let n = crash.restart_count as u32;
        assert_eq!(logs::read(&dir.log_file("crash", n), None).unwrap(), "attempt\n");
        assert_eq!(logs::read(&dir.log_file("crash", n - 1), None).unwrap(), "attempt\n");
        assert!(!dir.log_file("crash", n - 2).exists());
        assert_eq!(logs::read(&dir.log_file("init", 0), None).unwrap(), "init done\n");
        let (plan, sandbox, _) = h.stop(None).await;
        runtime.remove(&plan, &sandbox).unwrap();
        assert!(!dir.path().exists());
    });
}
