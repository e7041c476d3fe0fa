//! The pod sandbox: a small process (`skiff-agent __enter-pod sandbox`) that owns the pod's network, UTS and IPC
//! namespaces for the pod's lifetime. Recorded in the state directory by pid and start time, so it can be re-adopted.
use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde::{Deserialize, Serialize};

use super::{
    RuntimeError,
    layout::{PodDir, read_json, write_json},
};

/// A running sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    pub pid: u32,
    /// Start time of the process (field 22 of /proc/PID/stat), guarding against pid reuse.
    pub start_time: u64,
}

/// Start time of a process, if it exists.
pub fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

impl Sandbox {
    /// Starts a sandbox with hostname `hostname` and records it in `dir`.
    pub fn create(agent_exe: &Path, dir: &PodDir, hostname: &str) -> Result<Self, RuntimeError> {
        std::fs::create_dir_all(dir.path()).map_err(RuntimeError::io("creating the pod state directory"))?;
        let log =
            std::fs::File::create(dir.sandbox_log()).map_err(RuntimeError::io("creating sandbox.log"))?;
        let mut cmd = Command::new(agent_exe);
        cmd.args(["__enter-pod", "sandbox", "--hostname", hostname])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        // SAFETY: setsid is async-signal-safe; it detaches the sandbox from the agent's session and signals.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(RuntimeError::io("starting the pod sandbox"))?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        // Reap the sandbox when it exits while this agent runs.
        std::thread::spawn(move || child.wait());
        let ready = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        if ready.trim() != "ready" {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            let log = std::fs::read_to_string(dir.sandbox_log()).unwrap_or_default();
            return Err(RuntimeError::Sandbox(format!(
                "sandbox did not start: {}",
                log.trim()
            )));
        }
        let sb = Self {
            pid,
            start_time: proc_start_time(pid)
                .ok_or_else(|| RuntimeError::Sandbox("sandbox exited at once".into()))?,
        };
        write_json(&dir.sandbox_file(), &sb).map_err(RuntimeError::io("writing sandbox.json"))?;
        Ok(sb)
    }

    /// The recorded sandbox of `dir`, if it is still running.
    pub fn load(dir: &PodDir) -> Option<Self> {
        let sb: Self = read_json(&dir.sandbox_file()).ok()??;
        sb.alive().then_some(sb)
    }

    pub fn alive(&self) -> bool {
        proc_start_time(self.pid) == Some(self.start_time)
    }

    /// The namespace file of kind `ns` (`net`, `uts`, `ipc`).
    pub fn ns_path(&self, ns: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/{ns}", self.pid))
    }

    pub fn netns_path(&self) -> PathBuf {
        self.ns_path("net")
    }

    /// Kills the sandbox and waits (bounded) until it is gone.
    pub fn destroy(&self) -> Result<(), RuntimeError> {
        if !self.alive() {
            return Ok(());
        }
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.alive() {
            if Instant::now() > deadline {
                return Err(RuntimeError::Sandbox(format!(
                    "sandbox {} did not exit",
                    self.pid
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_self_is_stable_and_missing_pids_have_none() {
        let me = std::process::id();
        assert_eq!(proc_start_time(me), proc_start_time(me));
        assert!(proc_start_time(me).is_some());
        assert_eq!(proc_start_time(u32::MAX - 1), None);
    }
}
