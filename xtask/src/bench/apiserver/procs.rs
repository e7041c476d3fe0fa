//! The processes under test: building and running skiff-control, and a throwaway etcd, each removed on drop.
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::super::sh;
use super::http::Conn;

/// How long a server may take to answer after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The workspace root (this crate's parent directory).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// Builds skiff-control in release mode (cargo's own output shows) and returns the binary.
pub fn build_control() -> Result<PathBuf> {
    let root = workspace();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "control",
            "--bin",
            "skiff-control",
        ])
        .current_dir(&root)
        .stdin(Stdio::null())
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("`cargo build --release -p control` failed ({status}); see its output above");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let target = if target.is_relative() {
        root.join(target)
    } else {
        target
    };
    let bin = target.join("release").join("skiff-control");
    if !bin.exists() {
        bail!("cargo built skiff-control but {} does not exist", bin.display());
    }
    Ok(bin)
}

/// A free TCP port on 127.0.0.1 (released again; the server binds it right after).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A scratch directory under the system temp dir, removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("skiff-bench-api-{}-{tag}", std::process::id()));
        // Never shared: two scratch dirs of one run with the same tag would delete each other's files.
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Scratch(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process that is stopped (SIGINT, then SIGKILL after 5 s) when dropped.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: std::process::Command, log: PathBuf) -> Result<Proc> {
        let file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting `{}`", cmd.get_program().to_string_lossy()))?;
        Ok(Proc { child, log })
    }

    /// Fails (with the end of the log) when the process has exited.
    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("exited ({status}): {}", tail(&self.log));
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last lines of a log file, for error messages.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// Polls `ready` every 50 ms until it succeeds, the process dies, or [`START_TIMEOUT`] passes.
fn wait_ready(proc: &mut Proc, what: &str, mut ready: impl FnMut() -> Result<()>) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        proc.check_alive().with_context(|| format!("{what} stopped"))?;
        let err = match ready() {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() > deadline {
            return Err(err.context(format!(
                "{what} did not answer within {}s: {}",
                START_TIMEOUT.as_secs(),
                tail(&proc.log)
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running etcd (Debian's etcd-server) on random loopback ports with a scratch data dir.
pub struct Etcd {
    proc: Proc,
    pub endpoint: String,
    _dir: Scratch,
}

impl Etcd {
    /// Starts etcd, logging to `log`.
    pub fn start(rt: &tokio::runtime::Runtime, log: &Path) -> Result<Etcd> {
        if which("etcd").is_none() {
            bail!(
                "`etcd` is missing: run `cargo xtask setup` (or `apt-get install etcd-server`), or pass --store embedded"
            );
        }
        let dir = Scratch::new("etcd-data")?;
        let (client, peer) = (free_port()?, free_port()?);
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut cmd = sh::command("etcd");
        cmd.args(["--name", "skiff-bench", "--log-level", "warn", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &endpoint,
                "--advertise-client-urls",
                &endpoint,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .arg("--initial-cluster")
            .arg(format!("skiff-bench={peer_url}"));
        let mut proc = Proc::spawn(cmd, log.to_path_buf())?;
        let addr: SocketAddr = ([127, 0, 0, 1], client).into();
        wait_ready(&mut proc, "etcd", || {
            rt.block_on(async {
                let health = Conn::connect(addr).await?.get_json("/health").await?;
                if health["health"] != "true" {
                    bail!("etcd is not healthy yet: {health}");
                }
                Ok(())
            })
        })?;
        Ok(Etcd {
            proc,
            endpoint,
            _dir: dir,
        })
    }
}

impl Etcd {
    /// Fails (with the end of its log) when etcd has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        self.proc.check_alive().context("etcd stopped")
    }
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.is_file())
}

/// How one skiff-control instance is started.
pub struct ControlSpec<'a> {
    pub bin: &'a Path,
    /// `None`: the embedded store; `Some((endpoint, key prefix))`: etcd.
    pub etcd: Option<(&'a str, &'a str)>,
    /// Built-in controllers to turn off.
    pub disable: &'a [String],
    pub tag: &'a str,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

/// A running skiff-control serving plain HTTP on a loopback port.
pub struct Control {
    proc: Proc,
    pub addr: SocketAddr,
    _dir: Scratch,
}

impl Control {
    pub fn start(rt: &tokio::runtime::Runtime, spec: &ControlSpec<'_>) -> Result<Control> {
        let dir = Scratch::new(&format!("control-{}", spec.tag))?;
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let mut cmd = sh::command(spec.bin);
        cmd.env("RUST_LOG", "warn")
            .env("RUST_BACKTRACE", "0")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", &addr.to_string(), "--insecure-http"]);
        if let Some((endpoint, prefix)) = spec.etcd {
            cmd.args([
                "--store",
                "etcd",
                "--etcd-endpoints",
                endpoint,
                "--etcd-prefix",
                prefix,
            ]);
        }
        for name in spec.disable {
            cmd.args(["--disable-controller", name]);
        }
        let mut proc = Proc::spawn(cmd, spec.log.clone())?;
        wait_ready(&mut proc, "skiff-control", || {
            rt.block_on(async {
                Conn::connect(addr)
                    .await?
                    .get_json("/api/v1/namespaces/default")
                    .await
                    .map(drop)
            })
        })?;
        Ok(Control {
            proc,
            addr,
            _dir: dir,
        })
    }

    /// Resident set size in MiB.
    pub fn rss_mib(&mut self) -> Result<f64> {
        self.proc.check_alive().context("skiff-control stopped")?;
        let path = format!("/proc/{}/status", self.proc.child.id());
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        rss_kib(&status)
            .map(|k| k as f64 / 1024.0)
            .context("no VmRSS line in /proc/PID/status")
    }

    /// Fails when the server died (with the end of its log).
    pub fn check_alive(&mut self) -> Result<()> {
        self.proc.check_alive().context("skiff-control stopped")
    }
}

/// The built-in controllers `bin` can turn off (the possible values of `--disable-controller` in its `--help`).
pub fn controller_names(bin: &Path) -> Result<Vec<String>> {
    let help = sh::run(bin.to_str().context("non-UTF-8 binary path")?, &["--help"])?;
    parse_controller_names(&help)
        .context("no `--disable-controller` with possible values in skiff-control --help")
}

/// Parses the possible values of `--disable-controller` out of clap's help text.
pub fn parse_controller_names(help: &str) -> Option<Vec<String>> {
    let rest = &help[help.find("--disable-controller")?..];
    let start = rest.find("[possible values:")? + "[possible values:".len();
    let end = start + rest[start..].find(']')?;
    let names: Vec<String> = rest[start..end]
        .split(',')
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    (!names.is_empty()).then_some(names)
}

/// `VmRSS` of a `/proc/PID/status` text, in KiB.
pub fn rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_names_from_help() {
        let help = "Options:\n      --history-limit <N>\n      --disable-controller <NAME>\n          Turn off a \
                    built-in controller (repeatable)\n\n          [possible values: endpointslice, replicaset,\n          \
                    scheduler, podgc]\n  -h, --help\n";
        assert_eq!(
            parse_controller_names(help).unwrap(),
            ["endpointslice", "replicaset", "scheduler", "podgc"]
        );
        assert_eq!(parse_controller_names("  -h, --help [possible values: a]"), None);
    }

    #[test]
    fn rss_from_proc_status() {
        let status = "Name:\tskiff-control\nVmPeak:\t  900 kB\nVmRSS:\t   53124 kB\nThreads:\t4\n";
        assert_eq!(rss_kib(status), Some(53124));
        assert_eq!(rss_kib("Name:\tx\n"), None);
    }

    #[test]
    fn scratch_dirs_are_removed_and_never_shared() {
        let path = {
            let s = Scratch::new("unit-test").unwrap();
            assert!(
                Scratch::new("unit-test").is_err(),
                "a second dir with the same tag"
            );
            std::fs::write(s.path().join("f"), "x").unwrap();
            s.path().to_path_buf()
        };
        assert!(!path.exists());
    }
}
