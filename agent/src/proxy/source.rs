//! Where Services, EndpointSlices and Nodes come from: a manifest directory or the Kubernetes API.
use std::path::PathBuf;

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use tokio::sync::watch;

pub use super::kube_source::spawn_kube;
pub use super::manifest_source::{ManifestOptions, spawn_manifests};

/// The complete current set of objects the proxy needs (every change produces a new snapshot).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub services: Vec<Service>,
    pub slices: Vec<EndpointSlice>,
    pub nodes: Vec<Node>,
}

impl Snapshot {
    /// The Node called `name`, if the snapshot has it.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))
    }
}

/// Which source to watch.
pub enum SourceConfig {
    /// A directory of Kubernetes manifests (`.yaml`, `.yml`, `.json`), reloaded on change.
    Manifests(PathBuf),
    /// The Kubernetes API (Services, discovery.k8s.io/v1 EndpointSlices, Nodes).
    Kube(kube::Client),
}

/// Starts the source on the current tokio runtime. The receiver holds `None` until the initial state is complete,
/// then a full snapshot after every change (bursts are debounced).
pub fn spawn_source(cfg: SourceConfig) -> anyhow::Result<watch::Receiver<Option<Snapshot>>> {
    match cfg {
        SourceConfig::Manifests(dir) => spawn_manifests(dir, ManifestOptions::default()),
        SourceConfig::Kube(client) => Ok(spawn_kube(client)),
    }
}
