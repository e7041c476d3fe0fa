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
