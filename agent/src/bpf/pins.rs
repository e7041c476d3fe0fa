//! Where a node's pins live under bpffs (maps, links, names file), and making sure bpffs is mounted.
use std::{
    io,
    path::{Path, PathBuf},
};

use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};
use skiff_common::PIN_ROOT;

/// Errors preparing the pin directory.
#[derive(Debug, thiserror::Error)]
pub enum PinDirError {
    #[error("node name {0:?} is not usable as a directory name (use letters, digits, '-', '_', '.')")]
    BadNodeName(String),
    #[error("mounting bpffs at {path}: {source} (are you root?)")]
    Mount { path: PathBuf, source: nix::Error },
    #[error("creating {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
}

/// Where the agent keeps plain files per node (bpffs cannot hold them).
pub const STATE_ROOT: &str = "/run/skiff";

/// The pin directory of one node: `/sys/fs/bpf/skiff/<node-name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinDir {
    root: PathBuf,
}

impl PinDir {
    /// The pin directory for `node` under the standard root.
    pub fn for_node(node: &str) -> Result<Self, PinDirError> {
        Self::under(Path::new(PIN_ROOT), node)
    }

    /// The pin directory for `node` under `root` (tests use another root).
    pub fn under(root: &Path, node: &str) -> Result<Self, PinDirError> {
        let ok = !node.is_empty()
            && node != "."
            && node != ".."
            && node
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(PinDirError::BadNodeName(node.to_string()));
        }
        Ok(Self {
            root: root.join(node),
        })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Pin path of a map.
    pub fn map(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Directory holding the pinned links.
    pub fn links(&self) -> PathBuf {
        self.root.join("links")
    }

    /// Pin path of a link: `links/<prog>-<target>`.
    pub fn link(&self, prog: &str, target: &str) -> PathBuf {
        self.links().join(format!("{prog}-{target}"))
    }

    /// The node's directory for plain files (bpffs holds only pinned objects): `/run/skiff/<node-name>`.
    pub fn state_dir(&self) -> PathBuf {
        let node = self.root.file_name().expect("pin dir ends in the node name");
        Path::new(STATE_ROOT).join(node)
    }

    /// The service names file written by the running agent for `inspect`.
    pub fn names_file(&self) -> PathBuf {
        self.state_dir().join("names.json")
    }

    /// Mounts bpffs if needed and creates the node's directories.
    pub fn prepare(&self) -> Result<(), PinDirError> {
        ensure_bpffs()?;
        for dir in [self.root.clone(), self.links(), self.state_dir()] {
            std::fs::create_dir_all(&dir).map_err(|source| PinDirError::Create { path: dir, source })?;
        }
        Ok(())
    }
}

/// Mounts bpffs on `/sys/fs/bpf` unless it is already mounted there.
pub fn ensure_bpffs() -> Result<(), PinDirError> {
    let path = Path::new("/sys/fs/bpf");
    if is_bpffs(path) {
        return Ok(());
    }
    tracing::info!("mounting bpffs on {}", path.display());
    mount(Some("bpf"), path, Some("bpf"), MsFlags::empty(), None::<&str>).map_err(|source| {
        PinDirError::Mount {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Whether `path` is on a bpf filesystem.
pub fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_under_the_node_directory() {
        let d = PinDir::under(Path::new("/sys/fs/bpf/skiff"), "node-1").unwrap();
        assert_eq!(d.path(), Path::new("/sys/fs/bpf/skiff/node-1"));
        assert_eq!(
            d.link("skiff_tc_from_pod", "veth1"),
            Path::new("/sys/fs/bpf/skiff/node-1/links/skiff_tc_from_pod-veth1")
        );
        assert_eq!(
            d.map("SKIFF_SVC_V1"),
            Path::new("/sys/fs/bpf/skiff/node-1/SKIFF_SVC_V1")
        );
    }

    #[test]
    fn node_names_that_escape_the_root_are_rejected() {
        for bad in ["", "..", "a/b", "x y", "."] {
            assert!(PinDir::for_node(bad).is_err(), "{bad:?} accepted");
        }
    }
}
