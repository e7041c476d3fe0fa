//! The `skiff-agent` under test as a child process: start, SIGKILL, restart, `cleanup`, and its log on failure.
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use crate::netns::{Proc, exists, try_run, wait_for};

/// Which dataplane hooks the agent attaches for ClusterIP traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Socket,
    Tc,
    Both,
}

impl Mode {
    pub fn arg(self) -> &'static str {
        match self {
            Mode::Socket => "socket",
            Mode::Tc => "tc",
            Mode::Both => "both",
        }
    }
}

/// The agent binary: `SKIFF_AGENT_BIN` (set by `cargo xtask test`), else the workspace's debug build.
pub fn agent_bin() -> PathBuf {
    let bin = env::var_os("SKIFF_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/skiff-agent"));
    assert!(
        bin.exists(),
        "skiff-agent not found at {}: build it with `cargo build -p agent` or set SKIFF_AGENT_BIN",
        bin.display()
    );
    bin
}

/// The pin directory of a node's agent.
pub fn pin_dir(node: &str) -> String {
    format!("{}/{node}", skiff_common::PIN_ROOT)
}

/// Runs `skiff-agent cleanup --node-name NODE`; returns its combined output, or the failure.
pub fn cleanup(node: &str) -> anyhow::Result<String> {
    try_run(
        Command::new(agent_bin())
            .args(["cleanup", "--node-name", node])
            .stderr(Stdio::inherit()),
    )
}

/// Removes what an earlier run's agent for `node` left behind (pins, pinned links).
pub fn cleanup_stale(node: &str) {
    let dir = pin_dir(node);
    if !exists(&dir) {
        return;
    }
    if let Err(e) = cleanup(node) {
        eprintln!("stale state of {node}: {e:#}");
    }
    // Unpinning a link detaches it; a cleanup that failed must not leave the next run with old programs.
    let _ = fs::remove_dir_all(&dir);
}

/// kube-proxy-compatible `/healthz` of an agent started with [`Agent::start_in_cluster`] (loopback, off the
/// default :10256 so a developer's own agent does not collide with the test's).
pub const IN_CLUSTER_HEALTHZ: &str = "127.0.0.1:19966";

/// What a DaemonSet pod of the agent gets from a cluster: the API server's address in KUBERNETES_SERVICE_HOST/PORT
/// and a ServiceAccount directory (`token`, `ca.crt`).
#[derive(Clone, Debug)]
pub struct InCluster {
    pub host: String,
    pub port: u16,
    pub serviceaccount_dir: PathBuf,
}

/// One running agent (`skiff-agent proxy`) for a node. Dropped, it is killed and `cleanup` runs for its node.
pub struct Agent {
    node: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    /// Where the current run's output starts in `log` (every run of the node appends to it).
    run_start: usize,
    proc: Option<Proc>,
    starts: u32,
}

impl Agent {
    /// Starts `skiff-agent proxy` in the host mount namespace (it enters `netns` itself), logging to `log_dir`.
    pub fn start(
        node: &str,
        netns: &str,
        manifests: &Path,
        mode: Mode,
        cgroup: &str,
        log_dir: &Path,
    ) -> Agent {
        let args = [
            "proxy",
            "--manifests",
            &manifests.display().to_string(),
            "--node-name",
            node,
            "--netns",
            netns,
            "--uplink",
            "eth0",
            "--pod-iface",
            "skp-*",
            "--cgroup",
            cgroup,
            "--mode",
            mode.arg(),
            // Off the default port, so a developer's own agent on this machine does not collide with the test's.
            "--metrics-addr",
            "127.0.0.1:19965",
        ]
        .map(str::to_owned)
        .to_vec();
        Agent::spawn_new(node, args, Vec::new(), log_dir)
    }

    /// Starts `skiff-agent --proxy-only` the way the DaemonSet runs it: no --manifests, no --kubeconfig, no
    /// --node-name; the API server, credentials and node name come from the environment (KUBERNETES_SERVICE_HOST,
    /// KUBERNETES_SERVICE_PORT, NODE_NAME) and `--serviceaccount-dir`. Only the lab's interfaces, cgroup and
    /// loopback listen addresses are given as flags, so nothing of the host is touched.
    pub fn start_in_cluster(
        node: &str,
        netns: &str,
        cluster: &InCluster,
        mode: Mode,
        cgroup: &str,
        log_dir: &Path,
    ) -> Agent {
        let args = [
            "--proxy-only",
            "--serviceaccount-dir",
            &cluster.serviceaccount_dir.display().to_string(),
            "--netns",
            netns,
            "--uplink",
            "eth0",
            "--pod-iface",
            "skp-*",
            "--cgroup",
            cgroup,
            "--mode",
            mode.arg(),
            "--metrics-addr",
            "127.0.0.1:19965",
            "--healthz-addr",
            IN_CLUSTER_HEALTHZ,
        ]
        .map(str::to_owned)
        .to_vec();
        let env = [
            ("KUBERNETES_SERVICE_HOST", cluster.host.clone()),
            ("KUBERNETES_SERVICE_PORT", cluster.port.to_string()),
            ("NODE_NAME", node.to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .to_vec();
        Agent::spawn_new(node, args, env, log_dir)
    }

    fn spawn_new(node: &str, args: Vec<String>, env: Vec<(String, String)>, log_dir: &Path) -> Agent {
        let mut agent = Agent {
            node: node.to_owned(),
            args,
            env,
            log: log_dir.join(format!("agent-{node}.log")),
            run_start: 0,
            proc: None,
            starts: 0,
        };
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.log.display()));
        let err = log.try_clone().expect("cloning log file handle");
        self.run_start = log.metadata().map_or(0, |m| m.len() as usize);
        let mut cmd = Command::new(agent_bin());
        // The agent under test sees only the environment the test gives it (no KUBECONFIG of the developer's).
        cmd.args(&self.args)
            .env_remove("KUBECONFIG")
            .env_remove("NODE_NAME")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(log)
            .stderr(err);
        self.proc = Some(Proc::spawn(&mut cmd, &format!("skiff-agent for {}", self.node)));
    }

    /// Panics (with the agent's log) if the agent has exited.
    pub fn assert_running(&mut self) {
        if let Some(p) = self.proc.as_mut()
            && !p.alive()
        {
            let status = p.child.try_wait().ok().flatten();
            panic!(
                "skiff-agent for {} exited ({status:?}); log:\n{}",
                self.node,
                self.log_tail()
            );
        }
    }

    /// Waits up to `limit` for the agent to exit by itself; its exit status, or `None` if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let p = self.proc.as_mut()?;
        let status = wait_for(limit, || p.child.try_wait().ok().flatten());
        if status.is_some() {
            self.proc = None;
        }
        status
    }

    /// What the current (or last) run of the agent wrote to stdout and stderr.
    pub fn run_log(&self) -> String {
        let mut text = fs::read_to_string(&self.log).unwrap_or_default();
        text.split_off(self.run_start.min(text.len()))
    }

    /// Kills the agent with SIGKILL (no chance to clean anything up), like a crash or an OOM kill.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Starts the agent again with the same arguments.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Stops the agent (SIGKILL) and runs `skiff-agent cleanup` for its node.
    pub fn stop_and_cleanup(&mut self) -> anyhow::Result<String> {
        self.kill9();
        cleanup(&self.node)
    }

    /// The last 60 lines of the agent's log.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<_> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    pub fn node(&self) -> &str {
        &self.node
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let running = self.proc.is_some();
        if std::thread::panicking() && running {
            eprintln!(
                "--- skiff-agent {} log (tail) ---\n{}",
                self.node,
                self.log_tail()
            );
        }
        if let Err(e) = self.stop_and_cleanup() {
            eprintln!("cleanup of {} failed: {e:#}", self.node);
        }
        let _ = fs::remove_dir_all(pin_dir(&self.node));
    }
}

/// Attaches the XDP_PASS program to `iface` in `netns` (needed where XDP_TX frames arrive), for `node`'s agent.
/// The command pins its link and exits; if it keeps running instead, the returned guard keeps it alive.
pub fn xdp_pass(iface: &str, netns: &str, node: &str) -> Option<Proc> {
    let argv = [
        "xdp-pass",
        "--iface",
        iface,
        "--netns",
        netns,
        "--node-name",
        node,
    ];
    let mut p = Proc::spawn(
        Command::new(agent_bin())
            .args(argv)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
        "skiff-agent xdp-pass",
    );
    let exited = wait_for(Duration::from_secs(10), || p.child.try_wait().ok().flatten());
    match exited {
        Some(status) if status.success() => None,
        Some(status) => {
            let mut err = String::new();
            if let Some(mut e) = p.child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("skiff-agent xdp-pass --iface {iface} --netns {netns} failed ({status}): {err}")
        }
        None => Some(p),
    }
}
