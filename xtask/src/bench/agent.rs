//! Skiff's agent as a bench participant: start it on a manifest directory, time its syncs from the outside.
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::sh;

/// One `synced` line of the agent's log.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sync {
    pub ops: u64,
    pub frontends: u64,
    pub took_ms: f64,
}

/// Removes ANSI escape sequences (`ESC [ ... letter`) from a log line.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses the agent's `synced ops=N frontends=N ... took_ms=X` log line (tracing's text format).
pub fn parse_sync(line: &str) -> Option<Sync> {
    let line = strip_ansi(line);
    if !line.contains(" synced") {
        return None;
    }
    let field = |name: &str| -> Option<&str> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
    };
    Some(Sync {
        ops: field("ops")?.parse().ok()?,
        frontends: field("frontends")?.parse().ok()?,
        took_ms: field("took_ms")?.parse().ok()?,
    })
}

/// A running `skiff-agent proxy` reading `manifests/services.yaml`; killed and cleaned up when dropped.
pub struct Agent {
    bin: PathBuf,
    node: String,
    manifests: PathBuf,
    log: PathBuf,
    /// Bytes of the log already looked at.
    seen: usize,
    /// Frontends after the last sync seen.
    frontends: u64,
    child: Option<Child>,
    helpers: Vec<Child>,
}

/// How the agent of one testbed is started.
pub struct AgentSpec<'a> {
    pub bin: &'a Path,
    pub workdir: &'a Path,
    /// Pin directory name and node name (the node namespace's name, unique per testbed).
    pub node: &'a str,
    pub netns: &'a str,
    pub uplink: &'a str,
    pub pod_iface: &'a str,
    pub cgroup: &'a Path,
    pub mode: &'a str,
    pub metrics_port: u16,
    /// Interfaces (netns, iface) that receive frames sent by XDP and need an XDP program of their own.
    pub xdp_pass: Vec<(&'a str, &'a str)>,
}

/// Removes what an earlier run's agent for `node` left (pins, pinned links); harmless when nothing is there.
pub fn cleanup(bin: &Path, node: &str) {
    let dir = Path::new("/sys/fs/bpf/skiff").join(node);
    if dir.exists() {
        if let Err(e) = sh::run(
            bin.to_str().unwrap_or_default(),
            &["cleanup", "--node-name", node],
        ) {
            eprintln!("bench: cleanup of stale pins of {node}: {e:#}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

impl Agent {
    /// Starts the agent with an empty manifest directory and waits (bounded) for its first sync.
    pub fn start(spec: &AgentSpec<'_>) -> Result<Agent> {
        cleanup(spec.bin, spec.node);
        let manifests = spec.workdir.join(format!("manifests-{}", spec.node));
        let _ = std::fs::remove_dir_all(&manifests);
        std::fs::create_dir_all(&manifests)?;
        let log = spec.workdir.join(format!("agent-{}.log", spec.node));
        let file = std::fs::File::create(&log)?;
        let child = sh::command(spec.bin)
            .args(["proxy", "--manifests"])
            .arg(&manifests)
            .args([
                "--node-name",
                spec.node,
                "--netns",
                spec.netns,
                "--uplink",
                spec.uplink,
            ])
            .args(["--pod-iface", spec.pod_iface, "--cgroup"])
            .arg(spec.cgroup)
            .args(["--mode", spec.mode])
            .args(["--metrics-addr", &format!("127.0.0.1:{}", spec.metrics_port)])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", spec.bin.display()))?;
        let mut agent = Agent {
            bin: spec.bin.to_path_buf(),
            node: spec.node.to_string(),
            manifests,
            log,
            seen: 0,
            frontends: 0,
            child: Some(child),
            helpers: Vec::new(),
        };
        agent
            .wait_sync(Duration::from_secs(60), |_| true)
            .context("waiting for the agent's first sync")?;
        for (ns, iface) in &spec.xdp_pass {
            let mut c = sh::command(spec.bin)
                .args([
                    "xdp-pass",
                    "--iface",
                    iface,
                    "--netns",
                    ns,
                    "--node-name",
                    spec.node,
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting skiff-agent xdp-pass")?;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(st) = c.try_wait()? {
                    if !st.success() {
                        let mut err = String::new();
                        if let Some(mut e) = c.stderr.take() {
                            let _ = std::io::Read::read_to_string(&mut e, &mut err);
                        }
                        bail!(
                            "skiff-agent xdp-pass --iface {iface} --netns {ns} failed: {}",
                            err.trim()
                        );
                    }
                    break;
                }
                if Instant::now() > deadline {
                    // Still running: it keeps its program attached while it lives.
                    agent.helpers.push(c);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(agent)
    }

    /// Fails (with the tail of its log) if the agent has exited.
    pub fn check(&mut self) -> Result<()> {
        if let Some(c) = self.child.as_mut()
            && let Some(status) = c.try_wait()?
        {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(8).collect();
            bail!(
                "skiff-agent exited ({status}); log tail: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            );
        }
        Ok(())
    }

    /// Waits (bounded) for a new `synced` line that satisfies `want`; returns it.
    pub fn wait_sync(&mut self, limit: Duration, want: impl Fn(&Sync) -> bool) -> Result<Sync> {
        let deadline = Instant::now() + limit;
        loop {
            let text = std::fs::read(&self.log).unwrap_or_default();
            // Only whole lines: the agent may be half-way through writing the last one.
            let end = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            if end > self.seen {
                let chunk = String::from_utf8_lossy(&text[self.seen..end]).into_owned();
                self.seen = end;
                for s in chunk.lines().filter_map(parse_sync) {
                    self.frontends = s.frontends;
                    if want(&s) {
                        return Ok(s);
                    }
                }
            }
            self.check()?;
            if Instant::now() > deadline {
                bail!("no matching `synced` line from the agent within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Skips everything the log holds so far.
    fn skip_log(&mut self) {
        let text = std::fs::read(&self.log).unwrap_or_default();
        self.seen = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    }

    /// Replaces the manifests (atomically, by rename) and waits for the sync that applies them: returns the wall
    /// time from the rename to the log line, and the agent's own figure for that sync.
    pub fn apply(
        &mut self,
        yaml: &str,
        limit: Duration,
        want: impl Fn(&Sync) -> bool,
    ) -> Result<(Duration, Sync)> {
        let tmp = self.manifests.with_extension("tmp");
        std::fs::write(&tmp, yaml)?;
        self.skip_log();
        let t0 = Instant::now();
        std::fs::rename(&tmp, self.manifests.join("services.yaml"))?;
        let s = self.wait_sync(limit, want)?;
        Ok((t0.elapsed(), s))
    }

    /// Frontends in the maps after the last sync seen.
    pub fn frontends(&self) -> u64 {
        self.frontends
    }

    /// Agent RSS in KiB from /proc.
    pub fn rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// Sum of `bytes_memlock` of the maps pinned under this agent's pin directory.
    pub fn map_memlock_bytes(&self) -> Result<u64> {
        let out = sh::run("bpftool", &["-j", "-f", "map", "show"])?;
        let maps: serde_json::Value = serde_json::from_str(&out).context("bpftool -j map show")?;
        let prefix = format!("/sys/fs/bpf/skiff/{}/", self.node);
        let total = maps
            .as_array()
            .context("bpftool map show: not a list")?
            .iter()
            .filter(|m| {
                m["pinned"].as_array().is_some_and(|p| {
                    p.iter()
                        .any(|x| x.as_str().is_some_and(|s| s.starts_with(&prefix)))
                })
            })
            .filter_map(|m| m["bytes_memlock"].as_u64())
            .sum();
        if total == 0 {
            bail!("no map pinned under {prefix}");
        }
        Ok(total)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        for mut c in self.helpers.drain(..).chain(self.child.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
        cleanup(&self.bin, &self.node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_coloured_sync_lines() {
        let plain = "2026-12-01T21:00:00.000Z  INFO skiff_agent::run: synced ops=20012 frontends=2003 \
                     backends=10 udp_flows_purged=0 took_ms=41.5";
        assert_eq!(
            parse_sync(plain),
            Some(Sync {
                ops: 20012,
                frontends: 2003,
                took_ms: 41.5
            })
        );
        let coloured = "\u{1b}[32m INFO\u{1b}[0m \u{1b}[2mskiff_agent::run\u{1b}[0m\u{1b}[2m:\u{1b}[0m synced \
                        \u{1b}[3mops\u{1b}[0m\u{1b}[2m=\u{1b}[0m3 \u{1b}[3mfrontends\u{1b}[0m\u{1b}[2m=\u{1b}[0m0 \
                        \u{1b}[3mtook_ms\u{1b}[0m\u{1b}[2m=\u{1b}[0m0.25";
        assert_eq!(
            parse_sync(coloured),
            Some(Sync {
                ops: 3,
                frontends: 0,
                took_ms: 0.25
            })
        );
        assert_eq!(parse_sync("INFO skiff_agent: watching manifests ops=1"), None);
    }
}
