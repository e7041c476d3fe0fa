//! Where Services, EndpointSlices and Nodes come from: a manifest directory or the Kubernetes API, delivered as
//! per-object changes in compact form.
use std::path::PathBuf;

use tokio::sync::mpsc;

pub use super::inputs::Change;
pub use super::kube_source::spawn_kube;
pub use super::manifest_source::{ManifestOptions, spawn_manifests};

/// Which source to watch.
pub enum SourceConfig {
    /// A directory of Kubernetes manifests (`.yaml`, `.yml`, `.json`), reloaded on change.
    Manifests(PathBuf),
    /// The Kubernetes API (Services, discovery.k8s.io/v1 EndpointSlices, Nodes).
    Kube(kube::Client),
}

/// Starts the source on the current tokio runtime. It sends batches of changes (one `Change` per added, changed or
/// deleted object; a batch is what one read or one relist found, to be applied together) and `Change::Listed` for
/// each kind once its initial list is complete (before that the set is partial).
pub fn spawn_source(cfg: SourceConfig) -> anyhow::Result<mpsc::UnboundedReceiver<Vec<Change>>> {
    match cfg {
        SourceConfig::Manifests(dir) => spawn_manifests(dir, ManifestOptions::default()),
        SourceConfig::Kube(client) => Ok(spawn_kube(client)),
    }
}
