//! Secrets never reach the log, and everything secret on disk is owner-only: Secret data, the admin token, a
//! ServiceAccount token and private keys are absent from skiff-control's log at trace level while they are
//! created, read and patched; the data dir, its subdirectories, the store file, keys and tokens are 0700/0600.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine;
use common::tls_cluster::TlsCluster;

/// Everything the server logs during the test, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let sink = Captured::default();
            let writer = sink.clone();
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .init();
            sink
        })
        .clone()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_logs_and_files_are_owner_only() {
    let logs = capture_logs();
    let data = tempfile::Builder::new()
        .prefix("skiff-hygiene-")
        .tempdir()
        .unwrap();
    let data_dir = data.path().join("control");
    let cluster = TlsCluster::start_with(|c| c.data_dir = data_dir.clone()).await;
    let admin = cluster.admin();

    let marker = "s3cr3t-hush-7f1c9e";
    let patched = "s3cr3t-patched-2b8d41";
    let run = |args: Vec<&'static str>| {
        let (cluster, admin) = (&cluster, admin.clone());
        async move {
            let out = cluster.kubectl(&admin, &args).await;
            assert!(
                out.status.success(),
                "kubectl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    run(vec![
        "create",
        "secret",
        "generic",
        "hush",
        "--from-literal=password=s3cr3t-hush-7f1c9e",
    ])
    .await;
    let yaml = run(vec!["get", "secret", "hush", "-o", "yaml"]).await;
    let encoded = base64::engine::general_purpose::STANDARD.encode(marker);
    assert!(yaml.contains(&encoded), "the Secret reads back: {yaml}");
    run(vec![
        "patch",
        "secret",
        "hush",
        "-p",
        r#"{"stringData":{"password":"s3cr3t-patched-2b8d41"}}"#,
    ])
    .await;
    let token = run(vec!["create", "token", "default"]).await;
    let token = token.trim().to_owned();
    assert!(token.len() > 100, "a ServiceAccount token: {token}");
    // The token is used once (authenticated, then refused by RBAC or allowed: either way it passes through authn).
    let as_sa = cluster.token("sa", &token);
    let _ = cluster.kubectl(&as_sa, &["get", "secrets"]).await;

    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        text.contains("request"),
        "the server logged requests at debug level: {text}"
    );
    let pki = cluster.srv.pki.as_ref().expect("a TLS server has a PKI");
    let secrets: Vec<(&str, String)> = vec![
        ("the Secret's value", marker.to_owned()),
        ("the Secret's value in base64", encoded),
        ("the patched value", patched.to_owned()),
        (
            "the patched value in base64",
            base64::engine::general_purpose::STANDARD.encode(patched),
        ),
        ("the admin token", pki.admin_token.clone()),
        ("a ServiceAccount token", token),
        ("a private key", "PRIVATE KEY".to_owned()),
    ];
    for (what, value) in &secrets {
        assert!(!text.contains(value.as_str()), "{what} appears in the log");
    }
    println!(
        "log: {} bytes at trace level, none of {} secrets in it",
        text.len(),
        secrets.len()
    );

    // Owner-only on disk.
    for dir in [data_dir.clone(), data_dir.join("pki"), data_dir.join("store")] {
        assert_eq!(mode(&dir), 0o700, "{} is {:o}", dir.display(), mode(&dir));
    }
    assert_eq!(mode(&data_dir.join("store/store.redb")), 0o600);
    let mut checked = 0;
    for entry in std::fs::read_dir(data_dir.join("pki")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".key") || name.ends_with(".token") {
            assert_eq!(mode(&path), 0o600, "{name} is {:o}", mode(&path));
            checked += 1;
        }
    }
    assert!(
        checked >= 3,
        "expected the CA, admin and signing keys and the admin token, found {checked}"
    );
    println!("data dir, pki and store 0700; store file and {checked} keys/tokens 0600");
}
