//! The manifest-directory source: re-reads only files that changed (on a change notification and on a timer),
//! sends only the objects that changed in them, and keeps the last good version of a file that became invalid.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, hash_map::DefaultHasher},
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::{
    inputs::{Change, Converter, Kind, ObjKey, key_of},
    manifests::{self, Object},
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

/// Watches `dir` and sends changes; every kind is `Listed` after the first read of the directory succeeded.
pub fn spawn_manifests(
    dir: PathBuf,
    options: ManifestOptions,
) -> anyhow::Result<mpsc::UnboundedReceiver<Vec<Change>>> {
    if !dir.is_dir() {
        bail!(
            "manifest directory {} does not exist (create it or pass another path)",
            dir.display()
        );
    }
    let (tx, rx) = mpsc::unbounded_channel();
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
    tx: mpsc::UnboundedSender<Vec<Change>>,
    mut changed: mpsc::UnboundedReceiver<()>,
) {
    let mut files = Files::default();
    let mut listed = false;
    loop {
        match files.reload(&dir) {
            Ok(mut changes) => {
                if !std::mem::replace(&mut listed, true) {
                    changes.extend(Kind::ALL.map(Change::Listed));
                }
                if !changes.is_empty() {
                    info!(
                        changes = changes.len(),
                        objects = files.objects(),
                        "manifests loaded"
                    );
                    if tx.send(changes).is_err() {
                        return;
                    }
                }
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

/// An object's identity across files.
type ObjId = (Kind, ObjKey);

/// What is known of one file: a hash of its last text, and a hash of each object of its last good version.
#[derive(Default)]
struct FileState {
    text: u64,
    objects: HashMap<ObjId, u64>,
}

/// The manifest files and the objects they hold (as hashes: the objects themselves go out as changes).
#[derive(Default)]
struct Files {
    files: BTreeMap<Arc<Path>, FileState>,
    /// The files holding each object (usually one; the last one parsed wins).
    claims: HashMap<ObjId, Vec<Arc<Path>>>,
    conv: Converter,
}

fn text_hash(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

impl Files {
    /// How many distinct objects the files hold.
    fn objects(&self) -> usize {
        self.claims.len()
    }

    /// Re-reads the directory and returns the changes since the last reload.
    fn reload(&mut self, dir: &Path) -> std::io::Result<Vec<Change>> {
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
        let mut out = Vec::new();
        let mut stale = BTreeSet::new();
        let gone: Vec<Arc<Path>> = self
            .files
            .keys()
            .filter(|p| present.binary_search_by(|x| x.as_path().cmp(p)).is_err())
            .cloned()
            .collect();
        for path in gone {
            if let Some(state) = self.files.remove(&path) {
                for id in state.objects.into_keys() {
                    self.unclaim(id, &path, &mut out, &mut stale);
                }
            }
        }
        for path in &present {
            self.load(path, false, &mut out, &mut stale);
        }
        // Objects a changed file dropped that another file still holds: send that file's version again.
        for path in std::mem::take(&mut stale) {
            self.load(&path, true, &mut out, &mut stale);
        }
        if !out.is_empty() {
            self.conv.strings.collect();
        }
        Ok(out)
    }

    /// Loads one file if its text changed (or `force`), appending the changes of its objects.
    fn load(&mut self, path: &Path, force: bool, out: &mut Vec<Change>, stale: &mut BTreeSet<Arc<Path>>) {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                error!(file = %path.display(), error = %e, "cannot read manifest; keeping its last good version");
                return;
            }
        };
        let hash = text_hash(&text);
        let path: Arc<Path> = match self.files.get_key_value(path) {
            Some((_, state)) if state.text == hash && !force => return,
            Some((p, _)) => p.clone(),
            None => Arc::from(path),
        };
        let old = self.files.remove(&path).unwrap_or_default();
        let conv = &mut self.conv;
        let mut parsed: Vec<(ObjId, u64, Option<Change>)> = Vec::new();
        let result = manifests::parse_each(&text, |obj, h| {
            let (id, change) = match &obj {
                Object::Service(o) => (
                    (Kind::Service, key_of(&o.metadata, &mut conv.strings)),
                    conv.service(o),
                ),
                Object::EndpointSlice(o) => (
                    (Kind::EndpointSlice, key_of(&o.metadata, &mut conv.strings)),
                    conv.slice(o),
                ),
                Object::Node(o) => {
                    let change = conv.node(o);
                    let Change::Node(name, _) = &change else {
                        unreachable!("conv.node returns a node change")
                    };
                    let key = ObjKey {
                        namespace: conv.strings.get(""),
                        name: name.clone(),
                    };
                    ((Kind::Node, key), change)
                }
            };
            let same = old.objects.get(&id) == Some(&h);
            parsed.push((id, h, (!same).then_some(change)));
        });
        drop(text);
        match result {
            Ok(skipped) => {
                for reason in &skipped {
                    warn!(file = %path.display(), "{reason}");
                }
                debug!(file = %path.display(), objects = parsed.len(), "manifest parsed");
                let mut state = FileState {
                    text: hash,
                    objects: HashMap::with_capacity(parsed.len()),
                };
                for (id, h, change) in parsed {
                    let holders = self.claims.entry(id.clone()).or_default();
                    if !holders.contains(&path) {
                        holders.push(path.clone());
                    }
                    if let Some(c) = change {
                        out.push(c);
                    }
                    state.objects.insert(id, h);
                }
                for id in old.objects.into_keys() {
                    if !state.objects.contains_key(&id) {
                        self.unclaim(id, &path, out, stale);
                    }
                }
                self.files.insert(path, state);
            }
            Err(e) => {
                let kept = if old.objects.is_empty() {
                    "nothing"
                } else {
                    "its last good version"
                };
                error!(file = %path.display(), error = %e, "invalid manifest; using {kept} from this file");
                self.files.insert(path, FileState { text: hash, ..old });
            }
        }
    }

    /// `path` no longer holds object `id`: it is deleted, or re-sent from another file that still holds it.
    fn unclaim(&mut self, id: ObjId, path: &Path, out: &mut Vec<Change>, stale: &mut BTreeSet<Arc<Path>>) {
        let Some(holders) = self.claims.get_mut(&id) else {
            return;
        };
        holders.retain(|p| **p != *path);
        if let Some(other) = holders.first().cloned() {
            if let Some(state) = self.files.get_mut(&other) {
                state.objects.remove(&id);
            }
            stale.insert(other);
            return;
        }
        self.claims.remove(&id);
        let (kind, key) = id;
        out.push(match kind {
            Kind::Service => Change::Service(key, None),
            Kind::EndpointSlice => Change::Slice(key, None),
            Kind::Node => Change::Node(key.name, None),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, time::Duration};

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

    /// The Service names the changes so far leave, and how many Service changes there were.
    #[derive(Default)]
    struct Seen {
        names: BTreeSet<String>,
        service_changes: usize,
        listed: bool,
    }

    impl Seen {
        fn apply(&mut self, c: Change) {
            match c {
                Change::Service(k, Some(_)) => {
                    self.service_changes += 1;
                    self.names.insert(k.name.to_string());
                }
                Change::Service(k, None) => {
                    self.service_changes += 1;
                    self.names.remove(&*k.name);
                }
                Change::Listed(_) => self.listed = true,
                _ => {}
            }
        }

        fn names(&self) -> Vec<&str> {
            self.names.iter().map(String::as_str).collect()
        }
    }

    /// Waits (bounded) until the changes received satisfy `pred`.
    async fn wait_for(
        rx: &mut mpsc::UnboundedReceiver<Vec<Change>>,
        seen: &mut Seen,
        what: &str,
        pred: impl Fn(&Seen) -> bool,
    ) {
        let deadline = tokio::time::timeout(Duration::from_secs(10), async {
            while !(seen.listed && pred(seen)) {
                for c in rx.recv().await.expect("source task ended") {
                    seen.apply(c);
                }
            }
        });
        if deadline.await.is_err() {
            panic!(
                "timed out waiting for {what}; current services {:?}",
                seen.names()
            );
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
        let mut seen = Seen::default();
        wait_for(&mut rx, &mut seen, "the initial read", |s| s.names() == ["a"]).await;

        // A new file and a modified one.
        std::fs::write(
            dir.0.join("b.yml"),
            format!("{}---\n{}", svc("b", "10.96.0.2"), svc("c", "10.96.0.3")),
        )
        .unwrap();
        wait_for(&mut rx, &mut seen, "b and c", |s| s.names() == ["a", "b", "c"]).await;

        // Breaking a file keeps its last good content.
        std::fs::write(dir.0.join("b.yml"), "kind: Service\nspec: [broken\n").unwrap();
        std::fs::write(dir.0.join("a.yaml"), svc("a2", "10.96.0.1")).unwrap();
        wait_for(&mut rx, &mut seen, "a2 with b and c kept", |s| {
            s.names() == ["a2", "b", "c"]
        })
        .await;

        // Fixing it takes effect; removing a file drops its objects.
        std::fs::write(dir.0.join("b.yml"), svc("b", "10.96.0.2")).unwrap();
        std::fs::remove_file(dir.0.join("a.yaml")).unwrap();
        wait_for(&mut rx, &mut seen, "only b", |s| s.names() == ["b"]).await;
    }

    fn reload(files: &mut Files, dir: &Path, seen: &mut Seen) {
        seen.service_changes = 0;
        for c in files.reload(dir).unwrap() {
            seen.apply(c);
        }
    }

    /// What the periodic resync runs: a reload that picks up files no event announced, and sends only what changed.
    #[test]
    fn reload_sends_only_changed_objects() {
        let dir = TempDir::new("resync");
        let json = |name: &str, ip: &str| {
            format!(
                r#"{{"kind": "Service", "metadata": {{"name": "{name}"}}, "spec": {{"clusterIP": "{ip}"}}}}"#
            )
        };
        std::fs::write(dir.0.join("a.json"), json("a", "10.96.0.1")).unwrap();
        let (mut files, mut seen) = (Files::default(), Seen::default());
        reload(&mut files, &dir.0, &mut seen);
        assert_eq!(seen.names(), ["a"]);
        std::fs::write(dir.0.join("b.json"), json("b", "10.96.0.2")).unwrap();
        reload(&mut files, &dir.0, &mut seen);
        assert_eq!((seen.names(), seen.service_changes), (vec!["a", "b"], 1));
        // One object of a multi-document file changes: one change.
        let many = |ip_c: &str| {
            format!(
                "{}---\n{}---\n{}",
                svc("c", ip_c),
                svc("d", "10.96.0.4"),
                svc("e", "10.96.0.5")
            )
        };
        std::fs::write(dir.0.join("b.json"), many("10.96.0.3")).unwrap();
        reload(&mut files, &dir.0, &mut seen);
        assert_eq!(seen.names(), ["a", "c", "d", "e"]);
        std::fs::write(dir.0.join("b.json"), many("10.96.0.33")).unwrap();
        reload(&mut files, &dir.0, &mut seen);
        assert_eq!(seen.service_changes, 1);
        reload(&mut files, &dir.0, &mut seen);
        assert_eq!(seen.service_changes, 0, "an unchanged directory sends nothing");
    }

    /// An object in two files survives the removal from one of them.
    #[test]
    fn object_held_by_two_files() {
        let dir = TempDir::new("twice");
        std::fs::write(dir.0.join("a.yaml"), svc("x", "10.96.0.1")).unwrap();
        std::fs::write(dir.0.join("b.yaml"), svc("x", "10.96.0.1")).unwrap();
        let (mut files, mut seen) = (Files::default(), Seen::default());
        reload(&mut files, &dir.0, &mut seen);
        std::fs::remove_file(dir.0.join("a.yaml")).unwrap();
        reload(&mut files, &dir.0, &mut seen);
        assert_eq!(seen.names(), ["x"]);
        std::fs::remove_file(dir.0.join("b.yaml")).unwrap();
        reload(&mut files, &dir.0, &mut seen);
        assert!(seen.names().is_empty());
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
