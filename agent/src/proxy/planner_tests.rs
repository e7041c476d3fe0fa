//! Planner tests: plans reach the desired maps, keep the datapath consistent after every op, and cost little.
use skiff_common::{MAGLEV_TABLE_SIZE, PROTO_UDP, SlotKey};

use super::{
    model::{MapContents, MapOp},
    planner::Planner,
    state::{DataplaneState, Protocol},
    testkit::*,
};

fn web(ready: &[u8], terminating: &[u8]) -> DataplaneState {
    let b = |h: &u8| backend([10, 244, 0, *h], 8080, Protocol::Tcp, false);
    DataplaneState::from_frontends(vec![frontend(
        [10, 96, 0, 10],
        80,
        Protocol::Tcp,
        ready.iter().map(b).collect(),
        terminating.iter().map(b).collect(),
    )])
}

/// Plans `desired`, checks every op against the datapath invariants, the result against `desired`, and the
/// planner's view against the applied ops.
fn step(p: &mut Planner, maps: &mut MapContents, desired: &DataplaneState, full_check: bool) -> Vec<MapOp> {
    let ops = p.plan(desired);
    *maps = apply_checked(maps, &ops, full_check);
    assert_expresses(maps, desired);
    assert_eq!(p.contents(), maps, "planner view differs from the applied ops");
    ops
}

#[test]
fn first_plan_orders_backends_slots_then_service() {
    let mut p = Planner::default();
    let ops = p.plan(&web(&[1, 2], &[]));
    let kinds: Vec<&str> = ops
        .iter()
        .map(|op| match op {
            MapOp::PutBackend(..) => "backend",
            MapOp::PutRevNat(..) => "revnat",
            MapOp::PutSlot(..) => "slot",
            MapOp::PutService(..) => "service",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["backend", "backend", "revnat", "slot", "slot", "service"]);
    // Ids start at 1.
    assert!(matches!(ops[0], MapOp::PutBackend(1, _)));
    assert!(matches!(ops[2], MapOp::PutRevNat(1, _)));
}

#[test]
fn unchanged_state_emits_nothing() {
    let mut p = Planner::default();
    let mut maps = MapContents::default();
    let desired = web(&[1, 2, 3], &[4]);
    step(&mut p, &mut maps, &desired, true);
    assert!(p.plan(&desired).is_empty());
}

#[test]
fn restore_then_same_state_emits_nothing() {
    let mut generator = Generator::new(7);
    generator.maglev_probability = 0.2;
    for _ in 0..5 {
        let desired = generator.state();
        let mut p = Planner::default();
        let mut maps = MapContents::default();
        step(&mut p, &mut maps, &desired, false);
        let mut restored = Planner::restore(maps.clone());
        assert_eq!(
            restored.plan(&desired),
            vec![],
            "restored planner replanned an unchanged state"
        );
        // And it keeps allocating sanely afterwards.
        let next = generator.state();
        step(&mut restored, &mut maps, &next, false);
    }
}

#[test]
fn one_endpoint_change_costs_constant_ops() {
    let mut p = Planner::default();
    let mut maps = MapContents::default();
    let hosts: Vec<u8> = (1..=50).collect();
    step(&mut p, &mut maps, &web(&hosts, &[]), true);
    // Add one: backend, slot, service.
    let mut more = hosts.clone();
    more.push(51);
    assert_eq!(step(&mut p, &mut maps, &web(&more, &[]), true).len(), 3);
    // Remove one from the middle: last slot moves into its place, count shrinks, last slot and backend go.
    let mut fewer = more.clone();
    fewer.retain(|h| *h != 20);
    let ops = step(&mut p, &mut maps, &web(&fewer, &[]), true);
    assert_eq!(ops.len(), 4, "{ops:?}");
    assert!(matches!(ops.last(), Some(MapOp::DeleteBackend(_))));
    // Replace one: one slot write (+ backend put and delete).
    let mut swapped = fewer.clone();
    swapped[0] = 99;
    swapped.sort();
    assert_eq!(step(&mut p, &mut maps, &web(&swapped, &[]), true).len(), 3);
}

#[test]
fn shrinking_updates_the_count_before_deleting_slots() {
    let mut p = Planner::default();
    let mut maps = MapContents::default();
    step(&mut p, &mut maps, &web(&[1, 2, 3], &[]), true);
    let ops = step(&mut p, &mut maps, &web(&[1], &[]), true);
    let service = ops
        .iter()
        .position(|o| matches!(o, MapOp::PutService(..)))
        .expect("service update");
    let first_delete = ops
        .iter()
        .position(|o| matches!(o, MapOp::DeleteSlot(..)))
        .expect("slot deletes");
    assert!(service < first_delete, "{ops:?}");
}

#[test]
fn terminating_backends_stay_while_serving() {
    let mut p = Planner::default();
    let mut maps = MapContents::default();
    step(&mut p, &mut maps, &web(&[1, 2], &[]), true);
    let id_of_2 = *maps
        .backends
        .iter()
        .find(|(_, b)| b.addr_be == u32::from_ne_bytes([10, 244, 0, 2]))
        .unwrap()
        .0;
    step(&mut p, &mut maps, &web(&[1], &[2]), true);
    assert!(
        maps.backends.contains_key(&id_of_2),
        "a terminating backend keeps its id for existing flows"
    );
    step(&mut p, &mut maps, &web(&[], &[2]), true);
    step(&mut p, &mut maps, &web(&[], &[]), true);
    assert!(maps.backends.is_empty() && maps.slots.is_empty());
    assert_eq!(
        maps.services.len(),
        1,
        "a service without endpoints stays (new flows are rejected)"
    );
}

#[test]
fn removed_udp_backend_is_purged_after_leaving_every_slot() {
    let udp = |hosts: &[u8]| {
        DataplaneState::from_frontends(vec![frontend(
            [10, 96, 0, 53],
            53,
            Protocol::Udp,
            hosts
                .iter()
                .map(|h| backend([10, 244, 0, *h], 53, Protocol::Udp, false))
                .collect(),
            vec![],
        )])
    };
    let mut p = Planner::default();
    let mut maps = MapContents::default();
    step(&mut p, &mut maps, &udp(&[1, 2]), true);
    let ops = step(&mut p, &mut maps, &udp(&[1]), true);
    let purge = ops
        .iter()
        .position(|o| matches!(o, MapOp::PurgeUdpConntrack(_)))
        .expect("purge");
    let delete = ops
        .iter()
        .position(|o| matches!(o, MapOp::DeleteBackend(_)))
        .expect("delete");
    assert!(purge < delete);
    let slot_ops = ops
        .iter()
        .rposition(|o| matches!(o, MapOp::DeleteSlot(_) | MapOp::PutSlot(..)))
        .unwrap();
    assert!(slot_ops < purge);
    // apply_checked verified no slot referenced the backend at purge time.
    assert!(maps.backends.values().all(|b| b.proto == PROTO_UDP));
}

#[test]
fn maglev_tables_are_swapped_under_a_fresh_id() {
    let mg = |hosts: &[u8]| {
        DataplaneState::from_frontends(vec![maglev_frontend(frontend(
            [10, 96, 0, 9],
            80,
            Protocol::Tcp,
            hosts
                .iter()
                .map(|h| backend([10, 244, 0, *h], 80, Protocol::Tcp, false))
                .collect(),
            vec![],
        ))])
    };
    let mut p = Planner::default();
    let mut maps = MapContents::default();
    step(&mut p, &mut maps, &mg(&[1, 2, 3]), false);
    let old_table = maps.services.values().next().unwrap().table_id;
    assert_eq!(maps.slots.len(), MAGLEV_TABLE_SIZE as usize);
    let ops = step(&mut p, &mut maps, &mg(&[1, 2, 3, 4]), false);
    let v = *maps.services.values().next().unwrap();
    assert_ne!(v.table_id, old_table);
    let swap = ops
        .iter()
        .position(|o| matches!(o, MapOp::PutService(..)))
        .unwrap();
    assert!(ops[..swap].iter().all(|o| !matches!(o, MapOp::DeleteSlot(_))));
    assert!(
        ops[swap + 1..]
            .iter()
            .all(|o| matches!(o, MapOp::DeleteSlot(SlotKey { table_id, .. }) if *table_id == old_table))
    );
    assert_eq!(maps.slots.len(), MAGLEV_TABLE_SIZE as usize);
    assert!(p.plan(&mg(&[1, 2, 3, 4])).is_empty());
}

#[test]
fn freed_backend_ids_are_not_reused_at_once() {
    // An established flow's conntrack entry still names backend 2 after it left: a new backend must not get id 2.
    let mut p = Planner::default();
    let mut maps = MapContents::default();
    step(&mut p, &mut maps, &web(&[1, 2, 3], &[]), true);
    step(&mut p, &mut maps, &web(&[1, 3], &[]), true);
    step(&mut p, &mut maps, &web(&[1, 3, 4], &[]), true);
    let mut ids: Vec<u32> = maps.backends.keys().copied().collect();
    ids.sort();
    assert_eq!(ids, vec![1, 3, 4]);
}

#[test]
fn describe_service_names_the_origin() {
    let mut p = Planner::default();
    let desired = web(&[1], &[]);
    p.plan(&desired);
    let key = desired.frontends[0].key();
    assert_eq!(p.describe_service(&key).as_deref(), Some("default/svc-10:80"));
}

#[test]
fn restore_cleans_up_orphans() {
    let mut p = Planner::default();
    let mut maps = MapContents::default();
    step(&mut p, &mut maps, &web(&[1, 2], &[]), true);
    // Garbage a crashed writer could leave: a slot past the count, a table nobody uses, an unused rev-NAT entry
    // and an unreferenced backend.
    let table = maps.services.values().next().unwrap().table_id;
    let b = *maps.backends.values().next().unwrap();
    maps.slots.insert(
        SlotKey {
            table_id: table,
            slot: 7,
        },
        1,
    );
    maps.slots.insert(
        SlotKey {
            table_id: 40,
            slot: 0,
        },
        1,
    );
    maps.rev_nat.insert(9, skiff_common::RevNat::default());
    maps.backends
        .insert(30, skiff_common::Backend { port_be: 1, ..b });
    let mut restored = Planner::restore(maps.clone());
    step(&mut restored, &mut maps, &web(&[1, 2], &[]), true);
    assert!(restored.plan(&web(&[1, 2], &[])).is_empty());
}

/// Randomized sequences of desired states (random tables only), checking the full invariant after every op.
#[test]
fn random_sequences_stay_consistent() {
    for seed in 0..40 {
        let mut g = Generator::new(seed);
        let mut p = Planner::default();
        let mut maps = MapContents::default();
        let mut state = g.state();
        for round in 0..30 {
            step(&mut p, &mut maps, &state, true);
            if round % 7 == 3 {
                // A restart in the middle of the sequence.
                p = Planner::restore(maps.clone());
                assert!(
                    p.plan(&state).is_empty(),
                    "seed {seed} round {round}: restore replanned"
                );
            }
            state = if round % 3 == 0 {
                g.state()
            } else {
                g.small_change(&state)
            };
        }
    }
}

/// The same with Maglev frontends mixed in (per-op checks are incremental: each op checked for what it can break).
#[test]
fn random_sequences_with_maglev_stay_consistent() {
    for seed in 100..104 {
        let mut g = Generator::new(seed);
        g.maglev_probability = 0.15;
        let mut p = Planner::default();
        let mut maps = MapContents::default();
        let mut state = g.state();
        for round in 0..8 {
            step(&mut p, &mut maps, &state, false);
            if round == 4 {
                p = Planner::restore(maps.clone());
                assert!(p.plan(&state).is_empty());
            }
            state = if round % 2 == 0 {
                g.state()
            } else {
                g.small_change(&state)
            };
        }
    }
}

/// Capacity: small maps, so that Services stop fitting.
mod capacity {
    use super::*;
    use crate::proxy::{
        capacity::{Limits, Resource},
        state::Frontend,
    };

    fn limits(services: u32, backends: u32, slots: u32) -> Limits {
        Limits {
            services,
            backends,
            slots,
            rev_nat: 64,
        }
    }

    /// A Service `svc-<vip>` (one ClusterIP frontend) with `n` ready backends `10.244.<vip>.1..=n`.
    fn svc(vip: u8, n: u8) -> Frontend {
        let ready = (1..=n)
            .map(|h| backend([10, 244, vip, h], 8080, Protocol::Tcp, false))
            .collect();
        frontend([10, 96, 0, vip], 80, Protocol::Tcp, ready, vec![])
    }

    fn state(fes: &[Frontend]) -> DataplaneState {
        DataplaneState::from_frontends(fes.to_vec())
    }

    /// Plans `desired` and checks the maps then express `expected` (what fits) and stay within `l`.
    fn step_within(
        p: &mut Planner,
        maps: &mut MapContents,
        desired: &[Frontend],
        expected: &[Frontend],
        l: Limits,
    ) {
        let ops = p.plan(&state(desired));
        *maps = apply_checked(maps, &ops, true);
        assert_expresses(maps, &state(expected));
        assert_eq!(p.contents(), maps);
        assert!(
            maps.services.len() <= l.services as usize,
            "services over the limit"
        );
        assert!(
            maps.backends.len() <= l.backends as usize,
            "backends over the limit"
        );
        assert!(maps.slots.len() <= l.slots as usize, "slots over the limit");
        assert!(
            maps.backends.keys().all(|&id| id >= 1 && id <= l.backends),
            "backend id out of range"
        );
    }

    #[test]
    fn a_new_service_too_large_is_refused_and_the_others_are_programmed() {
        let l = limits(16, 8, 64);
        let mut p = Planner::restore_with_limits(MapContents::default(), l);
        let mut maps = MapContents::default();
        let (small, big, other) = (svc(1, 3), svc(2, 6), svc(3, 2));
        step_within(
            &mut p,
            &mut maps,
            &[small.clone(), big.clone(), other.clone()],
            &[small.clone(), other.clone()],
            l,
        );
        let refused = p.take_new_refusals();
        assert_eq!(refused.len(), 1, "{refused:?}");
        let r = &refused[0];
        assert_eq!(
            (r.namespace.as_str(), r.name.as_str(), r.endpoints),
            ("default", "svc-2", 6)
        );
        assert_eq!(r.shortfall.resource, Resource::Backends);
        assert_eq!(
            (r.shortfall.needed, r.shortfall.free, r.shortfall.limit),
            (6, 5, 8)
        );
        assert!(!r.kept_previous);
        assert_eq!(p.refused().count(), 1);
        // Planning the same again: nothing to write, and the refusal is not reported twice.
        assert!(p.plan(&state(&[small, big, other])).is_empty());
        assert!(p.take_new_refusals().is_empty());
        assert_eq!(p.refused().count(), 1);
    }

    #[test]
    fn an_existing_service_growing_too_large_keeps_its_programming_and_recovers_when_it_shrinks() {
        let l = limits(16, 8, 64);
        let mut p = Planner::restore_with_limits(MapContents::default(), l);
        let mut maps = MapContents::default();
        let (a, b) = (svc(1, 4), svc(2, 2));
        step_within(
            &mut p,
            &mut maps,
            &[a.clone(), b.clone()],
            &[a.clone(), b.clone()],
            l,
        );
        let before = maps.clone();
        // a grows past what is left (2 free backend ids): nothing of it is written, b changes normally.
        let (a_big, b2) = (svc(1, 8), svc(2, 1));
        let ops = p.plan(&state(&[a_big.clone(), b2.clone()]));
        maps = apply_checked(&maps, &ops, true);
        assert_expresses(&maps, &state(&[a.clone(), b2.clone()]));
        let a_key = a.key();
        assert_eq!(
            maps.services[&a_key], before.services[&a_key],
            "refused service entry changed"
        );
        let refused = p.take_new_refusals();
        assert_eq!(refused.len(), 1);
        assert!(
            refused[0].kept_previous && refused[0].name == "svc-1",
            "{refused:?}"
        );
        // Still too large on the next plan, even with b's freed backend: kept, not reported again.
        let ops = p.plan(&state(&[a_big.clone(), b2.clone()]));
        maps = apply_checked(&maps, &ops, true);
        assert_expresses(&maps, &state(&[a.clone(), b2.clone()]));
        assert!(p.take_new_refusals().is_empty());
        // It shrinks to a size that fits: programmed, no longer refused.
        let a_small = svc(1, 5);
        step_within(
            &mut p,
            &mut maps,
            &[a_small.clone(), b2.clone()],
            &[a_small, b2],
            l,
        );
        assert_eq!(p.refused().count(), 0);
    }

    #[test]
    fn a_full_services_map_refuses_new_frontends_until_one_is_removed() {
        let l = limits(2, 64, 64);
        let mut p = Planner::restore_with_limits(MapContents::default(), l);
        let mut maps = MapContents::default();
        let (a, b, c) = (svc(1, 1), svc(2, 1), svc(3, 1));
        step_within(
            &mut p,
            &mut maps,
            &[a.clone(), b.clone(), c.clone()],
            &[a.clone(), b.clone()],
            l,
        );
        let refused = p.take_new_refusals();
        assert_eq!(refused.len(), 1);
        assert_eq!(
            (refused[0].name.as_str(), refused[0].shortfall.resource),
            ("svc-3", Resource::Services)
        );
        // a is removed (delta): the entry is deleted after the puts, so c fits from the next plan on.
        let ops = p.plan_delta(&[], &[a.key()]);
        maps = apply_checked(&maps, &ops, true);
        assert_expresses(&maps, &state(std::slice::from_ref(&b)));
        // Any later plan (here an empty delta) tries the refused Service again.
        let ops = p.plan_delta(&[], &[]);
        maps = apply_checked(&maps, &ops, true);
        assert_expresses(&maps, &state(&[b, c]));
        assert_eq!(p.refused().count(), 0);
    }

    #[test]
    fn slots_are_checked_for_the_whole_new_table_and_only_growth_in_place() {
        let l = limits(16, 64, 10);
        let mut p = Planner::restore_with_limits(MapContents::default(), l);
        let mut maps = MapContents::default();
        let a = svc(1, 6);
        step_within(
            &mut p,
            &mut maps,
            std::slice::from_ref(&a),
            std::slice::from_ref(&a),
            l,
        );
        // Growing by 2 in place needs 2 of the 4 free slots.
        let a8 = svc(1, 8);
        step_within(
            &mut p,
            &mut maps,
            std::slice::from_ref(&a8),
            std::slice::from_ref(&a8),
            l,
        );
        // A second Service needing 3 slots does not fit in the 2 left.
        let b = svc(2, 3);
        step_within(
            &mut p,
            &mut maps,
            &[a8.clone(), b.clone()],
            std::slice::from_ref(&a8),
            l,
        );
        let r = p.take_new_refusals();
        assert_eq!(
            (
                r[0].shortfall.resource,
                r[0].shortfall.needed,
                r[0].shortfall.free
            ),
            (Resource::Slots, 3, 2)
        );
    }

    #[test]
    fn a_refused_service_survives_a_restart() {
        let l = limits(16, 8, 64);
        let mut p = Planner::restore_with_limits(MapContents::default(), l);
        let mut maps = MapContents::default();
        let (a, b) = (svc(1, 4), svc(2, 3));
        step_within(
            &mut p,
            &mut maps,
            &[a.clone(), b.clone()],
            &[a.clone(), b.clone()],
            l,
        );
        let a_big = svc(1, 8);
        let ops = p.plan(&state(&[a_big.clone(), b.clone()]));
        maps = apply_checked(&maps, &ops, true);
        // Restart: the restored planner refuses a again and keeps what is pinned for it, rev-NAT entry included.
        let mut restored = Planner::restore_with_limits(maps.clone(), l);
        let ops = restored.plan(&state(&[a_big, b.clone()]));
        maps = apply_checked(&maps, &ops, true);
        assert_expresses(&maps, &state(&[a, b]));
        assert_eq!(restored.refused().count(), 1);
        assert!(restored.take_new_refusals()[0].kept_previous);
    }
}
