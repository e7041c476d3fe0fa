//! An HTTPS skiff-control with RBAC in a temporary directory, and a real kubectl against it with kubeconfigs for
//! the admin, certificate users and bearer tokens.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use control::auth::pki;
use control::server::{Running, Security, ServerConfig, start};

pub struct TlsCluster {
    pub srv: Running,
    pub dir: tempfile::TempDir,
}

impl TlsCluster {
    /// A TLS server; `tune` adjusts its configuration (e.g. the authorization mode).
    pub async fn start_with(tune: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("skiff-ctl-tls-")
            .tempdir()
            .unwrap();
        let mut config = ServerConfig::for_tests(dir.path().to_path_buf());
        config.security = Security::Tls { hosts: vec![] };
        tune(&mut config);
        let srv = start(config).await.expect("TLS server starts");
        Self { srv, dir }
    }

    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn admin(&self) -> PathBuf {
        self.write(
            "admin.kubeconfig",
            &self.srv.pki.as_ref().unwrap().kubeconfig(&self.srv.url()),
        )
    }

    /// A kubeconfig with a client certificate for `user` in `groups`.
    pub fn user(&self, user: &str, groups: &[&str]) -> PathBuf {
        let (cert, key) = pki::issue_client_certificate(&self.dir.path().join("pki"), user, groups).unwrap();
        let text = self
            .srv
            .pki
            .as_ref()
            .unwrap()
            .certificate_kubeconfig(&self.srv.url(), user, &cert, &key);
        self.write(&format!("{}.kubeconfig", user.replace(':', "_")), &text)
    }

    /// A kubeconfig that presents bearer `token`.
    pub fn token(&self, name: &str, token: &str) -> PathBuf {
        let text = self
            .srv
            .pki
            .as_ref()
            .unwrap()
            .token_kubeconfig(&self.srv.url(), "sa", token);
        self.write(&format!("{name}.kubeconfig"), &text)
    }

    pub async fn kubectl(&self, config: &Path, args: &[&str]) -> Output {
        let mut cmd = Command::new(super::kubectl::kubectl());
        cmd.args(["--request-timeout=10s", "--kubeconfig"])
            .arg(config)
            .args(args)
            .env("HOME", self.dir.path());
        tokio::task::spawn_blocking(move || cmd.output().expect("run kubectl"))
            .await
            .unwrap()
    }

    pub async fn ok(&self, config: &Path, args: &[&str]) -> String {
        let out = self.kubectl(config, args).await;
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs kubectl until it succeeds (policy and caches follow the store through a watch), at most 10 s.
    pub async fn eventually_ok(&self, config: &Path, args: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self.kubectl(config, args).await;
            if out.status.success() {
                return String::from_utf8(out.stdout).unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "kubectl {args:?} kept failing: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs kubectl expecting a failure; its stderr and stdout.
    pub async fn fails(&self, config: &Path, args: &[&str]) -> String {
        let out = self.kubectl(config, args).await;
        assert!(!out.status.success(), "kubectl {args:?} unexpectedly succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
    }
}
