//! Per-CPU counters: packets and bytes per service and per backend, and drops by reason.
use aya_ebpf::maps::PerCpuArray;
use skiff_common::{Counters, DropReason};

use crate::maps::{BACKEND_STATS, DROPS, SVC_STATS};

#[inline(always)]
fn add(map: &PerCpuArray<Counters>, index: u32, bytes: u64) {
    if let Some(c) = map.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

/// Counts one packet (or one socket-LB translation) of `bytes` for a service and its backend.
#[inline(always)]
pub fn count_flow(rev_nat_id: u16, backend_id: u32, bytes: u64) {
    add(&SVC_STATS, rev_nat_id as u32, bytes);
    add(&BACKEND_STATS, backend_id, bytes);
}

/// Counts one dropped or rejected packet.
#[inline(always)]
pub fn count_drop(reason: DropReason, bytes: u64) {
    add(&DROPS, reason as u32, bytes);
}
