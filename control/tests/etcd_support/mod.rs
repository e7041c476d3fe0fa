//! A throwaway etcd (Debian's etcd-server) on 127.0.0.1 random ports with a temporary data dir, killed on drop.

#![allow(dead_code, reason = "each test file uses a different part of the helper")]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use control::store::Store;
use control::store::etcd::{EtcdOptions, EtcdStore};

/// A running etcd; killed (and its data dir removed) on drop.
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Etcd {
    /// Starts etcd and waits until it answers; panics with a hint when etcd is missing.
    pub async fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("skiff-ctl-etcd-")
            .tempdir()
            .expect("temp dir");
        let mut etcd = Self {
            child: None,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
        };
        etcd.spawn();
        etcd.wait_ready().await;
        etcd
    }

    /// The client URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self) {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .arg("--name")
            .arg("skiff-ctl-test")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .arg("--initial-cluster")
            .arg(format!("skiff-ctl-test={peer}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd (apt-get install etcd-server, or run `cargo xtask setup`)");
        self.child = Some(child);
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(store) = EtcdStore::connect(self.options("/skiff-ctl-ready")).await
                && store.current_revision().await.is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not answer on {} within 15s",
                self.endpoint()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Store options for this etcd under `root`, with short timeouts.
    pub fn options(&self, root: &str) -> EtcdOptions {
        EtcdOptions {
            endpoints: vec![self.endpoint()],
            root: root.to_owned(),
            request_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(1),
        }
    }

    /// Kills etcd (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Suspends etcd (SIGSTOP): its connections stay open and requests hang until they time out.
    pub fn freeze(&self) {
        self.signal("STOP");
        let pid = self.child.as_ref().expect("etcd is running").id();
        let deadline = Instant::now() + Duration::from_secs(2);
        // Field 3 of /proc/PID/stat is the state; T = stopped.
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| stat.rsplit(") ").next().map(|rest| !rest.starts_with('T')))
            .unwrap_or(true)
        {
            assert!(Instant::now() < deadline, "etcd ({pid}) did not stop within 2 s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Resumes a frozen etcd (SIGCONT).
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("etcd is running").id();
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {pid} failed");
    }

    /// Starts etcd again on the same ports and data dir.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready().await;
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}
