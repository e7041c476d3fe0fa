//! The manifest-directory source: reads every manifest file, reloads on change and on a timer, keeps the last good
//! version of a file that became invalid.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use super::{
    manifests::{self, Object},
    source::Snapshot,
};

/// Timing of the manifest source.
#[derive(Clone, Copy, Debug)]
pub struct ManifestOptions {
    /// How long to wait after a change for more changes before reloading.
    pub debounce: Duration,
    /// Reload at least this often, in case a change notification was missed.
    pub resync: Duration,
}

impl Default for ManifestOptions {
    fn default() -> Self {
        ManifestOptions {
            debounce: Duration::from_millis(100),
            resync: Duration::from_secs(10),
        }
    }
}

/// Watches `dir` and publishes snapshots; `None` until the first read of the directory succeeded.
pub fn spawn_manifests(
    dir: PathBuf,
    options: ManifestOptions,
) -> anyhow::Result<watch::Receiver<Option<Snapshot>>> {
    if !dir.is_dir() {
        bail!(
            "manifest directory {} does not exist (create it or pass another path)",
            dir.display()
        );
    }
    let (tx, rx) = watch::channel(None);
    let (changed_tx, changed_rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Any event (or error) triggers a reload; the reload decides what changed.
        if let Err(e) = &event {
            warn!(error = %e, "manifest watch error");
        }
        let _ = changed_tx.send(());
    })
    .context("creating a file watcher")?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", dir.display()))?;
    tokio::spawn(async move {
        // The watcher lives as long as the task.
        let _watcher = watcher;
        run(dir, options, tx, changed_rx).await;
    });
    Ok(rx)
}

async fn run(
    dir: PathBuf,
    options: ManifestOptions,
    tx: watch::Sender<Option<Snapshot>>,
    mut changed: mpsc::UnboundedReceiver<()>,
) {
    let mut files = Files::default();
    loop {
        match files.reload(&dir) {
            Ok(()) => {
                let snapshot = files.snapshot();
                tx.send_if_modified(|cur| {
                    if cur.as_ref() == Some(&snapshot) {
                        return false;
                    }
                    info!(
                        services = snapshot.services.len(),
                        slices = snapshot.slices.len(),
                        nodes = snapshot.nodes.len(),
                        "manifests loaded"
                    );
                    *cur = Some(snapshot);
                    true
                });
            }
            Err(e) => {
                error!(dir = %dir.display(), error = %e, "cannot read the manifest directory; keeping the last state")
            }
        }
        // Wait for a change or the resync timer; then let a burst of changes settle.
        tokio::select! {
            event = changed.recv() => {
                if event.is_none() {
                    return;
                }
                tokio::time::sleep(options.debounce).await;
                while changed.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(options.resync) => {}
            _ = tx.closed() => return,
        }
    }
}

/// The last good objects of every manifest file.
#[derive(Default)]
struct Files {
    by_path: BTreeMap<PathBuf, Vec<Object>>,
    /// The content each file had when last parsed (a file is re-parsed only when it changed).
    text: BTreeMap<PathBuf, String>,
}

impl Files {
    fn reload(&mut self, dir: &Path) -> std::io::Result<()> {
        let mut present = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let is_manifest = [".yaml", ".yml", ".json"].iter().any(|ext| name.ends_with(ext));
            if is_manifest && !name.starts_with('.') && path.is_file() {
                present.push(path);
            }
        }
        present.sort();
        self.by_path.retain(|p, _| present.contains(p));
        self.text.retain(|p, _| present.contains(p));
        for path in present {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    error!(file = %path.display(), error = %e, "cannot read manifest; keeping its last good version");
                    continue;
                }
            };
            if self.text.get(&path) == Some(&text) {
                continue;
            }
            match manifests::parse(&text) {
                Ok(parsed) => {
                    for reason in &parsed.skipped {
                        warn!(file = %path.display(), "{reason}");
                    }
                    debug!(file = %path.display(), objects = parsed.objects.len(), "manifest parsed");
                    self.by_path.insert(path.clone(), parsed.objects);
                }
                Err(e) => {
                    let kept = if self.by_path.contains_key(&path) {
                        "its last good version"
                    } else {
                        "nothing"
                    };
                    error!(file = %path.display(), error = %e, "invalid manifest; using {kept} from this file");
                }
            }
            self.text.insert(path, text);
        }
        Ok(())
    }

    fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        for obj in self.by_path.values().flatten() {
            match obj {
                Object::Service(o) => s.services.push((**o).clone()),
                Object::EndpointSlice(o) => s.slices.push((**o).clone()),
                Object::Node(o) => s.nodes.push((**o).clone()),
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A temporary directory removed on drop (also when the test fails).
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!("skiff-proxytest-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn svc(name: &str, ip: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{clusterIP: {ip}, ports: [{{port: 80}}]}}\n"
        )
    }

    fn names(s: &Snapshot) -> Vec<String> {
        let mut v: Vec<String> = s
            .services
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        v.sort();
        v
    }

    /// Waits (bounded) until the published snapshot satisfies `pred`.
    async fn wait_for(
        rx: &mut watch::Receiver<Option<Snapshot>>,
        what: &str,
        pred: impl Fn(&Snapshot) -> bool,
    ) {
        let deadline = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if rx.borrow_and_update().as_ref().is_some_and(&pred) {
                    return;
                }
                rx.changed().await.expect("source task ended");
            }
        });
        if deadline.await.is_err() {
            let current = rx.borrow().as_ref().map(names);
            panic!("timed out waiting for {what}; current services {current:?}");
        }
    }

    #[tokio::test]
    async fn reloads_on_change_and_keeps_the_last_good_file() {
        let dir = TempDir::new("manifests");
        std::fs::write(dir.0.join("a.yaml"), svc("a", "10.96.0.1")).unwrap();
        std::fs::write(dir.0.join("notes.txt"), "not a manifest").unwrap();
        let options = ManifestOptions {
            debounce: Duration::from_millis(50),
            resync: Duration::from_secs(60),
        };
        let mut rx = spawn_manifests(dir.0.clone(), options).unwrap();
        wait_for(&mut rx, "the initial read", |s| names(s) == ["a"]).await;

        // A new file and a modified one.
        std::fs::write(
            dir.0.join("b.yml"),
            format!("{}---\n{}", svc("b", "10.96.0.2"), svc("c", "10.96.0.3")),
        )
        .unwrap();
        wait_for(&mut rx, "b and c", |s| names(s) == ["a", "b", "c"]).await;

        // Breaking a file keeps its last good content.
        std::fs::write(dir.0.join("b.yml"), "kind: Service\nspec: [broken\n").unwrap();
        std::fs::write(dir.0.join("a.yaml"), svc("a2", "10.96.0.1")).unwrap();
        wait_for(&mut rx, "a2 with b and c kept", |s| names(s) == ["a2", "b", "c"]).await;

        // Fixing it takes effect; removing a file drops its objects.
        std::fs::write(dir.0.join("b.yml"), svc("b", "10.96.0.2")).unwrap();
        std::fs::remove_file(dir.0.join("a.yaml")).unwrap();
        wait_for(&mut rx, "only b", |s| names(s) == ["b"]).await;
    }

    /// What the periodic resync runs: a reload that picks up files no event announced.
    #[test]
    fn reload_picks_up_new_files() {
        let dir = TempDir::new("resync");
        std::fs::write(
            dir.0.join("a.json"),
            r#"{"kind": "Service", "metadata": {"name": "a"}, "spec": {"clusterIP": "10.96.0.1"}}"#,
        )
        .unwrap();
        let mut files = Files::default();
        files.reload(&dir.0).unwrap();
        assert_eq!(names(&files.snapshot()), ["a"]);
        std::fs::write(
            dir.0.join("b.json"),
            r#"{"kind": "Service", "metadata": {"name": "b"}, "spec": {"clusterIP": "10.96.0.2"}}"#,
        )
        .unwrap();
        files.reload(&dir.0).unwrap();
        assert_eq!(names(&files.snapshot()), ["a", "b"]);
    }

    #[test]
    fn missing_directory_is_an_error() {
        let err = spawn_manifests(
            PathBuf::from("/nonexistent/skiff-proxytest"),
            ManifestOptions::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
