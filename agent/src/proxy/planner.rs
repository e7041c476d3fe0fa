//! The planner: diffs the desired state against its view of the maps and emits ordered, datapath-safe map writes.
//!
//! Order within a plan: backends and rev-NAT entries first; then, service by service, slot writes, the service
//! entry, and deletion of slots the entry no longer covers (or of a whole table it swapped away from); then removed
//! services (entry before slots); then unreferenced rev-NAT entries and backends (UDP conntrack purged first).
//!
//! Before any op, every changed Service is admitted or refused whole by `capacity` against the map sizes: a refused
//! Service keeps its previous programming (or stays absent), and is tried again on every later plan.
use std::collections::{BTreeMap, HashMap, HashSet};

use skiff_common::{
    Backend, MAGLEV_TABLE_SIZE, PROTO_UDP, RevNat, ServiceKey, ServiceValue, SlotKey, backend_flags, sizes,
    svc_flags,
};
use tracing::warn;

use super::{
    capacity::{Amounts, Budget, Limits, Refusal, Resource},
    ids::IdPool,
    maglev,
    model::{MapContents, MapOp},
    state::{BackendSpec, DataplaneState, Frontend, addr_be, port_be},
    tables::edit_region,
};

/// (addr_be, port_be, proto): what makes a backend or a rev-NAT frontend the same across plans.
type Ident = (u32, u16, u8);

fn backend_ident(b: &BackendSpec) -> Ident {
    (addr_be(b.addr), port_be(b.port), b.protocol.number())
}

/// Owns the id allocators and a view of the service-defining maps; turns desired states into map operations.
#[derive(Clone, Debug)]
pub struct Planner {
    view: MapContents,
    backend_ids: HashMap<Ident, u32>,
    backend_of: HashMap<u32, Ident>,
    backend_pool: IdPool,
    /// How many slots reference each backend id.
    slot_refs: HashMap<u32, u32>,
    rev_nat_ids: HashMap<Ident, u32>,
    rev_nat_of: HashMap<u32, Ident>,
    rev_nat_pool: IdPool,
    /// The table each service entry owns, and the reverse.
    tables: HashMap<ServiceKey, u32>,
    table_owner: HashMap<u32, ServiceKey>,
    table_pool: IdPool,
    /// For Maglev tables: the backend ids (in population order) the table was computed from.
    maglev_members: HashMap<u32, Vec<u32>>,
    /// The frontends as last planned (unchanged ones are skipped next time).
    prev: HashMap<ServiceKey, Frontend>,
    /// How many planned frontends use each backend (and how many of them call it local), and each rev-NAT entry.
    backend_users: HashMap<Ident, Users>,
    rev_users: HashMap<Ident, u32>,
    /// Set by `restore`: the next plan also removes slots and tables nothing references.
    gc_pending: bool,
    /// Table ids found in the pinned maps (freed by that collection if nothing owns them).
    restored_tables: Vec<u32>,
    /// Sizes of the service-defining maps.
    limits: Limits,
    /// Services refused for lack of room, by (namespace, name): why, and the frontends to try again next plan.
    refused: BTreeMap<(String, String), (Refusal, Vec<Frontend>)>,
    /// Refusals of the latest plans not yet taken by `take_new_refusals`.
    new_refusals: Vec<Refusal>,
}

/// Users of a backend: all planned frontends listing it, and those listing it as node-local.
#[derive(Clone, Copy, Debug, Default)]
struct Users {
    all: u32,
    local: u32,
}

/// Backends and rev-NAT entries whose users changed in this plan.
#[derive(Default)]
struct Touched {
    backends: HashSet<Ident>,
    rev_nat: HashSet<Ident>,
}

/// A frontend with its ids resolved.
struct Entry<'a> {
    key: ServiceKey,
    frontend: &'a Frontend,
    rev_nat_id: u32,
    ready: Vec<u32>,
    terminating: Vec<u32>,
}

impl Default for Planner {
    fn default() -> Self {
        Planner::restore(MapContents::default())
    }
}

impl Planner {
    /// Rebuilds the allocators from what is pinned, so that planning the same desired state again emits nothing
    /// and established flows keep their backend, rev-NAT and table ids.
    pub fn restore(current: MapContents) -> Planner {
        Planner::restore_with_limits(current, Limits::default())
    }

    /// Like `restore`, for maps of the given sizes: ids are allocated within them and Services that would not fit
    /// are refused before any write.
    pub fn restore_with_limits(current: MapContents, mut limits: Limits) -> Planner {
        // Rev-NAT ids travel as u16 in service entries and conntrack.
        limits.rev_nat = limits.rev_nat.min(u32::from(u16::MAX));
        let mut p = Planner {
            view: MapContents::default(),
            backend_ids: HashMap::new(),
            backend_of: HashMap::new(),
            backend_pool: IdPool::new(limits.backends),
            slot_refs: HashMap::new(),
            rev_nat_ids: HashMap::new(),
            rev_nat_of: HashMap::new(),
            rev_nat_pool: IdPool::new(limits.rev_nat),
            tables: HashMap::new(),
            table_owner: HashMap::new(),
            table_pool: IdPool::new(limits.services.max(sizes::SERVICES).saturating_mul(4)),
            maglev_members: HashMap::new(),
            prev: HashMap::new(),
            backend_users: HashMap::new(),
            rev_users: HashMap::new(),
            gc_pending: !current.services.is_empty() || !current.slots.is_empty(),
            restored_tables: Vec::new(),
            limits,
            refused: BTreeMap::new(),
            new_refusals: Vec::new(),
        };
        for (&id, b) in &current.backends {
            p.backend_pool.mark_used(id);
            let ident = (b.addr_be, b.port_be, b.proto);
            if let std::collections::hash_map::Entry::Vacant(slot) = p.backend_ids.entry(ident) {
                slot.insert(id);
                p.backend_of.insert(id, ident);
            }
        }
        for &backend in current.slots.values() {
            *p.slot_refs.entry(backend).or_default() += 1;
        }
        for &id in current.rev_nat.keys() {
            p.rev_nat_pool.mark_used(id);
        }
        for key in current.slots.keys() {
            p.table_pool.mark_used(key.table_id);
        }
        for (key, v) in &current.services {
            let ident = (key.addr_be, key.port_be, key.proto);
            let rev = u32::from(v.rev_nat_id);
            p.rev_nat_pool.mark_used(rev);
            if rev != 0 && !p.rev_nat_ids.contains_key(&ident) && !p.rev_nat_of.contains_key(&rev) {
                p.rev_nat_ids.insert(ident, rev);
                p.rev_nat_of.insert(rev, ident);
            }
            p.table_pool.mark_used(v.table_id);
            if v.table_id != 0 && !p.table_owner.contains_key(&v.table_id) {
                p.tables.insert(*key, v.table_id);
                p.table_owner.insert(v.table_id, *key);
            }
        }
        let mut restored: Vec<u32> = current.slots.keys().map(|k| k.table_id).collect();
        restored.extend(current.services.values().map(|v| v.table_id));
        restored.sort_unstable();
        restored.dedup();
        p.restored_tables = restored;
        p.view = current;
        // Maglev tables are reused only if they are exactly what their members give (else the next plan rewrites).
        let maglev_tables: Vec<(u32, ServiceValue)> = p
            .tables
            .iter()
            .filter_map(|(k, &t)| p.view.services.get(k).map(|v| (t, *v)))
            .filter(|(_, v)| v.flags & svc_flags::MAGLEV != 0)
            .collect();
        for (table, v) in maglev_tables {
            if let Some(members) = p.restored_maglev_members(table, &v) {
                p.maglev_members.insert(table, members);
            }
        }
        p
    }

    /// The member list that reproduces pinned Maglev table `table` exactly, if there is one.
    fn restored_maglev_members(&self, table: u32, v: &ServiceValue) -> Option<Vec<u32>> {
        let expected = if v.ready_count == 0 { 0 } else { MAGLEV_TABLE_SIZE };
        if v.ready_count != expected || v.terminating_count != 0 {
            return None;
        }
        let slots = self.read_slots(table, 0, v.ready_count)?;
        let mut members: Vec<u32> = slots
            .iter()
            .copied()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut keyed = Vec::with_capacity(members.len());
        for id in &members {
            let b = self.view.backends.get(id)?;
            keyed.push(((u32::from_be(b.addr_be), u16::from_be(b.port_be)), *id));
        }
        keyed.sort();
        members = keyed.iter().map(|(_, id)| *id).collect();
        (self.maglev_slots(&members) == slots).then_some(members)
    }

    /// The planner's view of the maps (what they hold once every emitted op is applied).
    pub fn contents(&self) -> &MapContents {
        &self.view
    }

    /// "namespace/name:port" of the Service port a service entry was planned for (known after the first plan).
    pub fn describe_service(&self, key: &ServiceKey) -> Option<String> {
        self.prev.get(key).map(|f| f.origin.to_string())
    }

    /// Whether the next plan must see the whole desired state (`plan`), not a delta: right after a restore.
    pub fn needs_full(&self) -> bool {
        self.gc_pending
    }

    /// The Services currently refused for lack of room (each keeps its previous programming, or is absent).
    pub fn refused(&self) -> impl Iterator<Item = &Refusal> {
        self.refused.values().map(|(r, _)| r)
    }

    /// Refusals that are new since the last call (a Service refused again for the same reason is not repeated).
    pub fn take_new_refusals(&mut self) -> Vec<Refusal> {
        std::mem::take(&mut self.new_refusals)
    }

    /// Emits the ops that turn the maps into `desired`, in an order the datapath can run between at any point,
    /// and updates the view. Only frontends that differ from the previous plan are looked at in detail; unchanged
    /// ones cost no ops.
    pub fn plan(&mut self, desired: &DataplaneState) -> Vec<MapOp> {
        let full = std::mem::take(&mut self.gc_pending);
        // Refused Services are part of `desired` if still wanted: they are looked at again below.
        let before = std::mem::take(&mut self.refused);
        let mut changed: Vec<&Frontend> = Vec::new();
        let mut keys: HashSet<ServiceKey> = HashSet::with_capacity(desired.frontends.len());
        for fe in &desired.frontends {
            let key = fe.key();
            // A hand-built state could repeat a key: the first frontend wins, as in `DataplaneState::from_frontends`.
            if keys.insert(key) && self.prev.get(&key) != Some(fe) {
                changed.push(fe);
            }
        }
        let gone: Vec<ServiceKey> = self.prev.keys().filter(|k| !keys.contains(k)).copied().collect();
        // Entries nothing plans any more (removed, or not programmable) are found among all of them.
        let candidates: Vec<ServiceKey> = self.view.services.keys().copied().collect();
        let changed = self.admit(changed, &before);
        self.plan_changes(changed, gone, candidates, full)
    }

    /// Like `plan`, given only what changed since the previous plan: `upserts` (new or changed frontends) and
    /// `removed` (keys no longer desired), as `incremental::Desired::update` returns them. Cost is proportional to
    /// the change. Must not be used while `needs_full` is true.
    pub fn plan_delta(&mut self, upserts: &[Frontend], removed: &[ServiceKey]) -> Vec<MapOp> {
        debug_assert!(!self.gc_pending, "plan_delta right after a restore");
        let mut seen: HashSet<ServiceKey> = HashSet::with_capacity(upserts.len() + removed.len());
        let mut changed: Vec<&Frontend> = Vec::new();
        for fe in upserts {
            let key = fe.key();
            if seen.insert(key) && self.prev.get(&key) != Some(fe) {
                changed.push(fe);
            }
        }
        let gone: Vec<ServiceKey> = removed.iter().filter(|k| !seen.contains(k)).copied().collect();
        // Refused frontends are tried again unless this delta replaces or removes them.
        let before = std::mem::take(&mut self.refused);
        let gone_set: HashSet<ServiceKey> = removed.iter().copied().collect();
        let retry: Vec<&Frontend> = before
            .values()
            .flat_map(|(_, fes)| fes)
            .filter(|fe| !seen.contains(&fe.key()) && !gone_set.contains(&fe.key()))
            .collect();
        for fe in retry {
            if seen.insert(fe.key()) && self.prev.get(&fe.key()) != Some(fe) {
                changed.push(fe);
            }
        }
        changed.sort_by_key(|f| f.key());
        let mut candidates: Vec<ServiceKey> = seen.into_iter().chain(gone.iter().copied()).collect();
        candidates.sort_unstable();
        candidates.dedup();
        let changed = self.admit(changed, &before);
        self.plan_changes(changed, gone, candidates, false)
    }

    /// Admits changed frontends Service by Service (by namespace/name) while they fit into what the maps have left;
    /// the frontends of a Service that does not fit are held back whole and recorded as refused. Pure: no op, no
    /// change to the view. `before` holds the refusals of the previous plan (to report only new ones).
    fn admit<'a>(
        &mut self,
        changed: Vec<&'a Frontend>,
        before: &BTreeMap<(String, String), (Refusal, Vec<Frontend>)>,
    ) -> Vec<&'a Frontend> {
        let mut groups: BTreeMap<(&str, &str), Vec<&'a Frontend>> = BTreeMap::new();
        for fe in &changed {
            groups
                .entry((&*fe.origin.namespace, &*fe.origin.name))
                .or_default()
                .push(fe);
        }
        let used = Amounts::new(
            self.view.services.len() as u64,
            self.view.backends.len().max(self.backend_ids.len()) as u64,
            self.view.slots.len() as u64,
            self.view.rev_nat.len().max(self.rev_nat_ids.len()) as u64,
        );
        let mut budget = Budget::new(self.limits, used);
        let mut new_backends: HashSet<Ident> = HashSet::new();
        let mut new_rev_nat: HashSet<Ident> = HashSet::new();
        let mut admitted: HashSet<ServiceKey> = HashSet::with_capacity(changed.len());
        for ((namespace, name), fes) in groups {
            let mut need = Amounts::default();
            let mut backends: HashSet<Ident> = HashSet::new();
            let mut rev_nat: HashSet<Ident> = HashSet::new();
            let mut endpoints: HashSet<Ident> = HashSet::new();
            for fe in &fes {
                let key = fe.key();
                if !self.view.services.contains_key(&key) {
                    need.add(Resource::Services, 1);
                }
                let rev = (key.addr_be, key.port_be, key.proto);
                if !self.rev_nat_ids.contains_key(&rev) && !new_rev_nat.contains(&rev) {
                    rev_nat.insert(rev);
                }
                for b in fe.ready.iter().chain(&fe.terminating) {
                    let ident = backend_ident(b);
                    endpoints.insert(ident);
                    if !self.backend_ids.contains_key(&ident) && !new_backends.contains(&ident) {
                        backends.insert(ident);
                    }
                }
                need.add(Resource::Slots, self.slot_need(fe));
            }
            need.add(Resource::Backends, backends.len() as u64);
            need.add(Resource::RevNat, rev_nat.len() as u64);
            match budget.take(&need) {
                Ok(()) => {
                    new_backends.extend(backends);
                    new_rev_nat.extend(rev_nat);
                    admitted.extend(fes.iter().map(|f| f.key()));
                }
                Err(shortfall) => {
                    let refusal = Refusal {
                        namespace: namespace.to_string(),
                        name: name.to_string(),
                        endpoints: endpoints.len(),
                        shortfall,
                        kept_previous: fes.iter().any(|f| {
                            self.prev.contains_key(&f.key()) || self.view.services.contains_key(&f.key())
                        }),
                    };
                    let id = (namespace.to_string(), name.to_string());
                    let repeated = before.get(&id).is_some_and(|(old, _)| {
                        (old.shortfall.resource, old.shortfall.needed, old.kept_previous)
                            == (
                                refusal.shortfall.resource,
                                refusal.shortfall.needed,
                                refusal.kept_previous,
                            )
                    });
                    if !repeated {
                        warn!(
                            service = %format!("{namespace}/{name}"),
                            endpoints = refusal.endpoints,
                            resource = refusal.shortfall.resource.name(),
                            needed = refusal.shortfall.needed,
                            free = refusal.shortfall.free,
                            limit = refusal.shortfall.limit,
                            kept_previous = refusal.kept_previous,
                            "{refusal}"
                        );
                        self.new_refusals.push(refusal.clone());
                    }
                    let fes: Vec<Frontend> = fes.into_iter().cloned().collect();
                    self.refused.insert(id, (refusal, fes));
                }
            }
        }
        changed
            .into_iter()
            .filter(|f| admitted.contains(&f.key()))
            .collect()
    }

    /// Slots a frontend's next table needs on top of what its current table holds: none when it stays as it is,
    /// the growth when it can be edited in place, the whole new table when it is swapped (written before the old
    /// one is deleted).
    fn slot_need(&self, fe: &Frontend) -> u64 {
        let new_len = if fe.is_maglev() {
            if fe.active_backends().is_empty() {
                0
            } else {
                MAGLEV_TABLE_SIZE
            }
        } else {
            (fe.ready.len() + fe.terminating.len()) as u32
        };
        let whole = u64::from(new_len);
        let key = fe.key();
        let (Some(c), Some(&t)) = (self.view.services.get(&key), self.tables.get(&key)) else {
            return whole;
        };
        if c.table_id != t || (c.flags & svc_flags::MAGLEV) != (fe.flags & svc_flags::MAGLEV) {
            return whole;
        }
        if fe.is_maglev() {
            let members: Option<Vec<u32>> = fe
                .active_backends()
                .iter()
                .map(|b| self.backend_ids.get(&backend_ident(b)).copied())
                .collect();
            let same = members.is_some_and(|m| self.maglev_members.get(&t) == Some(&m))
                && c.ready_count == new_len
                && c.terminating_count == 0;
            return if same { 0 } else { whole };
        }
        // Compared by identity: a backend without an id yet is in no current slot.
        let idents = |list: &[BackendSpec]| -> Vec<Ident> { list.iter().map(backend_ident).collect() };
        let current = |start: u32, len: u32| -> Option<Vec<Ident>> {
            self.read_slots(t, start, len)?
                .iter()
                .map(|id| self.backend_of.get(id).copied())
                .collect()
        };
        let (ready, terminating) = (idents(&fe.ready), idents(&fe.terminating));
        let (Some(cur_ready), Some(cur_term)) = (
            current(0, c.ready_count),
            current(c.ready_count, c.terminating_count),
        ) else {
            return whole;
        };
        if same_members(&cur_ready, &ready) {
            (terminating.len() as u64).saturating_sub(cur_term.len() as u64)
        } else if cur_term.is_empty() && terminating.is_empty() {
            (ready.len() as u64).saturating_sub(cur_ready.len() as u64)
        } else {
            whole
        }
    }

    /// The common part of `plan` and `plan_delta`: `changed` frontends in key order, `gone` keys, and the service
    /// entries that may have lost their frontend (`candidates`, sorted).
    fn plan_changes(
        &mut self,
        changed: Vec<&Frontend>,
        gone: Vec<ServiceKey>,
        candidates: Vec<ServiceKey>,
        full: bool,
    ) -> Vec<MapOp> {
        let mut ops = Vec::new();
        let mut touched = Touched::default();
        for key in changed.iter().map(|f| f.key()).chain(gone) {
            if let Some(old) = self.prev.remove(&key) {
                self.count_users(&old, false, &mut touched);
            }
        }
        for fe in &changed {
            self.count_users(fe, true, &mut touched);
        }
        self.put_backends(&touched.backends, &mut ops);
        for fe in changed {
            match self.resolve(fe, &mut ops) {
                Some(e) => {
                    self.plan_service(&e, &mut ops);
                    self.prev.insert(e.key, fe.clone());
                }
                None => {
                    warn!(service = %fe.origin, addr = %fe.addr, port = fe.port, "id space exhausted; frontend not programmed");
                    self.count_users(fe, false, &mut touched);
                }
            }
        }
        // Entries nothing planned any more (removed, or not programmable); a refused Service keeps its entries.
        let held: HashSet<ServiceKey> = self
            .refused
            .values()
            .flat_map(|(_, fes)| fes.iter().map(|f| f.key()))
            .collect();
        let removed: Vec<ServiceKey> = candidates
            .into_iter()
            .filter(|k| self.view.services.contains_key(k) && !self.prev.contains_key(k) && !held.contains(k))
            .collect();
        for key in removed {
            self.emit(MapOp::DeleteService(key), &mut ops);
            if let Some(table) = self.tables.remove(&key) {
                self.drop_table(table, &mut ops);
            }
        }
        if full {
            self.collect_orphan_slots(&mut ops);
        }
        self.delete_unused_rev_nat(&touched.rev_nat, full, &mut ops);
        self.delete_unused_backends(&touched.backends, full, &mut ops);
        ops
    }

    /// Adds (or removes) a frontend's use of its backends and rev-NAT entry, noting what it touched.
    fn count_users(&mut self, fe: &Frontend, add: bool, touched: &mut Touched) {
        let step = |n: &mut u32| if add { *n += 1 } else { *n = n.saturating_sub(1) };
        let key = fe.key();
        let rev = (key.addr_be, key.port_be, key.proto);
        let n = self.rev_users.entry(rev).or_default();
        step(n);
        if *n == 0 {
            self.rev_users.remove(&rev);
        }
        touched.rev_nat.insert(rev);
        for b in fe.ready.iter().chain(&fe.terminating) {
            let ident = backend_ident(b);
            let users = self.backend_users.entry(ident).or_default();
            step(&mut users.all);
            if b.local {
                step(&mut users.local);
            }
            if users.all == 0 {
                self.backend_users.remove(&ident);
            }
            touched.backends.insert(ident);
        }
    }

    /// Puts every touched backend that is still used and whose map value differs (local if any user says so).
    fn put_backends(&mut self, touched: &HashSet<Ident>, ops: &mut Vec<MapOp>) {
        let mut idents: Vec<(Ident, u8)> = touched
            .iter()
            .filter_map(|i| {
                self.backend_users
                    .get(i)
                    .map(|u| (*i, if u.local > 0 { backend_flags::LOCAL } else { 0 }))
            })
            .collect();
        idents.sort_unstable();
        for (ident, flags) in idents {
            let id = match self.backend_ids.get(&ident) {
                Some(&id) => id,
                None => {
                    let Some(id) = self.backend_pool.alloc() else {
                        warn!(backends = self.backend_ids.len(), "backend id space exhausted");
                        continue;
                    };
                    self.backend_ids.insert(ident, id);
                    self.backend_of.insert(id, ident);
                    id
                }
            };
            let value = Backend {
                addr_be: ident.0,
                port_be: ident.1,
                proto: ident.2,
                flags,
            };
            if self.view.backends.get(&id) != Some(&value) {
                self.emit(MapOp::PutBackend(id, value), ops);
            }
        }
    }

    /// Resolves a frontend's rev-NAT id (putting the entry if needed) and backend ids.
    fn resolve<'a>(&mut self, fe: &'a Frontend, ops: &mut Vec<MapOp>) -> Option<Entry<'a>> {
        let key = fe.key();
        let ident = (key.addr_be, key.port_be, key.proto);
        let rev_nat_id = match self.rev_nat_ids.get(&ident) {
            Some(&id) => id,
            None => {
                let id = self.rev_nat_pool.alloc()?;
                self.rev_nat_ids.insert(ident, id);
                self.rev_nat_of.insert(id, ident);
                id
            }
        };
        let value = RevNat {
            addr_be: key.addr_be,
            port_be: key.port_be,
            _pad: 0,
        };
        if self.view.rev_nat.get(&rev_nat_id) != Some(&value) {
            self.emit(MapOp::PutRevNat(rev_nat_id, value), ops);
        }
        let ids = |list: &[BackendSpec]| -> Option<Vec<u32>> {
            list.iter()
                .map(|b| self.backend_ids.get(&backend_ident(b)).copied())
                .collect()
        };
        Some(Entry {
            key,
            frontend: fe,
            rev_nat_id,
            ready: ids(&fe.ready)?,
            terminating: ids(&fe.terminating)?,
        })
    }

    fn plan_service(&mut self, e: &Entry<'_>, ops: &mut Vec<MapOp>) {
        let fe = e.frontend;
        let value = ServiceValue {
            ready_count: 0,
            terminating_count: 0,
            table_id: 0,
            affinity_timeout_s: fe.affinity_timeout_s,
            rev_nat_id: e.rev_nat_id as u16,
            flags: fe.flags,
        };
        let current = self.view.services.get(&e.key).copied();
        let owned = self.tables.get(&e.key).copied();
        // The table this entry uses now, if it owns it and it has the same kind.
        let reusable = match (current, owned) {
            (Some(c), Some(t))
                if c.table_id == t && (c.flags & svc_flags::MAGLEV) == (fe.flags & svc_flags::MAGLEV) =>
            {
                Some((t, c))
            }
            _ => None,
        };
        if fe.is_maglev() {
            let members = if e.ready.is_empty() {
                e.terminating.clone()
            } else {
                e.ready.clone()
            };
            let count = if members.is_empty() { 0 } else { MAGLEV_TABLE_SIZE };
            if let Some((t, c)) = reusable
                && self.maglev_members.get(&t) == Some(&members)
                && c.ready_count == count
                && c.terminating_count == 0
            {
                self.put_service(
                    e.key,
                    ServiceValue {
                        ready_count: count,
                        table_id: t,
                        ..value
                    },
                    ops,
                );
                return;
            }
            let slots = self.maglev_slots(&members);
            let v = ServiceValue {
                ready_count: count,
                ..value
            };
            self.swap_table(e.key, &slots, v, Some(members), ops);
            return;
        }
        if let Some((t, c)) = reusable
            && self.edit_in_place(e, t, c, value, ops)
        {
            return;
        }
        let slots: Vec<u32> = e.ready.iter().chain(&e.terminating).copied().collect();
        let v = ServiceValue {
            ready_count: e.ready.len() as u32,
            terminating_count: e.terminating.len() as u32,
            ..value
        };
        self.swap_table(e.key, &slots, v, None, ops);
    }

    /// Updates a random table in place when only one region changes and nothing follows it; false if it cannot.
    fn edit_in_place(
        &mut self,
        e: &Entry<'_>,
        table: u32,
        current: ServiceValue,
        value: ServiceValue,
        ops: &mut Vec<MapOp>,
    ) -> bool {
        let (Some(ready), Some(terminating)) = (
            self.read_slots(table, 0, current.ready_count),
            self.read_slots(table, current.ready_count, current.terminating_count),
        ) else {
            return false;
        };
        let ready_same = same_members(&ready, &e.ready);
        let (base, region, target) = if ready_same {
            (current.ready_count, terminating, &e.terminating)
        } else if terminating.is_empty() && e.terminating.is_empty() {
            (0, ready, &e.ready)
        } else {
            return false;
        };
        let edit = edit_region(&region, target);
        for &(pos, id) in &edit.writes {
            self.emit(
                MapOp::PutSlot(
                    SlotKey {
                        table_id: table,
                        slot: base + pos,
                    },
                    id,
                ),
                ops,
            );
        }
        let (ready_count, terminating_count) = if ready_same {
            (current.ready_count, edit.new_len)
        } else {
            (edit.new_len, 0)
        };
        self.put_service(
            e.key,
            ServiceValue {
                ready_count,
                terminating_count,
                table_id: table,
                ..value
            },
            ops,
        );
        for &pos in &edit.deletes {
            self.emit(
                MapOp::DeleteSlot(SlotKey {
                    table_id: table,
                    slot: base + pos,
                }),
                ops,
            );
        }
        true
    }

    /// Writes `slots` under a fresh table id, points the entry at it with one update, then deletes the old table.
    fn swap_table(
        &mut self,
        key: ServiceKey,
        slots: &[u32],
        value: ServiceValue,
        maglev_members: Option<Vec<u32>>,
        ops: &mut Vec<MapOp>,
    ) {
        let Some(table) = self.table_pool.alloc() else {
            warn!(?key, "table id space exhausted; service entry left as it is");
            return;
        };
        for (slot, &id) in slots.iter().enumerate() {
            self.emit(
                MapOp::PutSlot(
                    SlotKey {
                        table_id: table,
                        slot: slot as u32,
                    },
                    id,
                ),
                ops,
            );
        }
        self.put_service(
            key,
            ServiceValue {
                table_id: table,
                ..value
            },
            ops,
        );
        if let Some(old) = self.tables.insert(key, table) {
            self.drop_table(old, ops);
        }
        self.table_owner.insert(table, key);
        if let Some(members) = maglev_members {
            self.maglev_members.insert(table, members);
        }
    }

    /// Deletes every slot of a table no service entry points at any more, and frees its id.
    fn drop_table(&mut self, table: u32, ops: &mut Vec<MapOp>) {
        let keys: Vec<SlotKey> = self
            .view
            .slots
            .range(
                SlotKey {
                    table_id: table,
                    slot: 0,
                }..=SlotKey {
                    table_id: table,
                    slot: u32::MAX,
                },
            )
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            self.emit(MapOp::DeleteSlot(k), ops);
        }
        self.table_owner.remove(&table);
        self.maglev_members.remove(&table);
        self.table_pool.release(table);
    }

    fn put_service(&mut self, key: ServiceKey, value: ServiceValue, ops: &mut Vec<MapOp>) {
        if self.view.services.get(&key) != Some(&value) {
            self.emit(MapOp::PutService(key, value), ops);
        }
    }

    /// After a restore: deletes slots of tables no entry owns and slots past their entry's counts.
    fn collect_orphan_slots(&mut self, ops: &mut Vec<MapOp>) {
        let mut stale = Vec::new();
        for k in self.view.slots.keys() {
            let live = self
                .table_owner
                .get(&k.table_id)
                .and_then(|owner| self.view.services.get(owner));
            match live {
                Some(v)
                    if v.table_id == k.table_id
                        && k.slot < v.ready_count.saturating_add(v.terminating_count) => {}
                Some(_) => stale.push(*k),
                None => stale.push(*k),
            }
        }
        for k in stale {
            self.emit(MapOp::DeleteSlot(k), ops);
        }
        // Tables that only orphan slots or a since-corrected service entry referenced.
        let referenced: HashSet<u32> = self.view.services.values().map(|v| v.table_id).collect();
        for t in std::mem::take(&mut self.restored_tables) {
            if self.table_pool.is_used(t) && !self.table_owner.contains_key(&t) && !referenced.contains(&t) {
                self.table_pool.release(t);
            }
        }
    }

    /// Deletes rev-NAT entries no frontend uses: of the touched frontends, or all of them after a restore.
    fn delete_unused_rev_nat(&mut self, touched: &HashSet<Ident>, full: bool, ops: &mut Vec<MapOp>) {
        let mut candidates: Vec<u32> = touched
            .iter()
            .filter_map(|i| self.rev_nat_ids.get(i).copied())
            .collect();
        // After a restore, an entry of a refused Service (kept, but not planned) still points at its rev-NAT id.
        let mut referenced: HashSet<u32> = HashSet::new();
        if full {
            candidates.extend(self.view.rev_nat.keys().chain(self.rev_nat_of.keys()));
            referenced.extend(self.view.services.values().map(|v| u32::from(v.rev_nat_id)));
        }
        candidates.sort_unstable();
        candidates.dedup();
        for id in candidates {
            let used = referenced.contains(&id)
                || self
                    .rev_nat_of
                    .get(&id)
                    .is_some_and(|ident| self.rev_users.contains_key(ident));
            if used {
                continue;
            }
            if self.view.rev_nat.contains_key(&id) {
                self.emit(MapOp::DeleteRevNat(id), ops);
            }
            if let Some(ident) = self.rev_nat_of.remove(&id) {
                self.rev_nat_ids.remove(&ident);
            }
            self.rev_nat_pool.release(id);
        }
    }

    /// Deletes backends no frontend uses and no slot references (purging UDP conntrack first): of the touched
    /// frontends, or all of them after a restore.
    fn delete_unused_backends(&mut self, touched: &HashSet<Ident>, full: bool, ops: &mut Vec<MapOp>) {
        let mut candidates: Vec<u32> = touched
            .iter()
            .filter_map(|i| self.backend_ids.get(i).copied())
            .collect();
        if full {
            candidates.extend(self.view.backends.keys().chain(self.backend_of.keys()));
        }
        candidates.sort_unstable();
        candidates.dedup();
        for id in candidates {
            let used = self
                .backend_of
                .get(&id)
                .is_some_and(|ident| self.backend_users.contains_key(ident));
            if used || self.slot_refs.get(&id).copied().unwrap_or(0) > 0 {
                continue;
            }
            if let Some(b) = self.view.backends.get(&id).copied() {
                if b.proto == PROTO_UDP {
                    self.emit(MapOp::PurgeUdpConntrack(id), ops);
                }
                self.emit(MapOp::DeleteBackend(id), ops);
            }
            if let Some(ident) = self.backend_of.remove(&id) {
                self.backend_ids.remove(&ident);
            }
            self.backend_pool.release(id);
        }
    }

    /// The Maglev table over `members` (backend ids in population order), as backend ids.
    fn maglev_slots(&self, members: &[u32]) -> Vec<u32> {
        let names: Vec<String> = members
            .iter()
            .map(|id| match self.backend_of.get(id) {
                Some(&(addr, port, _)) => {
                    format!("{}:{}", super::state::addr_from_be(addr), u16::from_be(port))
                }
                None => format!("#{id}"),
            })
            .collect();
        maglev::populate(&names, MAGLEV_TABLE_SIZE)
            .into_iter()
            .map(|i| members[i as usize])
            .collect()
    }

    /// Backend ids in slots `[start, start + len)` of `table`; `None` if one is missing.
    fn read_slots(&self, table: u32, start: u32, len: u32) -> Option<Vec<u32>> {
        (start..start.checked_add(len)?)
            .map(|slot| {
                self.view
                    .slots
                    .get(&SlotKey {
                        table_id: table,
                        slot,
                    })
                    .copied()
            })
            .collect()
    }

    /// Applies one op to the view (keeping slot reference counts) and appends it to the plan.
    fn emit(&mut self, op: MapOp, ops: &mut Vec<MapOp>) {
        match op {
            MapOp::PutSlot(k, id) => {
                if let Some(old) = self.view.slots.get(&k).copied() {
                    self.unref(old);
                }
                *self.slot_refs.entry(id).or_default() += 1;
            }
            MapOp::DeleteSlot(k) => {
                if let Some(old) = self.view.slots.get(&k).copied() {
                    self.unref(old);
                }
            }
            _ => {}
        }
        self.view.apply(std::slice::from_ref(&op));
        ops.push(op);
    }

    fn unref(&mut self, id: u32) {
        if let Some(n) = self.slot_refs.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                self.slot_refs.remove(&id);
            }
        }
    }
}

/// Whether `slots` holds exactly the ids (or identities) of `wanted`, each once.
fn same_members<T: Ord + Clone>(slots: &[T], wanted: &[T]) -> bool {
    if slots.len() != wanted.len() {
        return false;
    }
    let mut a = slots.to_vec();
    let mut b = wanted.to_vec();
    a.sort_unstable();
    b.sort_unstable();
    a == b && a.windows(2).all(|w| w[0] != w[1])
}
