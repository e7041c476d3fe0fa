//! The projected ServiceAccount token volume: a pod-bound token from TokenRequest, the cluster CA and the namespace,
//! written atomically into the pod's volume directory and refreshed at 80% of the token's lifetime, as kubelet does.
use std::{
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use base64::Engine;
use k8s_openapi::api::{
    authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
    core::v1::ServiceAccount,
};
use kube::{Api, Client, api::PostParams};

use super::plan::TokenVolume;

/// Why a token volume could not be filled.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("TokenRequest for ServiceAccount {namespace}/{name}: {source}")]
    Request {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("TokenRequest for ServiceAccount {0} returned no token")]
    Empty(String),
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Mode of the token file: owner-only (every container of a pod runs as the same user, the case in which kubelet
/// writes the token 0600 too).
pub const TOKEN_MODE: u32 = 0o600;
/// Mode of `ca.crt` and `namespace` (kubelet's projected-volume default, 0644).
pub const PUBLIC_MODE: u32 = 0o644;

/// The pod a token is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// A token and its lifetime (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: String,
    pub issued_at: i64,
    pub expires_at: i64,
}

/// When a token issued at `issued_at` and expiring at `expires_at` is replaced: after 80% of its lifetime (at least
/// one second after issue, so a clock skew never makes the agent spin).
pub fn refresh_at(issued_at: i64, expires_at: i64) -> i64 {
    let life = (expires_at - issued_at).max(0);
    issued_at + (life * 8 / 10).max(1)
}

/// The TokenRequest kubelet makes: the API server's audience, `expiration_seconds`, bound to the pod.
pub fn token_request(pod: &BoundPod, expiration_seconds: i64) -> TokenRequest {
    TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(expiration_seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name.clone()),
                uid: Some(pod.uid.clone()),
            }),
        },
        ..TokenRequest::default()
    }
}

fn unix_now() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second()
}

/// Requests a token for `volume.service_account`, bound to `pod`.
pub async fn request(
    client: &Client,
    pod: &BoundPod,
    volume: &TokenVolume,
) -> Result<IssuedToken, TokenError> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &pod.namespace);
    let issued_at = unix_now();
    let answer = api
        .create_token_request(
            &volume.service_account,
            &PostParams::default(),
            &token_request(pod, volume.expiration_seconds),
        )
        .await
        .map_err(|source| TokenError::Request {
            namespace: pod.namespace.clone(),
            name: volume.service_account.clone(),
            source,
        })?;
    let status = answer
        .status
        .filter(|s| !s.token.is_empty())
        .ok_or_else(|| TokenError::Empty(volume.service_account.clone()))?;
    Ok(IssuedToken {
        token: status.token,
        issued_at,
        expires_at: status.expiration_timestamp.0.as_second(),
    })
}

/// Writes `contents` to `path` with `mode` atomically (a temporary file in the same directory, then rename), so a
/// reader sees the old or the new file, never a partial one.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), TokenError> {
    let err = |source| TokenError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(contents).and_then(|()| f.sync_all()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Fills the volume directory `dir`: `token`, `ca.crt`, `namespace`.
pub fn write_volume(dir: &Path, token: &str, ca_pem: &[u8], namespace: &str) -> Result<(), TokenError> {
    std::fs::create_dir_all(dir).map_err(|source| TokenError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    write_atomic(&dir.join("ca.crt"), ca_pem, PUBLIC_MODE)?;
    write_atomic(&dir.join("namespace"), namespace.as_bytes(), PUBLIC_MODE)?;
    write_atomic(&dir.join("token"), token.as_bytes(), TOKEN_MODE)
}

/// The cluster CA (PEM) of a kubeconfig's current context: `certificate-authority-data` or the file named by
/// `certificate-authority`. `None` when the kubeconfig has none (a plain-HTTP server).
pub fn cluster_ca(kubeconfig: &Path) -> Option<Vec<u8>> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).ok()?;
    let context = kc.current_context.as_deref().and_then(|c| {
        kc.contexts
            .iter()
            .find(|n| n.name == c)
            .and_then(|n| n.context.as_ref())
    });
    let cluster = match context {
        Some(ctx) => kc.clusters.iter().find(|c| c.name == ctx.cluster),
        None => kc.clusters.first(),
    }?
    .cluster
    .as_ref()?;
    if let Some(data) = &cluster.certificate_authority_data {
        return base64::engine::general_purpose::STANDARD.decode(data.trim()).ok();
    }
    std::fs::read(cluster.certificate_authority.as_ref()?).ok()
}

/// Delay before retrying a failed refresh (the current token stays valid meanwhile).
const RETRY: Duration = Duration::from_secs(10);

/// Keeps the token in `dir` fresh until the task is dropped: renews at [`refresh_at`], retries failures.
pub async fn keep_fresh(
    client: Client,
    pod: BoundPod,
    volume: TokenVolume,
    dir: PathBuf,
    ca_pem: Vec<u8>,
    mut current: IssuedToken,
) {
    loop {
        let wait = (refresh_at(current.issued_at, current.expires_at) - unix_now()).max(0) as u64;
        tokio::time::sleep(Duration::from_secs(wait)).await;
        loop {
            let written = match request(&client, &pod, &volume).await {
                Ok(t) => {
                    let (d, ca, ns, tok) = (
                        dir.clone(),
                        ca_pem.clone(),
                        pod.namespace.clone(),
                        t.token.clone(),
                    );
                    match tokio::task::spawn_blocking(move || write_volume(&d, &tok, &ca, &ns)).await {
                        Ok(Ok(())) => Some(t),
                        Ok(Err(e)) => {
                            tracing::warn!(pod = %pod.name, error = %e, "writing the refreshed token");
                            None
                        }
                        Err(_) => None,
                    }
                }
                Err(e) => {
                    tracing::warn!(pod = %pod.name, error = %e, "refreshing the ServiceAccount token");
                    None
                }
            };
            if let Some(t) = written {
                tracing::debug!(pod = %pod.name, expires_at = t.expires_at, "ServiceAccount token refreshed");
                current = t;
                break;
            }
            tokio::time::sleep(RETRY).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn refresh_happens_at_eighty_percent_of_the_lifetime() {
        assert_eq!(refresh_at(1000, 1000 + 3600), 1000 + 2880);
        assert_eq!(refresh_at(0, 3607), 2885);
        // An already expired or zero-length token is replaced almost at once, never in the past of its issue.
        assert_eq!(refresh_at(1000, 900), 1001);
    }

    #[test]
    fn the_request_is_bound_to_the_pod_for_the_api_servers_audience() {
        let pod = BoundPod {
            namespace: "ns".into(),
            name: "web-0".into(),
            uid: "u-1".into(),
        };
        let r = token_request(&pod, 3607);
        assert!(r.spec.audiences.is_empty());
        assert_eq!(r.spec.expiration_seconds, Some(3607));
        let b = r.spec.bound_object_ref.unwrap();
        assert_eq!(
            (b.kind.as_deref(), b.name.as_deref(), b.uid.as_deref()),
            (Some("Pod"), Some("web-0"), Some("u-1"))
        );
    }

    #[test]
    fn volume_files_have_kubelets_names_and_modes_and_are_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("kube-api-access");
        write_volume(&vol, "tok-1", b"PEM", "shop").unwrap();
        write_volume(&vol, "tok-2", b"PEM", "shop").unwrap();
        assert_eq!(std::fs::read_to_string(vol.join("token")).unwrap(), "tok-2");
        assert_eq!(std::fs::read_to_string(vol.join("namespace")).unwrap(), "shop");
        assert_eq!(std::fs::read(vol.join("ca.crt")).unwrap(), b"PEM");
        let mode = |f: &str| std::fs::metadata(vol.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("token"), 0o600);
        assert_eq!(mode("ca.crt"), 0o644);
        assert_eq!(mode("namespace"), 0o644);
        let names: Vec<String> = std::fs::read_dir(&vol)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "no temporary file left: {names:?}");
    }

    #[test]
    fn the_ca_comes_from_the_kubeconfigs_current_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let ca = base64::engine::general_purpose::STANDARD.encode("-----BEGIN CERTIFICATE-----\nX\n");
        let path = dir.path().join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: b\nclusters:\n\
                 - {{name: one, cluster: {{server: 'https://a', certificate-authority-data: Zm9v}}}}\n\
                 - {{name: two, cluster: {{server: 'https://b', certificate-authority-data: {ca}}}}}\n\
                 contexts:\n- {{name: a, context: {{cluster: one}}}}\n- {{name: b, context: {{cluster: two}}}}\n\
                 users: []\n"
            ),
        )
        .unwrap();
        assert_eq!(cluster_ca(&path).unwrap(), b"-----BEGIN CERTIFICATE-----\nX\n");
        assert_eq!(cluster_ca(&dir.path().join("missing")), None);
    }
}
