//! skiff-control for the cluster tests: TLS on a loopback port, RBAC on, a scratch data directory; admin kubectl,
//! and ServiceAccount credentials laid out the way the kubelet mounts them into a pod.
use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use crate::{
    k8s_tools,
    netns::{Proc, try_run, wait_for},
};

/// The skiff-control binary: `SKIFF_CONTROL_BIN`, else the workspace's debug build.
pub fn control_bin() -> PathBuf {
    let bin = std::env::var_os("SKIFF_CONTROL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/skiff-control"));
    assert!(
        bin.is_file(),
        "skiff-control not found at {}: build it with `cargo build -p control` or set SKIFF_CONTROL_BIN",
        bin.display()
    );
    bin
}

/// A running skiff-control, killed on drop (its data directory lives inside `dir`, which the caller owns).
pub struct Control {
    dir: PathBuf,
    kubeconfig: PathBuf,
    port: u16,
    _proc: Proc,
}

impl Control {
    /// Starts skiff-control with its data and log under `dir` (created if missing) and waits (at most 30 s) until it is ready.
    pub fn start(dir: &Path) -> Control {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let data = dir.join("control");
        let kubeconfig = dir.join("admin.kubeconfig");
        let log_path = dir.join("control.log");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log_path.display()));
        let proc = Proc::spawn(
            Command::new(control_bin())
                .arg("--data-dir")
                .arg(&data)
                .args(["--listen", "127.0.0.1:0", "--kubeconfig-out"])
                .arg(&kubeconfig)
                .stdout(Stdio::null())
                .stderr(log),
            "skiff-control",
        );
        let port = wait_for(Duration::from_secs(30), || server_port(&kubeconfig));
        let mut control = Control {
            dir: dir.to_owned(),
            kubeconfig,
            port: port.unwrap_or(0),
            _proc: proc,
        };
        assert!(
            port.is_some(),
            "skiff-control wrote no kubeconfig within 30 s; log:\n{}",
            control.log_tail()
        );
        let ready = wait_for(Duration::from_secs(30), || {
            control.kubectl(&["get", "--raw", "/readyz"]).ok()
        });
        assert!(
            ready.is_some(),
            "skiff-control never became ready; log:\n{}",
            control.log_tail()
        );
        control.check_alive();
        control
    }

    fn check_alive(&mut self) {
        assert!(
            self._proc.alive(),
            "skiff-control exited; log:\n{}",
            self.log_tail()
        );
    }

    /// The loopback port the API server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster CA certificate (what a pod finds as `ca.crt` in its ServiceAccount mount).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("control/pki/ca.crt")
    }

    /// kubectl as the cluster admin (system:masters).
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        try_run(
            Command::new(k8s_tools::kubectl())
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .arg("--request-timeout=10s")
                .args(args)
                .env("HOME", &self.dir),
        )
    }

    /// `kubectl apply -f` of `yaml` as the admin; panics with kubectl's error.
    pub fn apply(&self, yaml: &str) -> String {
        let path = self.dir.join("apply.yaml");
        std::fs::write(&path, yaml).expect("writing a manifest");
        self.kubectl(&["apply", "-f", &path.to_string_lossy()])
            .unwrap_or_else(|e| panic!("kubectl apply: {e:#}\n{yaml}"))
    }

    /// A token of ServiceAccount `ns/name` and the cluster CA written as `token` and `ca.crt` into `dir` (the
    /// layout of /var/run/secrets/kubernetes.io/serviceaccount).
    pub fn serviceaccount_dir(&self, ns: &str, name: &str, dir: &Path) -> PathBuf {
        let token = self
            .kubectl(&["create", "token", name, "-n", ns, "--duration=1h"])
            .unwrap_or_else(|e| panic!("kubectl create token {name} -n {ns}: {e:#}"));
        std::fs::create_dir_all(dir).expect("creating the ServiceAccount directory");
        std::fs::write(dir.join("token"), token.trim()).expect("writing the token");
        std::fs::copy(self.ca_file(), dir.join("ca.crt"))
            .unwrap_or_else(|e| panic!("copying {}: {e}", self.ca_file().display()));
        std::fs::write(dir.join("namespace"), ns).expect("writing the namespace");
        dir.to_owned()
    }

    /// The last 60 lines of the server's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("control.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

/// The port of the `server: https://127.0.0.1:PORT` line of a kubeconfig, once the file is complete.
fn server_port(kubeconfig: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(kubeconfig).ok()?;
    let line = text.lines().find_map(|l| l.trim().strip_prefix("server:"))?;
    line.trim().rsplit(':').next()?.trim_end_matches('/').parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_comes_from_the_server_line() {
        let dir = std::env::temp_dir().join(format!("skt-control-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kc = dir.join("kubeconfig");
        assert_eq!(server_port(&kc), None, "no file yet");
        std::fs::write(
            &kc,
            "clusters:\n- cluster:\n    server: https://127.0.0.1:40123\n",
        )
        .unwrap();
        assert_eq!(server_port(&kc), Some(40123));
        std::fs::write(&kc, "clusters:\n- cluster:\n    server: https://127.0.0.1:\n").unwrap();
        assert_eq!(server_port(&kc), None, "half-written");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
