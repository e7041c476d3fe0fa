//! The etcd store backend: the `Store` trait over etcd v3 (etcd-client), for HA and multi-machine setups.
//!
//! Revisions are etcd's own: a key's `mod_revision` is its `resourceVersion`, a list's header revision is the
//! list's `resourceVersion`. Every store key lives under `root` (so several clusters or test runs can share one
//! etcd). Conditional writes are single etcd transactions comparing `mod_revision` (or `create_revision == 0`
//! for creation), so optimistic concurrency is decided by etcd. etcd does not report the compacted revision, so
//! `compact` records it under `<root>!meta/compacted`; compaction by someone else still surfaces as `Compacted`.
//! An unreachable etcd is reported as `Unavailable` (503 to clients); the client reconnects on its own.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions,
    PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchOptions,
};
use tokio::sync::mpsc;

use super::{
    Error, Event, EventKind, KeyValue, ListOptions, ListResult, Result, Revision, Store, WatchItem,
    WatchStream,
};

/// How often a watch asks etcd for a progress notification.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);
/// Buffered items per watcher.
const WATCH_BUFFER: usize = 256;

/// Connection settings of the etcd backend.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Client URLs, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Prefix of every key this store writes (without a trailing `/`).
    pub root: String,
    /// Time limit of one request.
    pub request_timeout: Duration,
    /// Time limit of establishing a connection.
    pub connect_timeout: Duration,
}

impl EtcdOptions {
    /// Options with the default root (`/skiff`) and timeouts.
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            root: "/skiff".into(),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// A store backed by an etcd cluster.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    root: String,
}

/// gRPC status codes that mean "etcd is not reachable right now" (Cancelled, DeadlineExceeded, Unavailable).
const UNREACHABLE_CODES: [i32; 3] = [1, 4, 14];

/// Messages of gRPC statuses that report a broken connection rather than an answer from etcd (tonic reports a
/// connection that died mid-request as `Unknown`).
const CONNECTION_FAILURES: [&str; 3] = [
    "transport error",
    "h2 protocol error",
    "error reading a body from connection",
];

/// Whether a gRPC status (code and message) means etcd could not be reached.
fn unreachable(code: i32, message: &str) -> bool {
    UNREACHABLE_CODES.contains(&code) || CONNECTION_FAILURES.iter().any(|m| message.contains(m))
}

/// Maps an etcd client error to a store error.
fn backend(err: etcd_client::Error) -> Error {
    match err {
        etcd_client::Error::GRpcStatus(status) if unreachable(i32::from(status.code()), status.message()) => {
            Error::Unavailable(format!("etcd: {}", status.message()))
        }
        etcd_client::Error::GRpcStatus(status) => Error::Backend(format!("etcd: {}", status.message())),
        etcd_client::Error::TransportError(e) => Error::Unavailable(format!("etcd: {e}")),
        etcd_client::Error::IoError(e) => Error::Unavailable(format!("etcd: {e}")),
        other => Error::Backend(format!("etcd: {other}")),
    }
}

fn is_compacted(err: &etcd_client::Error) -> bool {
    err.to_string().contains("required revision has been compacted")
}

fn is_future(err: &etcd_client::Error) -> bool {
    err.to_string().contains("required revision is a future revision")
}

fn rev(r: i64) -> Revision {
    u64::try_from(r).unwrap_or(0)
}

fn etcd_rev(r: Revision) -> i64 {
    i64::try_from(r).unwrap_or(i64::MAX)
}

/// The first key after every key starting with `prefix` (etcd's range end for a prefix).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn header_revision(resp: &TxnResponse) -> Revision {
    resp.header().map_or(0, |h| rev(h.revision()))
}

/// Largest etcd response accepted (range reads of whole namespaces).
const MAX_RESPONSE_BYTES: usize = i32::MAX as usize;

impl EtcdStore {
    /// Connects to etcd; fails when no endpoint answers within the connect timeout.
    pub async fn connect(options: EtcdOptions) -> Result<Self> {
        if options.endpoints.is_empty() {
            return Err(Error::Backend("no etcd endpoints given".into()));
        }
        let connect = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            .with_timeout(options.request_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let client = Client::connect(&options.endpoints, Some(connect))
            .await
            .map_err(backend)?;
        let store = Self {
            client,
            root: options.root.trim_end_matches('/').to_owned(),
        };
        store.current_revision().await?;
        Ok(store)
    }

    /// Compacts etcd every `interval`, keeping the last `keep` revisions of history (as kube-apiserver's
    /// compactor does), so Lease churn cannot grow etcd without bound. Runs until dropped.
    pub async fn run_compactor(self, interval: Duration, keep: u64) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Ok(current) = self.current_revision().await else {
                continue;
            };
            let target = current.saturating_sub(keep.max(1));
            if target > 0
                && let Err(e) = self.compact(target).await
            {
                tracing::warn!(error = %e, target, "etcd compaction failed; retrying later");
            }
        }
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    fn meta_key(&self) -> String {
        format!("{}!meta/compacted", self.root)
    }

    fn to_kv(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
        let key = std::str::from_utf8(kv.key())
            .map_err(|e| Error::Backend(format!("non-UTF-8 key in etcd: {e}")))?;
        let key = key
            .strip_prefix(&self.root)
            .ok_or_else(|| Error::Backend(format!("etcd key {key} outside {}", self.root)))?;
        Ok(KeyValue {
            key: key.to_owned(),
            value: kv.value().to_vec(),
            create_revision: rev(kv.create_revision()),
            mod_revision: rev(kv.mod_revision()),
        })
    }

    async fn stored_compacted(&self) -> Result<Revision> {
        let resp = self
            .client
            .kv_client()
            .get(self.meta_key(), None)
            .await
            .map_err(backend)?;
        Ok(resp
            .kvs()
            .first()
            .and_then(|kv| std::str::from_utf8(kv.value()).ok()?.parse().ok())
            .unwrap_or(0))
    }

    async fn compacted_error(&self, requested: Revision) -> Error {
        match self.stored_compacted().await {
            Ok(compacted) => Error::Compacted {
                requested,
                compacted: compacted.max(requested + 1),
            },
            Err(e) => e,
        }
    }

    /// A conditional write: `op` when `guard` holds, else a read of the key to explain why not.
    async fn guarded(&self, key: &str, guard: Compare, op: TxnOp) -> Result<(bool, TxnResponse)> {
        let full = self.full(key);
        let txn = Txn::new()
            .when([guard])
            .and_then([op])
            .or_else([TxnOp::get(full, None)]);
        let resp = self.client.kv_client().txn(txn).await.map_err(backend)?;
        Ok((resp.succeeded(), resp))
    }

    /// Explains a failed guard from the key's current state (the `or_else` read).
    fn refusal(&self, key: &str, resp: &TxnResponse, expected: Option<Revision>) -> Error {
        let current = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| rev(kv.mod_revision())),
            _ => None,
        });
        match (current, expected) {
            (None, _) => Error::NotFound(key.to_owned()),
            (Some(current), Some(expected)) => Error::Conflict {
                key: key.to_owned(),
                expected,
                current,
            },
            (Some(_), None) => Error::Backend(format!("conditional write on {key} failed")),
        }
    }

    fn exists_or_matches(&self, key: &str, expected: Option<Revision>) -> Compare {
        let full = self.full(key);
        match expected {
            Some(expected) => Compare::mod_revision(full, CompareOp::Equal, etcd_rev(expected)),
            None => Compare::create_revision(full, CompareOp::Greater, 0),
        }
    }
}

/// Converts one etcd watch event into a store event.
fn convert_event(store: &EtcdStore, event: &etcd_client::Event) -> Result<Option<Event>> {
    let Some(kv) = event.kv() else { return Ok(None) };
    let now = store.to_kv(kv)?;
    let prev = event.prev_kv().map(|p| store.to_kv(p)).transpose()?;
    let revision = now.mod_revision;
    Ok(Some(match event.event_type() {
        EventType::Put if now.create_revision == now.mod_revision => Event {
            kind: EventKind::Created,
            revision,
            kv: now,
            prev: None,
        },
        EventType::Put => Event {
            kind: EventKind::Updated,
            revision,
            kv: now,
            prev,
        },
        EventType::Delete => {
            let last = prev.clone().unwrap_or_else(|| now.clone());
            Event {
                kind: EventKind::Deleted,
                revision,
                kv: KeyValue {
                    mod_revision: revision,
                    ..last
                },
                prev,
            }
        }
    }))
}

#[async_trait]
impl Store for EtcdStore {
    async fn current_revision(&self) -> Result<Revision> {
        let resp = self
            .client
            .kv_client()
            .get(self.meta_key(), Some(GetOptions::new().with_count_only()))
            .await
            .map_err(backend)?;
        Ok(resp.header().map_or(0, |h| rev(h.revision())))
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        self.stored_compacted().await
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let resp = self
            .client
            .kv_client()
            .get(self.full(key), None)
            .await
            .map_err(backend)?;
        resp.kvs().first().map(|kv| self.to_kv(kv)).transpose()
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult> {
        let full_prefix = self.full(prefix);
        let start = match opts.start_after.as_deref() {
            Some(after) if after >= prefix => {
                let mut k = self.full(after).into_bytes();
                k.push(0);
                k
            }
            _ => full_prefix.clone().into_bytes(),
        };
        let mut get = GetOptions::new().with_range(prefix_end(full_prefix.as_bytes()));
        if opts.limit > 0 {
            get = get.with_limit(i64::try_from(opts.limit).unwrap_or(i64::MAX));
        }
        if let Some(at) = opts.revision {
            get = get.with_revision(etcd_rev(at));
        }
        // A whole-namespace list easily exceeds gRPC's 4 MiB default (10k pods are ~10 MiB); etcd's own Go client
        // and kube-apiserver accept responses up to 2 GiB.
        let mut kv = self
            .client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        let resp = match kv.get(start, Some(get)).await {
            Ok(resp) => resp,
            Err(e) if is_compacted(&e) => {
                return Err(self.compacted_error(opts.revision.unwrap_or(0)).await);
            }
            Err(e) if is_future(&e) => {
                let current = self.current_revision().await?;
                return Err(Error::FutureRevision {
                    requested: opts.revision.unwrap_or(0),
                    current,
                });
            }
            Err(e) => return Err(backend(e)),
        };
        let items = resp
            .kvs()
            .iter()
            .map(|kv| self.to_kv(kv))
            .collect::<Result<Vec<_>>>()?;
        let revision = opts
            .revision
            .unwrap_or_else(|| resp.header().map_or(0, |h| rev(h.revision())));
        Ok(ListResult {
            items,
            revision,
            more: resp.more(),
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue> {
        let full = self.full(key);
        let guard = Compare::create_revision(full.clone(), CompareOp::Equal, 0);
        let (ok, resp) = self
            .guarded(key, guard, TxnOp::put(full, value.clone(), None))
            .await?;
        if !ok {
            return Err(Error::AlreadyExists(key.to_owned()));
        }
        let revision = header_revision(&resp);
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision: revision,
            mod_revision: revision,
        })
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Option<Revision>) -> Result<KeyValue> {
        let guard = self.exists_or_matches(key, expected);
        let put = TxnOp::put(
            self.full(key),
            value.clone(),
            Some(PutOptions::new().with_prev_key()),
        );
        let (ok, resp) = self.guarded(key, guard, put).await?;
        if !ok {
            return Err(self.refusal(key, &resp, expected));
        }
        let revision = header_revision(&resp);
        let create_revision = resp
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Put(put) => put.prev_key().map(|kv| rev(kv.create_revision())),
                _ => None,
            })
            .unwrap_or(revision);
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision,
            mod_revision: revision,
        })
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Event> {
        let guard = self.exists_or_matches(key, expected);
        let del = TxnOp::delete(self.full(key), Some(DeleteOptions::new().with_prev_key()));
        let (ok, resp) = self.guarded(key, guard, del).await?;
        if !ok {
            return Err(self.refusal(key, &resp, expected));
        }
        let revision = header_revision(&resp);
        let prev = resp
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Delete(del) => del.prev_kvs().first().map(|kv| self.to_kv(kv)),
                _ => None,
            })
            .transpose()?
            // The guard held, so the key existed; another deleter cannot have won inside the transaction.
            .ok_or_else(|| Error::NotFound(key.to_owned()))?;
        Ok(Event {
            kind: EventKind::Deleted,
            revision,
            kv: KeyValue {
                mod_revision: revision,
                ..prev.clone()
            },
            prev: Some(prev),
        })
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let compacted = self.stored_compacted().await?;
        if after < compacted {
            return Err(Error::Compacted {
                requested: after,
                compacted,
            });
        }
        let full_prefix = self.full(prefix);
        let options = WatchOptions::new()
            .with_range(prefix_end(full_prefix.as_bytes()))
            .with_start_revision(etcd_rev(after + 1))
            .with_prev_key()
            .with_progress_notify();
        let mut stream = self
            .client
            .watch_client()
            .watch(full_prefix, Some(options))
            .await
            .map_err(backend)?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let store = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last = after;
            let mut created = false;
            loop {
                let message = tokio::select! {
                    () = tx.closed() => return,
                    // Only once the watch exists: a progress request before that is answered for an
                    // empty (trivially synced) stream, with a revision ahead of the replay.
                    _ = tick.tick(), if created => {
                        if let Err(e) = stream.request_progress().await {
                            let _ = tx.send(Err(Error::Unavailable(format!("etcd watch: {e}")))).await;
                            return;
                        }
                        continue;
                    }
                    message = stream.message() => message,
                };
                let resp = match message {
                    Ok(Some(resp)) => resp,
                    Ok(None) => {
                        let _ = tx
                            .send(Err(Error::Unavailable("etcd closed the watch stream".into())))
                            .await;
                        return;
                    }
                    // The stream broke (etcd went away): the watcher must resume, which a 503 tells it.
                    Err(e) => {
                        let err = match backend(e) {
                            Error::Backend(message) => Error::Unavailable(message),
                            other => other,
                        };
                        let _ = tx.send(Err(err)).await;
                        return;
                    }
                };
                if resp.canceled() {
                    let err = if resp.compact_revision() > 0 {
                        Error::Compacted {
                            requested: after,
                            compacted: rev(resp.compact_revision()),
                        }
                    } else {
                        Error::Backend(format!("etcd cancelled the watch: {}", resp.cancel_reason()))
                    };
                    let _ = tx.send(Err(err)).await;
                    return;
                }
                if resp.created() {
                    created = true;
                    tick.reset();
                    continue;
                }
                if resp.events().is_empty() {
                    let at = resp.header().map_or(0, |h| rev(h.revision()));
                    if at > last {
                        last = at;
                        // Best effort, like the embedded store's progress.
                        let _ = tx.try_send(Ok(WatchItem::Progress(at)));
                    }
                    continue;
                }
                for event in resp.events() {
                    let item = match convert_event(&store, event) {
                        Ok(Some(event)) => {
                            last = last.max(event.revision);
                            Ok(WatchItem::Event(event))
                        }
                        Ok(None) => continue,
                        Err(e) => Err(e),
                    };
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
        let current = self.current_revision().await?;
        if revision > current {
            return Err(Error::FutureRevision {
                requested: revision,
                current,
            });
        }
        if revision <= self.stored_compacted().await? {
            return Ok(());
        }
        match self
            .client
            .kv_client()
            .compact(etcd_rev(revision), Some(CompactionOptions::new().with_physical()))
            .await
        {
            Ok(_) => {}
            // Someone compacted further already: still record our view.
            Err(e) if is_compacted(&e) => {}
            Err(e) => return Err(backend(e)),
        }
        self.client
            .kv_client()
            .put(self.meta_key(), revision.to_string(), None)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{prefix_end, unreachable};

    #[test]
    fn broken_connections_count_as_unreachable() {
        // Unknown (2) with tonic's wording for a connection that died mid-request.
        assert!(unreachable(
            2,
            "h2 protocol error: error reading a body from connection"
        ));
        assert!(unreachable(14, "tcp connect error"));
        assert!(unreachable(4, "Timeout expired"));
        // InvalidArgument: etcd answered.
        assert!(!unreachable(3, "etcdserver: key is not provided"));
    }

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/skiff/a/"), b"/skiff/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
