//! The embedded durable store backend, built on redb.
//!
//! Why redb rather than bundled SQLite: it is pure Rust (no C toolchain, no `unsafe` FFI boundary), it gives us
//! ACID transactions with copy-on-write B-trees and MVCC snapshots (readers never block the single writer), and
//! its default `Durability::Immediate` fsyncs on every commit, so an acknowledged write survives `kill -9` and
//! power loss. We need nothing SQL offers: three tables carry the whole model.
//!
//! Layout: `kv` (key -> record: create/mod revision + value), `log` (revision -> event with the previous value,
//! the watch history) and `meta` (current and compacted revision). Writes are serialised, commit, then fan out
//! to watchers in revision order. History is bounded: once it exceeds `history_limit` by a quarter, the oldest
//! entries are compacted in the same transaction, so Lease churn cannot grow the file without bound.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, mpsc};

use super::codec::{decode_event, decode_record, encode_event, encode_record};
use super::{
    Error, Event, EventKind, KeyValue, ListOptions, ListResult, Result, Revision, Store, WatchItem,
    WatchStream,
};

const KV: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";
const COMPACTED: &str = "compacted";
/// Revision of an empty store (as in etcd, the first write gets revision 2).
const INITIAL_REVISION: Revision = 1;
/// Minimum time between progress notifications of one watch.
const PROGRESS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);
/// Buffered events per watcher before the watcher's task waits for its consumer.
const WATCH_BUFFER: usize = 256;

/// Tuning of the embedded store.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedOptions {
    /// How many revisions of watch history to keep (older ones are compacted automatically).
    pub history_limit: u64,
    /// Events buffered in memory for watchers; a watcher that falls further behind catches up from the log.
    pub fanout_capacity: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            history_limit: 50_000,
            fanout_capacity: 4096,
        }
    }
}

/// A durable store in one redb file.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    writer: Mutex<()>,
    events: broadcast::Sender<Arc<Event>>,
    options: EmbeddedOptions,
}

enum Op {
    Create(Vec<u8>),
    Update(Vec<u8>, Option<Revision>),
    Delete(Option<Revision>),
}

fn db(err: impl Into<redb::Error>) -> Error {
    Error::Backend(err.into().to_string())
}

impl EmbeddedStore {
    /// Opens (or creates) the store file `store.redb` in `dir`.
    pub fn open(dir: &Path, options: EmbeddedOptions) -> Result<Self> {
        crate::private_dir::ensure(dir)
            .map_err(|e| Error::Backend(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join("store.redb");
        let database = Database::create(&path).map_err(db)?;
        // Secrets are stored here: owner-only, whatever the umask.
        crate::private_dir::restrict_file(&path)
            .map_err(|e| Error::Backend(format!("restricting {}: {e}", path.display())))?;
        let txn = database.begin_write().map_err(db)?;
        {
            txn.open_table(KV).map_err(db)?;
            txn.open_table(LOG).map_err(db)?;
            let mut meta = txn.open_table(META).map_err(db)?;
            if meta.get(REVISION).map_err(db)?.is_none() {
                meta.insert(REVISION, INITIAL_REVISION).map_err(db)?;
                meta.insert(COMPACTED, 0).map_err(db)?;
            }
        }
        txn.commit().map_err(db)?;
        let (events, _) = broadcast::channel(options.fanout_capacity.max(1));
        Ok(Self {
            inner: Arc::new(Inner {
                db: database,
                writer: Mutex::new(()),
                events,
                options,
            }),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Error::Backend(format!("store task failed: {e}")))?
    }
}

impl Inner {
    fn revisions(&self) -> Result<(Revision, Revision)> {
        let txn = self.db.begin_read().map_err(db)?;
        let meta = txn.open_table(META).map_err(db)?;
        let current = meta
            .get(REVISION)
            .map_err(db)?
            .map_or(INITIAL_REVISION, |g| g.value());
        let compacted = meta.get(COMPACTED).map_err(db)?.map_or(0, |g| g.value());
        Ok((current, compacted))
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let txn = self.db.begin_read().map_err(db)?;
        let kv = txn.open_table(KV).map_err(db)?;
        let found = kv.get(key).map_err(db)?;
        found.map(|g| decode_record(key, g.value())).transpose()
    }

    fn apply(&self, key: &str, op: Op) -> Result<Event> {
        let _serialised = self
            .writer
            .lock()
            .map_err(|_| Error::Backend("writer lock poisoned".into()))?;
        let txn = self.db.begin_write().map_err(db)?;
        let event = {
            let mut meta = txn.open_table(META).map_err(db)?;
            let mut kv = txn.open_table(KV).map_err(db)?;
            let mut log = txn.open_table(LOG).map_err(db)?;
            let revision = meta
                .get(REVISION)
                .map_err(db)?
                .map_or(INITIAL_REVISION, |g| g.value())
                + 1;
            let current = kv
                .get(key)
                .map_err(db)?
                .map(|g| decode_record(key, g.value()))
                .transpose()?;
            let event = decide(key, op, current, revision)?;
            match event.kind {
                EventKind::Deleted => {
                    kv.remove(key).map_err(db)?;
                }
                EventKind::Created | EventKind::Updated => {
                    let record = encode_record(event.kv.create_revision, revision, &event.kv.value);
                    kv.insert(key, record.as_slice()).map_err(db)?;
                }
            }
            log.insert(revision, encode_event(&event).as_slice())
                .map_err(db)?;
            meta.insert(REVISION, revision).map_err(db)?;
            let compacted = meta.get(COMPACTED).map_err(db)?.map_or(0, |g| g.value());
            let limit = self.options.history_limit.max(1);
            if revision - compacted > limit + limit / 4 {
                let to = revision - limit;
                log.retain_in(..=to, |_, _| false).map_err(db)?;
                meta.insert(COMPACTED, to).map_err(db)?;
            }
            event
        };
        txn.commit().map_err(db)?;
        // No receivers is fine: nobody watches yet.
        let _ = self.events.send(Arc::new(event.clone()));
        Ok(event)
    }

    fn compact(&self, revision: Revision) -> Result<()> {
        let _serialised = self
            .writer
            .lock()
            .map_err(|_| Error::Backend("writer lock poisoned".into()))?;
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut meta = txn.open_table(META).map_err(db)?;
            let current = meta
                .get(REVISION)
                .map_err(db)?
                .map_or(INITIAL_REVISION, |g| g.value());
            if revision > current {
                return Err(Error::FutureRevision {
                    requested: revision,
                    current,
                });
            }
            let compacted = meta.get(COMPACTED).map_err(db)?.map_or(0, |g| g.value());
            if revision <= compacted {
                return Ok(());
            }
            let mut log = txn.open_table(LOG).map_err(db)?;
            log.retain_in(..=revision, |_, _| false).map_err(db)?;
            meta.insert(COMPACTED, revision).map_err(db)?;
        }
        txn.commit().map_err(db)
    }

    fn list(&self, prefix: &str, opts: &ListOptions) -> Result<ListResult> {
        let txn = self.db.begin_read().map_err(db)?;
        let meta = txn.open_table(META).map_err(db)?;
        let current = meta
            .get(REVISION)
            .map_err(db)?
            .map_or(INITIAL_REVISION, |g| g.value());
        let compacted = meta.get(COMPACTED).map_err(db)?.map_or(0, |g| g.value());
        let at = opts.revision.unwrap_or(current);
        if at > current {
            return Err(Error::FutureRevision {
                requested: at,
                current,
            });
        }
        let kv = txn.open_table(KV).map_err(db)?;
        let limit = if opts.limit == 0 { usize::MAX } else { opts.limit };
        let lower = match opts.start_after.as_deref() {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        if at == current {
            let mut items = Vec::new();
            let mut more = false;
            for entry in kv.range::<&str>((lower, Bound::Unbounded)).map_err(db)? {
                let (k, v) = entry.map_err(db)?;
                let key = k.value();
                if !key.starts_with(prefix) {
                    break;
                }
                if items.len() == limit {
                    more = true;
                    break;
                }
                items.push(decode_record(key, v.value())?);
            }
            return Ok(ListResult {
                items,
                revision: at,
                more,
            });
        }
        if at < compacted {
            return Err(Error::Compacted {
                requested: at,
                compacted,
            });
        }
        // Historical read: take the current state and undo the newer writes, newest first.
        let mut state = BTreeMap::new();
        for entry in kv.range::<&str>(prefix..).map_err(db)? {
            let (k, v) = entry.map_err(db)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            state.insert(k.value().to_owned(), decode_record(k.value(), v.value())?);
        }
        let log = txn.open_table(LOG).map_err(db)?;
        for entry in log.range(at + 1..=current).map_err(db)?.rev() {
            let (_, v) = entry.map_err(db)?;
            let event = decode_event(v.value())?;
            if event.kv.key.starts_with(prefix) {
                match event.prev {
                    Some(prev) => state.insert(prev.key.clone(), prev),
                    None => state.remove(&event.kv.key),
                };
            }
        }
        let mut rest = state.into_values().filter(|item| match lower {
            Bound::Excluded(after) => item.key.as_str() > after,
            _ => true,
        });
        let items: Vec<_> = rest.by_ref().take(limit).collect();
        let more = rest.next().is_some();
        Ok(ListResult {
            items,
            revision: at,
            more,
        })
    }

    /// History events under `prefix` after `after`, and the revision the read was taken at.
    fn history(&self, prefix: &str, after: Revision) -> Result<(Vec<Event>, Revision)> {
        let txn = self.db.begin_read().map_err(db)?;
        let meta = txn.open_table(META).map_err(db)?;
        let current = meta
            .get(REVISION)
            .map_err(db)?
            .map_or(INITIAL_REVISION, |g| g.value());
        let compacted = meta.get(COMPACTED).map_err(db)?.map_or(0, |g| g.value());
        if after < compacted {
            return Err(Error::Compacted {
                requested: after,
                compacted,
            });
        }
        let log = txn.open_table(LOG).map_err(db)?;
        let mut events = Vec::new();
        for entry in log.range(after.saturating_add(1)..).map_err(db)? {
            let (_, v) = entry.map_err(db)?;
            let event = decode_event(v.value())?;
            if event.kv.key.starts_with(prefix) {
                events.push(event);
            }
        }
        Ok((events, current.max(after)))
    }
}

/// The pure part of a write: checks preconditions and computes the event.
fn decide(key: &str, op: Op, current: Option<KeyValue>, revision: Revision) -> Result<Event> {
    let check = |expected: Option<Revision>, cur: &KeyValue| match expected {
        Some(expected) if expected != cur.mod_revision => Err(Error::Conflict {
            key: key.to_owned(),
            expected,
            current: cur.mod_revision,
        }),
        _ => Ok(()),
    };
    match (op, current) {
        (Op::Create(_), Some(_)) => Err(Error::AlreadyExists(key.to_owned())),
        (Op::Create(value), None) => Ok(Event {
            kind: EventKind::Created,
            revision,
            kv: KeyValue {
                key: key.to_owned(),
                value,
                create_revision: revision,
                mod_revision: revision,
            },
            prev: None,
        }),
        (Op::Update(..) | Op::Delete(_), None) => Err(Error::NotFound(key.to_owned())),
        (Op::Update(value, expected), Some(cur)) => {
            check(expected, &cur)?;
            let kv = KeyValue {
                key: key.to_owned(),
                value,
                create_revision: cur.create_revision,
                mod_revision: revision,
            };
            Ok(Event {
                kind: EventKind::Updated,
                revision,
                kv,
                prev: Some(cur),
            })
        }
        (Op::Delete(expected), Some(cur)) => {
            check(expected, &cur)?;
            let kv = KeyValue {
                mod_revision: revision,
                ..cur.clone()
            };
            Ok(Event {
                kind: EventKind::Deleted,
                revision,
                kv,
                prev: Some(cur),
            })
        }
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn current_revision(&self) -> Result<Revision> {
        self.blocking(|inner| inner.revisions().map(|(current, _)| current))
            .await
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        self.blocking(|inner| inner.revisions().map(|(_, compacted)| compacted))
            .await
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_owned();
        self.blocking(move |inner| inner.get(&key)).await
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult> {
        let prefix = prefix.to_owned();
        self.blocking(move |inner| inner.list(&prefix, &opts)).await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue> {
        let key = key.to_owned();
        self.blocking(move |inner| inner.apply(&key, Op::Create(value)).map(|e| e.kv))
            .await
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Option<Revision>) -> Result<KeyValue> {
        let key = key.to_owned();
        self.blocking(move |inner| inner.apply(&key, Op::Update(value, expected)).map(|e| e.kv))
            .await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Event> {
        let key = key.to_owned();
        self.blocking(move |inner| inner.apply(&key, Op::Delete(expected)))
            .await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        // Subscribe before reading history so nothing committed in between is missed.
        let mut live = self.inner.events.subscribe();
        let prefix = prefix.to_owned();
        let p = prefix.clone();
        let (history, read_at) = self.blocking(move |inner| inner.history(&p, after)).await?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            let mut last = read_at;
            let mut progress_sent = tokio::time::Instant::now();
            for event in history {
                if tx.send(Ok(WatchItem::Event(event))).await.is_err() {
                    return;
                }
            }
            if tx.send(Ok(WatchItem::Progress(read_at))).await.is_err() {
                return;
            }
            loop {
                let received = tokio::select! {
                    () = tx.closed() => return,
                    received = live.recv() => received,
                };
                let batch = match received {
                    Ok(event) if event.revision <= last => continue,
                    Ok(event) => {
                        last = event.revision;
                        if !event.kv.key.starts_with(&prefix) {
                            // Progress is best effort: skipped when the consumer is behind anyway.
                            if progress_sent.elapsed() >= PROGRESS_INTERVAL {
                                progress_sent = tokio::time::Instant::now();
                                let _ = tx.try_send(Ok(WatchItem::Progress(last)));
                            }
                            continue;
                        }
                        vec![Ok(WatchItem::Event((*event).clone()))]
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let (inner, p) = (Arc::clone(&inner), prefix.clone());
                        let caught_up = tokio::task::spawn_blocking(move || inner.history(&p, last)).await;
                        match caught_up {
                            Ok(Ok((events, read_at))) => {
                                last = read_at;
                                let mut items: Vec<_> =
                                    events.into_iter().map(|e| Ok(WatchItem::Event(e))).collect();
                                items.push(Ok(WatchItem::Progress(read_at)));
                                items
                            }
                            Ok(Err(e)) => vec![Err(e)],
                            Err(e) => vec![Err(Error::Backend(format!("watch catch-up failed: {e}")))],
                        }
                    }
                };
                for item in batch {
                    let stop = item.is_err();
                    if tx.send(item).await.is_err() || stop {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.blocking(move |inner| inner.compact(revision)).await
    }
}
