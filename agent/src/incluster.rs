//! In-cluster API access for a DaemonSet pod: the API server from KUBERNETES_SERVICE_HOST/PORT, the ServiceAccount
//! token (re-read as it rotates) and CA from the standard mount.
use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};

/// Where the kubelet mounts the ServiceAccount token, CA and namespace.
pub const SERVICEACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Errors building the in-cluster configuration.
#[derive(Debug, thiserror::Error)]
pub enum InClusterError {
    #[error(
        "not running in a cluster ({0} is not set): pass --kubeconfig FILE, or --manifests DIR to run without an \
         API server"
    )]
    MissingEnv(&'static str),
    #[error("{what} {path} is missing: is a ServiceAccount token mounted (automountServiceAccountToken)?")]
    MissingFile { what: &'static str, path: PathBuf },
    #[error("in-cluster kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
}

/// The API server URL for a Service host and port (IPv6 literals bracketed).
pub fn server_url(host: &str, port: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    }
}

/// A kubeconfig equivalent to the in-cluster environment: token *file* (so rotated tokens are picked up) and CA
/// file from `sa_dir`.
pub fn kubeconfig(host: &str, port: &str, sa_dir: &Path) -> Result<Kubeconfig, InClusterError> {
    let yaml = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "in-cluster", "cluster": {
            "server": server_url(host, port),
            "certificate-authority": sa_dir.join("ca.crt"),
        }}],
        "users": [{"name": "serviceaccount", "user": {"tokenFile": sa_dir.join("token")}}],
        "contexts": [{"name": "in-cluster", "context": {"cluster": "in-cluster", "user": "serviceaccount"}}],
        "current-context": "in-cluster",
    });
    Ok(Kubeconfig::from_yaml(&yaml.to_string())?)
}

/// The in-cluster client configuration from the environment and `sa_dir`.
pub async fn config(sa_dir: &Path) -> Result<kube::Config, InClusterError> {
    let env = |name: &str| std::env::var(name).ok();
    config_from(
        env("KUBERNETES_SERVICE_HOST"),
        env("KUBERNETES_SERVICE_PORT"),
        sa_dir,
    )
    .await
}

/// [`config`] with the two environment variables given.
pub async fn config_from(
    host: Option<String>,
    port: Option<String>,
    sa_dir: &Path,
) -> Result<kube::Config, InClusterError> {
    let host = host
        .filter(|v| !v.is_empty())
        .ok_or(InClusterError::MissingEnv("KUBERNETES_SERVICE_HOST"))?;
    let port = port
        .filter(|v| !v.is_empty())
        .ok_or(InClusterError::MissingEnv("KUBERNETES_SERVICE_PORT"))?;
    for (what, file) in [("ServiceAccount token", "token"), ("cluster CA", "ca.crt")] {
        let path = sa_dir.join(file);
        if !path.is_file() {
            return Err(InClusterError::MissingFile { what, path });
        }
    }
    let kc = kubeconfig(&host, &port, sa_dir)?;
    Ok(kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_for_v4_v6_and_names() {
        assert_eq!(server_url("10.96.0.1", "443"), "https://10.96.0.1:443");
        assert_eq!(server_url("fd00::1", "443"), "https://[fd00::1]:443");
        assert_eq!(server_url("api.example", "6443"), "https://api.example:6443");
    }

    #[test]
    fn the_kubeconfig_points_at_the_mounted_token_and_ca() {
        let kc = kubeconfig("10.96.0.1", "443", Path::new("/sa")).unwrap();
        let cluster = kc.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://10.96.0.1:443"));
        assert_eq!(cluster.certificate_authority.as_deref(), Some("/sa/ca.crt"));
        let user = kc.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(user.token_file.as_deref(), Some("/sa/token"));
        assert_eq!(kc.current_context.as_deref(), Some("in-cluster"));
    }

    #[tokio::test]
    async fn missing_pieces_say_what_to_do() {
        let dir = std::env::temp_dir().join(format!("skiff-ds-incluster-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = config_from(None, Some("443".into()), &dir).await.unwrap_err();
        assert!(
            matches!(err, InClusterError::MissingEnv("KUBERNETES_SERVICE_HOST")),
            "{err}"
        );
        assert!(err.to_string().contains("--kubeconfig"), "{err}");
        let err = config_from(Some("10.96.0.1".into()), Some("443".into()), &dir)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("ServiceAccount token"), "{err}");
        std::fs::write(dir.join("token"), "t").unwrap();
        let err = config_from(Some("10.96.0.1".into()), Some("443".into()), &dir)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("cluster CA"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
