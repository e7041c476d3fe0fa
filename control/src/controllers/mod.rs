//! Background reconcilers that act on stored objects, and the startup of the controller manager.
//!
//! The namespace finalizer works on the store directly (it is part of the API's delete semantics).
//! Every other controller and the scheduler talk to the server through its own HTTP API with kube-rs,
//! exactly like an external kube-controller-manager: writes go through the same admission
//! (defaulting, validation, allocation), resourceVersion conflicts and watch semantics as any
//! client's, the caches are kube-runtime reflectors, and the components could move out of process
//! unchanged. The cost (a loopback hop per write) is small next to the value of one write path.

pub mod cache;
pub mod daemonset;
pub mod deployment;
pub mod endpointslice;
pub mod events;
pub mod expectations;
pub mod gc;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod replicaset;
pub mod selector;

use std::sync::Arc;

use kube::Client;
use tokio::task::JoinSet;

/// Which controllers run, and the settings of those that have any.
#[derive(Debug, Clone, Copy)]
pub struct ControllerOptions {
    pub endpointslice: bool,
    pub replicaset: bool,
    pub deployment: bool,
    pub scheduler: bool,
    pub daemonset: bool,
    pub nodelifecycle: bool,
    pub nodeipam: bool,
    pub podgc: bool,
    pub garbagecollector: bool,
    /// Pod CIDR allocation for Nodes.
    pub ipam: nodeipam::IpamConfig,
    /// Lease grace period and default eviction tolerations.
    pub node_timings: nodelifecycle::Timings,
}

impl ControllerOptions {
    /// Every controller on, with Kubernetes' default settings.
    pub const ALL: Self = Self {
        endpointslice: true,
        replicaset: true,
        deployment: true,
        scheduler: true,
        daemonset: true,
        nodelifecycle: true,
        nodeipam: true,
        podgc: true,
        garbagecollector: true,
        ipam: nodeipam::IpamConfig::DEFAULT,
        node_timings: nodelifecycle::Timings::DEFAULT,
    };
    /// Every controller off (tests switch on the ones they exercise: `ControllerOptions { x: true, ..NONE }`).
    pub const NONE: Self = Self {
        endpointslice: false,
        replicaset: false,
        deployment: false,
        scheduler: false,
        daemonset: false,
        nodelifecycle: false,
        nodeipam: false,
        podgc: false,
        garbagecollector: false,
        ..Self::ALL
    };
}

impl Default for ControllerOptions {
    fn default() -> Self {
        Self::ALL
    }
}

/// Names accepted by [`ControllerOptions::disable`].
pub const NAMES: &[&str] = &[
    "endpointslice",
    "replicaset",
    "deployment",
    "scheduler",
    "daemonset",
    "nodelifecycle",
    "nodeipam",
    "podgc",
    "garbagecollector",
];

impl ControllerOptions {
    /// Turns one controller off by name.
    pub fn disable(&mut self, name: &str) -> Result<(), StartError> {
        match name {
            "endpointslice" => self.endpointslice = false,
            "replicaset" => self.replicaset = false,
            "deployment" => self.deployment = false,
            "scheduler" => self.scheduler = false,
            "daemonset" => self.daemonset = false,
            "nodelifecycle" => self.nodelifecycle = false,
            "nodeipam" => self.nodeipam = false,
            "podgc" => self.podgc = false,
            "garbagecollector" => self.garbagecollector = false,
            other => return Err(StartError::UnknownController(other.to_owned())),
        }
        Ok(())
    }
}

/// Why the controllers could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("building the API client: {0}")]
    Client(String),
    #[error("unknown controller {name:?}; known: {known}", name = .0, known = NAMES.join(", "))]
    UnknownController(String),
}

/// The running controllers; dropping the handle stops them.
pub struct Controllers {
    tasks: JoinSet<()>,
}

impl Controllers {
    /// Waits until every controller stopped (they only stop on a fatal error).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// A kube-rs client for the server at `url`, authenticated with the admin kubeconfig when serving TLS.
pub async fn client(url: &str, kubeconfig: Option<&str>) -> Result<Client, StartError> {
    let err = |e: &dyn std::fmt::Display| StartError::Client(e.to_string());
    // The workspace enables two rustls backends; pick the one the server uses (a second install is a no-op).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = match kubeconfig {
        Some(text) => {
            let kc = kube::config::Kubeconfig::from_yaml(text).map_err(|e| err(&e))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| err(&e))?
        }
        None => kube::Config::new(url.parse().map_err(|e| err(&e))?),
    };
    Client::try_from(config).map_err(|e| err(&e))
}

/// Starts the enabled controllers against a server started in this process.
pub async fn start_for(
    server: &crate::server::Running,
    options: ControllerOptions,
) -> Result<Controllers, StartError> {
    let host = if server.addr.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        server.addr.ip()
    };
    let scheme = if server.pki.is_some() { "https" } else { "http" };
    let url = format!(
        "{scheme}://{}",
        std::net::SocketAddr::new(host, server.addr.port())
    );
    let kubeconfig = server.pki.as_ref().map(|pki| pki.kubeconfig(&url));
    Ok(spawn(client(&url, kubeconfig.as_deref()).await?, options))
}

/// Starts the enabled controllers against `client`.
pub fn spawn(client: Client, options: ControllerOptions) -> Controllers {
    let mut tasks = JoinSet::new();
    let caches = Arc::new(cache::Caches::start(&client, &mut tasks));
    if options.endpointslice {
        tasks.spawn(endpointslice::run(client.clone(), Arc::clone(&caches)));
    }
    if options.replicaset {
        tasks.spawn(replicaset::run(client.clone(), Arc::clone(&caches)));
    }
    if options.deployment {
        tasks.spawn(deployment::run(client.clone(), Arc::clone(&caches)));
    }
    if options.scheduler {
        tasks.spawn(crate::scheduler::run(client.clone(), Arc::clone(&caches)));
    }
    if options.daemonset {
        tasks.spawn(daemonset::run(client.clone(), Arc::clone(&caches)));
    }
    if options.nodelifecycle {
        tasks.spawn(nodelifecycle::run(
            client.clone(),
            Arc::clone(&caches),
            options.node_timings,
        ));
    }
    if options.nodeipam {
        tasks.spawn(nodeipam::run(client.clone(), Arc::clone(&caches), options.ipam));
    }
    if options.podgc {
        tasks.spawn(nodelifecycle::podgc::run(client.clone(), Arc::clone(&caches)));
    }
    if options.garbagecollector {
        tasks.spawn(gc::run(client.clone()));
    }
    Controllers { tasks }
}
