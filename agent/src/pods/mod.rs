//! The pod runtime: pods as namespaces held by a sandbox process, containers as processes entered into them.
//!
//! Pure parts: [`plan`] (pod spec -> runtime plan), [`backoff`], [`probe`], [`status`]. I/O: [`sandbox`], [`container`]
//! and the shim in [`enter`] (`skiff-agent __enter-pod`), driven per pod by [`worker`] through [`runtime::PodRuntime`];
//! [`exec`] starts `kubectl exec` commands in running containers.
pub mod backoff;
pub mod cgroup;
pub mod container;
pub mod enter;
pub mod env;
pub mod exec;
pub mod image;
pub mod launch;
pub mod layout;
pub mod logs;
pub mod plan;
pub mod probe;
pub mod probe_exec;
pub mod quantity;
pub mod runtime;
pub mod sa_token;
pub mod sandbox;
pub mod status;
pub mod worker;

/// Runtime failures.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{0}")]
    Sandbox(String),
}

impl RuntimeError {
    /// Maps an I/O error with context.
    pub fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Io { what, source }
    }
}
