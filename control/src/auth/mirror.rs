//! An in-memory copy of every stored object under one key prefix, kept current by a store watch, so that
//! authentication and authorization never read the store on the request path.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinSet;

use crate::store::{self, EventKind, ListOptions, Revision, Store, WatchItem};

/// Stored objects by key.
pub type Objects = BTreeMap<String, Value>;

/// Called with the full set of objects after every change (and once at start).
pub type OnChange = Box<dyn Fn(&Objects) + Send + Sync>;

/// Wait before re-listing after a failed watch.
const RETRY: Duration = Duration::from_millis(500);

/// The objects under a prefix, as of the latest watch event seen.
pub struct Mirror {
    prefix: String,
    objects: RwLock<Arc<Objects>>,
    on_change: OnChange,
}

fn decode(value: &[u8]) -> Option<Value> {
    serde_json::from_slice(value).ok()
}

impl Mirror {
    /// Lists `prefix` (so the mirror is complete when this returns) and follows it in a task on `tasks`.
    pub async fn start(
        store: Arc<dyn Store>,
        prefix: &str,
        on_change: OnChange,
        tasks: &mut JoinSet<()>,
    ) -> Result<Arc<Self>, store::Error> {
        let mirror = Arc::new(Self {
            prefix: prefix.to_owned(),
            objects: RwLock::new(Arc::default()),
            on_change,
        });
        let revision = mirror.relist(&*store).await?;
        tasks.spawn(Arc::clone(&mirror).follow(store, revision));
        Ok(mirror)
    }

    /// The current objects.
    pub fn snapshot(&self) -> Arc<Objects> {
        Arc::clone(
            &self
                .objects
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    fn replace(&self, objects: Objects) {
        (self.on_change)(&objects);
        *self
            .objects
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(objects);
    }

    async fn relist(&self, store: &dyn Store) -> Result<Revision, store::Error> {
        let list = store.list(&self.prefix, ListOptions::default()).await?;
        let objects = list
            .items
            .iter()
            .filter_map(|kv| Some((kv.key.clone(), decode(&kv.value)?)))
            .collect();
        self.replace(objects);
        Ok(list.revision)
    }

    async fn follow(self: Arc<Self>, store: Arc<dyn Store>, mut revision: Revision) {
        loop {
            match store.watch(&self.prefix, revision).await {
                Ok(mut events) => {
                    while let Some(first) = events.recv().await {
                        // Apply everything already queued as one change.
                        let mut batch = vec![first];
                        while let Ok(more) = events.try_recv() {
                            batch.push(more);
                        }
                        let mut objects = (*self.snapshot()).clone();
                        let (mut changed, mut failed) = (false, false);
                        for item in batch {
                            match item {
                                Ok(WatchItem::Event(event)) => {
                                    revision = revision.max(event.revision);
                                    changed = true;
                                    match (event.kind, decode(&event.kv.value)) {
                                        (EventKind::Deleted, _) | (_, None) => objects.remove(&event.kv.key),
                                        (_, Some(value)) => objects.insert(event.kv.key.clone(), value),
                                    };
                                }
                                Ok(WatchItem::Progress(at)) => revision = revision.max(at),
                                Err(e) => {
                                    tracing::warn!(prefix = %self.prefix, error = %e, "watch ended; re-listing");
                                    failed = true;
                                    break;
                                }
                            }
                        }
                        if changed {
                            self.replace(objects);
                        }
                        if failed {
                            break;
                        }
                    }
                }
                Err(e) => tracing::warn!(prefix = %self.prefix, error = %e, "cannot watch; retrying"),
            }
            tokio::time::sleep(RETRY).await;
            match self.relist(&*store).await {
                Ok(at) => revision = at,
                Err(e) => tracing::warn!(prefix = %self.prefix, error = %e, "cannot list; retrying"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn follows_creates_updates_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(&dir.path().join("s"), EmbeddedOptions::default()).unwrap());
        store.create("/x/a", br#"{"v":1}"#.to_vec()).await.unwrap();
        store.create("/y/ignored", b"{}".to_vec()).await.unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let mut tasks = JoinSet::new();
        let mirror = Mirror::start(
            Arc::clone(&store),
            "/x/",
            Box::new(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
            }),
            &mut tasks,
        )
        .await
        .unwrap();
        assert_eq!(mirror.snapshot().len(), 1);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        store.create("/x/b", br#"{"v":2}"#.to_vec()).await.unwrap();
        store.update("/x/a", br#"{"v":3}"#.to_vec(), None).await.unwrap();
        store.delete("/x/b", None).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let snap = mirror.snapshot();
            if snap.len() == 1 && snap["/x/a"]["v"] == 3 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "mirror did not converge: {snap:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(calls.load(Ordering::SeqCst) >= 2);
    }
}
