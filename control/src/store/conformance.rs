//! A conformance suite every `Store` backend must pass; backends call it from their own tests.

use std::sync::Arc;
use std::time::Duration;

use super::{Error, Event, EventKind, ListOptions, Store, WatchItem, WatchStream};

const STEP: Duration = Duration::from_secs(5);

async fn next(stream: &mut WatchStream) -> Event {
    loop {
        let item = tokio::time::timeout(STEP, stream.recv())
            .await
            .expect("watch event within 5s");
        match item
            .expect("watch stream open")
            .expect("watch event, not an error")
        {
            WatchItem::Event(event) => return event,
            WatchItem::Progress(_) => {}
        }
    }
}

fn keys(items: &[super::KeyValue]) -> Vec<&str> {
    items.iter().map(|kv| kv.key.as_str()).collect()
}

/// Create, get, update with and without preconditions, delete.
pub async fn crud(store: &dyn Store) {
    let start = store.current_revision().await.unwrap();
    let a = store.create("/t/a", b"1".to_vec()).await.unwrap();
    assert!(a.mod_revision > start);
    assert_eq!(a.create_revision, a.mod_revision);
    assert_eq!(
        store.create("/t/a", b"x".to_vec()).await,
        Err(Error::AlreadyExists("/t/a".into()))
    );
    assert_eq!(store.get("/t/a").await.unwrap(), Some(a.clone()));
    assert_eq!(store.get("/t/missing").await.unwrap(), None);

    let b = store
        .update("/t/a", b"2".to_vec(), Some(a.mod_revision))
        .await
        .unwrap();
    assert!(b.mod_revision > a.mod_revision);
    assert_eq!(b.create_revision, a.create_revision);
    let stale = store.update("/t/a", b"3".to_vec(), Some(a.mod_revision)).await;
    assert!(matches!(stale, Err(Error::Conflict { .. })), "{stale:?}");
    assert!(matches!(
        store.update("/t/none", b"3".to_vec(), None).await,
        Err(Error::NotFound(_))
    ));

    assert!(matches!(
        store.delete("/t/a", Some(a.mod_revision)).await,
        Err(Error::Conflict { .. })
    ));
    let deleted = store.delete("/t/a", Some(b.mod_revision)).await.unwrap();
    assert_eq!(deleted.kind, EventKind::Deleted);
    assert_eq!(deleted.kv.value, b"2");
    assert!(deleted.revision > b.mod_revision);
    assert_eq!(store.get("/t/a").await.unwrap(), None);
    assert_eq!(store.current_revision().await.unwrap(), deleted.revision);
}

/// Many concurrent updates from the same revision: exactly one wins, the others conflict.
pub async fn concurrent_updates(store: Arc<dyn Store>) {
    let base = store.create("/race/k", b"0".to_vec()).await.unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .update("/race/k", vec![b'a' + i], Some(base.mod_revision))
                    .await
            })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => wins += 1,
            Err(Error::Conflict { .. }) => {}
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert_eq!(wins, 1, "exactly one concurrent update must win");
}

/// Prefix listing, pagination and reads at an older revision.
pub async fn list(store: &dyn Store) {
    for name in ["c", "a", "b"] {
        store
            .create(&format!("/l/ns1/{name}"), name.as_bytes().to_vec())
            .await
            .unwrap();
    }
    store.create("/l/ns2/z", b"z".to_vec()).await.unwrap();
    store.create("/lx/other", b"o".to_vec()).await.unwrap();
    let all = store.list("/l/", ListOptions::default()).await.unwrap();
    assert_eq!(keys(&all.items), ["/l/ns1/a", "/l/ns1/b", "/l/ns1/c", "/l/ns2/z"]);
    assert!(!all.more);

    let page1 = store
        .list(
            "/l/",
            ListOptions {
                limit: 2,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(keys(&page1.items), ["/l/ns1/a", "/l/ns1/b"]);
    assert!(page1.more);
    let snapshot = page1.revision;
    store.update("/l/ns1/c", b"changed".to_vec(), None).await.unwrap();
    store.delete("/l/ns2/z", None).await.unwrap();
    store.create("/l/ns1/d", b"d".to_vec()).await.unwrap();
    let page2 = store
        .list(
            "/l/",
            ListOptions {
                revision: Some(snapshot),
                start_after: Some("/l/ns1/b".into()),
                limit: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        keys(&page2.items),
        ["/l/ns1/c", "/l/ns2/z"],
        "page 2 reads the snapshot of page 1"
    );
    assert_eq!(page2.items[0].value, b"c");
    assert!(!page2.more);
    assert_eq!(page2.revision, snapshot);

    let now = store.list("/l/ns1/", ListOptions::default()).await.unwrap();
    assert_eq!(keys(&now.items), ["/l/ns1/a", "/l/ns1/b", "/l/ns1/c", "/l/ns1/d"]);
    let future = now.revision + 100;
    let err = store
        .list(
            "/l/",
            ListOptions {
                revision: Some(future),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(err, Err(Error::FutureRevision { .. })), "{err:?}");
}

/// A watch from an old revision replays history in order, then follows live writes.
pub async fn watch_replay_then_live(store: &dyn Store) {
    let start = store.current_revision().await.unwrap();
    let a = store.create("/w/a", b"1".to_vec()).await.unwrap();
    store.create("/other/x", b"x".to_vec()).await.unwrap();
    store.update("/w/a", b"2".to_vec(), None).await.unwrap();
    let deleted = store.delete("/w/a", None).await.unwrap();

    let mut stream = store.watch("/w/", start).await.unwrap();
    let first = next(&mut stream).await;
    assert_eq!(
        (first.kind, first.revision, first.prev.clone()),
        (EventKind::Created, a.mod_revision, None)
    );
    let second = next(&mut stream).await;
    assert_eq!(second.kind, EventKind::Updated);
    assert_eq!(second.prev.as_ref().map(|p| p.value.clone()), Some(b"1".to_vec()));
    let third = next(&mut stream).await;
    assert_eq!(
        (third.kind, third.revision),
        (EventKind::Deleted, deleted.revision)
    );
    assert!(first.revision < second.revision && second.revision < third.revision);

    let live = store.create("/w/b", b"live".to_vec()).await.unwrap();
    let fourth = next(&mut stream).await;
    assert_eq!(
        (fourth.kind, fourth.revision),
        (EventKind::Created, live.mod_revision)
    );

    // A watch starting at the current revision sees only what comes next.
    let mut tail = store.watch("/w/", live.mod_revision).await.unwrap();
    let later = store.update("/w/b", b"later".to_vec(), None).await.unwrap();
    assert_eq!(next(&mut tail).await.revision, later.mod_revision);
}

/// After compaction, watches and lists before the compacted revision fail with `Compacted`.
pub async fn compaction_expires_old_revisions(store: &dyn Store) {
    let old = store.current_revision().await.unwrap();
    store.create("/c/a", b"1".to_vec()).await.unwrap();
    let kept = store.update("/c/a", b"2".to_vec(), None).await.unwrap();
    store.compact(kept.mod_revision).await.unwrap();
    assert_eq!(store.compacted_revision().await.unwrap(), kept.mod_revision);
    let watch = store.watch("/c/", old).await;
    assert!(
        matches!(watch, Err(Error::Compacted { .. })),
        "watch from a compacted revision must expire"
    );
    let list = store
        .list(
            "/c/",
            ListOptions {
                revision: Some(old),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(list, Err(Error::Compacted { .. })), "{list:?}");
    // From the compacted revision itself, the later history is intact.
    let mut stream = store.watch("/c/", kept.mod_revision).await.unwrap();
    let next_write = store.update("/c/a", b"3".to_vec(), None).await.unwrap();
    assert_eq!(next(&mut stream).await.revision, next_write.mod_revision);
}

/// Writes elsewhere produce progress notifications that move past the last matching event.
pub async fn watch_progress(store: &dyn Store) {
    let start = store.current_revision().await.unwrap();
    let mut stream = store.watch("/quiet/", start).await.unwrap();
    let mut last_write = 0;
    let mut progressed = None;
    for i in 0..20u32 {
        last_write = store
            .create(&format!("/busy/{i}"), vec![])
            .await
            .unwrap()
            .mod_revision;
        tokio::time::sleep(Duration::from_millis(30)).await;
        while let Ok(item) = stream.try_recv() {
            match item.expect("no error") {
                WatchItem::Progress(rev) => progressed = Some(rev),
                WatchItem::Event(e) => panic!("unexpected event {e:?}"),
            }
        }
    }
    let rev = progressed.expect("progress notifications while the store moves on");
    assert!(
        rev > start && rev <= last_write,
        "progress {rev} within ({start}, {last_write}]"
    );
}

/// Runs the whole suite, each part on a fresh store from `fresh`.
pub async fn run_all<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Store>>,
{
    crud(&*fresh().await).await;
    concurrent_updates(fresh().await).await;
    list(&*fresh().await).await;
    watch_replay_then_live(&*fresh().await).await;
    compaction_expires_old_revisions(&*fresh().await).await;
    watch_progress(&*fresh().await).await;
}
