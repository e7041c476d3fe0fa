//! The store conformance suite and durability checks against the embedded (redb) backend.

use std::sync::Arc;
use std::time::Duration;

use control::store::embedded::{EmbeddedOptions, EmbeddedStore};
use control::store::{Error, ListOptions, Store, WatchItem, conformance};

fn open(dir: &std::path::Path, options: EmbeddedOptions) -> EmbeddedStore {
    EmbeddedStore::open(dir, options).expect("open embedded store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_passes_conformance() {
    let root = tempfile::tempdir().unwrap();
    let counter = std::sync::atomic::AtomicUsize::new(0);
    conformance::run_all(|| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = root.path().join(format!("s{n}"));
        async move { Arc::new(open(&dir, EmbeddedOptions::default())) as Arc<dyn Store> }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (rev, created) = {
        let store = open(dir.path(), EmbeddedOptions::default());
        let created = store.create("/p/a", b"v1".to_vec()).await.unwrap();
        store.update("/p/a", b"v2".to_vec(), None).await.unwrap();
        (store.current_revision().await.unwrap(), created)
    };
    let store = open(dir.path(), EmbeddedOptions::default());
    assert_eq!(store.current_revision().await.unwrap(), rev);
    let got = store.get("/p/a").await.unwrap().expect("key survives reopen");
    assert_eq!(got.value, b"v2");
    assert_eq!(got.create_revision, created.create_revision);
    // History survives too: a watch from before the writes replays them.
    let mut stream = store.watch("/p/", created.mod_revision - 1).await.unwrap();
    let Some(Ok(WatchItem::Event(first))) = stream.recv().await else {
        panic!("an event first")
    };
    assert_eq!(first.revision, created.mod_revision);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_bounded_under_churn() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        dir.path(),
        EmbeddedOptions {
            history_limit: 8,
            ..Default::default()
        },
    );
    store.create("/lease/n1", b"0".to_vec()).await.unwrap();
    for i in 0..40u32 {
        store
            .update("/lease/n1", i.to_string().into_bytes(), None)
            .await
            .unwrap();
    }
    let current = store.current_revision().await.unwrap();
    let compacted = store.compacted_revision().await.unwrap();
    assert!(
        current - compacted <= 10,
        "history kept {} revisions",
        current - compacted
    );
    let old = store.watch("/lease/", 1).await;
    assert!(matches!(old, Err(Error::Compacted { .. })));
    let listed = store.list("/lease/", ListOptions::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_watcher_catches_up_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        dir.path(),
        EmbeddedOptions {
            fanout_capacity: 2,
            ..Default::default()
        },
    );
    let start = store.current_revision().await.unwrap();
    let mut stream = store.watch("/lag/", start).await.unwrap();
    let mut written = Vec::new();
    for i in 0..20u32 {
        written.push(
            store
                .create(&format!("/lag/{i:02}"), vec![])
                .await
                .unwrap()
                .mod_revision,
        );
    }
    let mut seen = Vec::new();
    while seen.len() < written.len() {
        let item = tokio::time::timeout(Duration::from_secs(5), stream.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let WatchItem::Event(event) = item {
            seen.push(event.revision);
        }
    }
    assert_eq!(seen, written, "every event exactly once, in order");
}
