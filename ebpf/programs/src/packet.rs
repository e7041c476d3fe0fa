//! Header rewriting with checksum maintenance, for socket buffers (TC, kernel helpers) and XDP frames (in place).
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::{TcContext, XdpContext},
};

use crate::{
    csum,
    parse::{Flow, IP_CHECK_OFF, IP_DADDR_OFF, IP_SADDR_OFF, ptr_at},
};

/// Which end of the flow a rewrite touches.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    Src,
    Dst,
}

/// A packet whose addresses and ports can be rewritten with valid IP and L4 checksums.
pub trait PacketMut {
    fn set_addr(&mut self, flow: &Flow, end: End, old: u32, new: u32) -> Result<(), ()>;
    fn set_port(&mut self, flow: &Flow, end: End, old: u16, new: u16) -> Result<(), ()>;
}

fn addr_off(end: End) -> usize {
    match end {
        End::Src => IP_SADDR_OFF,
        End::Dst => IP_DADDR_OFF,
    }
}

fn port_off(flow: &Flow, end: End) -> usize {
    match end {
        End::Src => flow.l4_off,
        End::Dst => flow.l4_off + 2,
    }
}

/// A socket buffer: the kernel's checksum helpers keep `CHECKSUM_PARTIAL`/`COMPLETE` skbs consistent.
pub struct Skb<'a>(pub &'a TcContext);

impl Skb<'_> {
    fn l4_flags(flow: &Flow) -> u64 {
        if flow.is_tcp() {
            0
        } else {
            BPF_F_MARK_MANGLED_0 as u64
        }
    }
}

impl PacketMut for Skb<'_> {
    #[inline(always)]
    fn set_addr(&mut self, flow: &Flow, end: End, old: u32, new: u32) -> Result<(), ()> {
        if old == new {
            return Ok(());
        }
        let flags = Self::l4_flags(flow) | BPF_F_PSEUDO_HDR as u64 | 4;
        self.0
            .l4_csum_replace(flow.l4_csum_off(), old as u64, new as u64, flags)
            .map_err(|_| ())?;
        self.0
            .l3_csum_replace(IP_CHECK_OFF, old as u64, new as u64, 4)
            .map_err(|_| ())?;
        self.0.store(addr_off(end), &new, 0).map_err(|_| ())
    }

    #[inline(always)]
    fn set_port(&mut self, flow: &Flow, end: End, old: u16, new: u16) -> Result<(), ()> {
        if old == new {
            return Ok(());
        }
        let flags = Self::l4_flags(flow) | 2;
        self.0
            .l4_csum_replace(flow.l4_csum_off(), old as u64, new as u64, flags)
            .map_err(|_| ())?;
        self.0.store(port_off(flow, end), &new, 0).map_err(|_| ())
    }
}

/// An XDP frame: rewritten in place, checksums updated incrementally.
pub struct Frame {
    data: usize,
    data_end: usize,
}

impl Frame {
    pub fn new(ctx: &XdpContext) -> Self {
        Self {
            data: ctx.data(),
            data_end: ctx.data_end(),
        }
    }

    #[inline(always)]
    fn update_l4_csum(&mut self, flow: &Flow, f: impl FnOnce(u16) -> u16) -> Result<(), ()> {
        let p = ptr_at::<u16>(self.data, self.data_end, flow.l4_csum_off()).ok_or(())?;
        // SAFETY: in bounds (ptr_at); unaligned access is fine for packet data.
        unsafe {
            let old = p.read_unaligned();
            if !flow.is_tcp() && old == 0 {
                // UDP without checksum stays without one.
                return Ok(());
            }
            let mut new = f(old);
            if !flow.is_tcp() && new == 0 {
                new = 0xffff;
            }
            p.write_unaligned(new);
        }
        Ok(())
    }
}

impl PacketMut for Frame {
    #[inline(always)]
    fn set_addr(&mut self, flow: &Flow, end: End, old: u32, new: u32) -> Result<(), ()> {
        if old == new {
            return Ok(());
        }
        self.update_l4_csum(flow, |c| csum::replace4(c, old, new))?;
        let check = ptr_at::<u16>(self.data, self.data_end, IP_CHECK_OFF).ok_or(())?;
        let field = ptr_at::<u32>(self.data, self.data_end, addr_off(end)).ok_or(())?;
        // SAFETY: both in bounds (ptr_at).
        unsafe {
            check.write_unaligned(csum::replace4(check.read_unaligned(), old, new));
            field.write_unaligned(new);
        }
        Ok(())
    }

    #[inline(always)]
    fn set_port(&mut self, flow: &Flow, end: End, old: u16, new: u16) -> Result<(), ()> {
        if old == new {
            return Ok(());
        }
        self.update_l4_csum(flow, |c| csum::replace2(c, old, new))?;
        let field = ptr_at::<u16>(self.data, self.data_end, port_off(flow, end)).ok_or(())?;
        // SAFETY: in bounds (ptr_at).
        unsafe { field.write_unaligned(new) };
        Ok(())
    }
}
