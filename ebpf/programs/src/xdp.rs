//! XDP on the node uplink: NodePort, LoadBalancer and ExternalIP flows from outside (DNAT to a local backend and
//! pass, or SNAT to the node and forward to a remote one), their SNATed replies, and the trivial pass program.
use core::mem::{size_of, zeroed};

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_FIB_LKUP_RET_BLACKHOLE, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_PROHIBIT,
        BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LKUP_RET_UNREACHABLE, BPF_NOEXIST, bpf_fib_lookup, xdp_action,
    },
    helpers::{bpf_fib_lookup as fib_lookup, bpf_redirect, bpf_xdp_adjust_tail},
    macros::xdp,
    programs::XdpContext,
};
use skiff_common::{
    Backend, Config, CtValue, DropReason, SCOPE_EXTERNAL, backend_flags, ct_flags, ct_kind, svc_flags,
};

use crate::{
    conntrack, csum, lb, maps, nat,
    packet::Frame,
    parse::{self, Flow, IP_OFF, Parsed, TCP_RST, ptr_at, read_at},
    reject::{self, TcpFrame, UdpFrame},
    stats,
};

const AF_INET: u8 = 2;
/// SNAT port candidates probed per new flow.
const SNAT_PROBES: u32 = 8;

/// Passes every frame. Attached to the peer of a veth that receives XDP_TX/REDIRECT frames (see EBPF-NOTES).
#[xdp]
pub fn skiff_xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// NodePort / LoadBalancer / ExternalIP entry point on the uplink.
#[xdp]
pub fn skiff_xdp_uplink(ctx: XdpContext) -> u32 {
    match uplink(&ctx) {
        Ok(action) => action,
        Err(reason) => {
            stats::count_drop(reason, frame_len(&ctx));
            xdp_action::XDP_DROP
        }
    }
}

#[inline(always)]
fn frame_len(ctx: &XdpContext) -> u64 {
    (ctx.data_end() - ctx.data()) as u64
}

#[inline(always)]
fn uplink(ctx: &XdpContext) -> Result<u32, DropReason> {
    let mut flow = match parse::parse(ctx.data(), ctx.data_end()) {
        Parsed::Flow(f) => f,
        Parsed::Fragment => {
            stats::count_drop(DropReason::Fragment, frame_len(ctx));
            return Ok(xdp_action::XDP_PASS);
        }
        Parsed::Other | Parsed::Malformed => return Ok(xdp_action::XDP_PASS),
    };
    let bytes = frame_len(ctx);
    let now = conntrack::now_ns();
    let cfg = maps::config();
    let mut pkt = Frame::new(ctx);

    // Replies of flows we SNATed to the node: back to the client, from the frontend.
    if is_snat_port(&cfg, &flow)
        && let Some(ct) = conntrack::lookup(&conntrack::key(&flow, ct_kind::SNAT_REPLY))
    {
        conntrack::touch(ct, &flow, now);
        // SAFETY: map value pointer from lookup.
        let entry = unsafe { *ct };
        let Some(frontend) = nat::rev_nat(entry.rev_nat_id) else {
            return Err(DropReason::RevNatMissing);
        };
        stats::count_flow(entry.rev_nat_id, entry.backend_id, bytes);
        nat::dnat(&mut pkt, &mut flow, entry.nat_addr_be, entry.nat_port_be)?;
        nat::snat(&mut pkt, &mut flow, frontend.addr_be, frontend.port_be)?;
        return fib_forward(ctx, &flow);
    }

    // Existing flows keep their backend.
    let svc_key = conntrack::key(&flow, ct_kind::SERVICE);
    if let Some(ct) = conntrack::lookup(&svc_key) {
        // SAFETY: map value pointer from lookup.
        let entry = unsafe { *ct };
        if !conntrack::is_reopened(&entry, &flow) {
            match lb::backend(entry.backend_id) {
                Some(backend) => {
                    conntrack::touch(ct, &flow, now);
                    if entry.flags & ct_flags::SNAT != 0 {
                        ensure_snat_reply(&flow, &backend, &entry, now)?;
                    }
                    stats::count_flow(entry.rev_nat_id, entry.backend_id, bytes);
                    return forward(ctx, &mut pkt, &mut flow, &backend, &entry);
                }
                None => stats::count_drop(DropReason::BackendMissing, 0),
            }
        }
    }

    let Some(svc) = lb::service(flow.daddr, flow.dport, flow.proto, SCOPE_EXTERNAL) else {
        return Ok(xdp_action::XDP_PASS);
    };
    let sel = match lb::select(&svc, flow.saddr, lb::flow_hash(&flow), now) {
        Ok(sel) => sel,
        // externalTrafficPolicy Local without local endpoints drops, like kube-proxy; otherwise reject.
        Err(DropReason::NoBackend) if svc.flags & svc_flags::LOCAL_ONLY == 0 => {
            return reject_back(ctx, &flow);
        }
        Err(reason) => return Err(reason),
    };
    let mut entry = CtValue {
        last_seen_ns: now,
        backend_id: sel.id,
        rev_nat_id: svc.rev_nat_id,
        ..CtValue::default()
    };
    let local = sel.backend.flags & backend_flags::LOCAL != 0 || svc.flags & svc_flags::LOCAL_ONLY != 0;
    if local {
        entry.flags = ct_flags::UPLINK;
        let reply_key = conntrack::key_of(
            sel.backend.addr_be,
            flow.saddr,
            sel.backend.port_be,
            flow.sport,
            flow.proto,
            ct_kind::REPLY,
        );
        conntrack::upsert(&reply_key, &entry)?;
    } else {
        let port = claim_snat_port(&cfg, &flow, &sel.backend, &entry)?;
        entry.flags = ct_flags::SNAT;
        entry.nat_addr_be = cfg.node_addr_be;
        entry.nat_port_be = port;
    }
    conntrack::upsert(&svc_key, &entry)?;
    stats::count_flow(svc.rev_nat_id, sel.id, bytes);
    forward(ctx, &mut pkt, &mut flow, &sel.backend, &entry)
}

#[inline(always)]
fn is_snat_port(cfg: &Config, flow: &Flow) -> bool {
    let port = u16::from_be(flow.dport);
    cfg.node_addr_be != 0
        && flow.daddr == cfg.node_addr_be
        && port >= cfg.snat_port_min
        && port <= cfg.snat_port_max
}

/// Local backend: DNAT and let the kernel route it to the pod. Remote: SNAT to the node, DNAT, forward.
#[inline(always)]
fn forward(
    ctx: &XdpContext,
    pkt: &mut Frame,
    flow: &mut Flow,
    backend: &Backend,
    entry: &CtValue,
) -> Result<u32, DropReason> {
    if entry.flags & ct_flags::SNAT != 0 {
        nat::snat(pkt, flow, entry.nat_addr_be, entry.nat_port_be)?;
        nat::dnat(pkt, flow, backend.addr_be, backend.port_be)?;
        return fib_forward(ctx, flow);
    }
    nat::dnat(pkt, flow, backend.addr_be, backend.port_be)?;
    Ok(xdp_action::XDP_PASS)
}

/// The reply translation of an SNATed flow, recreated if the LRU evicted it while the flow is alive.
#[inline(always)]
fn ensure_snat_reply(flow: &Flow, backend: &Backend, entry: &CtValue, now: u64) -> Result<(), DropReason> {
    let key = conntrack::key_of(
        backend.addr_be,
        entry.nat_addr_be,
        backend.port_be,
        entry.nat_port_be,
        flow.proto,
        ct_kind::SNAT_REPLY,
    );
    if let Some(reply) = conntrack::lookup(&key) {
        // SAFETY: map value pointer from lookup.
        unsafe { (*reply).last_seen_ns = now };
        return Ok(());
    }
    let reply = CtValue {
        last_seen_ns: now,
        flags: ct_flags::SNAT,
        nat_addr_be: flow.saddr,
        nat_port_be: flow.sport,
        ..*entry
    };
    conntrack::upsert(&key, &reply)
}

/// Finds a free node port for a new SNATed flow by claiming its SNAT_REPLY entry (probing a few candidates).
#[inline(always)]
fn claim_snat_port(cfg: &Config, flow: &Flow, backend: &Backend, entry: &CtValue) -> Result<u16, DropReason> {
    if cfg.node_addr_be == 0 || cfg.snat_port_max < cfg.snat_port_min {
        return Err(DropReason::SnatPortsExhausted);
    }
    let range = (cfg.snat_port_max - cfg.snat_port_min) as u32 + 1;
    let hash = lb::flow_hash(flow);
    let reply = CtValue {
        flags: ct_flags::SNAT,
        nat_addr_be: flow.saddr,
        nat_port_be: flow.sport,
        ..*entry
    };
    let mut i = 0;
    while i < SNAT_PROBES {
        let port = (cfg.snat_port_min as u32 + lb::rem(hash.wrapping_add(i.wrapping_mul(0x9e37_79b1)), range))
            as u16;
        let port_be = port.to_be();
        let key = conntrack::key_of(
            backend.addr_be,
            cfg.node_addr_be,
            backend.port_be,
            port_be,
            flow.proto,
            ct_kind::SNAT_REPLY,
        );
        if conntrack::insert(&key, &reply, BPF_NOEXIST as u64).is_ok() {
            return Ok(port_be);
        }
        i += 1;
    }
    Err(DropReason::SnatPortsExhausted)
}

/// Routes a rewritten frame: TX or redirect with fresh MACs, or pass it to the kernel when the neighbour is unknown.
#[inline(always)]
fn fib_forward(ctx: &XdpContext, flow: &Flow) -> Result<u32, DropReason> {
    let tot_len = read_at::<u16>(ctx.data(), ctx.data_end(), IP_OFF + 2).ok_or(DropReason::Malformed)?;
    // SAFETY: bpf_fib_lookup is plain data; all-zero is a valid value.
    let mut params: bpf_fib_lookup = unsafe { zeroed() };
    params.family = AF_INET;
    params.l4_protocol = flow.proto;
    params.sport = flow.sport;
    params.dport = flow.dport;
    params.__bindgen_anon_1.tot_len = u16::from_be(tot_len);
    params.ifindex = ctx.ingress_ifindex() as u32;
    params.__bindgen_anon_3.ipv4_src = flow.saddr;
    params.__bindgen_anon_4.ipv4_dst = flow.daddr;
    // SAFETY: params lives on our stack and has the size we pass.
    let rc = unsafe { fib_lookup(ctx.as_ptr(), &mut params, size_of::<bpf_fib_lookup>() as i32, 0) };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {
            if !decrement_ttl(ctx) {
                return Ok(xdp_action::XDP_PASS);
            }
            let macs = ptr_at::<[[u8; 6]; 2]>(ctx.data(), ctx.data_end(), 0).ok_or(DropReason::Malformed)?;
            // SAFETY: in bounds (ptr_at).
            unsafe { macs.write_unaligned([params.dmac, params.smac]) };
            if params.ifindex == ctx.ingress_ifindex() as u32 {
                Ok(xdp_action::XDP_TX)
            } else {
                // SAFETY: plain helper call.
                Ok(unsafe { bpf_redirect(params.ifindex, 0) } as u32)
            }
        }
        BPF_FIB_LKUP_RET_NO_NEIGH => Ok(xdp_action::XDP_PASS),
        BPF_FIB_LKUP_RET_BLACKHOLE | BPF_FIB_LKUP_RET_UNREACHABLE | BPF_FIB_LKUP_RET_PROHIBIT => {
            Err(DropReason::FibLookupFailed)
        }
        // Not forwardable by us (local destination, forwarding off, ...): the kernel decides.
        _ => Ok(xdp_action::XDP_PASS),
    }
}

/// Decrements the TTL like a router; false when it would expire (the kernel then answers).
#[inline(always)]
fn decrement_ttl(ctx: &XdpContext) -> bool {
    let (Some(ttl), Some(check)) = (
        ptr_at::<u16>(ctx.data(), ctx.data_end(), IP_OFF + 8),
        ptr_at::<u16>(ctx.data(), ctx.data_end(), IP_OFF + 10),
    ) else {
        return false;
    };
    // SAFETY: both in bounds (ptr_at). The TTL shares a 16-bit word with the protocol.
    unsafe {
        let old = ttl.read_unaligned();
        let bytes = old.to_ne_bytes();
        if bytes[0] <= 1 {
            return false;
        }
        let new = u16::from_ne_bytes([bytes[0] - 1, bytes[1]]);
        ttl.write_unaligned(new);
        check.write_unaligned(csum::replace2(check.read_unaligned(), old, new));
    }
    true
}

#[inline(always)]
fn resize(ctx: &XdpContext, len: usize) -> Result<(), DropReason> {
    let delta = len as i32 - (ctx.data_end() - ctx.data()) as i32;
    // SAFETY: helper on our own frame; pointers are re-derived afterwards.
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        return Err(DropReason::NoBackend);
    }
    Ok(())
}

#[inline(always)]
fn write_frame<T: Copy>(ctx: &XdpContext, out: &T) -> Result<(), DropReason> {
    let p = ptr_at::<T>(ctx.data(), ctx.data_end(), 0).ok_or(DropReason::NoBackend)?;
    // SAFETY: in bounds (ptr_at).
    unsafe { p.write_unaligned(*out) };
    Ok(())
}

/// No endpoints: a RST (TCP) or ICMP port unreachable (UDP) back out of the uplink.
#[inline(always)]
fn reject_back(ctx: &XdpContext, flow: &Flow) -> Result<u32, DropReason> {
    if flow.ip_hlen != parse::IP_MIN_HLEN || (flow.is_tcp() && flow.has_flag(TCP_RST)) {
        return Err(DropReason::NoBackend);
    }
    let bytes = frame_len(ctx);
    if flow.is_tcp() {
        let orig = read_at::<TcpFrame>(ctx.data(), ctx.data_end(), 0).ok_or(DropReason::Malformed)?;
        let out = reject::tcp_rst(&orig);
        resize(ctx, reject::RST_LEN)?;
        write_frame(ctx, &out)?;
    } else {
        let orig = read_at::<UdpFrame>(ctx.data(), ctx.data_end(), 0).ok_or(DropReason::Malformed)?;
        let out = reject::icmp_port_unreachable(&orig);
        resize(ctx, reject::ICMP_LEN)?;
        write_frame(ctx, &out)?;
    }
    stats::count_drop(DropReason::NoBackend, bytes);
    Ok(xdp_action::XDP_TX)
}
