//! Invariants of planned map contents: the datapath could run against them, they fit the maps, and they express
//! the desired state (every frontend's table holds exactly its backends).
use std::collections::{BTreeMap, BTreeSet};

use skiff_agent::proxy::{
    model::{MapContents, MapOp},
    state::{BackendSpec, DataplaneState, addr_be, port_be},
};
use skiff_common::{MAGLEV_TABLE_SIZE, SlotKey, sizes};

type Ident = (u32, u16, u8);

fn ident(b: &BackendSpec) -> Ident {
    (addr_be(b.addr), port_be(b.port), b.protocol.number())
}

/// Panics unless every service entry's slots exist and name existing backends and its rev-NAT entry exists.
pub fn assert_consistent(m: &MapContents, context: &str) {
    for (key, v) in &m.services {
        assert!(
            v.rev_nat_id != 0 && m.rev_nat.contains_key(&u32::from(v.rev_nat_id)),
            "{context}: {key:?} has no rev-NAT entry"
        );
        for slot in 0..v.ready_count + v.terminating_count {
            let k = SlotKey {
                table_id: v.table_id,
                slot,
            };
            let id = m
                .slots
                .get(&k)
                .unwrap_or_else(|| panic!("{context}: {key:?} misses slot {k:?}"));
            assert!(
                m.backends.contains_key(id),
                "{context}: {key:?} slot {slot} names missing backend {id}"
            );
        }
    }
}

/// Applies `ops` one by one from `before`, checking consistency after each; returns the final contents.
pub fn apply_checked(before: &MapContents, ops: &[MapOp]) -> MapContents {
    let mut m = before.clone();
    for (i, op) in ops.iter().enumerate() {
        m.apply(std::slice::from_ref(op));
        if let MapOp::DeleteBackend(id) | MapOp::PurgeUdpConntrack(id) = op {
            assert!(
                !m.slots.values().any(|s| s == id),
                "op {i} {op:?}: backend still in a slot"
            );
        }
        assert_consistent(&m, &format!("after op {i} {op:?}"));
    }
    m
}

/// Panics unless the contents fit the map sizes the datapath declares.
pub fn assert_within_limits(m: &MapContents) {
    assert!(
        m.services.len() <= sizes::SERVICES as usize,
        "services map overflows"
    );
    assert!(
        m.backends.len() <= sizes::BACKENDS as usize,
        "backends map overflows"
    );
    assert!(m.slots.len() <= sizes::SLOTS as usize, "slots map overflows");
    assert!(
        m.rev_nat.len() <= sizes::REV_NAT as usize,
        "rev-NAT map overflows"
    );
    assert!(
        m.backends.keys().all(|id| *id != 0 && *id <= sizes::BACKENDS),
        "backend id out of range"
    );
    assert!(
        m.rev_nat.keys().all(|id| *id != 0 && *id <= u32::from(u16::MAX)),
        "rev-NAT id out of range"
    );
}

/// Panics unless `m` expresses `desired`: the same service entries, each table holding exactly its frontend's
/// backends (the Maglev table over the active ones), no backend nothing uses.
pub fn assert_expresses(m: &MapContents, desired: &DataplaneState) {
    let keys: BTreeSet<_> = desired.frontends.iter().map(|f| f.key()).collect();
    assert_eq!(
        m.services.keys().copied().collect::<BTreeSet<_>>(),
        keys,
        "service entries"
    );
    let mut used: BTreeSet<Ident> = BTreeSet::new();
    let mut slots = 0usize;
    for f in &desired.frontends {
        let v = m.services[&f.key()];
        assert_eq!(v.flags, f.flags, "{:?} flags", f.key());
        let slot = |i: u32| {
            let id = m.slots[&SlotKey {
                table_id: v.table_id,
                slot: i,
            }];
            let b = m.backends[&id];
            (b.addr_be, b.port_be, b.proto)
        };
        let want_all: Vec<Ident> = f.ready.iter().chain(&f.terminating).map(ident).collect();
        used.extend(want_all.iter().copied());
        if f.is_maglev() {
            let active: BTreeSet<Ident> = f.active_backends().iter().map(ident).collect();
            let expected = if active.is_empty() { 0 } else { MAGLEV_TABLE_SIZE };
            assert_eq!(
                (v.ready_count, v.terminating_count),
                (expected, 0),
                "{:?}",
                f.key()
            );
            let got: BTreeSet<Ident> = (0..v.ready_count).map(slot).collect();
            assert_eq!(got, active, "maglev table of {:?}", f.key());
        } else {
            assert_eq!(
                (v.ready_count as usize, v.terminating_count as usize),
                (f.ready.len(), f.terminating.len()),
                "{:?} counts",
                f.key()
            );
            let mut got: Vec<Ident> = (0..v.ready_count + v.terminating_count).map(slot).collect();
            let mut want = want_all;
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(got, want, "slots of {:?}", f.key());
        }
        slots += (v.ready_count + v.terminating_count) as usize;
    }
    assert_eq!(m.slots.len(), slots, "leftover slots");
    let backends: BTreeMap<Ident, u32> = m
        .backends
        .iter()
        .map(|(id, b)| ((b.addr_be, b.port_be, b.proto), *id))
        .collect();
    assert_eq!(backends.len(), m.backends.len(), "one backend under two ids");
    assert_eq!(
        backends.keys().copied().collect::<BTreeSet<_>>(),
        used,
        "backends"
    );
}

/// Panics unless each frontend lists its backends sorted and once per address, with the frontend's protocol.
pub fn assert_well_formed(desired: &DataplaneState) {
    for f in &desired.frontends {
        for list in [&f.ready, &f.terminating] {
            assert!(
                list.windows(2).all(|w| w[0].addr < w[1].addr),
                "{:?}: unsorted or repeated",
                f.key()
            );
            assert!(
                list.iter().all(|b| b.protocol == f.protocol),
                "{:?}: protocol",
                f.key()
            );
        }
        let ready: BTreeSet<_> = f.ready.iter().map(|b| b.addr).collect();
        assert!(
            f.terminating.iter().all(|b| !ready.contains(&b.addr)),
            "{:?}: an address both ready and terminating",
            f.key()
        );
    }
    assert!(
        desired.frontends.windows(2).all(|w| w[0].key() < w[1].key()),
        "frontends unsorted or repeated"
    );
}
