use super::*;

fn ts(secs: i64) -> Option<Timestamp> {
    Some(Timestamp::from_second(1_800_000_000 + secs).unwrap())
}

fn rs(name: &str, age: i64, revision: i64, replicas: i32, available: i32) -> Rs {
    Rs {
        name: name.to_owned(),
        created: ts(age),
        revision,
        replicas,
        desired_annotation: None,
        max_annotation: None,
        pods: replicas,
        ready: available,
        available,
        present: replicas,
    }
}

fn rolling_strategy(surge: i32, unavailable: i32) -> Strategy {
    Strategy {
        kind: Kind::RollingUpdate,
        max_surge: surge,
        max_unavailable: unavailable,
    }
}

/// Applies `plan` to the simulated cluster: sizes change, pods appear or vanish at once (new ones not ready).
fn apply(plan: &Plan, new: &mut Option<Rs>, old: &mut [Rs]) {
    if let Some(size) = plan.create_new {
        *new = Some(Rs {
            name: "new".to_owned(),
            created: ts(100),
            revision: 2,
            replicas: size,
            pods: size,
            present: size,
            ..Rs::default()
        });
    }
    for s in &plan.scales {
        let rs = new
            .iter_mut()
            .chain(old.iter_mut())
            .find(|r| r.name == s.name)
            .expect("scaled ReplicaSet exists");
        assert_eq!(rs.replicas, s.from);
        rs.replicas = s.to;
        rs.pods = s.to;
        rs.present = s.to;
        // Removing pods removes not-ready ones first.
        rs.available = rs.available.min(s.to);
        rs.ready = rs.available;
    }
}

/// Drives a rolling update to completion, making one new pod available per step (the "kubelet"), and checks
/// the bounds after every step. Returns (new size, old size) after each step.
fn drive(replicas: i32, surge: i32, unavailable: i32) -> Vec<(i32, i32)> {
    let s = rolling_strategy(surge, unavailable);
    let mut old = vec![rs("old", 0, 1, replicas, replicas)];
    let mut new: Option<Rs> = None;
    let mut steps = Vec::new();
    for _ in 0..200 {
        let plan = rolling(&s, replicas, new.as_ref(), &old);
        apply(&plan, &mut new, &mut old);
        let n = new.clone().unwrap();
        let pods = n.pods + old[0].pods;
        let available = n.available + old[0].available;
        assert!(pods <= replicas + surge, "{pods} pods exceed {replicas}+{surge}");
        assert!(
            available >= replicas - unavailable,
            "{available} available < {replicas}-{unavailable}"
        );
        steps.push((n.replicas, old[0].replicas));
        if n.available == replicas && old[0].replicas == 0 {
            return steps;
        }
        if plan == Plan::default() {
            // Nothing to do until a pod becomes available.
            let n = new.as_mut().unwrap();
            assert!(n.available < n.replicas, "stuck at {steps:?}");
            n.available += 1;
            n.ready += 1;
        }
    }
    panic!("rollout did not finish: {steps:?}");
}

#[test]
fn rolling_default_quarter_surge_and_unavailable() {
    let steps = drive(10, 3, 2);
    // First pass: the new ReplicaSet takes the whole surge and old ones drop to minAvailable.
    assert_eq!(steps[0], (3, 8));
    assert_eq!(*steps.last().unwrap(), (10, 0));
}

#[test]
fn rolling_without_surge_replaces_one_at_a_time() {
    let steps = drive(3, 0, 1);
    assert_eq!(steps[0], (0, 2));
    assert_eq!(steps[1], (1, 2));
    assert_eq!(*steps.last().unwrap(), (3, 0));
}

#[test]
fn rolling_without_unavailable_surges_first() {
    let steps = drive(4, 1, 0);
    assert_eq!(steps[0], (1, 4));
    assert!(steps.iter().all(|(n, o)| n + o <= 5));
    assert_eq!(*steps.last().unwrap(), (4, 0));
}

#[test]
fn rolling_bounds_hold_for_many_combinations() {
    for replicas in 1..8 {
        for surge in 0..3 {
            for unavailable in 0..3 {
                if surge == 0 && unavailable == 0 {
                    continue;
                }
                drive(replicas, surge, unavailable.min(replicas));
            }
        }
    }
}

#[test]
fn rolling_removes_unhealthy_old_replicas_first() {
    // Old has 5 replicas but only 2 available; nothing new is available yet.
    let s = rolling_strategy(1, 1);
    let new = rs("new", 10, 2, 1, 0);
    let old = vec![rs("old", 0, 1, 5, 2)];
    let plan = rolling(&s, 5, Some(&new), &old);
    // all=6, minAvailable=4, new unavailable=1: at most 1 can go, taken from the unhealthy ones.
    assert_eq!(
        plan.scales,
        vec![Scale {
            name: "old".into(),
            from: 5,
            to: 4
        }]
    );
}

#[test]
fn rolling_shrinks_an_oversized_new_set() {
    let s = rolling_strategy(1, 1);
    let new = rs("new", 10, 2, 7, 7);
    let plan = rolling(&s, 5, Some(&new), &[]);
    assert_eq!(plan.scales[0].to, 5);
}

#[test]
fn recreate_waits_for_old_pods_before_creating() {
    let mut old = vec![rs("old", 0, 1, 3, 3)];
    let plan = recreate(3, None, &old);
    assert_eq!(plan.create_new, None);
    assert_eq!(plan.scales[0].to, 0);
    // Scaled to zero but a terminating pod is still there: wait.
    old[0].replicas = 0;
    old[0].pods = 0;
    old[0].present = 1;
    assert_eq!(recreate(3, None, &old), Plan::default());
    old[0].present = 0;
    assert_eq!(recreate(3, None, &old).create_new, Some(3));
    let new = rs("new", 10, 2, 0, 0);
    assert_eq!(recreate(3, Some(&new), &old).scales[0].to, 3);
}

#[test]
fn scaling_event_reads_the_desired_annotation_of_active_sets() {
    let mut a = rs("a", 0, 1, 3, 3);
    a.desired_annotation = Some(3);
    assert!(!is_scaling_event(3, Some(&a), &[]));
    assert!(is_scaling_event(5, Some(&a), &[]));
    a.replicas = 0;
    assert!(!is_scaling_event(5, Some(&a), &[]));
}

#[test]
fn proportional_scaling_up_and_down_mid_rollout() {
    let s = rolling_strategy(5, 5);
    let mut new = rs("new", 10, 2, 5, 5);
    let mut old = rs("old", 0, 1, 8, 8);
    for r in [&mut new, &mut old] {
        r.desired_annotation = Some(10);
        r.max_annotation = Some(13);
    }
    // 10 -> 20 replicas, maxSurge 5: 25 allowed, 12 to add, in proportion 8:5 of the old maximum 13.
    let plan = proportional(&s, 20, 13, Some(&new), std::slice::from_ref(&old));
    let to = |n: &str| plan.scales.iter().find(|s| s.name == n).unwrap().to;
    assert_eq!((to("old"), to("new")), (15, 10));

    // 10 -> 5 replicas, maxSurge 2: 7 allowed, 6 to remove.
    let s = rolling_strategy(2, 1);
    let plan = proportional(&s, 5, 13, Some(&new), std::slice::from_ref(&old));
    let to = |n: &str| plan.scales.iter().find(|s| s.name == n).unwrap().to;
    assert_eq!((to("old"), to("new")), (4, 3));
}

#[test]
fn proportional_with_one_active_set_gives_it_everything() {
    let s = rolling_strategy(1, 1);
    let new = rs("new", 10, 2, 3, 3);
    let old = rs("old", 0, 1, 0, 0);
    let plan = proportional(&s, 6, 3, Some(&new), &[old]);
    assert_eq!(
        plan.scales,
        vec![Scale {
            name: "new".into(),
            from: 3,
            to: 6
        }]
    );
    // A saturated new set: old ones go to zero.
    let mut new = rs("new", 10, 2, 6, 6);
    new.desired_annotation = Some(6);
    let plan = proportional(&s, 6, 8, Some(&new), &[rs("old", 0, 1, 2, 2)]);
    assert_eq!(plan.scales[0].name, "old");
    assert_eq!(plan.scales[0].to, 0);
}

#[test]
fn history_keeps_the_newest_revisions_and_busy_sets() {
    let old = vec![
        rs("r1", 1, 1, 0, 0),
        rs("r3", 3, 3, 0, 0),
        rs("r2", 2, 2, 2, 2),
        rs("r4", 4, 4, 0, 0),
    ];
    // Limit 1: three are beyond it (r1, r2, r3); r2 still has replicas and stays.
    assert_eq!(
        history_cleanup(Some(1), &old),
        vec!["r1".to_owned(), "r3".to_owned()]
    );
    assert_eq!(history_cleanup(Some(10), &old), Vec::<String>::new());
    assert_eq!(history_cleanup(None, &old), Vec::<String>::new());
    assert_eq!(history_cleanup(Some(0), &old).len(), 3);
    assert_eq!(new_revision(&old), 5);
    assert_eq!(new_revision(&[]), 1);
}

#[test]
fn rolling_waits_for_old_pods_to_go_before_surging_further() {
    let s = rolling_strategy(3, 2);
    let new = rs("new", 10, 2, 3, 3);
    // Old was scaled to 8 but its two extra pods still run: 13 pods exist, no room to grow.
    let mut old = rs("old", 0, 1, 8, 8);
    old.pods = 10;
    let plan = rolling(&s, 10, Some(&new), std::slice::from_ref(&old));
    assert!(plan.scales.iter().all(|s| s.name != "new"), "{plan:?}");
    old.pods = 8;
    let plan = rolling(&s, 10, Some(&new), &[old]);
    assert_eq!(
        plan.scales[0],
        Scale {
            name: "new".into(),
            from: 3,
            to: 5
        }
    );
}
