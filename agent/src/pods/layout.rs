//! The state directory of one pod (`<state root>/<uid>/`): where the sandbox, plan, volumes, container records and
//! logs live, so an agent restart can re-adopt what is running.
use std::path::{Path, PathBuf};

/// Default state root of a node's pods.
pub fn default_state_root(node: &str) -> PathBuf {
    PathBuf::from("/run/skiff").join(node).join("pods")
}

/// Paths inside one pod's state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDir(PathBuf);

impl PodDir {
    pub fn new(state_root: &Path, uid: &str) -> Self {
        Self(state_root.join(uid))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn plan_file(&self) -> PathBuf {
        self.0.join("plan.json")
    }

    pub fn sandbox_file(&self) -> PathBuf {
        self.0.join("sandbox.json")
    }

    pub fn sandbox_log(&self) -> PathBuf {
        self.0.join("sandbox.log")
    }

    /// Mount points the runtime had to create on the host (removed with the pod).
    pub fn mountpoints_file(&self) -> PathBuf {
        self.0.join("mountpoints.json")
    }

    pub fn volume(&self, name: &str) -> PathBuf {
        self.0.join("volumes").join(name)
    }

    pub fn container(&self, name: &str) -> PathBuf {
        self.0.join("containers").join(name)
    }

    pub fn record_file(&self, name: &str) -> PathBuf {
        self.container(name).join("record.json")
    }

    pub fn launch_file(&self, name: &str, attempt: u32) -> PathBuf {
        self.container(name).join(format!("launch-{attempt}.json"))
    }

    pub fn run_file(&self, name: &str, attempt: u32) -> PathBuf {
        self.container(name).join(format!("run-{attempt}.json"))
    }

    pub fn exit_file(&self, name: &str, attempt: u32) -> PathBuf {
        self.container(name).join(format!("exit-{attempt}.json"))
    }

    pub fn shim_log(&self, name: &str) -> PathBuf {
        self.container(name).join("shim.log")
    }

    /// The log of one run of a container (`<restartCount>.log`, like the kubelet's layout).
    pub fn log_file(&self, name: &str, attempt: u32) -> PathBuf {
        self.0.join("logs").join(name).join(format!("{attempt}.log"))
    }
}

/// Writes JSON atomically (temporary file, then rename).
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(tmp, path)
}

/// Reads JSON; `Ok(None)` when the file does not exist.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
