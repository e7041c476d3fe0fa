//! The cluster's certificate authority, generated on first start, and the certificates and token it issues.
//!
//! Files under `<data-dir>/pki`: `ca.crt`/`ca.key` (kept), `admin.crt`/`admin.key`/`admin.token` (kept, so
//! written kubeconfigs stay valid), `apiserver-kubelet-client.crt`/`.key` (kept; the apiserver's identity
//! towards node agents, like kubeadm's) and `apiserver.crt`/`apiserver.key` (re-issued on every start for the
//! current host names).

use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};

/// Failures creating or loading the PKI.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("certificate generation: {0}")]
    Cert(#[from] rcgen::Error),
}

/// PEM material of the running server and its admin credentials.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
    pub admin_token: String,
    /// The client certificate the apiserver presents to node agents ([`KUBELET_CLIENT_USER`]).
    pub kubelet_client_cert_pem: String,
    pub kubelet_client_key_pem: String,
}

/// The user of the apiserver's client certificate towards node agents; the default ClusterRoleBinding
/// `system:kube-apiserver-kubelet-client` grants it `system:kubelet-api-admin`.
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

pub(crate) fn read(path: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

pub(crate) fn write(path: &Path, text: &str, secret: bool) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Writes `text` to `path` owner-only (0600), atomically.
pub fn write_secret(path: &Path, text: &str) -> Result<(), PkiError> {
    write(path, text, true)
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "skiff-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn random_token() -> String {
    use rand::{Rng, SeedableRng};
    let bytes: [u8; 24] = rand::rngs::StdRng::from_os_rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Loads the PKI from `dir`, creating what is missing; the server certificate covers `hosts`.
pub fn load_or_create(dir: &Path, hosts: &[String]) -> Result<Pki, PkiError> {
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let (ca_crt, ca_key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
    let (ca_cert_pem, ca_key) = match (read(&ca_crt)?, read(&ca_key_path)?) {
        (Some(cert), Some(key)) => (cert, KeyPair::from_pem(&key)?),
        _ => {
            let key = KeyPair::generate()?;
            let cert = ca_params().self_signed(&key)?;
            write(&ca_key_path, &key.serialize_pem(), true)?;
            write(&ca_crt, &cert.pem(), false)?;
            // A new CA invalidates everything it signed before.
            for stale in [
                "admin.crt",
                "admin.key",
                "apiserver-kubelet-client.crt",
                "apiserver-kubelet-client.key",
            ] {
                let _ = std::fs::remove_file(dir.join(stale));
            }
            (cert.pem(), key)
        }
    };
    let issuer = Issuer::new(ca_params(), ca_key);

    let mut server = CertificateParams::new(hosts.to_vec())?;
    server
        .distinguished_name
        .push(DnType::CommonName, "skiff-apiserver");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let server_key = KeyPair::generate()?;
    let server_cert = server.signed_by(&server_key, &issuer)?;
    write(&dir.join("apiserver.crt"), &server_cert.pem(), false)?;
    write(&dir.join("apiserver.key"), &server_key.serialize_pem(), true)?;

    let (admin_crt, admin_key_path) = (dir.join("admin.crt"), dir.join("admin.key"));
    let (admin_cert_pem, admin_key_pem) = match (read(&admin_crt)?, read(&admin_key_path)?) {
        (Some(cert), Some(key)) => (cert, key),
        _ => {
            let mut admin = CertificateParams::new(Vec::<String>::new())?;
            admin
                .distinguished_name
                .push(DnType::OrganizationName, "system:masters");
            admin.distinguished_name.push(DnType::CommonName, "admin");
            admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            admin.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            let key = KeyPair::generate()?;
            let cert = admin.signed_by(&key, &issuer)?;
            write(&admin_key_path, &key.serialize_pem(), true)?;
            write(&admin_crt, &cert.pem(), false)?;
            (cert.pem(), key.serialize_pem())
        }
    };
    let (kubelet_crt, kubelet_key) = (
        dir.join("apiserver-kubelet-client.crt"),
        dir.join("apiserver-kubelet-client.key"),
    );
    let (kubelet_client_cert_pem, kubelet_client_key_pem) = match (read(&kubelet_crt)?, read(&kubelet_key)?) {
        (Some(cert), Some(key)) => (cert, key),
        _ => {
            let (cert, key) = sign_client(&issuer, KUBELET_CLIENT_USER, &[])?;
            write(&kubelet_key, &key, true)?;
            write(&kubelet_crt, &cert, false)?;
            (cert, key)
        }
    };
    let token_path = dir.join("admin.token");
    let admin_token = match read(&token_path)? {
        Some(token) if !token.trim().is_empty() => token.trim().to_owned(),
        _ => {
            let token = random_token();
            write(&token_path, &token, true)?;
            token
        }
    };
    Ok(Pki {
        ca_cert_pem,
        server_cert_pem: server_cert.pem(),
        server_key_pem: server_key.serialize_pem(),
        admin_cert_pem,
        admin_key_pem,
        admin_token,
        kubelet_client_cert_pem,
        kubelet_client_key_pem,
    })
}

fn sign_client(
    issuer: &Issuer<'_, KeyPair>,
    user: &str,
    groups: &[&str],
) -> Result<(String, String), PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    for group in groups {
        params.distinguished_name.push(DnType::OrganizationName, *group);
    }
    params.distinguished_name.push(DnType::CommonName, user);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A kubeconfig for `server` whose user is a new client certificate for `user` in `groups`, signed by the CA
/// in `dir` (offline: `skiff-control kubeconfig`). Nodes get `system:node:<name>` in `system:nodes`.
pub fn client_kubeconfig(dir: &Path, server: &str, user: &str, groups: &[&str]) -> Result<String, PkiError> {
    let ca_path = dir.join("ca.crt");
    let ca_cert_pem = read(&ca_path)?.ok_or_else(|| PkiError::Io {
        path: ca_path.clone(),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no CA yet: start skiff-control once with this --data-dir",
        ),
    })?;
    let (cert, key) = issue_client_certificate(dir, user, groups)?;
    Ok(certificate_kubeconfig_text(
        &ca_cert_pem,
        server,
        user,
        &cert,
        &key,
    ))
}

fn certificate_kubeconfig_text(
    ca_pem: &str,
    server: &str,
    user: &str,
    cert_pem: &str,
    key_pem: &str,
) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    \
         user: {user:?}\n    namespace: default\ncurrent-context: skiff\nusers:\n- name: {user:?}\n  user:\n    \
         client-certificate-data: {}\n    client-key-data: {}\n",
        b64(ca_pem),
        b64(cert_pem),
        b64(key_pem),
    )
}

/// A client certificate for `user` in `groups` (CN and O), signed by the CA in `dir`: PEM certificate and key.
/// Node agents get `system:node:<name>` in `system:nodes`; other users whatever their bindings name.
pub fn issue_client_certificate(
    dir: &Path,
    user: &str,
    groups: &[&str],
) -> Result<(String, String), PkiError> {
    let missing = |path: &Path| PkiError::Io {
        path: path.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no CA yet: start skiff-control once",
        ),
    };
    let key_path = dir.join("ca.key");
    let ca_key = read(&key_path)?.ok_or_else(|| missing(&key_path))?;
    let issuer = Issuer::new(ca_params(), KeyPair::from_pem(&ca_key)?);
    sign_client(&issuer, user, groups)
}

impl Pki {
    /// A kubeconfig for `server` that authenticates with a bearer token.
    pub fn token_kubeconfig(&self, server: &str, user: &str, token: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}\n    \
             certificate-authority-data: {}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    \
             user: {user}\n    namespace: default\ncurrent-context: skiff\nusers:\n- name: {user}\n  user:\n    \
             token: {token}\n",
            b64(&self.ca_cert_pem),
        )
    }

    /// A kubeconfig for `server` with the CA and a client certificate (PEM) for `user`.
    pub fn certificate_kubeconfig(&self, server: &str, user: &str, cert_pem: &str, key_pem: &str) -> String {
        certificate_kubeconfig_text(&self.ca_cert_pem, server, user, cert_pem, key_pem)
    }

    /// An admin kubeconfig for `server` (an https URL) with the CA and the admin client certificate.
    pub fn kubeconfig(&self, server: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}\n    \
             certificate-authority-data: {}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    \
             user: admin\n    namespace: default\ncurrent-context: skiff\nusers:\n- name: admin\n  user:\n    \
             client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&self.ca_cert_pem),
            b64(&self.admin_cert_pem),
            b64(&self.admin_key_pem),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_and_admin_credentials_persist_server_cert_is_reissued() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let first = load_or_create(dir.path(), &hosts).unwrap();
        let second = load_or_create(dir.path(), &hosts).unwrap();
        assert_eq!(first.ca_cert_pem, second.ca_cert_pem);
        assert_eq!(first.admin_cert_pem, second.admin_cert_pem);
        assert_eq!(first.admin_token, second.admin_token);
        assert_ne!(first.server_key_pem, second.server_key_pem);
        assert_eq!(first.admin_token.len(), 48);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let kubeconfig = first.kubeconfig("https://127.0.0.1:6443");
        assert!(kubeconfig.contains("certificate-authority-data: LS0t"));
        assert!(kubeconfig.contains("client-key-data: LS0t"));
        use rustls::pki_types::pem::PemObject;
        let (cert, _) = issue_client_certificate(dir.path(), "system:node:n1", &["system:nodes"]).unwrap();
        let der = rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        let user = crate::auth::UserInfo::from_certificate(&der).unwrap();
        assert_eq!(user.name, "system:node:n1");
        assert!(user.in_group("system:nodes"));

        assert_eq!(first.kubelet_client_cert_pem, second.kubelet_client_cert_pem);
        let der = rustls::pki_types::CertificateDer::from_pem_slice(first.kubelet_client_cert_pem.as_bytes())
            .unwrap();
        assert_eq!(
            crate::auth::UserInfo::from_certificate(&der).unwrap().name,
            KUBELET_CLIENT_USER
        );
        let node = client_kubeconfig(
            dir.path(),
            "https://127.0.0.1:6443",
            "system:node:n2",
            &["system:nodes"],
        )
        .unwrap();
        assert!(node.contains("user: \"system:node:n2\"") && node.contains("client-key-data: LS0t"));
        assert!(client_kubeconfig(&dir.path().join("none"), "https://x", "u", &[]).is_err());
    }
}
