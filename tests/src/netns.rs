//! Network namespaces for end-to-end tests: commands inside them, and guards that delete them (and kill what runs
//! in them) by name, also when a test panics.
use std::{
    fs,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// Runs a command (no stdin) and returns its stdout; a non-zero exit is an error with its stderr.
pub fn try_run(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Like [`try_run`], panicking on failure (for test set-up, where a failure must stop the test loudly).
pub fn run(cmd: &mut Command) -> String {
    try_run(cmd).unwrap_or_else(|e| panic!("{e:#}"))
}

/// `ip ARGS` in the host (only ever with `-n NS` or `netns` arguments in these tests).
pub fn ip(args: &[&str]) -> String {
    run(Command::new("ip").args(args))
}

/// A command that runs `argv` inside namespace `ns` (`ip netns exec`).
pub fn in_ns(ns: &str, argv: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(argv);
    c
}

/// Runs `argv` inside `ns`, panicking on failure.
pub fn exec(ns: &str, argv: &[&str]) -> String {
    run(&mut in_ns(ns, argv))
}

/// Names of the existing network namespaces.
/// A pod's `eth0` in `pod_ns` with `pod_ip`/32, its host side `host_if` in `node_ns` holding `gateway`/32 and a
/// /32 route back to the pod, the pod's default route via `gateway`, and TX checksum offload off on both ends
/// (BPF rewrites on veth need computed checksums).
pub fn wire_pod(node_ns: &str, gateway: &str, pod_ns: &str, host_if: &str, pod_ip: &str) {
    ip(&[
        "link", "add", "eth0", "netns", pod_ns, "type", "veth", "peer", "name", host_if, "netns", node_ns,
    ]);
    ip(&[
        "-n",
        node_ns,
        "addr",
        "add",
        &format!("{gateway}/32"),
        "dev",
        host_if,
    ]);
    ip(&["-n", node_ns, "link", "set", host_if, "up"]);
    ip(&[
        "-n",
        node_ns,
        "route",
        "add",
        &format!("{pod_ip}/32"),
        "dev",
        host_if,
    ]);
    ip(&[
        "-n",
        pod_ns,
        "addr",
        "add",
        &format!("{pod_ip}/32"),
        "dev",
        "eth0",
    ]);
    ip(&["-n", pod_ns, "link", "set", "eth0", "up"]);
    ip(&[
        "-n", pod_ns, "route", "add", gateway, "dev", "eth0", "scope", "link",
    ]);
    ip(&[
        "-n", pod_ns, "route", "add", "default", "via", gateway, "dev", "eth0",
    ]);
    exec(pod_ns, &["ethtool", "-K", "eth0", "tx", "off"]);
    exec(node_ns, &["ethtool", "-K", host_if, "tx", "off"]);
}

pub fn list() -> Vec<String> {
    try_run(Command::new("ip").args(["netns", "list"]))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Kills the processes running inside `ns` (by pid) and deletes it.
pub fn delete(ns: &str) -> Result<()> {
    for _ in 0..3 {
        let pids = try_run(Command::new("ip").args(["netns", "pids", ns])).unwrap_or_default();
        if pids.trim().is_empty() {
            break;
        }
        for pid in pids.split_whitespace() {
            let _ = Command::new("kill")
                .args(["-KILL", pid])
                .stderr(Stdio::null())
                .status();
        }
        thread::sleep(Duration::from_millis(100));
    }
    try_run(Command::new("ip").args(["netns", "del", ns]))?;
    Ok(())
}

/// Deletes every namespace whose name starts with `prefix` (left over from an earlier, interrupted run).
pub fn sweep(prefix: &str) {
    for ns in list().into_iter().filter(|n| n.starts_with(prefix)) {
        if let Err(e) = delete(&ns) {
            eprintln!("sweep: could not delete netns {ns}: {e:#}");
        }
    }
}

/// A network namespace owned by a test; dropped, it is deleted with everything running in it.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `name` (panics if that fails) and brings its loopback up.
    pub fn create(name: &str) -> Self {
        ip(&["netns", "add", name]);
        let ns = Self {
            name: name.to_owned(),
        };
        ip(&["-n", name, "link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets sysctls inside this namespace (`key=value` pairs).
    pub fn sysctl(&self, settings: &[&str]) {
        let mut argv = vec!["sysctl", "-qw"];
        argv.extend_from_slice(settings);
        exec(&self.name, &argv);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = delete(&self.name) {
            eprintln!("could not delete netns {}: {e:#}", self.name);
        }
    }
}

/// A child process killed (by pid) and reaped when dropped.
pub struct Proc {
    pub child: Child,
    what: String,
}

impl Proc {
    pub fn spawn(cmd: &mut Command, what: &str) -> Self {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {what} ({cmd:?}): {e}"));
        Self {
            child,
            what: what.to_owned(),
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn what(&self) -> &str {
        &self.what
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` every 100 ms until it returns `Some` or `limit` passes.
pub fn wait_for<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let started = Instant::now();
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if started.elapsed() > limit {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Whether a path exists (for pins and cgroups).
pub fn exists(p: &str) -> bool {
    Path::new(p).exists()
}

/// Removes a cgroup directory after killing the processes still in it.
pub fn remove_cgroup(path: &str) {
    if !exists(path) {
        return;
    }
    for _ in 0..20 {
        let procs = fs::read_to_string(format!("{path}/cgroup.procs")).unwrap_or_default();
        for pid in procs.split_whitespace() {
            let _ = Command::new("kill")
                .args(["-KILL", pid])
                .stderr(Stdio::null())
                .status();
        }
        if fs::remove_dir(path).is_ok() {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!("could not remove cgroup {path}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_for_returns_the_first_value_or_gives_up() {
        let mut n = 0;
        assert_eq!(
            wait_for(Duration::from_secs(5), || {
                n += 1;
                (n == 3).then_some(n)
            }),
            Some(3)
        );
        let started = Instant::now();
        assert_eq!(wait_for(Duration::from_millis(250), || None::<()>), None);
        assert!(started.elapsed() >= Duration::from_millis(250));
    }

    #[test]
    fn try_run_reports_the_command_and_its_stderr() {
        assert_eq!(try_run(Command::new("echo").arg("x")).unwrap(), "x\n");
        let e = try_run(Command::new("sh").args(["-c", "echo bad >&2; exit 2"])).unwrap_err();
        assert!(format!("{e:#}").contains("bad"));
    }
}
