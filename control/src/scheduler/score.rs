//! Pure node scoring: least allocated resources, spreading the pods of one owner, preferred node affinity.

use k8s_openapi::api::core::v1::{Node, Pod};

use super::filter::{self, Usage};

/// Highest score of each plugin.
pub const MAX: i64 = 100;

/// Share of free CPU and memory after placing the pod, 0..=100 (an unset allocatable counts as fully free).
pub fn least_allocated(pod: &Pod, node: &Node, usage: &Usage) -> i64 {
    let (cpu, memory, _) = filter::allocatable(node);
    let req = filter::requests(pod);
    let free = |alloc: i64, used: i64| {
        if alloc <= 0 || alloc == i64::MAX {
            return MAX;
        }
        let left = alloc.saturating_sub(used).max(0) as i128;
        (left * MAX as i128 / alloc as i128) as i64
    };
    (free(cpu, usage.cpu_millis + req.cpu_millis) + free(memory, usage.memory + req.memory)) / 2
}

/// Fewer pods of the same owner on a node score higher: `MAX * (max - here) / max` over all candidate nodes.
pub fn spread(same_owner_here: usize, same_owner_max: usize) -> i64 {
    if same_owner_max == 0 {
        return MAX;
    }
    ((same_owner_max - same_owner_here.min(same_owner_max)) as i64 * MAX) / same_owner_max as i64
}

/// Sum of the weights of the preferred node-affinity terms the node matches (weights are 1..=100).
pub fn preferred_affinity(pod: &Pod, node: &Node) -> i64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref())
        .map(|terms| {
            terms
                .iter()
                .filter(|t| filter::term_matches(&t.preference, node))
                .map(|t| i64::from(t.weight))
                .sum()
        })
        .unwrap_or(0)
}

/// The combined score; spreading weighs double so replicas land on different nodes first.
pub fn total(least_allocated: i64, spread: i64, affinity: i64) -> i64 {
    least_allocated + 2 * spread + affinity
}
