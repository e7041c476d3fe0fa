//! Pure rollout decisions: which size each ReplicaSet of a Deployment goes to next, and which old ones are deleted.

use k8s_openapi::jiff::Timestamp;

use super::strategy::{Kind, Strategy};

/// One ReplicaSet of a Deployment as the planner sees it: its size, revision and the state of its pods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rs {
    pub name: String,
    pub created: Option<Timestamp>,
    pub revision: i64,
    /// `spec.replicas`.
    pub replicas: i32,
    /// The `deployment.kubernetes.io/desired-replicas` annotation.
    pub desired_annotation: Option<i32>,
    /// The `deployment.kubernetes.io/max-replicas` annotation.
    pub max_annotation: Option<i32>,
    /// Pods that are not terminating and not finished.
    pub pods: i32,
    pub ready: i32,
    /// Ready for at least minReadySeconds.
    pub available: i32,
    /// Pods that still exist in a non-terminal phase, terminating ones included.
    pub present: i32,
}

impl Rs {
    /// Available pods once the ReplicaSet has converged to its size (not-ready pods are deleted first).
    fn settled_available(&self) -> i32 {
        self.available.min(self.replicas)
    }
}

/// A size change (or an annotation refresh when `from == to`) of an existing ReplicaSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scale {
    pub name: String,
    pub from: i32,
    pub to: i32,
}

/// What one rollout pass does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Create the ReplicaSet for the current template with this many replicas.
    pub create_new: Option<i32>,
    pub scales: Vec<Scale>,
}

fn by_creation(rs: &mut [Rs]) {
    rs.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)));
}

fn total(rs: &[Rs]) -> i32 {
    rs.iter().map(|r| r.replicas).sum()
}

/// Pods that exist or are about to: a ReplicaSet scaled down may not have removed its extra pods yet.
fn footprint(rs: &Rs) -> i32 {
    rs.replicas.max(rs.pods)
}

/// Records a size change in `plan` and in `rs`, so later decisions of the same pass see it.
fn set(plan: &mut Plan, rs: &mut Rs, to: i32) {
    if rs.replicas == to {
        return;
    }
    match plan.scales.iter_mut().find(|s| s.name == rs.name) {
        Some(s) => s.to = to,
        None => plan.scales.push(Scale {
            name: rs.name.clone(),
            from: rs.replicas,
            to,
        }),
    }
    rs.replicas = to;
}

/// One RollingUpdate pass: grow the new ReplicaSet within maxSurge; if it did not grow, shrink old ones within
/// maxUnavailable (unhealthy replicas first). `new` is None when the current template has no ReplicaSet yet.
pub fn rolling(strategy: &Strategy, replicas: i32, new: Option<&Rs>, old: &[Rs]) -> Plan {
    let mut plan = Plan::default();
    let mut old: Vec<Rs> = old.to_vec();
    by_creation(&mut old);
    let mut new = match new {
        Some(n) => n.clone(),
        None => {
            let size = new_size(strategy, replicas, 0, old.iter().map(footprint).sum());
            plan.create_new = Some(size);
            Rs {
                replicas: size,
                ..Rs::default()
            }
        }
    };
    if plan.create_new.is_none() {
        let want = if new.replicas > replicas {
            replicas
        } else {
            let all = old.iter().map(footprint).sum::<i32>() + footprint(&new);
            new_size(strategy, replicas, new.replicas, all)
        };
        if want != new.replicas {
            set(&mut plan, &mut new, want);
            return plan;
        }
    }
    scale_down_old(strategy, replicas, &new, &mut old, &mut plan);
    plan
}

/// The size of the new ReplicaSet: as close to `replicas` as maxSurge allows over all pods (counting pods
/// that old ReplicaSets have not removed yet, so the surge bound holds for pods, not only for sizes).
fn new_size(strategy: &Strategy, replicas: i32, current_new: i32, all: i32) -> i32 {
    let max_total = replicas + strategy.max_surge;
    if all >= max_total {
        return current_new;
    }
    current_new + (max_total - all).min(replicas - current_new).max(0)
}

fn scale_down_old(strategy: &Strategy, replicas: i32, new: &Rs, old: &mut [Rs], plan: &mut Plan) {
    let old_total = total(old);
    if old_total == 0 {
        return;
    }
    let all = old_total + new.replicas;
    let min_available = replicas - strategy.max_unavailable;
    let new_unavailable = (new.replicas - new.available).max(0);
    let max_scale_down = all - min_available - new_unavailable;
    if max_scale_down <= 0 {
        return;
    }
    // Unhealthy old replicas go first: removing them costs no availability.
    let mut cleaned = 0;
    for rs in old.iter_mut() {
        if cleaned >= max_scale_down {
            break;
        }
        let unhealthy = rs.replicas - rs.settled_available();
        if rs.replicas == 0 || unhealthy <= 0 {
            continue;
        }
        let down = (max_scale_down - cleaned).min(unhealthy);
        set(plan, rs, rs.replicas - down);
        cleaned += down;
    }
    // Then available ones, oldest first, down to minAvailable.
    let available: i32 = old.iter().map(Rs::settled_available).sum::<i32>() + new.available.min(new.replicas);
    if available <= min_available {
        return;
    }
    let budget = available - min_available;
    let mut done = 0;
    for rs in old.iter_mut() {
        if done >= budget {
            break;
        }
        if rs.replicas == 0 {
            continue;
        }
        let down = rs.replicas.min(budget - done);
        set(plan, rs, rs.replicas - down);
        done += down;
    }
}

/// One Recreate pass: old ReplicaSets to zero, then (once none of their pods exist) the new one to `replicas`.
pub fn recreate(replicas: i32, new: Option<&Rs>, old: &[Rs]) -> Plan {
    let mut plan = Plan::default();
    let mut old = old.to_vec();
    for rs in old.iter_mut() {
        set(&mut plan, rs, 0);
    }
    if !plan.scales.is_empty() || old.iter().any(|r| r.present > 0) {
        return plan;
    }
    match new {
        None => plan.create_new = Some(replicas),
        Some(n) => set(&mut plan, &mut n.clone(), replicas),
    }
    plan
}

/// Whether `replicas` changed since the active ReplicaSets were last sized (their desired-replicas annotation).
pub fn is_scaling_event(replicas: i32, new: Option<&Rs>, old: &[Rs]) -> bool {
    new.into_iter()
        .chain(old)
        .filter(|r| r.replicas > 0)
        .any(|r| r.desired_annotation.is_some_and(|d| d != replicas))
}

/// Kubernetes' round-half-away-from-zero of `num / den`.
fn round_div(num: i64, den: i64) -> i64 {
    let q = num as f64 / den as f64;
    q.round() as i64
}

/// Sizes after a change of `replicas` (or while paused): one active ReplicaSet takes everything; otherwise the
/// difference to replicas+maxSurge is shared out in proportion to each ReplicaSet's size. `status_replicas`
/// is the Deployment's last observed pod count (for ReplicaSets without a max-replicas annotation).
pub fn proportional(
    strategy: &Strategy,
    replicas: i32,
    status_replicas: i32,
    new: Option<&Rs>,
    old: &[Rs],
) -> Plan {
    let mut plan = Plan::default();
    let mut all: Vec<Rs> = new.into_iter().cloned().chain(old.iter().cloned()).collect();
    if all.is_empty() {
        return plan;
    }
    let active: Vec<usize> = (0..all.len()).filter(|&i| all[i].replicas > 0).collect();
    let max_replicas = replicas + strategy.max_surge;
    let annotate = |plan: &mut Plan, rs: &Rs| {
        if (rs.desired_annotation, rs.max_annotation) != (Some(replicas), Some(max_replicas))
            && !plan.scales.iter().any(|s| s.name == rs.name)
        {
            plan.scales.push(Scale {
                name: rs.name.clone(),
                from: rs.replicas,
                to: rs.replicas,
            });
        }
    };
    let only = match active.len() {
        0 => match new {
            Some(_) => Some(0),
            None => {
                let mut newest: Vec<usize> = (0..all.len()).collect();
                newest.sort_by(|&a, &b| {
                    all[b]
                        .created
                        .cmp(&all[a].created)
                        .then(all[b].name.cmp(&all[a].name))
                });
                newest.first().copied()
            }
        },
        1 => Some(active[0]),
        _ => None,
    };
    if let Some(i) = only {
        if all[i].replicas != replicas {
            let mut rs = all[i].clone();
            set(&mut plan, &mut rs, replicas);
        } else if is_scaling_event(replicas, Some(&all[i]), &[]) {
            annotate(&mut plan, &all[i]);
        }
        return plan;
    }
    if let Some(n) = new
        && n.replicas == replicas
        && n.desired_annotation == Some(replicas)
        && n.available == replicas
    {
        for rs in all.iter_mut().skip(1) {
            set(&mut plan, rs, 0);
        }
        return plan;
    }
    if strategy.kind != Kind::RollingUpdate {
        return plan;
    }
    let mut active: Vec<Rs> = all.into_iter().filter(|r| r.replicas > 0).collect();
    let allowed = if replicas > 0 { max_replicas } else { 0 };
    let to_add = allowed - total(&active);
    // Largest first; ties: the newer first when growing, the older first when shrinking.
    active.sort_by(|a, b| {
        let age = if to_add > 0 {
            b.created.cmp(&a.created)
        } else {
            a.created.cmp(&b.created)
        };
        b.replicas
            .cmp(&a.replicas)
            .then(age)
            .then_with(|| a.name.cmp(&b.name))
    });
    let mut sizes: Vec<i32> = active.iter().map(|r| r.replicas).collect();
    if to_add != 0 {
        let mut added = 0;
        for (i, rs) in active.iter().enumerate() {
            let proportion = if to_add == added {
                0
            } else {
                let fraction = if replicas == 0 {
                    -rs.replicas
                } else {
                    let before = rs
                        .max_annotation
                        .filter(|m| *m > 0)
                        .unwrap_or(status_replicas)
                        .max(1);
                    let scaled = round_div(
                        i64::from(rs.replicas) * i64::from(max_replicas),
                        i64::from(before),
                    );
                    i32::try_from(scaled).unwrap_or(i32::MAX) - rs.replicas
                };
                let left = to_add - added;
                if to_add > 0 {
                    fraction.min(left)
                } else {
                    fraction.max(left)
                }
            };
            sizes[i] += proportion;
            added += proportion;
        }
        // Leftovers go to the largest.
        sizes[0] = (sizes[0] + to_add - added).max(0);
    }
    for (rs, size) in active.iter_mut().zip(sizes) {
        if rs.replicas != size {
            set(&mut plan, rs, size);
        } else {
            annotate(&mut plan, rs);
        }
    }
    plan
}

/// Old ReplicaSets beyond `limit` to delete, lowest revision first; only those without replicas or pods.
pub fn history_cleanup(limit: Option<i32>, old: &[Rs]) -> Vec<String> {
    let Some(limit) = limit else {
        return Vec::new();
    };
    let excess = old.len() as i64 - i64::from(limit.max(0));
    if excess <= 0 {
        return Vec::new();
    }
    let mut sorted = old.to_vec();
    sorted.sort_by(|a, b| {
        a.revision
            .cmp(&b.revision)
            .then(a.created.cmp(&b.created))
            .then_with(|| a.name.cmp(&b.name))
    });
    sorted
        .into_iter()
        .take(usize::try_from(excess).unwrap_or(0))
        .filter(|r| r.replicas == 0 && r.present == 0)
        .map(|r| r.name)
        .collect()
}

/// The revision the current ReplicaSet must carry: one above every old one (a rollback bumps it).
pub fn new_revision(old: &[Rs]) -> i64 {
    old.iter().map(|r| r.revision).max().unwrap_or(0) + 1
}

#[cfg(test)]
mod tests;
