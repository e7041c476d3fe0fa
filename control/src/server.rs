//! Composition of store, registry and HTTP API into a running server (used by the binary and by tests).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::router::{ApiOptions, ApiState, router};
use crate::bootstrap;
use crate::registry::{Registry, RegistryConfig};
use crate::store::Store;
use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening the store in {dir}: {source}")]
    Store {
        dir: PathBuf,
        source: crate::store::Error,
    },
    #[error("creating the system objects: {0}")]
    Bootstrap(crate::store::Error),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Everything needed to start a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub registry: RegistryConfig,
    pub api: ApiOptions,
    pub store: EmbeddedOptions,
}

impl ServerConfig {
    /// Defaults for a data directory, listening on an ephemeral loopback port.
    pub fn for_tests(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            registry: RegistryConfig::default(),
            api: ApiOptions::default(),
            store: EmbeddedOptions::default(),
        }
    }
}

/// A started server; dropping it stops serving.
pub struct Running {
    pub addr: SocketAddr,
    pub store: Arc<dyn Store>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// The base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves until the server fails or `shutdown` is called from elsewhere.
    pub async fn wait(mut self) -> std::io::Result<()> {
        (&mut self.task)
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }

    /// Stops accepting connections and ends open streams.
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.abort();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Opens the store, creates the system objects and starts serving.
pub async fn start(config: ServerConfig) -> Result<Running, StartError> {
    let store = EmbeddedStore::open(&config.data_dir.join("store"), config.store).map_err(|source| {
        StartError::Store {
            dir: config.data_dir.clone(),
            source,
        }
    })?;
    let store: Arc<dyn Store> = Arc::new(store);
    let registry = Registry::new(config.registry);
    bootstrap::restore_allocations(&*store, &registry)
        .await
        .map_err(StartError::Bootstrap)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })?;
    bootstrap::ensure(&*store, &registry, addr.port())
        .await
        .map_err(StartError::Bootstrap)?;
    let state = Arc::new(ApiState {
        store: Arc::clone(&store),
        registry,
        options: config.api,
    });
    let (tx, rx) = oneshot::channel::<()>();
    let app = router(state);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
    });
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "skiff-control serving");
    Ok(Running {
        addr,
        store,
        shutdown: Some(tx),
        task,
    })
}
