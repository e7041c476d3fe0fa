//! Removing what a lab node leaves when its agent is gone: pod processes (recorded sandboxes and the node's
//! cgroup subtree), the node's cgroups, its pinned programs and maps, and its pod state.
use std::{
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{layout::Lab, plan::NodePlan};
use crate::cmd;

pub const CGROUP2: &str = "/sys/fs/cgroup/unified";

/// The cgroup subtree of a node's pods.
pub fn node_cgroup(node: &str) -> PathBuf {
    Path::new(CGROUP2).join("skiff").join(node)
}

/// Pin directory of a node.
pub fn pin_dir(node: &str) -> PathBuf {
    Path::new("/sys/fs/bpf/skiff").join(node)
}

/// Kills the node's pods, removes its cgroups, pins and pod state. Call only after its agent stopped.
pub fn remove_node_leftovers(lab: &Lab, n: &NodePlan) -> Result<()> {
    let state = lab.node_state(n);
    kill_sandboxes(&state.join("pods"));
    kill_cgroup_tree(&node_cgroup(&n.name));
    remove_cgroup_tree(&node_cgroup(&n.name));
    if pin_dir(&n.name).exists() {
        cmd::output(Command::new(lab.agent_bin()).args(["cleanup", "--node-name", &n.name]))
            .with_context(|| format!("removing the pins of {}", n.name))?;
        let _ = std::fs::remove_dir_all(pin_dir(&n.name));
    }
    if state.exists() {
        std::fs::remove_dir_all(&state).with_context(|| format!("removing {}", state.display()))?;
    }
    Ok(())
}

/// SIGKILLs every pod sandbox recorded under `pods/<uid>/sandbox.json` (checked to be a pod process).
fn kill_sandboxes(pods: &Path) {
    let Ok(entries) = std::fs::read_dir(pods) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path().join("sandbox.json")) else {
            continue;
        };
        let Some(pid) = recorded_pid(&text) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("__enter-pod") {
            // SAFETY: kill(2) on a pid recorded by the agent and checked to be a pod sandbox process.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// The `"pid": N` of a sandbox record.
pub fn recorded_pid(json: &str) -> Option<i32> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v.get("pid")?
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .filter(|p| *p > 1)
}

/// Kills every process in a cgroup subtree (`cgroup.kill`) and waits (bounded) until it is empty.
fn kill_cgroup_tree(root: &Path) {
    if !root.exists() {
        return;
    }
    let _ = std::fs::write(root.join("cgroup.kill"), "1");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let populated = std::fs::read_to_string(root.join("cgroup.events"))
            .map(|t| t.lines().any(|l| l == "populated 1"))
            .unwrap_or(false);
        if !populated {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Removes a cgroup subtree, deepest first.
fn remove_cgroup_tree(root: &Path) {
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(root);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_pids_are_read_from_the_record() {
        assert_eq!(recorded_pid(r#"{"pid": 4321, "start_time": 9}"#), Some(4321));
        assert_eq!(recorded_pid(r#"{"pid": 1}"#), None);
        assert_eq!(recorded_pid("not json"), None);
    }
}
