//! Skiff's agent as a bench participant: start it on a manifest directory, time its syncs from the outside.
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::{Read, Seek};
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
    /// The line's own timestamp (the agent's wall clock) in seconds since the Unix epoch, when it has one.
    pub at_unix: Option<f64>,
}

fn text_hash(text: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
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
        at_unix: line.split_whitespace().next().and_then(parse_rfc3339_utc),
    })
}

/// Parses tracing's UTC timestamp `YYYY-MM-DDTHH:MM:SS[.frac]Z` into seconds since the Unix epoch.
pub fn parse_rfc3339_utc(s: &str) -> Option<f64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.splitn(3, ':');
    let (hh, mm) = (t.next()?.parse::<i64>().ok()?, t.next()?.parse::<i64>().ok()?);
    let ss: f64 = t.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || !(0.0..61.0).contains(&ss)
    {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), March-based years.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60) as f64 + ss)
}

/// A running `skiff-agent proxy` reading a manifest directory (one file per Service); killed and cleaned up when
/// dropped.
pub struct Agent {
    bin: PathBuf,
    node: String,
    manifests: PathBuf,
    log: PathBuf,
    /// Bytes of the log already looked at.
    seen: usize,
    /// Frontends after the last sync seen.
    frontends: u64,
    /// The last sync seen.
    last: Option<Sync>,
    /// The manifest files written so far and a hash of their text.
    written: HashMap<String, u64>,
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
    /// Watch the apiserver of this kubeconfig instead of a manifest directory.
    pub kubeconfig: Option<&'a Path>,
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
        let mut cmd = sh::command(spec.bin);
        match spec.kubeconfig {
            Some(kc) => cmd.args(["proxy", "--kubeconfig"]).arg(kc),
            None => cmd.args(["proxy", "--manifests"]).arg(&manifests),
        };
        let child = cmd
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
            last: None,
            written: HashMap::new(),
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
            let text = self.read_log_from(self.seen);
            // Only whole lines: the agent may be half-way through writing the last one.
            let end = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            if end > 0 {
                let chunk = String::from_utf8_lossy(&text[..end]).into_owned();
                self.seen += end;
                for s in chunk.lines().filter_map(parse_sync) {
                    self.frontends = s.frontends;
                    self.last = Some(s);
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

    /// Waits (bounded by `limit`) until no new `synced` line that wrote to the maps (ops > 0) has appeared for
    /// `quiet`; returns the last such line seen (None if there was none).
    pub fn wait_quiet(&mut self, quiet: Duration, limit: Duration) -> Result<Option<Sync>> {
        let deadline = Instant::now() + limit;
        let mut last = None;
        let mut last_at = Instant::now();
        loop {
            match self.wait_sync(quiet, |s| s.ops > 0) {
                Ok(s) => {
                    last = Some(s);
                    last_at = Instant::now();
                }
                Err(_) if last_at.elapsed() >= quiet => return Ok(last),
                Err(e) => return Err(e),
            }
            self.check()?;
            if Instant::now() > deadline {
                bail!("the agent kept syncing for {limit:?}");
            }
        }
    }

    /// The log's bytes from `offset` on (empty if it cannot be read).
    fn read_log_from(&self, offset: usize) -> Vec<u8> {
        let mut buf = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&self.log)
            && f.seek(std::io::SeekFrom::Start(offset as u64)).is_ok()
        {
            let _ = f.read_to_end(&mut buf);
        }
        buf
    }

    /// Skips every whole line the log holds so far (a later [`Agent::wait_sync`] sees only newer lines).
    pub fn skip_log(&mut self) {
        let text = self.read_log_from(self.seen);
        self.seen += text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    }

    /// Makes the manifest directory hold exactly `files` (name, text) and waits for the sync that applies them.
    /// Files whose text is unchanged are left alone; changed and new ones are written under hidden names first
    /// (not timed), then renamed into place, and removed ones deleted. Returns the wall time from the first rename
    /// or deletion to the log line, and the agent's own figure for that sync.
    pub fn apply(
        &mut self,
        files: &[(String, String)],
        limit: Duration,
        want: impl Fn(&Sync) -> bool,
    ) -> Result<(Duration, Sync)> {
        let mut renames = Vec::new();
        let mut wanted = std::collections::HashSet::with_capacity(files.len());
        for (name, text) in files {
            wanted.insert(name.as_str());
            let hash = text_hash(text);
            if self.written.get(name) == Some(&hash) {
                continue;
            }
            let tmp = self.manifests.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
            renames.push((tmp, name.clone(), hash));
        }
        let removed: Vec<String> = self
            .written
            .keys()
            .filter(|n| !wanted.contains(n.as_str()))
            .cloned()
            .collect();
        self.skip_log();
        let t0 = Instant::now();
        for (tmp, name, hash) in renames {
            std::fs::rename(&tmp, self.manifests.join(&name))?;
            self.written.insert(name, hash);
        }
        for name in removed {
            std::fs::remove_file(self.manifests.join(&name))?;
            self.written.remove(&name);
        }
        let s = self.wait_sync(limit, want)?;
        Ok((t0.elapsed(), s))
    }

    /// The last `synced` line read from the log.
    pub fn last_sync(&self) -> Option<Sync> {
        self.last
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
        // Generated input (one file per Service): not a result worth keeping next to the report.
        let _ = std::fs::remove_dir_all(&self.manifests);
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
                took_ms: 41.5,
                at_unix: parse_rfc3339_utc("2026-12-01T21:00:00.000Z"),
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
                took_ms: 0.25,
                at_unix: None,
            })
        );
        assert_eq!(parse_sync("INFO skiff_agent: watching manifests ops=1"), None);
    }

    #[test]
    fn parses_utc_timestamps() {
        assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(0.0));
        // `date -u -d 2026-12-01T21:00:00Z +%s`
        assert_eq!(parse_rfc3339_utc("2026-12-01T21:00:00Z"), Some(1_796_158_800.0));
        let frac = parse_rfc3339_utc("2000-02-29T12:34:56.250000Z").unwrap();
        assert!((frac - 951_827_696.25).abs() < 1e-6, "{frac}");
        assert_eq!(parse_rfc3339_utc("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_utc("2026-12-01 21:00:00Z"), None);
        assert_eq!(parse_rfc3339_utc("INFO"), None);
    }
}
