//! `skiff-agent cleanup`: detaches and removes every link and map Skiff pinned for a node (or all nodes).
use std::{
    io,
    path::{Path, PathBuf},
};

use skiff_common::PIN_ROOT;

use super::pins::{PinDir, STATE_ROOT};

/// Errors removing pins.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error("removing {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
}

/// What cleanup removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub links: Vec<PathBuf>,
    pub maps: Vec<PathBuf>,
    pub other: Vec<PathBuf>,
}

impl Removed {
    pub fn is_empty(&self) -> bool {
        self.links.is_empty() && self.maps.is_empty() && self.other.is_empty()
    }
}

fn remove_file(path: &Path) -> Result<bool, CleanupError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(CleanupError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn remove_dir(path: &Path) -> Result<(), CleanupError> {
    match std::fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CleanupError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn entries(dir: &Path) -> Result<Vec<PathBuf>, CleanupError> {
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
            v.sort();
            Ok(v)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(CleanupError::Read {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Removes a node's pin directory: links first (unpinning a link nobody else holds detaches it, and its program
/// goes with it), then maps and the names file. Idempotent: a missing directory removes nothing.
pub fn cleanup_dir(dir: &Path) -> Result<Removed, CleanupError> {
    let mut removed = Removed::default();
    let links = dir.join("links");
    for p in entries(&links)? {
        if remove_file(&p)? {
            removed.links.push(p);
        }
    }
    remove_dir(&links)?;
    for p in entries(dir)? {
        if p.is_dir() {
            // A scratch directory left by an interrupted standalone load.
            let r = cleanup_dir(&p)?;
            removed.maps.extend(r.maps);
            removed.other.extend(r.other);
            continue;
        }
        let is_map = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| skiff_common::maps::ALL.contains(&n));
        if remove_file(&p)? {
            if is_map {
                removed.maps.push(p)
            } else {
                removed.other.push(p)
            }
        }
    }
    remove_dir(dir)?;
    Ok(removed)
}

/// Removes everything of one node: its pin directory and its state directory (names file).
pub fn cleanup_node(pin: &PinDir) -> Result<Removed, CleanupError> {
    let mut r = cleanup_dir(pin.path())?;
    let state = cleanup_dir(&pin.state_dir())?;
    r.other.extend(state.other);
    Ok(r)
}

/// Removes the pins and state of every node, then the roots themselves.
pub fn cleanup_all() -> Result<Removed, CleanupError> {
    let mut all = Removed::default();
    for root in [Path::new(PIN_ROOT), Path::new(STATE_ROOT)] {
        for d in entries(root)? {
            if d.is_dir() {
                let r = cleanup_dir(&d)?;
                all.links.extend(r.links);
                all.maps.extend(r.maps);
                all.other.extend(r.other);
            }
        }
        remove_dir(root)?;
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_links_maps_and_files_and_is_idempotent() {
        let dir = std::env::temp_dir().join(format!("skiff-agentio-cleanup-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("links")).unwrap();
        std::fs::write(dir.join("links/skiff_connect4-cgroup"), "").unwrap();
        std::fs::write(dir.join(skiff_common::maps::SERVICES), "").unwrap();
        std::fs::write(dir.join("names.json"), "{}").unwrap();
        let r = cleanup_dir(&dir).unwrap();
        assert_eq!(r.links, [dir.join("links/skiff_connect4-cgroup")]);
        assert_eq!(r.maps, [dir.join(skiff_common::maps::SERVICES)]);
        assert_eq!(r.other, [dir.join("names.json")]);
        assert!(!dir.exists());
        assert!(cleanup_dir(&dir).unwrap().is_empty());
    }
}
