//! cgroup v2 directories for pods and containers, with memory and CPU limits where the controllers are available
//! (on a hybrid layout the unified hierarchy often has neither: then processes are grouped but not limited).
use std::{
    io,
    path::{Path, PathBuf},
};

use super::plan::Limits;

/// CFS period used for `cpu.max`.
pub const CPU_PERIOD_US: u64 = 100_000;

/// The `cpu.max` value for a limit in millicores.
pub fn cpu_max(millis: u64) -> String {
    format!("{} {CPU_PERIOD_US}", (millis * CPU_PERIOD_US / 1000).max(1000))
}

/// Default cgroup root for a node's pods: `<cgroup2 mount>/skiff/<node>/pods`.
pub fn default_root(cgroup2_mount: &Path, node: &str) -> PathBuf {
    cgroup2_mount.join("skiff").join(node).join("pods")
}

/// The cgroup of one container.
pub fn container_dir(root: &Path, uid: &str, name: &str) -> PathBuf {
    root.join(format!("pod{uid}")).join(name)
}

fn controllers(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Creates the container's cgroup and applies `limits` where possible; returns the directory and what could not
/// be applied.
pub fn prepare(root: &Path, uid: &str, name: &str, limits: &Limits) -> io::Result<(PathBuf, Vec<String>)> {
    let dir = container_dir(root, uid, name);
    std::fs::create_dir_all(&dir)?;
    let mut skipped = Vec::new();
    let wanted: Vec<(&str, &str, String)> = [
        limits
            .memory_bytes
            .map(|b| ("memory", "memory.max", b.to_string())),
        limits.cpu_millis.map(|m| ("cpu", "cpu.max", cpu_max(m))),
    ]
    .into_iter()
    .flatten()
    .collect();
    for (ctrl, file, value) in wanted {
        // Enable the controller down the path from the first ancestor that has it.
        let mut chain: Vec<&Path> = dir
            .ancestors()
            .skip(1)
            .take_while(|p| p.starts_with(root.parent().unwrap_or(root)))
            .collect();
        chain.reverse();
        for p in chain {
            if controllers(p).iter().any(|c| c == ctrl) {
                let _ = std::fs::write(p.join("cgroup.subtree_control"), format!("+{ctrl}"));
            }
        }
        match std::fs::write(dir.join(file), &value) {
            Ok(()) => {}
            Err(_) => skipped.push(format!(
                "{file}={value} (no {ctrl} controller in {})",
                dir.display()
            )),
        }
    }
    Ok((dir, skipped))
}

/// Removes a pod's cgroups (they must be empty of processes).
pub fn remove_pod(root: &Path, uid: &str) -> io::Result<()> {
    let pod = root.join(format!("pod{uid}"));
    match std::fs::read_dir(&pod) {
        Ok(entries) => {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    std::fs::remove_dir(e.path())?;
                }
            }
            std::fs::remove_dir(&pod)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_scales_millicores() {
        assert_eq!(cpu_max(250), "25000 100000");
        assert_eq!(cpu_max(2000), "200000 100000");
        assert_eq!(cpu_max(1), "1000 100000");
    }
}
