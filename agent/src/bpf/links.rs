//! Pinned links: replace the program of an existing pinned link atomically, or create and pin a new one.
use std::{
    io,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use aya::programs::{
    ProgramError,
    links::{FdLink, LinkError},
};

use super::sys;

/// Errors creating or pinning a link.
#[derive(Debug, thiserror::Error)]
pub enum LinkPinError {
    #[error("attaching {what}: {source}")]
    Attach {
        what: String,
        #[source]
        source: ProgramError,
    },
    #[error(
        "attaching {what}: the kernel gave no bpf_link (legacy attach), which cannot be pinned: {source}"
    )]
    NotALink {
        what: String,
        #[source]
        source: LinkError,
    },
    #[error("pinning link {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("removing stale link pin {path}: {source}")]
    Unpin { path: PathBuf, source: io::Error },
}

/// How a link came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkOutcome {
    /// An existing pinned link now runs the new program (no moment without a program).
    Replaced,
    /// A new link was created and pinned.
    Created,
}

/// Makes the link pinned at `path` run `prog`: if a live link is pinned there, its program is swapped with
/// `BPF_LINK_UPDATE`; otherwise (no pin, or the link is defunct because its interface or cgroup went away) `create`
/// attaches anew and the link is pinned.
pub fn ensure_pinned(
    path: &Path,
    prog: impl AsFd,
    create: impl FnOnce() -> Result<FdLink, LinkPinError>,
) -> Result<LinkOutcome, LinkPinError> {
    match sys::obj_get(path) {
        Ok(link) => match sys::link_update(&link, &prog) {
            Ok(()) => return Ok(LinkOutcome::Replaced),
            Err(e) => {
                tracing::info!(pin = %path.display(), error = %e, "pinned link is stale; attaching anew");
                remove_pin(path)?;
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(pin = %path.display(), error = %e, "unreadable link pin; replacing it");
            remove_pin(path)?;
        }
    }
    let link = create()?;
    link.pin(path).map_err(|source| LinkPinError::Pin {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(LinkOutcome::Created)
}

/// Removes a link pin (detaching the link unless something else holds it); a missing pin is fine.
pub fn remove_pin(path: &Path) -> Result<(), LinkPinError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LinkPinError::Unpin {
            path: path.to_path_buf(),
            source,
        }),
    }
}
