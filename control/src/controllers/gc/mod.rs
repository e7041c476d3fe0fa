//! Garbage collector: deletes dependents whose owners are gone, and carries out Orphan and Foreground deletion.
//!
//! It watches every served kind that can be listed, watched and deleted (except events, which nothing owns
//! through ownerReferences here), builds the ownerReference graph from those caches on each change, lets the pure
//! [`graph::decide`] choose actions and carries them out through the API like kube-controller-manager's
//! garbage collector: owners judged gone are confirmed with a live read first, deletions carry a UID
//! precondition, and patches a resourceVersion, so a stale cache can never delete or change the wrong object.
//! Everything is derived from the current objects, so a restart simply resumes.

pub mod graph;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;

use self::graph::{Action, Node, ObjectRef, OwnerLink};
use super::cache;
use crate::api::deletion::Propagation;
use crate::registry::kinds::{KINDS, Kind};

const DEBOUNCE: Duration = Duration::from_millis(20);
/// How soon a pass runs again after an action failed or an owner could not be confirmed gone.
const RETRY: Duration = Duration::from_secs(1);
/// A full pass at least this often, even without changes.
const RESYNC: Duration = Duration::from_secs(30);

/// One watched kind and its cache.
struct Watched {
    kind: &'static Kind,
    resource: ApiResource,
    store: Store<DynamicObject>,
}

fn collectable(kind: &Kind) -> bool {
    ["list", "watch", "delete"].iter().all(|v| kind.verbs.contains(v))
        && kind.kind != "Event"
        && !kind.is_view()
}

fn resource(kind: &Kind) -> ApiResource {
    ApiResource {
        group: kind.group.to_owned(),
        version: kind.version.to_owned(),
        api_version: kind.api_version(),
        kind: kind.kind.to_owned(),
        plural: kind.plural.to_owned(),
    }
}

fn watch_kind(
    client: &Client,
    kind: &'static Kind,
    changes: watch::Sender<u64>,
    tasks: &mut JoinSet<()>,
) -> Watched {
    let resource = resource(kind);
    let writer = reflector::store::Writer::new(resource.clone());
    let store = writer.as_reader();
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()).default_backoff());
    tasks.spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(_) => changes.send_modify(|n| *n = n.wrapping_add(1)),
                Err(e) => {
                    tracing::debug!(error = %e, kind = kind.kind, "garbage collector watch failed; retrying")
                }
            }
        }
    });
    Watched {
        kind,
        resource,
        store,
    }
}

/// Runs until the server stops.
pub async fn run(client: Client) {
    let (changes, mut rx) = watch::channel(0u64);
    let mut tasks = JoinSet::new();
    let watched: Vec<Watched> = KINDS
        .iter()
        .filter(|k| collectable(k))
        .map(|k| watch_kind(&client, k, changes.clone(), &mut tasks))
        .collect();
    drop(changes);
    for w in &watched {
        if w.store.wait_until_ready().await.is_err() {
            return;
        }
    }
    tracing::info!(kinds = watched.len(), "garbage collector started");
    loop {
        let wait = if pass(&client, &watched).await {
            RETRY
        } else {
            RESYNC
        };
        if let Ok(false) = tokio::time::timeout(wait, cache::next_change(&mut rx, DEBOUNCE)).await {
            return;
        }
    }
}

fn node_of(resource: &ApiResource, object: &DynamicObject) -> Option<Node> {
    let meta = &object.metadata;
    Some(Node {
        id: ObjectRef {
            api_version: resource.api_version.clone(),
            kind: resource.kind.clone(),
            namespace: meta.namespace.clone(),
            name: meta.name.clone()?,
            uid: meta.uid.clone()?,
        },
        owners: meta
            .owner_references
            .iter()
            .flatten()
            .map(|r| OwnerLink {
                api_version: r.api_version.clone(),
                kind: r.kind.clone(),
                name: r.name.clone(),
                uid: r.uid.clone(),
                block: r.block_owner_deletion == Some(true),
            })
            .collect(),
        finalizers: meta.finalizers.clone().unwrap_or_default(),
        deleting: meta.deletion_timestamp.is_some(),
    })
}

/// The API handle for objects of `(group, kind)` in `namespace`.
fn api_for(
    client: &Client,
    watched: &[Watched],
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
) -> Option<Api<DynamicObject>> {
    let group = graph::group_of(api_version);
    let w = watched
        .iter()
        .find(|w| w.kind.group == group && w.kind.kind == kind)?;
    Some(match (w.kind.namespaced, namespace) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &w.resource),
        (true, None) => return None,
        (false, _) => Api::all_with(client.clone(), &w.resource),
    })
}

/// Whether every owner judged gone is really gone (absent, or present with another uid) on a live read.
async fn confirmed_gone(
    client: &Client,
    watched: &[Watched],
    namespace: Option<&str>,
    owners: &[OwnerLink],
) -> bool {
    for link in owners {
        let group = graph::group_of(&link.api_version);
        let Some(w) = watched
            .iter()
            .find(|w| w.kind.group == group && w.kind.kind == link.kind)
        else {
            return false;
        };
        let api = if w.kind.namespaced {
            api_for(client, watched, &link.api_version, &link.kind, namespace)
        } else {
            api_for(client, watched, &link.api_version, &link.kind, None)
        };
        let Some(api) = api else { return false };
        match api.get_opt(&link.name).await {
            Ok(None) => {}
            Ok(Some(owner)) if owner.metadata.uid.as_deref() != Some(link.uid.as_str()) => {}
            Ok(Some(_)) => return false,
            Err(e) => {
                tracing::debug!(owner = %link.name, error = %e, "reading owner");
                return false;
            }
        }
    }
    true
}

fn policy(p: Propagation) -> PropagationPolicy {
    match p {
        Propagation::Orphan => PropagationPolicy::Orphan,
        Propagation::Background => PropagationPolicy::Background,
        Propagation::Foreground => PropagationPolicy::Foreground,
    }
}

/// One pass over the caches; true when something should be looked at again soon.
async fn pass(client: &Client, watched: &[Watched]) -> bool {
    let mut nodes = Vec::new();
    let mut objects: HashMap<String, Arc<DynamicObject>> = HashMap::new();
    for w in watched {
        for object in w.store.state() {
            if let Some(node) = node_of(&w.resource, &object) {
                objects.insert(node.id.uid.clone(), object);
                nodes.push(node);
            }
        }
    }
    let known: HashSet<(&str, &str)> = watched.iter().map(|w| (w.kind.group, w.kind.kind)).collect();
    let actions = graph::decide(&nodes, |group, kind| known.contains(&(group, kind)));
    let mut again = false;
    for action in actions {
        if !execute(client, watched, &objects, &action).await {
            again = true;
        }
    }
    again
}

fn not_found_or_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 || s.code == 409)
}

/// Carries out one action; false when it did not happen (it is retried on a later pass).
async fn execute(
    client: &Client,
    watched: &[Watched],
    objects: &HashMap<String, Arc<DynamicObject>>,
    action: &Action,
) -> bool {
    let (object, dangling) = match action {
        Action::Delete { object, dangling, .. } | Action::RemoveOwners { object, dangling, .. } => {
            (object, &dangling[..])
        }
        Action::RemoveFinalizer { object, .. } => (object, &[][..]),
    };
    let Some(api) = api_for(
        client,
        watched,
        &object.api_version,
        &object.kind,
        object.namespace.as_deref(),
    ) else {
        return true;
    };
    if !confirmed_gone(client, watched, object.namespace.as_deref(), dangling).await {
        tracing::debug!(kind = %object.kind, name = %object.name, "owner not confirmed gone yet");
        return false;
    }
    let Some(cached) = objects.get(&object.uid) else {
        return true;
    };
    let rv = cached.metadata.resource_version.clone();
    let result = match action {
        Action::Delete { policy: p, .. } => {
            tracing::info!(kind = %object.kind, namespace = ?object.namespace, name = %object.name, policy = p.as_str(), "deleting dependent whose owners are gone");
            let params = DeleteParams {
                propagation_policy: Some(policy(*p)),
                preconditions: Some(Preconditions {
                    uid: Some(object.uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            api.delete(&object.name, &params).await.map(|_| ())
        }
        Action::RemoveOwners { uids, .. } => {
            let remaining: Vec<Value> = cached
                .metadata
                .owner_references
                .iter()
                .flatten()
                .filter(|r| !uids.contains(&r.uid))
                .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
                .collect();
            tracing::info!(kind = %object.kind, name = %object.name, ?uids, "removing owner references");
            let owners = if remaining.is_empty() {
                Value::Null
            } else {
                json!(remaining)
            };
            let patch = json!({"metadata": {"resourceVersion": rv, "ownerReferences": owners}});
            api.patch(&object.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
        }
        Action::RemoveFinalizer { finalizer, .. } => {
            let remaining: Vec<&String> = cached
                .metadata
                .finalizers
                .iter()
                .flatten()
                .filter(|f| f != finalizer)
                .collect();
            tracing::info!(kind = %object.kind, name = %object.name, finalizer, "dependents handled; removing finalizer");
            let finalizers = if remaining.is_empty() {
                Value::Null
            } else {
                json!(remaining)
            };
            let patch = json!({"metadata": {"resourceVersion": rv, "finalizers": finalizers}});
            api.patch(&object.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
        }
    };
    match result {
        Ok(()) => true,
        Err(e) if not_found_or_conflict(&e) => {
            tracing::debug!(kind = %object.kind, name = %object.name, error = %e, "object changed; next pass decides again");
            false
        }
        Err(e) => {
            tracing::warn!(kind = %object.kind, name = %object.name, error = %e, "garbage collector write failed");
            false
        }
    }
}
