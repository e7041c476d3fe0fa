//! The `Store` trait: a revisioned key-value store with watch history, the apiserver's source of truth.
//!
//! Every write bumps one global revision; that revision is what clients see as `resourceVersion`.
//! Keys are `/`-separated paths and listing works on prefixes, as in etcd.

pub mod codec;
pub mod conformance;
pub mod embedded;
pub mod etcd;

use async_trait::async_trait;
use tokio::sync::mpsc;

/// A store revision (exposed to clients as `resourceVersion`).
pub type Revision = u64;

/// Result type of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors a store operation can report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("key {0} already exists")]
    AlreadyExists(String),
    #[error("key {0} not found")]
    NotFound(String),
    #[error("revision conflict on {key}: expected {expected}, current {current}")]
    Conflict {
        key: String,
        expected: Revision,
        current: Revision,
    },
    #[error("revision {requested} has been compacted (oldest available is {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision { requested: Revision, current: Revision },
    #[error("storage backend: {0}")]
    Backend(String),
    /// The backend cannot be reached right now (clients may retry).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

/// One stored key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the write that created the key.
    pub create_revision: Revision,
    /// Revision of the last write to the key.
    pub mod_revision: Revision,
}

/// What a write did to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Updated,
    Deleted,
}

/// One committed write, as delivered to watchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// The revision of this write.
    pub revision: Revision,
    /// The new state; for deletions the last value, with `mod_revision` set to the deletion's revision.
    pub kv: KeyValue,
    /// The state before the write (`None` for creations).
    pub prev: Option<KeyValue>,
}

/// Parameters of a list call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Read at this revision instead of the current one (fails when compacted).
    pub revision: Option<Revision>,
    /// Only keys strictly greater than this one (pagination).
    pub start_after: Option<String>,
    /// At most this many items; 0 means no limit.
    pub limit: usize,
}

/// The answer of a list call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListResult {
    pub items: Vec<KeyValue>,
    /// The revision the list was read at.
    pub revision: Revision,
    /// Whether more keys follow the last returned one.
    pub more: bool,
}

/// What a watch delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    /// A committed write under the watched prefix.
    Event(Event),
    /// Every matching event up to this revision has been delivered (sent now and then while writes
    /// elsewhere move the store on, so watchers can resume from a recent revision).
    Progress(Revision),
}

/// A stream of watch items in revision order; an `Err` (e.g. `Compacted`) ends it.
pub type WatchStream = mpsc::Receiver<Result<WatchItem>>;

/// A revisioned, watchable key-value store.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The revision of the latest committed write.
    async fn current_revision(&self) -> Result<Revision>;
    /// The oldest revision that watches and historical lists may start from.
    async fn compacted_revision(&self) -> Result<Revision>;
    /// Reads one key at the current revision.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// Lists keys under `prefix` in key order.
    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult>;
    /// Creates a key; fails with `AlreadyExists` when it exists.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue>;
    /// Replaces a key's value; with `expected` set, only when its `mod_revision` equals it (else `Conflict`).
    async fn update(&self, key: &str, value: Vec<u8>, expected: Option<Revision>) -> Result<KeyValue>;
    /// Deletes a key; with `expected` set, only when its `mod_revision` equals it. Returns the deletion event.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Event>;
    /// Streams events under `prefix` with revisions greater than `after`, replaying history first.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;
    /// Forgets history up to and including `revision`.
    async fn compact(&self, revision: Revision) -> Result<()>;
}
