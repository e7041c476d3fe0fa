//! Address and port translation of a parsed flow: DNAT, SNAT and the reverse translation of replies.
use skiff_common::{CtValue, DropReason, RevNat, ct_flags};

use crate::{
    maps::REV_NAT,
    packet::{End, PacketMut},
    parse::Flow,
};

/// Rewrites the destination to `addr:port`, keeping `flow` in sync with the packet.
#[inline(always)]
pub fn dnat<P: PacketMut>(pkt: &mut P, flow: &mut Flow, addr: u32, port: u16) -> Result<(), DropReason> {
    pkt.set_addr(flow, End::Dst, flow.daddr, addr)
        .map_err(|_| DropReason::Malformed)?;
    flow.daddr = addr;
    pkt.set_port(flow, End::Dst, flow.dport, port)
        .map_err(|_| DropReason::Malformed)?;
    flow.dport = port;
    Ok(())
}

/// Rewrites the source to `addr:port`, keeping `flow` in sync with the packet.
#[inline(always)]
pub fn snat<P: PacketMut>(pkt: &mut P, flow: &mut Flow, addr: u32, port: u16) -> Result<(), DropReason> {
    pkt.set_addr(flow, End::Src, flow.saddr, addr)
        .map_err(|_| DropReason::Malformed)?;
    flow.saddr = addr;
    pkt.set_port(flow, End::Src, flow.sport, port)
        .map_err(|_| DropReason::Malformed)?;
    flow.sport = port;
    Ok(())
}

#[inline(always)]
pub fn rev_nat(id: u16) -> Option<RevNat> {
    // SAFETY: plain data.
    unsafe { REV_NAT.get(id as u32).copied() }
}

/// Translates a reply of a DNATed flow (matched by a REPLY entry): the source becomes the frontend again, and for
/// hairpin flows the destination becomes the original client.
#[inline(always)]
pub fn reverse_reply<P: PacketMut>(pkt: &mut P, flow: &mut Flow, ct: &CtValue) -> Result<(), DropReason> {
    let Some(frontend) = rev_nat(ct.rev_nat_id) else {
        return Err(DropReason::RevNatMissing);
    };
    snat(pkt, flow, frontend.addr_be, frontend.port_be)?;
    if ct.flags & ct_flags::HAIRPIN != 0 {
        dnat(pkt, flow, ct.nat_addr_be, ct.nat_port_be)?;
    }
    Ok(())
}
