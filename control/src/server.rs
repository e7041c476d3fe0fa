//! Composition of store, registry, PKI and HTTP API into a running server (used by the binary and by tests).

mod health;
pub mod limits;
mod nesting;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::api::router::{ApiOptions, ApiState, router};
use crate::auth::authn::ServiceAccountTokens;
use crate::auth::pki::{self, Pki};
use crate::auth::rbac::RbacAuthorizer;
use crate::auth::serviceaccounts::{self, ServiceAccountIndex};
use crate::auth::tokens::{TokenError, TokenIssuer};
use crate::auth::{AllowAll, AuthenticatedIsAdmin, Authenticator, Authorizer, PeerUser, UserInfo};
use crate::bootstrap;
use crate::registry::{Registry, RegistryConfig};
use crate::store::Store;
use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};
use crate::store::etcd::{EtcdOptions, EtcdStore};
use health::Health;
pub use limits::LimitOptions;
use limits::Limits;

/// A TLS handshake that has not finished by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the etcd backend compacts history (kube-apiserver's default).
const ETCD_COMPACTION_INTERVAL: Duration = Duration::from_secs(300);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("preparing the data dir {dir}: {source}")]
    DataDir { dir: PathBuf, source: std::io::Error },
    #[error("opening the store in {dir}: {source}")]
    Store {
        dir: PathBuf,
        source: crate::store::Error,
    },
    #[error("creating the system objects: {0}")]
    Bootstrap(crate::store::Error),
    #[error("connecting to etcd at {endpoints}: {source}")]
    Etcd {
        endpoints: String,
        source: crate::store::Error,
    },
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("preparing certificates: {0}")]
    Pki(#[from] pki::PkiError),
    #[error("configuring TLS: {0}")]
    Tls(String),
    #[error("preparing the ServiceAccount token key: {0}")]
    Tokens(#[from] TokenError),
}

/// How authenticated requests are authorized (with TLS; plain-HTTP test servers allow everything).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthorizationMode {
    /// Roles and bindings from rbac.authorization.k8s.io (kube-apiserver's `--authorization-mode RBAC`).
    #[default]
    Rbac,
    /// Every authenticated user may do everything.
    AlwaysAllow,
}

/// How clients connect.
#[derive(Debug, Clone)]
pub enum Security {
    /// HTTPS with a generated CA; client certificates or bearer tokens required. The server certificate
    /// covers `hosts` (IP addresses and DNS names) besides the listen address.
    Tls { hosts: Vec<String> },
    /// Plain HTTP without authentication, for tests on loopback only.
    InsecureLoopback,
}

/// Everything needed to start a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub registry: RegistryConfig,
    pub api: ApiOptions,
    pub store: EmbeddedOptions,
    /// Use etcd instead of the embedded store (`store` is then ignored).
    pub etcd: Option<EtcdOptions>,
    pub security: Security,
    /// Address published in the `kubernetes` Service's endpoints [default: the listen address, or
    /// 127.0.0.1 when listening on all addresses].
    pub advertise_address: Option<std::net::IpAddr>,
    pub authorization: AuthorizationMode,
    /// In-flight, timeout, header and watch limits.
    pub limits: LimitOptions,
    /// CA (PEM file) that node agents' serving certificates must chain to; none: not verified, like
    /// kube-apiserver without `--kubelet-certificate-authority`.
    pub kubelet_certificate_authority: Option<PathBuf>,
}

impl ServerConfig {
    /// Defaults for a data directory: plain HTTP on an ephemeral loopback port.
    pub fn for_tests(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            registry: RegistryConfig::default(),
            api: ApiOptions::default(),
            store: EmbeddedOptions::default(),
            etcd: None,
            security: Security::InsecureLoopback,
            advertise_address: None,
            authorization: AuthorizationMode::Rbac,
            limits: LimitOptions::default(),
            kubelet_certificate_authority: None,
        }
    }
}

/// A started server; dropping it stops serving and closes every connection.
pub struct Running {
    pub addr: SocketAddr,
    pub store: Arc<dyn Store>,
    /// Certificates and admin credentials when serving HTTPS.
    pub pki: Option<Pki>,
    task: JoinHandle<std::io::Result<()>>,
    background: Arc<std::sync::Mutex<JoinSet<()>>>,
}

impl Running {
    /// The base URL (`https://127.0.0.1:PORT`, or `http://` for insecure test servers).
    pub fn url(&self) -> String {
        let scheme = if self.pki.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Serves until the accept loop fails.
    pub async fn wait(mut self) -> std::io::Result<()> {
        (&mut self.task)
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
        self.background
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .abort_all();
    }
}

fn tls_acceptor(pki: &Pki) -> Result<TlsAcceptor, StartError> {
    let err = |e: &dyn std::fmt::Display| StartError::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca = CertificateDer::from_pem_slice(pki.ca_cert_pem.as_bytes()).map_err(|e| err(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).map_err(|e| err(&e))?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .allow_unauthenticated()
            .build()
            .map_err(|e| err(&e))?;
    let chain = vec![CertificateDer::from_pem_slice(pki.server_cert_pem.as_bytes()).map_err(|e| err(&e))?];
    let key = PrivateKeyDer::from_pem_slice(pki.server_key_pem.as_bytes()).map_err(|e| err(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| err(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves HTTP/1.1 on one connection, tagging each request with the TLS peer's identity. A client that takes
/// longer than the header read timeout to send a request's headers (slowloris) is disconnected.
async fn serve_connection<S>(io: S, limits: Arc<Limits>, peer: Option<PeerUser>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let header_read_timeout = limits.header_read_timeout();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        if let Some(peer) = &peer {
            request.extensions_mut().insert(peer.clone());
        }
        let limits = Arc::clone(&limits);
        async move { Ok::<_, std::convert::Infallible>(limits.serve(request.map(Body::new)).await) }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
        .await
    {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

async fn handle(stream: TcpStream, tls: Option<TlsAcceptor>, app: Arc<Limits>) {
    let Some(acceptor) = tls else {
        serve_connection(stream, app, None).await;
        return;
    };
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let peer = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| UserInfo::from_certificate(cert))
        .map(PeerUser);
    serve_connection(stream, app, peer).await;
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Arc<Limits>,
) -> std::io::Result<()> {
    // Dropping the set (when this task is aborted) aborts every connection, watches included.
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        connections.spawn(handle(stream, tls.clone(), Arc::clone(&app)));
    }
}

/// The client for node agents: the kubelet client certificate (with TLS), the serving CA if configured.
fn kubelet_client(
    pki: Option<&Pki>,
    serving_ca: Option<&std::path::Path>,
) -> Result<crate::api::pods::KubeletClient, StartError> {
    let ca = serving_ca
        .map(|path| {
            std::fs::read_to_string(path).map_err(|e| {
                StartError::Tls(format!("--kubelet-certificate-authority {}: {e}", path.display()))
            })
        })
        .transpose()?;
    let identity = pki.map(|p| {
        (
            p.kubelet_client_cert_pem.as_str(),
            p.kubelet_client_key_pem.as_str(),
        )
    });
    crate::api::pods::KubeletClient::new(identity, ca.as_deref())
        .map_err(|e| StartError::Tls(format!("kubelet client: {e}")))
}

/// Opens the store, prepares certificates, creates the system objects and starts serving.
pub async fn start(config: ServerConfig) -> Result<Running, StartError> {
    for dir in [config.data_dir.clone(), config.data_dir.join("pki")] {
        crate::private_dir::ensure(&dir).map_err(|source| StartError::DataDir { dir, source })?;
    }
    let mut etcd_store = None;
    let store: Arc<dyn Store> = match &config.etcd {
        Some(etcd) => {
            let connected = EtcdStore::connect(etcd.clone())
                .await
                .map_err(|source| StartError::Etcd {
                    endpoints: etcd.endpoints.join(","),
                    source,
                })?;
            etcd_store = Some(connected.clone());
            Arc::new(connected)
        }
        None => Arc::new(
            EmbeddedStore::open(&config.data_dir.join("store"), config.store).map_err(|source| {
                StartError::Store {
                    dir: config.data_dir.clone(),
                    source,
                }
            })?,
        ),
    };
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
    let advertise = config.advertise_address.unwrap_or(if addr.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        addr.ip()
    });
    bootstrap::ensure(&*store, &registry, advertise, addr.port())
        .await
        .map_err(StartError::Bootstrap)?;
    bootstrap::ensure_rbac(&*store, &registry)
        .await
        .map_err(StartError::Bootstrap)?;
    // Tasks that live as long as the server: store mirrors, the default ServiceAccount controller, compaction.
    let mut tasks = JoinSet::new();
    let accounts = Arc::new(ServiceAccountIndex::default());
    serviceaccounts::start(Arc::clone(&store), Arc::clone(&accounts), &mut tasks)
        .await
        .map_err(StartError::Bootstrap)?;

    let (pki, tls, authn, authz): (_, _, _, Box<dyn Authorizer>) = match &config.security {
        Security::Tls { hosts } => {
            let mut names = vec![
                addr.ip().to_string(),
                "127.0.0.1".to_owned(),
                "localhost".to_owned(),
                "kubernetes".to_owned(),
                "kubernetes.default".to_owned(),
                "kubernetes.default.svc".to_owned(),
                "kubernetes.default.svc.cluster.local".to_owned(),
                config.registry.service_cidr.first_host().to_string(),
            ];
            names.extend(hosts.iter().cloned());
            names.push(advertise.to_string());
            names.sort();
            names.dedup();
            let pki_dir = config.data_dir.join("pki");
            let pki = pki::load_or_create(&pki_dir, &names)?;
            let tls = tls_acceptor(&pki)?;
            let mut authn = Authenticator::new(false);
            authn.add_token(&pki.admin_token, "admin", &["system:masters"]);
            authn.set_service_accounts(ServiceAccountTokens {
                issuer: Arc::new(TokenIssuer::load_or_create(&pki_dir)?),
                accounts: Arc::clone(&accounts),
            });
            let authz: Box<dyn Authorizer> = match config.authorization {
                AuthorizationMode::Rbac => Box::new(
                    RbacAuthorizer::start(Arc::clone(&store), &mut tasks)
                        .await
                        .map_err(StartError::Bootstrap)?,
                ),
                AuthorizationMode::AlwaysAllow => Box::new(AuthenticatedIsAdmin),
            };
            (Some(pki), Some(tls), authn, authz)
        }
        Security::InsecureLoopback => (None, None, Authenticator::new(true), Box::new(AllowAll)),
    };
    if let Some(etcd) = etcd_store {
        let keep = config.store.history_limit;
        tasks.spawn(etcd.run_compactor(ETCD_COMPACTION_INTERVAL, keep));
    }
    let background = Arc::new(std::sync::Mutex::new(tasks));
    let kubelet = kubelet_client(pki.as_ref(), config.kubelet_certificate_authority.as_deref())?;
    let state = Arc::new(ApiState {
        store: Arc::clone(&store),
        registry,
        options: config.api,
        authn,
        authz,
        background: Arc::clone(&background),
        kubelet,
    });
    crate::controllers::namespace::resume(Arc::clone(&state))
        .await
        .map_err(StartError::Bootstrap)?;
    let health = Health::new(Arc::clone(&store), config.etcd.is_some());
    let limits = Arc::new(Limits::new(
        config.limits,
        Arc::clone(&state),
        health,
        router(state),
    ));
    let task = tokio::spawn(accept_loop(listener, tls, limits));
    tracing::info!(%addr, tls = pki.is_some(), data_dir = %config.data_dir.display(), "skiff-control serving");
    Ok(Running {
        addr,
        store,
        pki,
        task,
        background,
    })
}
