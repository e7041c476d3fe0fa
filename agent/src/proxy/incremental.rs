//! The desired dataplane state kept up to date per Service: changes mark Services dirty, and only those are
//! recomputed (with `desired::service_frontends`) and handed to the planner; a new node description redoes all.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::Arc,
};

use skiff_common::ServiceKey;

use super::{
    desired::service_frontends,
    inputs::{Change, Kind, NodeInput, ObjKey, ServiceInput, SliceInput},
    state::{DataplaneState, Frontend, NodeInfo},
};
use crate::service_health::ServiceHealth;

/// The frontends whose desired value changed: new or changed ones, and keys nothing asks for any more. Both sorted
/// by services map key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    pub upserts: Vec<Frontend>,
    pub removed: Vec<ServiceKey>,
    /// How many Services were recomputed to find them.
    pub recomputed: usize,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removed.is_empty()
    }
}

/// The proxy's inputs (compact) and the desired frontends derived from them, per Service.
#[derive(Debug, Default)]
pub struct Desired {
    services: HashMap<ObjKey, ServiceInput>,
    slices: HashMap<ObjKey, SliceInput>,
    /// Slice names per Service (slices live in their Service's namespace), sorted and distinct. A sorted `Vec`:
    /// a Service has one slice or a few, and a `BTreeSet` node would cost ~200 bytes for one name.
    slices_of: HashMap<ObjKey, Vec<Arc<str>>>,
    nodes: HashMap<Arc<str>, NodeInput>,
    listed: HashSet<Kind>,
    /// Services whose frontends must be recomputed.
    dirty: HashSet<ObjKey>,
    /// The node the frontends were computed for (`None`: not yet).
    node: Option<NodeInfo>,
    /// The frontends each Service asks for, in its own order.
    frontends: HashMap<ObjKey, Vec<Frontend>>,
    /// The Services asking for each services map key, sorted (the first one wins).
    claims: HashMap<ServiceKey, Vec<ObjKey>>,
}

impl Desired {
    /// Records one change; nothing is recomputed before `update`.
    pub fn apply(&mut self, change: Change) {
        match change {
            Change::Service(key, input) => {
                let changed = match input {
                    Some(i) => self.services.insert(key.clone(), i.clone()).as_ref() != Some(&i),
                    None => self.services.remove(&key).is_some(),
                };
                if changed {
                    self.dirty.insert(key);
                }
            }
            Change::Slice(key, input) => {
                let old = match &input {
                    Some(i) if self.slices.get(&key) == Some(i) => return,
                    Some(i) => self.slices.insert(key.clone(), i.clone()),
                    None => self.slices.remove(&key),
                };
                for svc in [old.and_then(|o| o.service), input.and_then(|i| i.service)]
                    .into_iter()
                    .flatten()
                {
                    let owner = ObjKey {
                        namespace: key.namespace.clone(),
                        name: svc,
                    };
                    self.dirty.insert(owner.clone());
                    let names = self.slices_of.entry(owner.clone()).or_default();
                    let present = self
                        .slices
                        .get(&key)
                        .and_then(|s| s.service.as_deref())
                        .is_some_and(|s| *s == *owner.name);
                    match (names.binary_search(&key.name), present) {
                        (Err(at), true) => {
                            names.reserve_exact(1);
                            names.insert(at, key.name.clone());
                        }
                        (Ok(at), false) => {
                            names.remove(at);
                        }
                        _ => {}
                    }
                    if names.is_empty() {
                        self.slices_of.remove(&owner);
                    }
                }
            }
            Change::Node(name, input) => match input {
                Some(i) => {
                    self.nodes.insert(name, i);
                }
                None => {
                    self.nodes.remove(&name);
                }
            },
            Change::Listed(kind) => {
                self.listed.insert(kind);
            }
        }
    }

    /// Whether every kind's initial list is complete.
    pub fn ready(&self) -> bool {
        Kind::ALL.iter().all(|k| self.listed.contains(k))
    }

    /// The Node called `name`, if known.
    pub fn node(&self, name: &str) -> Option<&NodeInput> {
        self.nodes.get(name)
    }

    /// Recomputes the dirty Services (all of them if `node` differs from last time) and returns what changed.
    pub fn update(&mut self, node: &NodeInfo) -> Delta {
        if self.node.as_ref() != Some(node) {
            self.node = Some(node.clone());
            self.dirty.extend(self.services.keys().cloned());
            self.dirty.extend(self.frontends.keys().cloned());
        }
        let mut dirty: Vec<ObjKey> = self.dirty.drain().collect();
        dirty.sort_unstable();
        let mut touched: BTreeSet<ServiceKey> = BTreeSet::new();
        for svc in &dirty {
            let mut new = match self.services.get(svc) {
                Some(input) => {
                    let own: Vec<&SliceInput> = self
                        .slices_of
                        .get(svc)
                        .into_iter()
                        .flatten()
                        .filter_map(|name| {
                            self.slices.get(&ObjKey {
                                namespace: svc.namespace.clone(),
                                name: name.clone(),
                            })
                        })
                        .collect();
                    service_frontends(svc, input, &own, node)
                }
                None => Vec::new(),
            };
            // Kept until the Service changes again: without the spare room of the pushes.
            new.shrink_to_fit();
            let old = self.frontends.remove(svc).unwrap_or_default();
            if old == new {
                if !new.is_empty() {
                    self.frontends.insert(svc.clone(), new);
                }
                continue;
            }
            for key in old.iter().map(Frontend::key) {
                touched.insert(key);
                if let Some(list) = self.claims.get_mut(&key) {
                    list.retain(|s| s != svc);
                    if list.is_empty() {
                        self.claims.remove(&key);
                    }
                }
            }
            for key in new.iter().map(Frontend::key) {
                touched.insert(key);
                let list = self.claims.entry(key).or_default();
                if let Err(at) = list.binary_search(svc) {
                    // Usually the only claim: no room for four.
                    list.reserve_exact(1);
                    list.insert(at, svc.clone());
                }
            }
            if !new.is_empty() {
                self.frontends.insert(svc.clone(), new);
            }
        }
        let mut delta = Delta {
            recomputed: dirty.len(),
            ..Delta::default()
        };
        for key in touched {
            match self.winner(&key) {
                Some(fe) => delta.upserts.push(fe.clone()),
                None => delta.removed.push(key),
            }
        }
        delta
    }

    /// The frontend that serves `key`: the first one of the first Service claiming it.
    fn winner(&self, key: &ServiceKey) -> Option<&Frontend> {
        let svc = self.claims.get(key)?.first()?;
        self.frontends.get(svc)?.iter().find(|f| f.key() == *key)
    }

    /// The whole desired state as of the last `update`.
    pub fn state(&self) -> DataplaneState {
        let mut frontends: Vec<Frontend> = self
            .claims
            .keys()
            .filter_map(|k| self.winner(k))
            .cloned()
            .collect();
        frontends.sort_by_key(Frontend::key);
        DataplaneState { frontends }
    }

    /// The healthCheckNodePorts this node serves (as `service_health::wanted`): the first Service by
    /// namespace/name keeps a shared port; the count is of distinct ready endpoint addresses on `node_name`.
    pub fn health_ports(&self, node_name: &str) -> BTreeMap<u16, ServiceHealth> {
        let mut with_port: Vec<(&ObjKey, u16)> = self
            .services
            .iter()
            .filter_map(|(k, s)| s.health_check_port.map(|p| (k, p)))
            .collect();
        with_port.sort();
        let mut out = BTreeMap::new();
        for (key, port) in with_port {
            out.entry(port).or_insert_with(|| {
                let mut addrs = BTreeSet::new();
                for name in self.slices_of.get(key).into_iter().flatten() {
                    let slice_key = ObjKey {
                        namespace: key.namespace.clone(),
                        name: name.clone(),
                    };
                    let Some(slice) = self.slices.get(&slice_key) else {
                        continue;
                    };
                    addrs.extend(
                        slice
                            .endpoints
                            .iter()
                            .filter(|e| e.readiness == super::inputs::Readiness::Ready)
                            .filter(|e| e.node.as_deref() == Some(node_name))
                            .map(|e| e.addr),
                    );
                }
                ServiceHealth {
                    namespace: key.namespace.to_string(),
                    name: key.name.to_string(),
                    local_endpoints: addrs.len(),
                }
            });
        }
        out
    }

    /// Returns spare capacity of the maps to the allocator (after the initial burst).
    pub fn shrink(&mut self) {
        self.services.shrink_to_fit();
        self.slices.shrink_to_fit();
        self.slices_of.shrink_to_fit();
        self.frontends.shrink_to_fit();
        self.claims.shrink_to_fit();
        self.dirty.shrink_to_fit();
    }
}
