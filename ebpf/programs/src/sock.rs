//! Socket LB (cgroup sock_addr hooks): ClusterIP translated once at connect()/sendmsg(), and the frontend restored
//! for recvmsg() and getpeername() so applications keep seeing the service address as their peer.
use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_ANY, bpf_sock_addr},
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use skiff_common::{DropReason, PROTO_TCP, PROTO_UDP, SCOPE_INTERNAL, SockRevNatKey, SockRevNatValue};

use crate::{conntrack, lb, maps::SOCK_REV_NAT, stats};

const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
const ALLOW: i32 = 1;
const REJECT: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub fn skiff_connect4(ctx: SockAddrContext) -> i32 {
    translate(&ctx)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn skiff_sendmsg4(ctx: SockAddrContext) -> i32 {
    translate(&ctx)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn skiff_recvmsg4(ctx: SockAddrContext) -> i32 {
    restore(&ctx);
    ALLOW
}

#[cgroup_sock_addr(getpeername4)]
pub fn skiff_getpeername4(ctx: SockAddrContext) -> i32 {
    restore(&ctx);
    ALLOW
}

#[inline(always)]
fn protocol(sa: *const bpf_sock_addr) -> Option<u8> {
    // SAFETY: context fields readable by sock_addr programs.
    let (proto, ty) = unsafe { ((*sa).protocol, (*sa).type_) };
    match (proto, ty) {
        (6, _) | (0, SOCK_STREAM) => Some(PROTO_TCP),
        (17, _) | (0, SOCK_DGRAM) => Some(PROTO_UDP),
        _ => None,
    }
}

/// The cookie of the socket's network namespace, folded to 32 bits: the client identity for session affinity
/// (the source address is not known yet at connect time; one pod = one namespace).
#[inline(always)]
fn client_id(ctx: &SockAddrContext) -> u32 {
    // SAFETY: helper available to sock_addr programs.
    let c = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    (c ^ (c >> 32)) as u32
}

#[inline(always)]
fn translate(ctx: &SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: context fields readable by connect4/sendmsg4.
    let (addr, port) = unsafe { ((*sa).user_ip4, (*sa).user_port as u16) };
    let Some(proto) = protocol(sa) else {
        return ALLOW;
    };
    let Some(svc) = lb::service(addr, port, proto, SCOPE_INTERNAL) else {
        return ALLOW;
    };
    // SAFETY: helper available to sock_addr programs.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let hash = skiff_common::hash_mix(cookie as u32, (cookie >> 32) as u32);
    let sel = match lb::select(&svc, client_id(ctx), hash, conntrack::now_ns()) {
        Ok(sel) => sel,
        Err(reason) => {
            stats::count_drop(reason, 0);
            return REJECT;
        }
    };
    let key = SockRevNatKey {
        cookie,
        addr_be: sel.backend.addr_be,
        port_be: sel.backend.port_be,
        _pad: 0,
    };
    let value = SockRevNatValue {
        addr_be: addr,
        port_be: port,
        rev_nat_id: svc.rev_nat_id,
    };
    if SOCK_REV_NAT.insert(key, value, BPF_ANY as u64).is_err() {
        // The connection still works; only its peer shows as the backend.
        stats::count_drop(DropReason::CtInsertFailed, 0);
    }
    // SAFETY: connect4/sendmsg4 may write the destination.
    unsafe {
        (*sa).user_ip4 = sel.backend.addr_be;
        (*sa).user_port = sel.backend.port_be as u32;
    }
    stats::count_flow(svc.rev_nat_id, sel.id, 0);
    ALLOW
}

#[inline(always)]
fn restore(ctx: &SockAddrContext) {
    let sa = ctx.sock_addr;
    // SAFETY: helper and context fields available to recvmsg4/getpeername4.
    unsafe {
        let key = SockRevNatKey {
            cookie: bpf_get_socket_cookie(ctx.as_ptr()),
            addr_be: (*sa).user_ip4,
            port_be: (*sa).user_port as u16,
            _pad: 0,
        };
        if let Some(v) = SOCK_REV_NAT.get(key) {
            (*sa).user_ip4 = v.addr_be;
            (*sa).user_port = v.port_be as u32;
        }
    }
}
