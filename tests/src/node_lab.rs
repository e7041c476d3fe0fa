//! A lab cluster for the node suite: skiff-control on loopback and two `skiff-agent node` processes, their nodes
//! being `skn-node1`/`skn-node2` on a bridge inside `skn-wire`. Everything is removed by name on drop.
//!
//! ```text
//!  skn-node1 eth0 10.98.0.11 ──┐
//!  skn-node2 eth0 10.98.0.12 ──┴── br0 in skn-wire
//!  podCIDRs 10.245.1.0/24 and 10.245.2.0/24; the agents' kubelet endpoints (HTTPS) on 127.0.0.1 (host namespace)
//! ```
//! Each agent runs with its own node kubeconfig (`system:node:<name>`), so node restriction applies to it.
use std::{
    fs::{File, TryLockError},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use crate::{
    cluster::agent::agent_bin,
    k8s_tools,
    netns::{self, Netns, Proc, exec, ip, try_run, wait_for},
};

pub const PREFIX: &str = "skn-";
pub const WIRE: &str = "skn-wire";
const LOCK_FILE: &str = "/run/skn-e2e.lock";
const CGROUP2: &str = "/sys/fs/cgroup/unified";

/// A node of the lab.
#[derive(Debug, Clone, Copy)]
pub struct LabNode {
    pub name: &'static str,
    pub ip: &'static str,
    pub pod_cidr: &'static str,
}

pub const NODES: [LabNode; 2] = [
    LabNode {
        name: "skn-node1",
        ip: "10.98.0.11",
        pod_cidr: "10.245.1.0/24",
    },
    LabNode {
        name: "skn-node2",
        ip: "10.98.0.12",
        pod_cidr: "10.245.2.0/24",
    },
];

fn control_bin() -> PathBuf {
    std::env::var_os("SKIFF_CONTROL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/skiff-control"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn spawn_control(dir: &Path, kubeconfig: &Path, port: u16) -> Proc {
    let log = File::options()
        .create(true)
        .append(true)
        .open(dir.join("control.log"))
        .expect("control log");
    Proc::spawn(
        Command::new(control_bin())
            .args(["--data-dir"])
            .arg(dir.join("control"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--kubeconfig-out"])
            .arg(kubeconfig)
            .stdout(Stdio::null())
            .stderr(log),
        "skiff-control",
    )
}

/// The running lab. Fields drop in order: pods are deleted, agents and control stopped, then state, pins,
/// cgroups and namespaces are removed.
pub struct NodeLab {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    agents: Vec<(LabNode, Option<Proc>)>,
    control: Option<Proc>,
    control_port: u16,
    namespaces: Vec<Netns>,
    _lock: File,
}

impl NodeLab {
    /// Builds the network, starts skiff-control and both agents, and waits until both nodes are Ready.
    pub fn start() -> NodeLab {
        let lock = lock();
        sweep();
        let dir = PathBuf::from(format!("/run/skn-e2e-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the lab directory");
        let mut namespaces = vec![Netns::create(WIRE)];
        ip(&["-n", WIRE, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", WIRE, "link", "set", "br0", "up"]);
        for n in NODES {
            namespaces.push(Netns::create(n.name));
            let peer = format!("skn-w-{}", &n.name[4..]);
            ip(&[
                "link", "add", "eth0", "netns", n.name, "type", "veth", "peer", "name", &peer, "netns", WIRE,
            ]);
            ip(&["-n", WIRE, "link", "set", &peer, "master", "br0", "up"]);
            ip(&[
                "-n",
                n.name,
                "addr",
                "add",
                &format!("{}/24", n.ip),
                "dev",
                "eth0",
            ]);
            ip(&["-n", n.name, "link", "set", "eth0", "up"]);
            exec(n.name, &["ethtool", "-K", "eth0", "tx", "off"]);
        }
        let kubeconfig = dir.join("kubeconfig");
        let port = free_port();
        let control = spawn_control(&dir, &kubeconfig, port);
        let mut lab = NodeLab {
            dir,
            kubeconfig,
            agents: Vec::new(),
            control: Some(control),
            control_port: port,
            namespaces,
            _lock: lock,
        };
        lab.wait_control_ready();
        for n in NODES {
            let p = lab.spawn_agent(n);
            lab.agents.push((n, Some(p)));
        }
        for n in NODES {
            lab.wait_node_ready(n.name);
        }
        lab
    }

    fn wait_control_ready(&self) {
        let up = wait_for(Duration::from_secs(30), || {
            (self.kubeconfig.exists() && self.kubectl(&["get", "--raw", "/readyz"]).is_ok()).then_some(())
        });
        assert!(
            up.is_some(),
            "skiff-control did not come up:\n{}",
            self.log("control.log")
        );
    }

    /// Kills skiff-control (SIGKILL, like a crash) and starts it again on the same port and data.
    pub fn restart_control(&mut self) {
        if let Some(mut p) = self.control.take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        self.control = Some(spawn_control(&self.dir, &self.kubeconfig, self.control_port));
        self.wait_control_ready();
    }

    /// Node `node`'s own kubeconfig (`system:node:<node>` in `system:nodes`), which its agent runs with.
    pub fn node_kubeconfig(&self, node: &str) -> PathBuf {
        self.dir.join(format!("{node}.kubeconfig"))
    }

    /// The command line of `node`'s running agent (from /proc).
    pub fn agent_command_line(&self, node: &str) -> Vec<String> {
        let (_, p) = self
            .agents
            .iter()
            .find(|(n, _)| n.name == node)
            .unwrap_or_else(|| panic!("no agent for {node}"));
        let pid = p.as_ref().expect("the agent is running").child.id();
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    /// Issues a client-certificate kubeconfig for `user` in `groups` with `skiff-control kubeconfig`.
    pub fn issue_kubeconfig(&self, user: &str, groups: &[&str], out: &Path) {
        let mut cmd = Command::new(control_bin());
        cmd.arg("kubeconfig")
            .arg("--data-dir")
            .arg(self.dir.join("control"))
            .args([
                "--server",
                &format!("https://127.0.0.1:{}", self.control_port),
                "--user",
                user,
            ]);
        for g in groups {
            cmd.args(["--group", g]);
        }
        try_run(cmd.arg("--out").arg(out)).unwrap_or_else(|e| panic!("skiff-control kubeconfig: {e:#}"));
    }

    fn spawn_agent(&self, n: LabNode) -> Proc {
        let kubeconfig = self.node_kubeconfig(n.name);
        self.issue_kubeconfig(&format!("system:node:{}", n.name), &["system:nodes"], &kubeconfig);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", n.name)))
            .expect("agent log");
        Proc::spawn(
            Command::new(agent_bin())
                .args(["node", "--kubeconfig"])
                .arg(&kubeconfig)
                .args(["--node-name", n.name, "--netns", n.name, "--uplink", "eth0"])
                .args([
                    "--pod-cidr",
                    n.pod_cidr,
                    "--capacity",
                    "cpu=2,memory=4Gi,pods=110",
                ])
                .args([
                    "--kubelet-address",
                    "127.0.0.1",
                    "--kubelet-port",
                    &free_port().to_string(),
                ])
                .arg("--state-dir")
                .arg(self.dir.join(n.name))
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log),
            n.name,
        )
    }

    /// Stops node `i`'s agent with SIGTERM (its pods keep running) and starts it again.
    pub fn restart_agent(&mut self, i: usize) {
        let (n, p) = &mut self.agents[i];
        if let Some(mut p) = p.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &p.child.id().to_string()])
                .status();
            let exited = wait_for(Duration::from_secs(20), || (!p.alive()).then_some(()));
            assert!(
                exited.is_some(),
                "the agent of {} did not stop on SIGTERM",
                n.name
            );
        }
        let n = *n;
        let p = self.spawn_agent(n);
        self.agents[i].1 = Some(p);
    }

    /// A file of the lab directory (logs), for failure messages.
    pub fn log(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Logs of both agents, for failure messages.
    pub fn agent_logs(&self) -> String {
        NODES
            .iter()
            .map(|n| format!("--- {} ---\n{}", n.name, self.log(&format!("{}.log", n.name))))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs kubectl against the lab.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        try_run(
            Command::new(k8s_tools::kubectl())
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(args),
        )
    }

    /// Runs kubectl with another kubeconfig (a node's or a user's).
    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str]) -> anyhow::Result<String> {
        try_run(
            Command::new(k8s_tools::kubectl())
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args(args),
        )
    }

    /// kubectl with a manifest on stdin.
    pub fn apply(&self, yaml: &str) {
        let path = self.dir.join("manifest.yaml");
        std::fs::write(&path, yaml).expect("writing a manifest");
        self.kubectl(&["apply", "-f", &path.to_string_lossy()])
            .unwrap_or_else(|e| panic!("kubectl apply: {e:#}\n{yaml}"));
    }

    /// A JSONPath of an object.
    pub fn get(&self, what: &[&str], jsonpath: &str) -> String {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        let jp = format!("jsonpath={jsonpath}");
        args.extend(["-o", &jp]);
        self.kubectl(&args).unwrap_or_default()
    }

    /// Waits (bounded) until `f` returns `Some`; panics with `what` and the agents' logs.
    pub fn wait<T>(&self, what: &str, secs: u64, f: impl FnMut() -> Option<T>) -> T {
        wait_for(Duration::from_secs(secs), f).unwrap_or_else(|| {
            panic!(
                "timed out after {secs} s waiting for {what}\n{}",
                self.agent_logs()
            )
        })
    }

    pub fn wait_node_ready(&self, node: &str) {
        self.wait(&format!("node {node} Ready"), 60, || {
            (self.get(
                &["node", node],
                "{.status.conditions[?(@.type==\"Ready\")].status}",
            ) == "True")
                .then_some(())
        });
    }

    /// Waits until pod `name` is Running with all containers ready; returns its IP.
    pub fn wait_pod_ready(&self, name: &str) -> String {
        self.wait(&format!("pod {name} Ready"), 60, || {
            let ready = self.get(
                &["pod", name],
                "{.status.conditions[?(@.type==\"Ready\")].status}",
            );
            let ip = self.get(&["pod", name], "{.status.podIP}");
            (ready == "True" && !ip.is_empty()).then_some(ip)
        })
    }

    /// The state directory of pod `name` on `node`.
    pub fn pod_dir(&self, node: &str, name: &str) -> PathBuf {
        let uid = self.get(&["pod", name], "{.metadata.uid}");
        assert!(!uid.is_empty(), "pod {name} has no UID");
        self.dir.join(node).join("pods").join(uid)
    }

    /// The pid of pod `name`'s sandbox (holds its namespaces).
    pub fn sandbox_pid(&self, node: &str, name: &str) -> u32 {
        let f = self.pod_dir(node, name).join("sandbox.json");
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("reading {}: {e}", f.display()));
        text.split("\"pid\":")
            .nth(1)
            .and_then(|rest| {
                rest.trim_start()
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no pid in {}: {text}", f.display()))
    }

    /// Runs `argv` in pod `name`'s network namespace; with `cgroup`, inside that cgroup (the socket LB sees it).
    pub fn in_pod(
        &self,
        node: &str,
        name: &str,
        cgroup: Option<&Path>,
        argv: &[&str],
    ) -> anyhow::Result<String> {
        let pid = self.sandbox_pid(node, name).to_string();
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &pid, "-n", "--"]);
        match cgroup {
            Some(cg) => {
                let script = format!("echo $$ > {}/cgroup.procs && exec \"$@\"", cg.display());
                cmd.args(["sh", "-c", &script, "sh"]).args(argv);
            }
            None => {
                cmd.args(argv);
            }
        }
        try_run(&mut cmd)
    }

    /// The cgroup of one container of a pod on `node`.
    pub fn container_cgroup(&self, node: &str, pod: &str, container: &str) -> PathBuf {
        let uid = self.get(&["pod", pod], "{.metadata.uid}");
        Path::new(CGROUP2)
            .join("skiff")
            .join(node)
            .join("pods")
            .join(format!("pod{uid}"))
            .join(container)
    }
}

impl Drop for NodeLab {
    fn drop(&mut self) {
        // Pods first, so the agents stop and tear them down themselves.
        if self.control.is_some() && self.agents.iter().all(|(_, p)| p.is_some()) {
            let _ = self.kubectl(&["delete", "pods", "--all", "--wait=false", "--grace-period=1"]);
            let _ = wait_for(Duration::from_secs(20), || {
                NODES
                    .iter()
                    .all(|n| dir_empty(&self.dir.join(n.name).join("pods")))
                    .then_some(())
            });
        }
        for (_, p) in &mut self.agents {
            if let Some(mut p) = p.take() {
                p.kill();
            }
        }
        if let Some(mut c) = self.control.take() {
            c.kill();
        }
        for n in NODES {
            remove_node_state(&self.dir.join(n.name), n.name);
        }
        self.namespaces.clear();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("node lab logs kept in {}", self.dir.display());
            let _ = std::fs::remove_dir_all(self.dir.join("control"));
            for n in NODES {
                let _ = std::fs::remove_dir_all(self.dir.join(n.name));
            }
        }
    }
}

fn dir_empty(p: &Path) -> bool {
    std::fs::read_dir(p).map_or(true, |mut d| d.next().is_none())
}

/// Kills what a node's pods left (by the pids their state records), then removes pins and the node's cgroups.
fn remove_node_state(state: &Path, node: &str) {
    if state.exists() {
        let mut cfg = skiff_agent::pods::runtime::RuntimeConfig::for_node(node).expect("runtime config");
        cfg.state_root = state.join("pods");
        cfg.cgroup_root = Some(Path::new(CGROUP2).join("skiff").join(node).join("pods"));
        let rt = skiff_agent::pods::runtime::PodRuntime::new(cfg);
        if let Ok(entries) = std::fs::read_dir(state.join("pods")) {
            for e in entries.flatten() {
                let _ = rt.remove_uid(&e.file_name().to_string_lossy());
            }
        }
    }
    let _ = crate::cluster::agent::cleanup(node);
    let base = Path::new(CGROUP2).join("skiff").join(node);
    let pods = base.join("pods");
    if let Ok(entries) = std::fs::read_dir(&pods) {
        for p in entries.flatten().filter(|p| p.path().is_dir()) {
            if let Ok(cs) = std::fs::read_dir(p.path()) {
                for c in cs.flatten().filter(|c| c.path().is_dir()) {
                    netns::remove_cgroup(&c.path().to_string_lossy());
                }
            }
            netns::remove_cgroup(&p.path().to_string_lossy());
        }
    }
    netns::remove_cgroup(&pods.to_string_lossy());
    netns::remove_cgroup(&base.to_string_lossy());
}

/// Removes what an interrupted earlier run left: its nodes' pins and cgroups, and `skn-` namespaces.
fn sweep() {
    for n in NODES {
        remove_node_state(Path::new("/nonexistent"), n.name);
    }
    netns::sweep(PREFIX);
}

/// Test processes take turns on a lock file (fixed names); the kernel drops the lock when the process ends.
fn lock() -> File {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .unwrap_or_else(|e| panic!("opening {LOCK_FILE}: {e}"));
    let got = wait_for(Duration::from_secs(600), || match file.try_lock() {
        Ok(()) => Some(()),
        Err(TryLockError::WouldBlock) => None,
        Err(TryLockError::Error(e)) => panic!("locking {LOCK_FILE}: {e}"),
    });
    assert!(got.is_some(), "another process held {LOCK_FILE} for 10 minutes");
    file
}
