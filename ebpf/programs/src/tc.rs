//! TC (tcx) programs: per-packet service DNAT on pod-facing veths, and reverse NAT of replies on the way back
//! into a pod or out of the uplink.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::{bpf_redirect, bpf_skb_change_tail},
    macros::classifier,
    programs::TcContext,
};
use skiff_common::{Backend, CtValue, DropReason, SCOPE_INTERNAL, ct_flags, ct_kind};

use crate::{
    conntrack, lb, maps, nat,
    packet::Skb,
    parse::{self, Flow, Parsed, TCP_RST},
    reject::{self, TcpFrame, UdpFrame},
    stats,
};

/// Enough linear data for Ethernet, the longest IPv4 header and a TCP header.
const HEADERS_MAX: u32 = (parse::ETH_HLEN + 60 + 20) as u32;
const OK: i32 = TC_ACT_OK;

/// Ingress of a pod's host-side veth (packets leaving the pod): DNAT to a service backend.
#[classifier]
pub fn skiff_tc_from_pod(ctx: TcContext) -> i32 {
    verdict(&ctx, from_pod(&ctx))
}

/// Egress of a pod's host-side veth (packets entering the pod): reverse NAT of replies.
#[classifier]
pub fn skiff_tc_to_pod(ctx: TcContext) -> i32 {
    verdict(&ctx, reply_path(&ctx))
}

/// Egress of the uplink: reverse NAT of replies from local backends to flows XDP DNATed.
#[classifier]
pub fn skiff_tc_uplink_egress(ctx: TcContext) -> i32 {
    verdict(&ctx, reply_path(&ctx))
}

#[inline(always)]
fn verdict(ctx: &TcContext, result: Result<i32, DropReason>) -> i32 {
    match result {
        Ok(v) => v,
        Err(reason) => {
            stats::count_drop(reason, ctx.len() as u64);
            TC_ACT_SHOT
        }
    }
}

#[inline(always)]
fn parsed(ctx: &TcContext) -> Parsed {
    let linear = (ctx.data_end() - ctx.data()) as u32;
    if linear < HEADERS_MAX && ctx.len() > linear {
        let want = if ctx.len() < HEADERS_MAX {
            ctx.len()
        } else {
            HEADERS_MAX
        };
        // A failed pull leaves the packet as it was; parse then sees it as truncated.
        let _ = ctx.pull_data(want);
    }
    parse::parse(ctx.data(), ctx.data_end())
}

#[inline(always)]
fn flow_of(ctx: &TcContext) -> Option<Flow> {
    match parsed(ctx) {
        Parsed::Flow(f) => Some(f),
        Parsed::Fragment => {
            stats::count_drop(DropReason::Fragment, ctx.len() as u64);
            None
        }
        Parsed::Other | Parsed::Malformed => None,
    }
}

/// Replies of DNATed flows get the frontend back as their source (and hairpin flows their client as destination).
#[inline(always)]
fn reply_path(ctx: &TcContext) -> Result<i32, DropReason> {
    let Some(mut flow) = flow_of(ctx) else {
        return Ok(OK);
    };
    if let Some(ct) = conntrack::lookup(&conntrack::key(&flow, ct_kind::REPLY)) {
        conntrack::touch(ct, &flow, conntrack::now_ns());
        // SAFETY: map value pointer from lookup.
        let entry = unsafe { *ct };
        stats::count_flow(entry.rev_nat_id, entry.backend_id, ctx.len() as u64);
        nat::reverse_reply(&mut Skb(ctx), &mut flow, &entry)?;
    }
    Ok(OK)
}

#[inline(always)]
fn from_pod(ctx: &TcContext) -> Result<i32, DropReason> {
    let Some(mut flow) = flow_of(ctx) else {
        return Ok(OK);
    };
    let now = conntrack::now_ns();
    let bytes = ctx.len() as u64;
    // This pod is a backend answering a flow we DNATed.
    if let Some(ct) = conntrack::lookup(&conntrack::key(&flow, ct_kind::REPLY)) {
        conntrack::touch(ct, &flow, now);
        // SAFETY: map value pointer from lookup.
        let entry = unsafe { *ct };
        if entry.flags & ct_flags::UPLINK != 0 {
            // Translated after routing by the uplink's TC egress (see ct_flags::UPLINK).
            return Ok(OK);
        }
        stats::count_flow(entry.rev_nat_id, entry.backend_id, bytes);
        nat::reverse_reply(&mut Skb(ctx), &mut flow, &entry)?;
        return Ok(OK);
    }
    // An existing flow keeps its backend, even a terminating one.
    let svc_key = conntrack::key(&flow, ct_kind::SERVICE);
    if let Some(ct) = conntrack::lookup(&svc_key) {
        // SAFETY: map value pointer from lookup.
        let entry = unsafe { *ct };
        if !conntrack::is_reopened(&entry, &flow) {
            match lb::backend(entry.backend_id) {
                Some(backend) => {
                    conntrack::touch(ct, &flow, now);
                    restore_reply(&flow, &backend, &entry, now);
                    stats::count_flow(entry.rev_nat_id, entry.backend_id, bytes);
                    forward(ctx, &mut flow, &backend, &entry)?;
                    return Ok(OK);
                }
                // The backend is gone: the flow is selected anew below.
                None => stats::count_drop(DropReason::BackendMissing, 0),
            }
        }
    }
    let Some(svc) = lb::service(flow.daddr, flow.dport, flow.proto, SCOPE_INTERNAL) else {
        return Ok(OK);
    };
    let sel = match lb::select(&svc, flow.saddr, lb::flow_hash(&flow), now) {
        Ok(sel) => sel,
        Err(DropReason::NoBackend) => return reject_to_pod(ctx, &flow),
        Err(reason) => return Err(reason),
    };
    let cfg = maps::config();
    let hairpin = sel.backend.addr_be == flow.saddr && cfg.hairpin_addr_be != 0;
    let mut entry = CtValue {
        last_seen_ns: now,
        backend_id: sel.id,
        rev_nat_id: svc.rev_nat_id,
        ..CtValue::default()
    };
    let mut reply = entry;
    let mut client = flow.saddr;
    if hairpin {
        entry.flags = ct_flags::HAIRPIN;
        entry.nat_addr_be = cfg.hairpin_addr_be;
        entry.nat_port_be = flow.sport;
        reply.flags = ct_flags::HAIRPIN;
        reply.nat_addr_be = flow.saddr;
        reply.nat_port_be = flow.sport;
        client = cfg.hairpin_addr_be;
    }
    let reply_key = conntrack::key_of(
        sel.backend.addr_be,
        client,
        sel.backend.port_be,
        flow.sport,
        flow.proto,
        ct_kind::REPLY,
    );
    conntrack::upsert(&reply_key, &reply)?;
    conntrack::upsert(&svc_key, &entry)?;
    stats::count_flow(svc.rev_nat_id, sel.id, bytes);
    forward(ctx, &mut flow, &sel.backend, &entry)?;
    Ok(OK)
}

/// Puts back the reply entry of an established flow if the LRU evicted it while keeping the service entry (without
/// it, replies would reach the client untranslated and the client would reset the flow).
#[inline(always)]
fn restore_reply(flow: &Flow, backend: &Backend, entry: &CtValue, now: u64) {
    let hairpin = entry.flags & ct_flags::HAIRPIN != 0;
    let client = if hairpin { entry.nat_addr_be } else { flow.saddr };
    let key = conntrack::key_of(
        backend.addr_be,
        client,
        backend.port_be,
        flow.sport,
        flow.proto,
        ct_kind::REPLY,
    );
    if conntrack::lookup(&key).is_some() {
        return;
    }
    let mut reply = CtValue {
        last_seen_ns: now,
        backend_id: entry.backend_id,
        rev_nat_id: entry.rev_nat_id,
        ..CtValue::default()
    };
    if hairpin {
        reply.flags = ct_flags::HAIRPIN;
        reply.nat_addr_be = flow.saddr;
        reply.nat_port_be = flow.sport;
    }
    // Failing to restore it costs no more than the eviction did; the packet itself is fine.
    let _ = conntrack::upsert(&key, &reply);
}

/// DNAT to the backend; hairpin flows are also SNATed so the backend's reply comes back through us.
#[inline(always)]
fn forward(ctx: &TcContext, flow: &mut Flow, backend: &Backend, entry: &CtValue) -> Result<(), DropReason> {
    let mut pkt = Skb(ctx);
    if entry.flags & ct_flags::HAIRPIN != 0 {
        nat::snat(&mut pkt, flow, entry.nat_addr_be, entry.nat_port_be)?;
    }
    nat::dnat(&mut pkt, flow, backend.addr_be, backend.port_be)
}

#[inline(always)]
fn resize(ctx: &TcContext, len: usize) -> Result<(), DropReason> {
    // SAFETY: helper on our own skb.
    let rc = unsafe { bpf_skb_change_tail(ctx.skb.skb, len as u32, 0) };
    if rc != 0 {
        Err(DropReason::NoBackend)
    } else {
        Ok(())
    }
}

/// No endpoints: answer the pod with a RST (TCP) or an ICMP port unreachable (UDP), sent straight back.
#[inline(always)]
fn reject_to_pod(ctx: &TcContext, flow: &Flow) -> Result<i32, DropReason> {
    if flow.ip_hlen != parse::IP_MIN_HLEN || (flow.is_tcp() && flow.has_flag(TCP_RST)) {
        return Err(DropReason::NoBackend);
    }
    let bytes = ctx.len() as u64;
    if flow.is_tcp() {
        let orig: TcpFrame = ctx.load(0).map_err(|_| DropReason::Malformed)?;
        let out = reject::tcp_rst(&orig);
        resize(ctx, reject::RST_LEN)?;
        ctx.store(0, &out, 0).map_err(|_| DropReason::NoBackend)?;
    } else {
        let orig: UdpFrame = ctx.load(0).map_err(|_| DropReason::Malformed)?;
        let out = reject::icmp_port_unreachable(&orig);
        resize(ctx, reject::ICMP_LEN)?;
        ctx.store(0, &out, 0).map_err(|_| DropReason::NoBackend)?;
    }
    stats::count_drop(DropReason::NoBackend, bytes);
    // SAFETY: reading a field of our own context; redirect to the interface the packet came in on (the pod).
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    Ok(unsafe { bpf_redirect(ifindex, 0) } as i32)
}
