//! Detached lab processes: started in their own process group with a log file and a pid file, found again and
//! stopped by that pid (checked against the process's command line, so a reused pid is never signalled).
use std::{
    fs::File,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

/// A process the lab runs, known by its pid file.
pub struct Daemon {
    pub pid_file: PathBuf,
    pub log: PathBuf,
    /// A string the process's command line contains (its node name, or `skiff-control`).
    pub marker: String,
}

impl Daemon {
    /// The pid of the running process, if the pid file names a live process that is ours.
    pub fn pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        (cmdline_matches(&cmdline, &self.marker) && !is_zombie(pid)).then_some(pid)
    }

    /// Starts `cmd` detached (own process group, no stdin, output appended to the log) and records its pid.
    pub fn spawn(&self, cmd: &mut Command) -> Result<i32> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", crate::cmd::display(cmd)))?;
        let pid = child.id() as i32;
        std::fs::write(&self.pid_file, format!("{pid}\n"))
            .with_context(|| format!("writing {}", self.pid_file.display()))?;
        // The child is reaped by init once this command exits; until then a dead child would linger as a zombie,
        // which `pid()` does not count as running.
        std::mem::forget(child);
        Ok(pid)
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL. Removes the pid file. Returns whether a process was stopped.
    pub fn stop(&self, grace: Duration) -> bool {
        let Some(pid) = self.pid() else {
            let _ = std::fs::remove_file(&self.pid_file);
            return false;
        };
        signal(pid, libc::SIGTERM);
        let started = Instant::now();
        while self.pid().is_some() && started.elapsed() < grace {
            thread::sleep(Duration::from_millis(100));
        }
        if self.pid().is_some() {
            signal(pid, libc::SIGKILL);
            let started = Instant::now();
            while self.pid().is_some() && started.elapsed() < Duration::from_secs(5) {
                thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = std::fs::remove_file(&self.pid_file);
        true
    }
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a pid read from our own pid file and checked against /proc/PID/cmdline.
    unsafe {
        libc::kill(pid, sig);
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Whether a command line (arguments joined by spaces) belongs to the lab process with `marker`.
pub fn cmdline_matches(cmdline: &str, marker: &str) -> bool {
    cmdline
        .split(' ')
        .any(|arg| arg == marker || arg.ends_with(&format!("/{marker}")))
}

/// Last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_match_whole_arguments_only() {
        let agent =
            "/var/lib/skiff-lab/bin/skiff-agent node --node-name skiff-lab-node1 --netns skiff-lab-node1";
        assert!(cmdline_matches(agent, "skiff-lab-node1"));
        assert!(!cmdline_matches(agent, "skiff-lab-node"));
        assert!(!cmdline_matches(agent, "skiff-control"));
        assert!(cmdline_matches(
            "/x/bin/skiff-control --listen 127.0.0.1:6443",
            "skiff-control"
        ));
    }

    #[test]
    fn spawn_records_a_pid_and_stop_ends_the_process() {
        let dir = std::env::temp_dir().join(format!("xtask-lab-procs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let d = Daemon {
            pid_file: dir.join("sleep.pid"),
            log: dir.join("sleep.log"),
            marker: "4242".into(),
        };
        assert_eq!(d.pid(), None);
        let pid = d.spawn(Command::new("sleep").arg("4242")).unwrap();
        // Until the child has exec'd, /proc/PID/cmdline still shows this test binary: give it a moment.
        let started = Instant::now();
        while d.pid().is_none() && started.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(d.pid(), Some(pid));
        assert!(d.stop(Duration::from_secs(5)));
        assert_eq!(d.pid(), None);
        assert!(!d.pid_file.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
