//! Service lookup and backend selection: session affinity, Maglev, random over ready (else terminating) slots.
use aya_ebpf::{bindings::BPF_ANY, helpers::bpf_get_prandom_u32};
use skiff_common::{
    AffinityKey, AffinityValue, Backend, DropReason, MAGLEV_TABLE_SIZE, ServiceKey, ServiceValue, SlotKey,
    svc_flags,
};

use crate::{
    maps::{AFFINITY, BACKENDS, SERVICES, SLOTS},
    parse::Flow,
};

const NS_PER_SEC: u64 = 1_000_000_000;

/// The backend chosen for a new flow.
#[derive(Clone, Copy)]
pub struct Selected {
    pub id: u32,
    pub backend: Backend,
}

#[inline(always)]
pub fn service(addr: u32, port: u16, proto: u8, scope: u8) -> Option<ServiceValue> {
    let key = ServiceKey {
        addr_be: addr,
        port_be: port,
        proto,
        scope,
    };
    // SAFETY: values are plain data; a concurrent update can at worst give a stale copy.
    unsafe { SERVICES.get(key).copied() }
}

#[inline(always)]
pub fn backend(id: u32) -> Option<Backend> {
    // SAFETY: as above.
    unsafe { BACKENDS.get(id).copied() }
}

/// `a % b`, 0 when `b` is 0 (no panic path for the verifier to reject).
#[inline(always)]
pub fn rem(a: u32, b: u32) -> u32 {
    if b == 0 { 0 } else { a % b }
}

/// Hash of a packet's 5-tuple (stable for the life of a flow).
#[inline(always)]
pub fn flow_hash(flow: &Flow) -> u32 {
    skiff_common::flow_hash(flow.saddr, flow.daddr, flow.sport, flow.dport, flow.proto)
}

#[inline(always)]
fn from_affinity(svc: &ServiceValue, key: &AffinityKey, now: u64) -> Option<Selected> {
    let entry = AFFINITY.get_ptr_mut(key)?;
    // SAFETY: map value pointer; only scalars are read and written.
    unsafe {
        let timeout = svc.affinity_timeout_s as u64 * NS_PER_SEC;
        if now.wrapping_sub((*entry).last_used_ns) >= timeout {
            return None;
        }
        let id = (*entry).backend_id;
        let backend = backend(id)?;
        (*entry).last_used_ns = now;
        Some(Selected { id, backend })
    }
}

/// Picks the backend of a new flow to `svc`. `client` keys session affinity, `hash` keys Maglev.
#[inline(always)]
pub fn select(svc: &ServiceValue, client: u32, hash: u32, now: u64) -> Result<Selected, DropReason> {
    if svc.ready_count == 0 && svc.terminating_count == 0 {
        return Err(DropReason::NoBackend);
    }
    let aff_key = AffinityKey {
        client_addr_be: client,
        rev_nat_id: svc.rev_nat_id,
        _pad: 0,
    };
    if svc.affinity_timeout_s > 0
        && let Some(sel) = from_affinity(svc, &aff_key, now)
    {
        return Ok(sel);
    }
    let slot = if svc.flags & svc_flags::MAGLEV != 0 {
        rem(hash, MAGLEV_TABLE_SIZE)
    } else {
        // SAFETY: plain helper call.
        let r = unsafe { bpf_get_prandom_u32() };
        if svc.ready_count > 0 {
            rem(r, svc.ready_count)
        } else {
            svc.ready_count + rem(r, svc.terminating_count)
        }
    };
    let slot_key = SlotKey {
        table_id: svc.table_id,
        slot,
    };
    // SAFETY: plain data.
    let Some(id) = (unsafe { SLOTS.get(slot_key) }).map(|s| s.backend_id) else {
        return Err(DropReason::SlotMissing);
    };
    let Some(backend) = backend(id) else {
        return Err(DropReason::BackendMissing);
    };
    if svc.affinity_timeout_s > 0 {
        let value = AffinityValue {
            last_used_ns: now,
            backend_id: id,
            _pad: 0,
        };
        // An affinity we cannot record only costs stickiness for the next flow.
        let _ = AFFINITY.insert(aff_key, value, BPF_ANY as u64);
    }
    Ok(Selected { id, backend })
}
