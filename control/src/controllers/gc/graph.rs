//! The garbage collector's decisions (pure): owner states from the ownerReference graph -> actions.

use std::collections::HashMap;

use crate::api::deletion::{FOREGROUND, ORPHAN, Propagation};

/// One object of the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
}

/// One `ownerReferences` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerLink {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    /// `blockOwnerDeletion`: a foreground deletion of the owner waits for this dependent.
    pub block: bool,
}

/// What the collector knows of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: ObjectRef,
    pub owners: Vec<OwnerLink>,
    pub finalizers: Vec<String>,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
}

impl Node {
    fn has(&self, finalizer: &str) -> bool {
        self.finalizers.iter().any(|f| f == finalizer)
    }
}

/// A change the collector makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Delete a dependent none of whose owners remains.
    Delete {
        object: ObjectRef,
        policy: Propagation,
        /// Owners judged gone; the executor confirms each with a live read first (caches lag).
        dangling: Vec<OwnerLink>,
    },
    /// Remove owner references (by uid): gone or foreground-deleting owners next to a live one, or orphaning.
    RemoveOwners {
        object: ObjectRef,
        uids: Vec<String>,
        dangling: Vec<OwnerLink>,
    },
    /// Remove a garbage-collection finalizer whose work is done.
    RemoveFinalizer {
        object: ObjectRef,
        finalizer: &'static str,
    },
}

/// The API group of an `apiVersion` (`apps/v1` -> `apps`, `v1` -> core).
pub fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

type Key<'a> = (&'a str, &'a str, &'a str, &'a str);

fn key<'a>(api_version: &'a str, kind: &'a str, namespace: Option<&'a str>, name: &'a str) -> Key<'a> {
    (group_of(api_version), kind, namespace.unwrap_or(""), name)
}

enum OwnerState {
    Solid,
    Dangling,
    WaitingForDependents,
}

/// Decides the collector's actions over a complete snapshot. `known(group, kind)` says whether objects of a kind
/// are in the snapshot at all: owners of unknown kinds are never judged gone.
pub fn decide(nodes: &[Node], known: impl Fn(&str, &str) -> bool) -> Vec<Action> {
    let mut index: HashMap<Key<'_>, &Node> = HashMap::new();
    let mut dependents: HashMap<&str, Vec<(&Node, &OwnerLink)>> = HashMap::new();
    for node in nodes {
        let id = &node.id;
        index.insert(
            key(&id.api_version, &id.kind, id.namespace.as_deref(), &id.name),
            node,
        );
        for link in &node.owners {
            dependents
                .entry(link.uid.as_str())
                .or_default()
                .push((node, link));
        }
    }
    let lookup = |dependent: &Node, link: &OwnerLink| {
        // A namespaced dependent's owner is in its namespace, or cluster-scoped.
        index
            .get(&key(
                &link.api_version,
                &link.kind,
                dependent.id.namespace.as_deref(),
                &link.name,
            ))
            .or_else(|| index.get(&key(&link.api_version, &link.kind, None, &link.name)))
            .copied()
    };
    let mut actions = Vec::new();
    for node in nodes {
        let own = dependents
            .get(node.id.uid.as_str())
            .map_or(&[][..], Vec::as_slice);
        if node.deleting && node.has(ORPHAN) {
            if own.is_empty() {
                actions.push(Action::RemoveFinalizer {
                    object: node.id.clone(),
                    finalizer: ORPHAN,
                });
            }
            for (dependent, _) in own {
                actions.push(Action::RemoveOwners {
                    object: dependent.id.clone(),
                    uids: vec![node.id.uid.clone()],
                    dangling: Vec::new(),
                });
            }
        } else if node.deleting && node.has(FOREGROUND) && !own.iter().any(|(_, link)| link.block) {
            actions.push(Action::RemoveFinalizer {
                object: node.id.clone(),
                finalizer: FOREGROUND,
            });
        }
        if node.deleting || node.owners.is_empty() {
            // Objects already going are left to their own deletion (or foreground handling above).
            continue;
        }
        let (mut solid, mut dangling, mut waiting) = (0, Vec::new(), Vec::new());
        for link in &node.owners {
            let state = match lookup(node, link) {
                Some(owner) if owner.id.uid != link.uid => OwnerState::Dangling,
                Some(owner) if owner.deleting && owner.has(FOREGROUND) && !owner.has(ORPHAN) => {
                    OwnerState::WaitingForDependents
                }
                Some(_) => OwnerState::Solid,
                None if known(group_of(&link.api_version), &link.kind) => OwnerState::Dangling,
                None => OwnerState::Solid,
            };
            match state {
                OwnerState::Solid => solid += 1,
                OwnerState::Dangling => dangling.push(link.clone()),
                OwnerState::WaitingForDependents => waiting.push(link.clone()),
            }
        }
        if dangling.is_empty() && waiting.is_empty() {
            continue;
        }
        if solid > 0 {
            let uids = dangling.iter().chain(&waiting).map(|l| l.uid.clone()).collect();
            actions.push(Action::RemoveOwners {
                object: node.id.clone(),
                uids,
                dangling,
            });
            continue;
        }
        let has_dependents = dependents.contains_key(node.id.uid.as_str());
        let policy = if !waiting.is_empty() && has_dependents {
            Propagation::Foreground
        } else if node.has(ORPHAN) {
            Propagation::Orphan
        } else if node.has(FOREGROUND) {
            Propagation::Foreground
        } else {
            Propagation::Background
        };
        actions.push(Action::Delete {
            object: node.id.clone(),
            policy,
            dangling,
        });
    }
    actions
}

#[cfg(test)]
mod tests;
