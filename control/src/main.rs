//! `skiff-control`: the mini-cluster's Kubernetes-compatible apiserver with an embedded store.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use control::api::router::ApiOptions;
use control::registry::RegistryConfig;
use control::registry::alloc::{Ipv4Cidr, parse_port_range};
use control::server::{self, AuthorizationMode, Security, ServerConfig};
use control::store::embedded::EmbeddedOptions;
use control::store::etcd::EtcdOptions;

/// Kubernetes-compatible API server for the Skiff mini-cluster.
#[derive(Debug, Parser)]
#[command(name = "skiff-control", version, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Directory for the store and generated credentials [default: $XDG_DATA_HOME/skiff-control]
    #[arg(long, env = "SKIFF_CONTROL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Address clients should use to reach this server (written to the kubeconfig) [default: the listen address]
    #[arg(long)]
    advertise_address: Option<String>,
    /// Storage backend: `embedded` (durable redb file in the data dir) or `etcd`.
    #[arg(long, default_value = "embedded")]
    store: String,
    /// etcd endpoints for `--store etcd`, comma separated.
    #[arg(long, value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// Key prefix of everything skiff-control stores in etcd.
    #[arg(long, default_value = "/skiff")]
    etcd_prefix: String,
    /// CIDR that Service ClusterIPs are allocated from.
    #[arg(long, default_value = "10.96.0.0/16")]
    service_cidr: Ipv4Cidr,
    /// Inclusive port range for NodePorts.
    #[arg(long, default_value = "30000-32767", value_parser = parse_port_range)]
    node_port_range: (u16, u16),
    /// CIDR that LoadBalancer Service addresses are allocated from.
    #[arg(long)]
    lb_pool: Option<Ipv4Cidr>,
    /// Write an admin kubeconfig for this server to FILE.
    #[arg(long, value_name = "FILE")]
    kubeconfig_out: Option<PathBuf>,
    /// Serve plain HTTP without authentication (development only; refused unless listening on loopback).
    #[arg(long)]
    insecure_http: bool,
    /// Extra names or addresses for the serving certificate.
    #[arg(long = "tls-san", value_delimiter = ',')]
    tls_sans: Vec<String>,
    /// Revisions of watch history to keep before compacting.
    #[arg(long, default_value_t = 50_000)]
    history_limit: u64,
    /// How authenticated requests are authorized: `RBAC` (roles and bindings) or `AlwaysAllow`.
    #[arg(long, default_value = "RBAC", value_parser = ["RBAC", "AlwaysAllow"])]
    authorization_mode: String,
    /// CA bundle (PEM) that node agents' serving certificates must chain to [default: not verified, like
    /// kube-apiserver]. The apiserver always authenticates to agents with pki/apiserver-kubelet-client.crt.
    #[arg(long, value_name = "FILE")]
    kubelet_certificate_authority: Option<PathBuf>,
    /// Turn off a built-in controller (repeatable).
    #[arg(long = "disable-controller", value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(control::controllers::NAMES))]
    disable_controllers: Vec<String>,
    /// CIDR that Node pod ranges (spec.podCIDR) are allocated from.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: Ipv4Cidr,
    /// Prefix length of each Node's pod range.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// A Node whose Lease is older than this becomes Ready=Unknown and tainted unreachable (e.g. 50s, 2m).
    #[arg(long, default_value = "50s", value_parser = control::controllers::nodelifecycle::parse_duration)]
    node_monitor_grace_period: std::time::Duration,
    /// Seconds pods without their own toleration stay on a not-ready Node.
    #[arg(long, default_value_t = 300)]
    default_not_ready_toleration_seconds: u64,
    /// Seconds pods without their own toleration stay on an unreachable Node.
    #[arg(long, default_value_t = 300)]
    default_unreachable_toleration_seconds: u64,
    /// Maximum concurrent non-mutating requests (watches and other long-running requests excluded); 0 = no limit.
    #[arg(long, default_value_t = 400)]
    max_requests_inflight: usize,
    /// Maximum concurrent mutating requests; 0 = no limit.
    #[arg(long, default_value_t = 200)]
    max_mutating_requests_inflight: usize,
    /// Time limit of a non-long-running request (e.g. 60s, 2m); answered with 504 when exceeded.
    #[arg(long, default_value = "60s", value_parser = control::controllers::nodelifecycle::parse_duration)]
    request_timeout: std::time::Duration,
    /// Maximum concurrent watches of one user; 0 = no limit.
    #[arg(long, default_value_t = 1000)]
    max_watches_per_user: usize,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Write a kubeconfig with a new client certificate signed by the cluster CA (offline; the server need not
    /// run). Nodes: --user system:node:NAME --group system:nodes.
    Kubeconfig(KubeconfigArgs),
}

#[derive(Debug, clap::Args)]
struct KubeconfigArgs {
    /// The server's data directory (holds pki/ca.crt and ca.key) [default: $XDG_DATA_HOME/skiff-control]
    #[arg(long, env = "SKIFF_CONTROL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Server URL written to the kubeconfig, e.g. https://127.0.0.1:6443.
    #[arg(long)]
    server: String,
    /// User name (the certificate's CN).
    #[arg(long)]
    user: String,
    /// Group (an O of the certificate; repeatable).
    #[arg(long = "group")]
    groups: Vec<String>,
    /// Where to write the kubeconfig (created owner-only).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

fn write_kubeconfig(args: &KubeconfigArgs) -> anyhow::Result<()> {
    let dir = args.data_dir.clone().unwrap_or_else(default_data_dir).join("pki");
    let groups: Vec<&str> = args.groups.iter().map(String::as_str).collect();
    let text = control::auth::pki::client_kubeconfig(&dir, &args.server, &args.user, &groups)
        .context("issuing the client certificate")?;
    control::auth::pki::write_secret(&args.out, &text)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("wrote {} for user {:?}", args.out.display(), args.user);
    Ok(())
}

fn default_data_dir() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local").join("share")));
    base.unwrap_or_else(|| PathBuf::from(".")).join("skiff-control")
}

fn insecure_kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}\n\
         contexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: admin\n    namespace: default\n\
         current-context: skiff\nusers:\n- name: admin\n  user: {{}}\n"
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    if let Some(Command::Kubeconfig(k)) = &args.command {
        return write_kubeconfig(k);
    }
    let ipam = control::controllers::nodeipam::IpamConfig {
        cluster_cidr: args.cluster_cidr,
        node_mask: args.node_cidr_mask_size,
    };
    control::controllers::nodeipam::Allocator::new(ipam)?;
    let etcd = match args.store.as_str() {
        "embedded" => None,
        "etcd" if args.etcd_endpoints.is_empty() => {
            bail!("--store etcd needs --etcd-endpoints, e.g. --etcd-endpoints http://127.0.0.1:2379")
        }
        "etcd" => Some(EtcdOptions {
            root: args.etcd_prefix.clone(),
            ..EtcdOptions::new(args.etcd_endpoints.clone())
        }),
        other => bail!("unknown --store {other:?}; use `embedded` or `etcd`"),
    };
    if args.insecure_http && !args.listen.ip().is_loopback() {
        bail!(
            "--insecure-http serves without authentication and is only allowed on a loopback --listen address"
        );
    }
    let security = if args.insecure_http {
        Security::InsecureLoopback
    } else {
        let mut hosts = args.tls_sans.clone();
        hosts.extend(args.advertise_address.clone());
        Security::Tls { hosts }
    };
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let config = ServerConfig {
        data_dir: data_dir.clone(),
        listen: args.listen,
        registry: RegistryConfig {
            service_cidr: args.service_cidr,
            node_ports: args.node_port_range,
            lb_pool: args.lb_pool,
        },
        api: ApiOptions::default(),
        store: EmbeddedOptions {
            history_limit: args.history_limit,
            ..EmbeddedOptions::default()
        },
        etcd,
        security,
        advertise_address: args.advertise_address.as_deref().and_then(|a| a.parse().ok()),
        authorization: match args.authorization_mode.as_str() {
            "AlwaysAllow" => AuthorizationMode::AlwaysAllow,
            _ => AuthorizationMode::Rbac,
        },
        kubelet_certificate_authority: args.kubelet_certificate_authority.clone(),
        limits: server::LimitOptions {
            max_requests_inflight: args.max_requests_inflight,
            max_mutating_requests_inflight: args.max_mutating_requests_inflight,
            request_timeout: args.request_timeout,
            max_watches_per_user: args.max_watches_per_user,
            ..server::LimitOptions::default()
        },
    };
    let running = server::start(config).await.context("starting skiff-control")?;
    if let Some(path) = &args.kubeconfig_out {
        let host = args
            .advertise_address
            .clone()
            .unwrap_or_else(|| running.addr.ip().to_string());
        let url = format!(
            "{}://{host}:{}",
            if running.pki.is_some() { "https" } else { "http" },
            running.addr.port()
        );
        let text = match &running.pki {
            Some(pki) => pki.kubeconfig(&url),
            None => insecure_kubeconfig(&url),
        };
        // Admin credentials: owner-only.
        control::auth::pki::write_secret(path, &text)
            .with_context(|| format!("writing {}", path.display()))?;
        tracing::info!(path = %path.display(), "wrote kubeconfig");
    }
    let mut controller_options = control::controllers::ControllerOptions {
        ipam,
        node_timings: control::controllers::nodelifecycle::Timings {
            grace: args.node_monitor_grace_period,
            not_ready_toleration: std::time::Duration::from_secs(args.default_not_ready_toleration_seconds),
            unreachable_toleration: std::time::Duration::from_secs(
                args.default_unreachable_toleration_seconds,
            ),
        },
        ..control::controllers::ControllerOptions::default()
    };
    for name in &args.disable_controllers {
        controller_options.disable(name)?;
    }
    let controllers = control::controllers::start_for(&running, controller_options)
        .await
        .context("starting the controllers")?;
    tokio::select! {
        () = controllers.wait() => bail!("the controllers stopped"),
        result = running.wait() => result.context("serving the API")?,
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
    }
    Ok(())
}
