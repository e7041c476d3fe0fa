//! TLS of the kubelet endpoint: the serving certificate (given files, or a self-signed one for the node's
//! addresses kept in the state directory) and the CA that client certificates must chain to.
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};

/// Failures preparing TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("generating the serving certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Config(String),
}

type Result<T, E = TlsError> = std::result::Result<T, E>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// The serving certificate and key (PEM).
#[derive(Debug, Clone)]
pub struct ServingCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The names a self-signed serving certificate covers: the node name, `localhost` and every address.
pub fn serving_names(node: &str, addresses: &[IpAddr]) -> Vec<String> {
    let mut names: Vec<String> = [node.to_owned(), "localhost".to_owned()]
        .into_iter()
        .chain(addresses.iter().map(IpAddr::to_string))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// `kubelet.crt`/`kubelet.key` in `dir`, created self-signed for `names` when missing (like kubelet without
/// `--tls-cert-file`); the key is written owner-only.
pub fn self_signed(dir: &Path, node: &str, names: &[String]) -> Result<ServingCert> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let (crt, key) = (dir.join("kubelet.crt"), dir.join("kubelet.key"));
    if let (Ok(cert_pem), Ok(key_pem)) = (std::fs::read_to_string(&crt), std::fs::read_to_string(&key)) {
        return Ok(ServingCert { cert_pem, key_pem });
    }
    let mut params = CertificateParams::new(names.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{node}@skiff-agent"));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let pair = KeyPair::generate()?;
    let cert = params.self_signed(&pair)?;
    write_file(&key, &pair.serialize_pem(), 0o600)?;
    write_file(&crt, &cert.pem(), 0o644)?;
    Ok(ServingCert {
        cert_pem: cert.pem(),
        key_pem: pair.serialize_pem(),
    })
}

/// A serving certificate from `--tls-cert-file`/`--tls-private-key-file`.
pub fn from_files(cert: &Path, key: &Path) -> Result<ServingCert> {
    Ok(ServingCert {
        cert_pem: std::fs::read_to_string(cert).map_err(io(cert))?,
        key_pem: std::fs::read_to_string(key).map_err(io(key))?,
    })
}

/// CA certificates (DER) from a PEM bundle file (`--client-ca-file`).
pub fn ca_file(path: &Path) -> Result<Vec<Vec<u8>>> {
    let pem = std::fs::read(path).map_err(io(path))?;
    let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(&pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            message: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}

/// The server configuration: `serving` as the certificate; client certificates are optional but, when
/// sent, must chain to one of `client_cas` (none: client certificates are not accepted at all).
pub fn server_config(serving: &ServingCert, client_cas: &[Vec<u8>]) -> Result<Arc<ServerConfig>> {
    let err = |e: &dyn std::fmt::Display| TlsError::Config(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(serving.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| err(&e))?;
    let key = PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes()).map_err(|e| err(&e))?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| err(&e))?;
    let builder = if client_cas.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        for ca in client_cas {
            roots.add(CertificateDer::from(ca.clone())).map_err(|e| err(&e))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
            .map_err(|e| err(&e))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| err(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn self_signed_certificate_is_kept_with_an_owner_only_key() {
        let dir = tempfile_dir();
        let names = serving_names("n1", &["10.0.0.1".parse().unwrap(), "127.0.0.1".parse().unwrap()]);
        assert_eq!(names, ["10.0.0.1", "127.0.0.1", "localhost", "n1"]);
        let first = self_signed(&dir, "n1", &names).unwrap();
        let again = self_signed(&dir, "n1", &names).unwrap();
        assert_eq!(first.cert_pem, again.cert_pem);
        let mode = std::fs::metadata(dir.join("kubelet.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(server_config(&first, &[]).is_ok());
        let ca = CertificateDer::from_pem_slice(first.cert_pem.as_bytes())
            .unwrap()
            .to_vec();
        assert!(server_config(&first, &[ca]).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("skiff-kubelet-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }
}
