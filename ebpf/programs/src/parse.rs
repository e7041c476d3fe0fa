//! Bounds-checked packet parsing: Ethernet, IPv4 (options skipped via IHL) and the TCP/UDP header fields we use.
use core::mem::size_of;

use skiff_common::{PROTO_TCP, PROTO_UDP};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
/// Offset of the IPv4 header (no VLAN support: tagged frames are not ours).
pub const IP_OFF: usize = ETH_HLEN;
pub const IP_CHECK_OFF: usize = IP_OFF + 10;
pub const IP_SADDR_OFF: usize = IP_OFF + 12;
pub const IP_DADDR_OFF: usize = IP_OFF + 16;
pub const IP_MIN_HLEN: usize = 20;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Ethernet header; 16-bit fields hold network-order memory words (as do those below).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub proto: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
/// IPv4 header without options.
pub struct IpHdr {
    pub vihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag: u16,
    pub ttl: u8,
    pub proto: u8,
    pub check: u16,
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
/// TCP header without options.
pub struct TcpHdr {
    pub sport: u16,
    pub dport: u16,
    pub seq: [u8; 4],
    pub ack: [u8; 4],
    pub doff: u8,
    pub flags: u8,
    pub window: u16,
    pub check: u16,
    pub urg: u16,
}

/// The only place that turns a packet offset into a pointer: `None` unless `size_of::<T>()` bytes are in bounds.
#[inline(always)]
pub fn ptr_at<T>(data: usize, data_end: usize, off: usize) -> Option<*mut T> {
    let start = data + off;
    if start + size_of::<T>() > data_end {
        return None;
    }
    Some(start as *mut T)
}

/// Reads a `T` at `off` if it is in bounds.
#[inline(always)]
pub fn read_at<T: Copy>(data: usize, data_end: usize, off: usize) -> Option<T> {
    // SAFETY: ptr_at checked the bounds; packet data may be unaligned.
    ptr_at::<T>(data, data_end, off).map(|p| unsafe { p.read_unaligned() })
}

/// The 5-tuple of an IPv4 TCP/UDP packet; addresses and ports as raw (network order) memory words.
#[derive(Clone, Copy)]
pub struct Flow {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
    /// Header length of the IPv4 header in bytes (20 without options).
    pub ip_hlen: usize,
    /// Offset of the L4 header.
    pub l4_off: usize,
}

impl Flow {
    pub fn is_tcp(&self) -> bool {
        self.proto == PROTO_TCP
    }

    /// Offset of the L4 checksum field.
    pub fn l4_csum_off(&self) -> usize {
        if self.is_tcp() {
            self.l4_off + 16
        } else {
            self.l4_off + 6
        }
    }

    pub fn has_flag(&self, flag: u8) -> bool {
        self.tcp_flags & flag != 0
    }

    /// A connection-opening SYN (no ACK).
    pub fn is_syn(&self) -> bool {
        self.is_tcp() && self.has_flag(TCP_SYN) && !self.has_flag(TCP_ACK)
    }

    /// A FIN or RST: the connection is going away.
    pub fn is_closing(&self) -> bool {
        self.is_tcp() && self.tcp_flags & (TCP_FIN | TCP_RST) != 0
    }
}

/// What a frame is, as far as service translation cares.
pub enum Parsed {
    /// Not IPv4 TCP/UDP: not ours.
    Other,
    /// IPv4 header or L4 header truncated or invalid.
    Malformed,
    /// An IPv4 fragment (first or later): ports are not reliably available.
    Fragment,
    Flow(Flow),
}

/// Parses an Ethernet frame between `data` and `data_end` without reading out of bounds.
#[inline(always)]
pub fn parse(data: usize, data_end: usize) -> Parsed {
    let Some(eth) = read_at::<EthHdr>(data, data_end, 0) else {
        return Parsed::Other;
    };
    if u16::from_be(eth.proto) != ETH_P_IP {
        return Parsed::Other;
    }
    let Some(ip) = read_at::<IpHdr>(data, data_end, IP_OFF) else {
        return Parsed::Malformed;
    };
    if ip.vihl >> 4 != 4 {
        return Parsed::Malformed;
    }
    let ip_hlen = ((ip.vihl & 0x0f) as usize) * 4;
    if ip_hlen < IP_MIN_HLEN {
        return Parsed::Malformed;
    }
    let proto = ip.proto;
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Parsed::Other;
    }
    // More-fragments flag or a fragment offset.
    if u16::from_be(ip.frag) & 0x3fff != 0 {
        return Parsed::Fragment;
    }
    let l4_off = IP_OFF + ip_hlen;
    // Each header is read through the pointer its bounds check produced (the verifier tracks ranges per pointer).
    let (sport, dport, tcp_flags) = if proto == PROTO_TCP {
        match read_at::<TcpHdr>(data, data_end, l4_off) {
            Some(h) => (h.sport, h.dport, h.flags),
            None => return Parsed::Malformed,
        }
    } else {
        match read_at::<[u16; 4]>(data, data_end, l4_off) {
            Some(h) => (h[0], h[1], 0),
            None => return Parsed::Malformed,
        }
    };
    let saddr = u32::from_ne_bytes(ip.saddr);
    let daddr = u32::from_ne_bytes(ip.daddr);
    Parsed::Flow(Flow {
        saddr,
        daddr,
        sport,
        dport,
        proto,
        tcp_flags,
        ip_hlen,
        l4_off,
    })
}
