//! Running work inside a named network namespace (`/run/netns/NAME`) on a dedicated thread.
//!
//! `setns(CLONE_NEWNET)` only moves the calling thread, and the thread keeps the host mount namespace (so
//! /sys/fs/bpf and the cgroup tree stay visible, unlike `ip netns exec`). Never call this on a tokio worker.
use std::{fs::File, io, path::PathBuf, thread::JoinHandle};

use nix::sched::{CloneFlags, setns};

/// Errors entering a network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("opening network namespace {path}: {source} (create it with `ip netns add`)")]
    Open { path: PathBuf, source: io::Error },
    #[error("entering network namespace {path}: {source}")]
    Enter { path: PathBuf, source: nix::Error },
    #[error("spawning thread: {0}")]
    Spawn(io::Error),
}

/// Path of a named network namespace.
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Moves the calling thread into the named network namespace.
pub fn enter(name: &str) -> Result<(), NetnsError> {
    let path = netns_path(name);
    let f = File::open(&path).map_err(|source| NetnsError::Open {
        path: path.clone(),
        source,
    })?;
    setns(&f, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter { path, source })
}

/// Spawns a named thread that enters `netns` (if any) before running `f`. An error entering the namespace is
/// returned from the join handle as `Err`.
pub fn spawn_in<T, F>(
    netns: Option<String>,
    thread_name: &str,
    f: F,
) -> Result<JoinHandle<Result<T, NetnsError>>, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    std::thread::Builder::new()
        .name(thread_name.to_string())
        .spawn(move || {
            if let Some(ns) = &netns {
                enter(ns)?;
            }
            Ok(f())
        })
        .map_err(NetnsError::Spawn)
}
