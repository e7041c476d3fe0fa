//! The manifest-directory source: re-reads only the files a change notification names (a rescan compares file
//! metadata on a timer, in case a notification was missed), sends only the objects that changed in them, and keeps
//! the last good version of a file that became invalid.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, hash_map::DefaultHasher},
    hash::{Hash, Hasher},
    os::unix::fs::MetadataExt,
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
    /// Rescan the directory at least this often, in case a change notification was missed.
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

/// What a change notification asks for.
#[derive(Debug)]
enum Touched {
    /// These paths were created, written, renamed or removed.
    Paths(Vec<PathBuf>),
    /// Events were lost or the watch failed: compare every file.
    Rescan,
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
        let touched = match event {
            Ok(e) if !e.need_rescan() && !e.paths.is_empty() => Touched::Paths(e.paths),
            Ok(_) => Touched::Rescan,
            Err(e) => {
                warn!(error = %e, "manifest watch error; rescanning the directory");
                Touched::Rescan
            }
        };
        let _ = changed_tx.send(touched);
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
    mut changed: mpsc::UnboundedReceiver<Touched>,
) {
    let mut files = Files::default();
    let mut listed = false;
    // The first read is a full scan; later ones only look at the paths the notifications named.
    let mut rescan = true;
    let mut paths: BTreeSet<PathBuf> = BTreeSet::new();
    loop {
        let result = if std::mem::take(&mut rescan) {
            paths.clear();
            files.reload(&dir)
        } else {
            Ok(files.reload_paths(&dir, std::mem::take(&mut paths)))
        };
        match result {
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
                error!(dir = %dir.display(), error = %e, "cannot read the manifest directory; keeping the last state");
                rescan = true;
            }
        }
        let mut note = |t: Touched| match t {
            Touched::Paths(p) => paths.extend(p),
            Touched::Rescan => rescan = true,
        };
        // Wait for a change or the resync timer; then let a burst of changes settle.
        tokio::select! {
            event = changed.recv() => {
                let Some(t) = event else { return };
                note(t);
                tokio::time::sleep(options.debounce).await;
                while let Ok(t) = changed.try_recv() {
                    note(t);
                }
            }
            _ = tokio::time::sleep(options.resync) => rescan = true,
            _ = tx.closed() => return,
        }
    }
}

/// An object's identity across files.
type ObjId = (Kind, ObjKey);

/// What identifies a file's version without reading it: inode, size and change time (a rename-into-place or a
/// write changes at least one of them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    ctime_ns: i128,
    mtime_ns: i128,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Stamp {
            ino: meta.ino(),
            len: meta.len(),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
        }
    }
}

/// What is known of one file: its metadata and a hash of its last text, and a hash of each object of its last good
/// version.
#[derive(Default)]
struct FileState {
    stamp: Stamp,
    text: u64,
    objects: ObjectHashes,
}

/// The hash of each object of a file, sorted by object. A file usually holds one object or two: a sorted `Vec`
/// costs half of the smallest `HashMap` (four buckets).
#[derive(Default)]
struct ObjectHashes(Vec<(ObjId, u64)>);

impl ObjectHashes {
    /// From (object, hash) pairs in file order; an object listed twice keeps its last hash.
    fn new(mut pairs: Vec<(ObjId, u64)>) -> ObjectHashes {
        // Stable sort of the reversed list: the first of equal objects is the file's last one.
        pairs.reverse();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs.dedup_by(|later, first| later.0 == first.0);
        pairs.shrink_to_fit();
        ObjectHashes(pairs)
    }

    fn find(&self, id: &ObjId) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.cmp(id))
    }

    fn get(&self, id: &ObjId) -> Option<u64> {
        self.find(id).ok().map(|i| self.0[i].1)
    }

    fn contains_key(&self, id: &ObjId) -> bool {
        self.find(id).is_ok()
    }

    fn remove(&mut self, id: &ObjId) {
        if let Ok(i) = self.find(id) {
            self.0.remove(i);
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn into_keys(self) -> impl Iterator<Item = ObjId> {
        self.0.into_iter().map(|(id, _)| id)
    }
}

/// The manifest files and the objects they hold (as hashes: the objects themselves go out as changes).
#[derive(Default)]
struct Files {
    files: BTreeMap<Arc<Path>, FileState>,
    /// The files holding each object (usually one; the last one parsed wins).
    claims: HashMap<ObjId, Vec<Arc<Path>>>,
    conv: Converter,
    /// Changes sent since the interner last dropped unused strings.
    since_collect: usize,
}

/// Changes after which the interner drops strings no object uses any more.
const COLLECT_AFTER: usize = 1024;

/// A manifest file's name: `.yaml`, `.yml` or `.json`, not hidden (editors' and writers' temporary files are).
fn is_manifest(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    [".yaml", ".yml", ".json"].iter().any(|ext| name.ends_with(ext)) && !name.starts_with('.')
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

    /// Rescans the directory (reading only files whose metadata changed) and returns the changes since the last
    /// reload.
    fn reload(&mut self, dir: &Path) -> std::io::Result<Vec<Change>> {
        let mut present = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if is_manifest(&path) && path.is_file() {
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
            self.forget(&path, &mut out, &mut stale);
        }
        for path in &present {
            self.load(path, false, &mut out, &mut stale);
        }
        Ok(self.finish(out, stale))
    }

    /// Looks only at `paths` (those a change notification named): loads the manifests among them that exist and
    /// forgets those that are gone. Paths outside `dir` and other files are ignored.
    fn reload_paths(&mut self, dir: &Path, paths: BTreeSet<PathBuf>) -> Vec<Change> {
        let mut out = Vec::new();
        let mut stale = BTreeSet::new();
        for path in paths {
            if path.parent() != Some(dir) || !is_manifest(&path) {
                continue;
            }
            if path.is_file() {
                self.load(&path, false, &mut out, &mut stale);
            } else {
                self.forget(&path, &mut out, &mut stale);
            }
        }
        self.finish(out, stale)
    }

    /// The file at `path` is gone: its objects are deleted or re-sent from another file holding them.
    fn forget(&mut self, path: &Path, out: &mut Vec<Change>, stale: &mut BTreeSet<Arc<Path>>) {
        let Some((path, state)) = self.files.remove_entry(path) else {
            return;
        };
        for id in state.objects.into_keys() {
            self.unclaim(id, &path, out, stale);
        }
    }

    /// Re-sends what other files hold of objects a changed file dropped, and releases unused strings.
    fn finish(&mut self, mut out: Vec<Change>, mut stale: BTreeSet<Arc<Path>>) -> Vec<Change> {
        // Objects a changed file dropped that another file still holds: send that file's version again.
        for path in std::mem::take(&mut stale) {
            self.load(&path, true, &mut out, &mut stale);
        }
        // Dropping unused strings costs a pass over all of them: only after enough changes to matter.
        self.since_collect += out.len();
        if self.since_collect >= COLLECT_AFTER {
            self.conv.strings.collect();
            self.since_collect = 0;
        }
        out
    }

    /// Loads one file if it changed (or `force`), appending the changes of its objects. Unchanged metadata means
    /// an unchanged file (not read); changed metadata with the same text sends nothing.
    fn load(&mut self, path: &Path, force: bool, out: &mut Vec<Change>, stale: &mut BTreeSet<Arc<Path>>) {
        let stamp = match std::fs::metadata(path) {
            Ok(m) => Stamp::of(&m),
            Err(e) => {
                error!(file = %path.display(), error = %e, "cannot read manifest; keeping its last good version");
                return;
            }
        };
        if !force && self.files.get(path).is_some_and(|s| s.stamp == stamp) {
            return;
        }
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                error!(file = %path.display(), error = %e, "cannot read manifest; keeping its last good version");
                return;
            }
        };
        let hash = text_hash(&text);
        let path: Arc<Path> = match self.files.get_key_value(path) {
            Some((p, state)) if state.text == hash && !force => {
                let p = p.clone();
                if let Some(s) = self.files.get_mut(&p) {
                    s.stamp = stamp;
                }
                return;
            }
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
            let same = old.objects.get(&id) == Some(h);
            parsed.push((id, h, (!same).then_some(change)));
        });
        drop(text);
        match result {
            Ok(skipped) => {
                for reason in &skipped {
                    warn!(file = %path.display(), "{reason}");
                }
                debug!(file = %path.display(), objects = parsed.len(), "manifest parsed");
                let mut hashes = Vec::with_capacity(parsed.len());
                for (id, h, change) in parsed {
                    let holders = self.claims.entry(id.clone()).or_default();
                    if !holders.contains(&path) {
                        // Usually the only holder: no room for four.
                        holders.reserve_exact(1);
                        holders.push(path.clone());
                    }
                    if let Some(c) = change {
                        out.push(c);
                    }
                    hashes.push((id, h));
                }
                let state = FileState {
                    stamp,
                    text: hash,
                    objects: ObjectHashes::new(hashes),
                };
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
                self.files.insert(
                    path,
                    FileState {
                        stamp,
                        text: hash,
                        ..old
                    },
                );
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

    #[test]
    fn object_hashes_are_found_by_object_and_keep_the_last_hash_of_a_repeat() {
        let id = |kind, name: &str| -> ObjId {
            (
                kind,
                ObjKey {
                    namespace: "ns".into(),
                    name: name.into(),
                },
            )
        };
        let mut h = ObjectHashes::new(vec![
            (id(Kind::EndpointSlice, "b"), 1),
            (id(Kind::Service, "b"), 2),
            (id(Kind::Service, "a"), 3),
            (id(Kind::Service, "b"), 4),
        ]);
        assert_eq!(h.get(&id(Kind::Service, "b")), Some(4));
        assert_eq!(h.get(&id(Kind::Service, "a")), Some(3));
        assert_eq!(h.get(&id(Kind::EndpointSlice, "b")), Some(1));
        assert_eq!(h.get(&id(Kind::EndpointSlice, "a")), None);
        h.remove(&id(Kind::Service, "a"));
        assert!(!h.contains_key(&id(Kind::Service, "a")));
        assert!(h.contains_key(&id(Kind::Service, "b")));
        let keys: Vec<ObjId> = h.into_keys().collect();
        assert_eq!(keys, [id(Kind::Service, "b"), id(Kind::EndpointSlice, "b")]);
        assert!(ObjectHashes::default().is_empty());
    }

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

    /// What a change notification triggers: only the named files are looked at.
    #[test]
    fn reload_paths_reads_only_the_named_files() {
        let dir = TempDir::new("paths");
        std::fs::write(dir.0.join("a.yaml"), svc("a", "10.96.0.1")).unwrap();
        std::fs::write(dir.0.join("b.yaml"), svc("b", "10.96.0.2")).unwrap();
        let (mut files, mut seen) = (Files::default(), Seen::default());
        reload(&mut files, &dir.0, &mut seen);
        assert_eq!(seen.names(), ["a", "b"]);
        let by_paths = |files: &mut Files, seen: &mut Seen, names: &[&str]| {
            seen.service_changes = 0;
            let paths = names.iter().map(|n| dir.0.join(n)).collect();
            for c in files.reload_paths(&dir.0, paths) {
                seen.apply(c);
            }
        };
        // a changes on disk but only b is named: a is not read.
        std::fs::write(dir.0.join("a.yaml"), svc("a1", "10.96.0.1")).unwrap();
        std::fs::write(dir.0.join("b.yaml"), svc("b1", "10.96.0.2")).unwrap();
        by_paths(&mut files, &mut seen, &["b.yaml"]);
        assert_eq!(seen.names(), ["a", "b1"]);
        // A removed file named by an event deletes its objects; hidden files and other paths are ignored.
        std::fs::remove_file(dir.0.join("b.yaml")).unwrap();
        std::fs::write(dir.0.join(".c.yaml"), svc("c", "10.96.0.3")).unwrap();
        by_paths(&mut files, &mut seen, &["b.yaml", ".c.yaml", "../x.yaml"]);
        assert_eq!(seen.names(), ["a"]);
        // The same text written again (a new inode by rename) sends nothing; the rescan then finds a1.
        std::fs::write(dir.0.join(".a.tmp"), svc("a1", "10.96.0.1")).unwrap();
        std::fs::rename(dir.0.join(".a.tmp"), dir.0.join("a.yaml")).unwrap();
        reload(&mut files, &dir.0, &mut seen);
        assert_eq!((seen.names(), seen.service_changes), (vec!["a1"], 2));
        std::fs::write(dir.0.join(".a.tmp"), svc("a1", "10.96.0.1")).unwrap();
        std::fs::rename(dir.0.join(".a.tmp"), dir.0.join("a.yaml")).unwrap();
        by_paths(&mut files, &mut seen, &["a.yaml"]);
        assert_eq!(seen.service_changes, 0);
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
