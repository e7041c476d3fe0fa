//! Drives a `cargo xtask lab` from a suite: its own name prefix, data dir, ports and address ranges (so suites
//! never touch a developer's lab or each other), kubectl against it, and probes from the lab's client namespace and
//! from inside pods.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

/// One lab instance as a suite configures it.
#[derive(Debug, Clone, Copy)]
pub struct LabUnderTest {
    /// State directory (`--data-dir`).
    pub dir: &'static str,
    /// Prefix of every namespace, link and node name (`skl-`).
    pub prefix: &'static str,
    pub api_port: u16,
    pub kubelet_port: u16,
    pub pod_cidr: &'static str,
    pub service_cidr: &'static str,
    /// Node underlay /24; nodes are .11, .12, ...
    pub underlay: &'static str,
    pub lb_pool: &'static str,
    /// Extra options for every `lab` call (timings).
    pub extra: &'static [&'static str],
}

pub const IMAGE: &str = "registry.k8s.io/e2e-test-images/agnhost:2.53";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn xtask() -> PathBuf {
    let xtask = workspace().join("target/debug/xtask");
    assert!(
        xtask.is_file(),
        "{} is missing: run `cargo build` first",
        xtask.display()
    );
    xtask
}

/// Polls `f` every half second until it returns `Some`, for at most `secs` seconds.
pub fn wait<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
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

/// Command lines of running processes that contain `needle`.
pub fn processes_matching(needle: &str) -> Vec<String> {
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

/// Brings the lab down (and purges it) when dropped, also when the test failed.
pub struct Guard(pub LabUnderTest);

impl Drop for Guard {
    fn drop(&mut self) {
        if Path::new(self.0.dir).join("lab.json").exists() {
            let _ = Command::new(workspace().join("target/debug/xtask"))
                .args(["lab", "down", "--purge", "--data-dir", self.0.dir])
                .status();
        }
    }
}

impl LabUnderTest {
    /// `xtask lab <args>` with this lab's options; panics with the output when it fails.
    pub fn lab(&self, args: &[&str]) -> String {
        let debug = workspace().join("target/debug");
        let out = Command::new(xtask())
            .arg("lab")
            .args(args)
            .args(["--data-dir", self.dir, "--name-prefix", self.prefix])
            .args(["--api-port", &self.api_port.to_string()])
            .args(["--kubelet-port", &self.kubelet_port.to_string()])
            .args(["--pod-cidr", self.pod_cidr, "--service-cidr", self.service_cidr])
            .args(["--underlay", self.underlay, "--lb-pool", self.lb_pool])
            .args(self.extra)
            .arg("--binaries")
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

    /// Starts from a clean slate (a lab left by an earlier failed run is purged) and returns the cleanup guard.
    pub fn fresh(&self) -> Guard {
        if Path::new(self.dir).join("lab.json").exists() {
            self.lab(&["down", "--purge"]);
        }
        Guard(*self)
    }

    pub fn kubeconfig(&self) -> PathBuf {
        Path::new(self.dir).join("kubeconfig")
    }

    /// kubectl (the lab's own v1.35 binary) against the lab: stdout, or stderr as the error.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(Path::new(self.dir).join("bin/kubectl"))
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .output()
            .expect("running kubectl");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    pub fn apply(&self, yaml: &str) {
        let f = Path::new(self.dir).join("test-manifest.yaml");
        std::fs::write(&f, yaml).unwrap();
        self.kubectl(&["apply", "-f", &f.to_string_lossy()])
            .unwrap_or_else(|e| panic!("kubectl apply: {e}\n{yaml}"));
    }

    pub fn jsonpath(&self, what: &[&str], jp: &str) -> String {
        let jp = format!("jsonpath={jp}");
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        args.extend(["-o", &jp]);
        self.kubectl(&args).unwrap_or_default()
    }

    /// `<prefix>node<i>` for i in 1..=n.
    pub fn node_names(&self, n: usize) -> BTreeSet<String> {
        (1..=n).map(|i| format!("{}node{i}", self.prefix)).collect()
    }

    /// The underlay address of node `i` (1-based).
    pub fn node_ip(&self, i: usize) -> String {
        let base = self.underlay.split('/').next().unwrap();
        let head = base.rsplit_once('.').unwrap().0;
        format!("{head}.{}", 10 + i)
    }

    /// Names of the nodes `kubectl get nodes` lists as exactly Ready.
    pub fn ready_nodes(&self) -> BTreeSet<String> {
        self.kubectl(&["get", "nodes", "--no-headers"])
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                (cols.get(1) == Some(&"Ready")).then(|| cols[0].to_string())
            })
            .collect()
    }

    /// The pod's IP once it is Ready.
    pub fn wait_pod_ip(&self, name: &str) -> String {
        self.wait_pod_ip_in("default", name)
    }

    pub fn wait_pod_ip_in(&self, namespace: &str, name: &str) -> String {
        wait(&format!("pod {namespace}/{name} Ready"), 90, || {
            let ready = self.jsonpath(
                &["-n", namespace, "pod", name],
                "{.status.conditions[?(@.type==\"Ready\")].status}",
            );
            let ip = self.jsonpath(&["-n", namespace, "pod", name], "{.status.podIP}");
            (ready == "True" && !ip.is_empty()).then_some(ip)
        })
    }

    /// Where pod `name` (default namespace) runs: its sandbox process and its first container's cgroup.
    pub fn pod_handle(&self, name: &str) -> Option<PodHandle> {
        let uid = self.jsonpath(&["pod", name], "{.metadata.uid}");
        let node = self.jsonpath(&["pod", name], "{.spec.nodeName}");
        let record =
            std::fs::read_to_string(format!("{}/nodes/{node}/pods/{uid}/sandbox.json", self.dir)).ok()?;
        let pid = record
            .split("\"pid\":")
            .nth(1)?
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .to_string();
        let container = self.jsonpath(&["pod", name], "{.spec.containers[0].name}");
        let cgroup = format!("/sys/fs/cgroup/unified/skiff/{node}/pods/pod{uid}/{container}");
        Some(PodHandle { pid, cgroup })
    }

    /// `curl -sf -m 2 URL` from inside pod `name`: the body, or None on failure.
    pub fn curl_from_pod(&self, name: &str, url: &str) -> Option<String> {
        self.pod_handle(name)?.curl(url)
    }

    pub fn client_netns(&self) -> String {
        format!("{}client", self.prefix)
    }

    /// `curl -sf -m 2 URL` from the lab's client namespace (outside the cluster, on the lab bridge).
    pub fn curl_from_client_netns(&self, url: &str) -> Option<String> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.client_netns(),
                "curl",
                "-sf",
                "-m",
                "2",
                url,
            ])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Asserts nothing of the lab is left on the machine (nodes 1..=max_nodes).
    pub fn assert_nothing_left(&self, max_nodes: usize) {
        let netns = String::from_utf8_lossy(
            &Command::new("ip")
                .args(["netns", "list"])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned();
        assert!(!netns.contains(self.prefix), "namespaces left: {netns}");
        let routes = String::from_utf8_lossy(
            &Command::new("ip")
                .args(["-4", "route", "show", "table", "all"])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned();
        for r in [self.pod_cidr, self.service_cidr, self.underlay] {
            assert!(!routes.contains(r), "route for {r} left:\n{routes}");
        }
        for n in self.node_names(max_nodes) {
            let pins = format!("/sys/fs/bpf/skiff/{n}");
            assert!(!Path::new(&pins).exists(), "{pins} left");
            let cg = format!("/sys/fs/cgroup/unified/skiff/{n}");
            assert!(!Path::new(&cg).exists(), "{cg} left");
        }
        let procs = processes_matching(self.dir);
        assert!(procs.is_empty(), "processes left: {procs:?}");
        let pods = processes_matching(&format!("--hostname {}", self.prefix));
        assert!(pods.is_empty(), "pod processes left: {pods:?}");
    }
}

/// A pod's sandbox process and container cgroup, to run commands as a process of the pod.
#[derive(Debug, Clone)]
pub struct PodHandle {
    pid: String,
    cgroup: String,
}

impl PodHandle {
    /// Runs `argv` in the pod's network namespace and container cgroup (so the socket hooks see it).
    pub fn exec(&self, argv: &[&str]) -> Option<std::process::Output> {
        let script = format!("echo $$ > {}/cgroup.procs && exec \"$@\"", self.cgroup);
        Command::new("nsenter")
            .args(["-t", &self.pid, "-n", "--", "sh", "-c", &script, "sh"])
            .args(argv)
            .output()
            .ok()
    }

    /// `curl -sf -m 2 URL`: the body, or None on failure.
    pub fn curl(&self, url: &str) -> Option<String> {
        let out = self.exec(&["curl", "-sf", "-m", "2", url])?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// Requests until every name in `want` answered (bounded).
pub fn reaches_all(what: &str, want: &[&str], mut request: impl FnMut(usize) -> Option<String>) {
    let mut seen = BTreeSet::new();
    let mut i = 0;
    wait(&format!("{what} reaching {want:?}"), 60, || {
        if let Some(h) = request(i) {
            seen.insert(h);
        }
        i += 1;
        want.iter().all(|w| seen.contains(*w)).then_some(())
    });
}
