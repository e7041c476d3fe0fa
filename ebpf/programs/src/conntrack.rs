//! Skiff's own connection tracking: keys per direction, lookups, inserts and per-packet refresh.
//!
//! The map is an LRU: when it is full, new flows evict the least recently used entries instead of failing, so new
//! connections always get through. An established TC flow whose entries were evicted is served again when its
//! client sends next: a surviving service entry puts the reply entry back (`tc::restore_reply`), and a flow that
//! lost both is selected anew (same backend with one backend, Maglev over an unchanged set, or ClientIP affinity;
//! with random selection over several backends it may land on another one, which resets it). A reply sent before
//! the client speaks again leaves untranslated and the client resets the flow. The agent counts evictions it sees
//! (`skiff_conntrack_evictions_total`) and `skiff-agent inspect maps` reports a full map.
use aya_ebpf::{bindings::BPF_ANY, helpers::bpf_ktime_get_ns};
use skiff_common::{CtKey, CtValue, DropReason, ct_flags};

use crate::{maps::CONNTRACK, parse::Flow};

#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: plain helper call without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// The key of `flow` as seen on the wire, for entries of `kind`.
#[inline(always)]
pub fn key(flow: &Flow, kind: u8) -> CtKey {
    CtKey {
        saddr_be: flow.saddr,
        daddr_be: flow.daddr,
        sport_be: flow.sport,
        dport_be: flow.dport,
        proto: flow.proto,
        kind,
        _pad: 0,
    }
}

/// A key from explicit addresses.
#[inline(always)]
pub fn key_of(saddr: u32, daddr: u32, sport: u16, dport: u16, proto: u8, kind: u8) -> CtKey {
    CtKey {
        saddr_be: saddr,
        daddr_be: daddr,
        sport_be: sport,
        dport_be: dport,
        proto,
        kind,
        _pad: 0,
    }
}

#[inline(always)]
pub fn lookup(key: &CtKey) -> Option<*mut CtValue> {
    CONNTRACK.get_ptr_mut(key)
}

/// Inserts or replaces an entry.
#[inline(always)]
pub fn insert(key: &CtKey, value: &CtValue, flags: u64) -> Result<(), DropReason> {
    CONNTRACK
        .insert(key, value, flags)
        .map_err(|_| DropReason::CtInsertFailed)
}

#[inline(always)]
pub fn upsert(key: &CtKey, value: &CtValue) -> Result<(), DropReason> {
    insert(key, value, BPF_ANY as u64)
}

/// Refreshes `last_seen_ns` and marks TCP entries CLOSING on FIN/RST (a later SYN then selects anew).
#[inline(always)]
pub fn touch(entry: *mut CtValue, flow: &Flow, now: u64) {
    // SAFETY: `entry` is a map value pointer returned by lookup; racing writers only touch these scalars.
    unsafe {
        (*entry).last_seen_ns = now;
        if flow.is_closing() {
            (*entry).flags |= ct_flags::CLOSING;
        } else if flow.is_syn() {
            (*entry).flags &= !ct_flags::CLOSING;
        }
    }
}

/// Whether an existing entry must give way to a new selection: a SYN on a closing TCP entry.
#[inline(always)]
pub fn is_reopened(entry: &CtValue, flow: &Flow) -> bool {
    flow.is_syn() && entry.flags & ct_flags::CLOSING != 0
}
