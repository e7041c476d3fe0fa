//! Test helpers: frontends built by hand, a seeded generator of desired states, and map invariant checks.
use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::Ipv4Addr,
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use skiff_common::{MAGLEV_TABLE_SIZE, PROTO_UDP, SlotKey, backend_flags, svc_flags};

use super::{
    maglev,
    model::{MapContents, MapOp},
    state::{
        Algorithm, BackendSpec, DataplaneState, Frontend, Protocol, Scope, ServiceRef, addr_be, port_be,
    },
};

pub fn backend(addr: [u8; 4], port: u16, protocol: Protocol, local: bool) -> BackendSpec {
    BackendSpec {
        addr: Ipv4Addr::from(addr),
        port,
        protocol,
        local,
    }
}

/// A ClusterIP-like internal frontend with the given backends.
pub fn frontend(
    vip: [u8; 4],
    port: u16,
    protocol: Protocol,
    ready: Vec<BackendSpec>,
    terminating: Vec<BackendSpec>,
) -> Frontend {
    Frontend {
        addr: Ipv4Addr::from(vip),
        port,
        protocol,
        scope: Scope::Internal,
        flags: 0,
        affinity_timeout_s: 0,
        algorithm: Algorithm::Random,
        ready,
        terminating,
        origin: ServiceRef {
            namespace: "default".into(),
            name: format!("svc-{}", vip[3]).into(),
            port_name: "".into(),
            port,
        },
    }
}

pub fn maglev_frontend(mut f: Frontend) -> Frontend {
    f.algorithm = Algorithm::Maglev;
    f.flags |= svc_flags::MAGLEV;
    f
}

/// Seeded generator of desired states over small pools, so that changes overlap and collide often.
pub struct Generator {
    rng: StdRng,
    pub maglev_probability: f64,
}

impl Generator {
    pub fn new(seed: u64) -> Generator {
        Generator {
            rng: StdRng::seed_from_u64(seed),
            maglev_probability: 0.0,
        }
    }

    pub fn state(&mut self) -> DataplaneState {
        let mut frontends = Vec::new();
        for vip in 1..=6u8 {
            if !self.rng.random_bool(0.7) {
                continue;
            }
            for (port, protocol) in [(80u16, Protocol::Tcp), (53, Protocol::Udp), (80, Protocol::Udp)] {
                if !self.rng.random_bool(0.5) {
                    continue;
                }
                let mut ready = Vec::new();
                let mut terminating = Vec::new();
                for host in 1..=10u8 {
                    match self.rng.random_range(0..4) {
                        0 => ready.push(backend([10, 244, 0, host], 8080, protocol, host % 3 == 0)),
                        1 if self.rng.random_bool(0.3) => {
                            terminating.push(backend([10, 244, 0, host], 8080, protocol, host % 3 == 0))
                        }
                        _ => {}
                    }
                }
                let mut f = frontend([10, 96, 0, vip], port, protocol, ready, terminating);
                if self.rng.random_bool(0.3) {
                    f.affinity_timeout_s = 10_800;
                }
                if self.rng.random_bool(0.2) {
                    f.scope = Scope::External;
                    f.flags |= svc_flags::EXTERNAL_IP;
                }
                if self.rng.random_bool(self.maglev_probability) {
                    f = maglev_frontend(f);
                }
                frontends.push(f);
            }
        }
        DataplaneState::from_frontends(frontends)
    }

    /// A copy of `state` with one backend of one frontend added, removed or made terminating.
    pub fn small_change(&mut self, state: &DataplaneState) -> DataplaneState {
        let mut next = state.clone();
        if next.frontends.is_empty() {
            return next;
        }
        let i = self.rng.random_range(0..next.frontends.len());
        let f = &mut next.frontends[i];
        let host = self.rng.random_range(1..=10u8);
        let b = backend([10, 244, 0, host], 8080, f.protocol, host % 3 == 0);
        if let Some(pos) = f.ready.iter().position(|x| x.addr == b.addr) {
            let removed = f.ready.remove(pos);
            if self.rng.random_bool(0.5) {
                f.terminating.push(removed);
                f.terminating.sort();
            }
        } else if let Some(pos) = f.terminating.iter().position(|x| x.addr == b.addr) {
            f.terminating.remove(pos);
        } else {
            f.ready.push(b);
            f.ready.sort();
        }
        next
    }
}

/// Panics unless the datapath could run against `m` right now: every service entry's slots `[0, ready +
/// terminating)` exist and point at existing backends, and its rev-NAT entry exists.
pub fn assert_consistent(m: &MapContents, context: &str) {
    for (key, v) in &m.services {
        assert!(
            v.rev_nat_id != 0 && m.rev_nat.contains_key(&u32::from(v.rev_nat_id)),
            "{context}: {key:?} rev-NAT"
        );
        for slot in 0..v.ready_count + v.terminating_count {
            let k = SlotKey {
                table_id: v.table_id,
                slot,
            };
            let Some(id) = m.slots.get(&k) else {
                panic!("{context}: {key:?} misses slot {k:?}");
            };
            assert!(
                m.backends.contains_key(id),
                "{context}: {key:?} slot {slot} -> missing backend {id}"
            );
        }
    }
}

/// Applies `ops` one at a time and checks consistency after each; also checks that a UDP conntrack purge only
/// happens once no slot references the backend. Returns the final contents.
pub fn apply_checked(before: &MapContents, ops: &[MapOp], full_check: bool) -> MapContents {
    let mut m = before.clone();
    for (i, op) in ops.iter().enumerate() {
        m.apply(std::slice::from_ref(op));
        let context = format!("after op {i} {op:?}");
        match op {
            MapOp::PurgeUdpConntrack(id) => {
                assert!(
                    !m.slots.values().any(|s| s == id),
                    "{context}: backend still in a slot"
                );
                assert_eq!(
                    m.backends.get(id).map(|b| b.proto),
                    Some(PROTO_UDP),
                    "{context}: purge of a non-UDP backend"
                );
            }
            MapOp::DeleteBackend(id) => {
                assert!(
                    !m.slots.values().any(|s| s == id),
                    "{context}: backend still in a slot"
                );
            }
            _ => {}
        }
        if full_check {
            assert_consistent(&m, &context);
        } else {
            assert_still_consistent(&m, op, &context);
        }
    }
    assert_consistent(&m, "after the plan");
    m
}

/// The part of `assert_consistent` one op can break, given the maps were consistent before it.
fn assert_still_consistent(m: &MapContents, op: &MapOp, context: &str) {
    match *op {
        MapOp::PutSlot(_, id) => assert!(m.backends.contains_key(&id), "{context}: slot to missing backend"),
        MapOp::PutService(key, v) => {
            let one = MapContents {
                services: [(key, v)].into(),
                backends: m.backends.clone(),
                slots: m.slots.clone(),
                rev_nat: m.rev_nat.clone(),
            };
            assert_consistent(&one, context);
        }
        MapOp::DeleteSlot(k) => {
            for (key, v) in &m.services {
                let used = v.table_id == k.table_id && k.slot < v.ready_count + v.terminating_count;
                assert!(!used, "{context}: slot still used by {key:?}");
            }
        }
        MapOp::DeleteRevNat(id) => {
            assert!(
                !m.services.values().any(|v| u32::from(v.rev_nat_id) == id),
                "{context}: rev-NAT still used"
            );
        }
        _ => {}
    }
}

/// Panics unless `m` expresses exactly `desired`: same entries and flags, each table holding exactly the desired
/// backends (or their Maglev table), nothing left over, and every id >= 1.
pub fn assert_expresses(m: &MapContents, desired: &DataplaneState) {
    let keys: BTreeSet<_> = desired.frontends.iter().map(|f| f.key()).collect();
    assert_eq!(
        m.services.keys().copied().collect::<BTreeSet<_>>(),
        keys,
        "service entries"
    );
    let ident = |b: &BackendSpec| (addr_be(b.addr), port_be(b.port), b.protocol.number());
    let mut wanted_backends = BTreeMap::new();
    let mut tables = HashSet::new();
    let mut slot_total = 0usize;
    for f in &desired.frontends {
        let v = m.services[&f.key()];
        assert_eq!(
            (v.flags, v.affinity_timeout_s),
            (f.flags, f.affinity_timeout_s),
            "{:?}",
            f.key()
        );
        let rn = m.rev_nat[&u32::from(v.rev_nat_id)];
        assert_eq!((rn.addr_be, rn.port_be), (addr_be(f.addr), port_be(f.port)));
        assert!(v.table_id >= 1 && v.rev_nat_id >= 1);
        assert!(tables.insert(v.table_id), "table {} shared", v.table_id);
        for b in f.ready.iter().chain(&f.terminating) {
            let flags: &mut u8 = wanted_backends.entry(ident(b)).or_default();
            if b.local {
                *flags |= backend_flags::LOCAL;
            }
        }
        let slot = |i: u32| {
            let id = m.slots[&SlotKey {
                table_id: v.table_id,
                slot: i,
            }];
            let b = m.backends[&id];
            (b.addr_be, b.port_be, b.proto)
        };
        if f.is_maglev() {
            let active = f.active_backends();
            let expected_count = if active.is_empty() { 0 } else { MAGLEV_TABLE_SIZE };
            assert_eq!((v.ready_count, v.terminating_count), (expected_count, 0));
            let names: Vec<String> = active.iter().map(|b| format!("{}:{}", b.addr, b.port)).collect();
            let table = maglev::populate(&names, MAGLEV_TABLE_SIZE);
            for (i, idx) in table.iter().enumerate() {
                assert_eq!(slot(i as u32), ident(&active[*idx as usize]), "maglev slot {i}");
            }
        } else {
            assert_eq!(
                (v.ready_count as usize, v.terminating_count as usize),
                (f.ready.len(), f.terminating.len())
            );
            let mut got: Vec<_> = (0..v.ready_count).map(slot).collect();
            got.sort();
            assert_eq!(
                got,
                f.ready.iter().map(ident).collect::<Vec<_>>(),
                "ready slots of {:?}",
                f.key()
            );
            let mut got: Vec<_> = (v.ready_count..v.ready_count + v.terminating_count)
                .map(slot)
                .collect();
            got.sort();
            assert_eq!(
                got,
                f.terminating.iter().map(ident).collect::<Vec<_>>(),
                "terminating slots"
            );
        }
        slot_total += (v.ready_count + v.terminating_count) as usize;
    }
    assert_eq!(m.slots.len(), slot_total, "leftover slots");
    let got: BTreeMap<_, _> = m
        .backends
        .values()
        .map(|b| ((b.addr_be, b.port_be, b.proto), b.flags))
        .collect();
    assert_eq!(got.len(), m.backends.len(), "duplicate backends");
    assert_eq!(got, wanted_backends, "backends");
    assert!(!m.backends.contains_key(&0));
    let used_rev: BTreeSet<u32> = m.services.values().map(|v| u32::from(v.rev_nat_id)).collect();
    assert_eq!(
        m.rev_nat.keys().copied().collect::<BTreeSet<_>>(),
        used_rev,
        "leftover rev-NAT entries"
    );
}
