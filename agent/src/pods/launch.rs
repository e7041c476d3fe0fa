//! The records exchanged with the container shim: what to launch, that it runs, how it ended.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A bind mount into the container's mount namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// Everything the shim needs to start one container run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    pub sandbox_pid: u32,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub mounts: Vec<BindMount>,
    pub cgroup: Option<PathBuf>,
    pub log_path: PathBuf,
    pub log_max_bytes: u64,
    pub log_keep: usize,
    pub run_file: PathBuf,
    pub exit_file: PathBuf,
}

/// Written by the shim once the container process runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub pid: u32,
    pub shim_pid: u32,
    pub started_at: String,
}

/// Written by the shim when the container process ended (or could not start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: String,
    pub message: String,
    pub started_at: String,
    pub finished_at: String,
}
