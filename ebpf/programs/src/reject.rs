//! Answers for flows to services without endpoints: a TCP RST or an ICMP port unreachable, built from the
//! offending frame (Ethernet + 20-byte IPv4 header) with its addresses turned around.
//!
//! Frames are `#[repr(C)]` structs of byte arrays and 16-bit words (no padding, no indexing, so no panic paths);
//! 16-bit fields hold network-order memory words.
use core::mem::size_of;

use crate::{
    csum,
    parse::{EthHdr, IpHdr, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, TcpHdr},
};

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_PORT_UNREACH: u8 = 3;

/// Ethernet + IPv4 (no options) + TCP (options ignored): what a RST is built from, and the RST itself.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct TcpFrame {
    pub eth: EthHdr,
    pub ip: IpHdr,
    pub tcp: TcpHdr,
}

/// Ethernet + IPv4 (no options) + the first 8 bytes of the transport header.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct UdpFrame {
    pub eth: EthHdr,
    pub ip: IpHdr,
    pub l4: [u16; 4],
}

/// An ICMP destination-unreachable frame quoting the original IPv4 header and 8 bytes of its payload.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct IcmpFrame {
    pub eth: EthHdr,
    pub ip: IpHdr,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub icmp_check: u16,
    pub unused: [u16; 2],
    pub quoted_ip: IpHdr,
    pub quoted_l4: [u16; 4],
}

pub const RST_LEN: usize = size_of::<TcpFrame>();
pub const ICMP_LEN: usize = size_of::<IcmpFrame>();

/// One's-complement sum of the 16-bit memory words of `v` (its size must be even).
#[inline(always)]
fn sum_words<T, const N: usize>(v: &T, acc: u32) -> u32 {
    // SAFETY: T is a plain #[repr(C)] frame part of at least 2 * N bytes with alignment 2.
    let words = unsafe { &*(v as *const T as *const [u16; N]) };
    let mut acc = acc;
    for w in words.iter() {
        acc += *w as u32;
    }
    acc
}

/// Ethernet with swapped MACs and an IPv4 header from the original destination back to its source.
#[inline(always)]
fn turn_around(eth: &EthHdr, ip: &IpHdr, proto: u8, tot_len: usize) -> (EthHdr, IpHdr) {
    let eth = EthHdr {
        dst: eth.src,
        src: eth.dst,
        proto: eth.proto,
    };
    let mut out = IpHdr {
        vihl: 0x45,
        tos: 0,
        tot_len: (tot_len as u16).to_be(),
        id: 0,
        frag: 0x4000u16.to_be(),
        ttl: 64,
        proto,
        check: 0,
        saddr: ip.daddr,
        daddr: ip.saddr,
    };
    out.check = !csum::fold(sum_words::<IpHdr, 10>(&out, 0));
    (eth, out)
}

/// A RST for the TCP segment in `orig` (RFC 9293 3.10.7.1): seq from its ACK, or an ACK of everything it sent.
#[inline(always)]
pub fn tcp_rst(orig: &TcpFrame) -> TcpFrame {
    let (eth, ip) = turn_around(&orig.eth, &orig.ip, IPPROTO_TCP, RST_LEN - size_of::<EthHdr>());
    let mut tcp = TcpHdr {
        sport: orig.tcp.dport,
        dport: orig.tcp.sport,
        doff: 5 << 4,
        ..TcpHdr::default()
    };
    if orig.tcp.flags & TCP_ACK != 0 {
        tcp.seq = orig.tcp.ack;
        tcp.flags = TCP_RST;
    } else {
        let tot_len = u16::from_be(orig.ip.tot_len) as u32;
        let doff = ((orig.tcp.doff >> 4) as u32) * 4;
        let mut ack = u32::from_be_bytes(orig.tcp.seq).wrapping_add(tot_len.saturating_sub(20 + doff));
        if orig.tcp.flags & TCP_SYN != 0 {
            ack = ack.wrapping_add(1);
        }
        if orig.tcp.flags & TCP_FIN != 0 {
            ack = ack.wrapping_add(1);
        }
        tcp.ack = ack.to_be_bytes();
        tcp.flags = TCP_RST | TCP_ACK;
    }
    // Pseudo header: both addresses, zero + protocol, TCP length; then the header itself.
    let mut sum = sum_words::<[u8; 4], 2>(&ip.saddr, 0);
    sum = sum_words::<[u8; 4], 2>(&ip.daddr, sum);
    sum += u16::from_ne_bytes([0, IPPROTO_TCP]) as u32 + (size_of::<TcpHdr>() as u16).to_be() as u32;
    sum = sum_words::<TcpHdr, 10>(&tcp, sum);
    tcp.check = !csum::fold(sum);
    TcpFrame { eth, ip, tcp }
}

/// An ICMP port unreachable quoting the IPv4 header and first 8 transport bytes of `orig`.
#[inline(always)]
pub fn icmp_port_unreachable(orig: &UdpFrame) -> IcmpFrame {
    let (eth, ip) = turn_around(&orig.eth, &orig.ip, IPPROTO_ICMP, ICMP_LEN - size_of::<EthHdr>());
    let mut out = IcmpFrame {
        eth,
        ip,
        icmp_type: ICMP_DEST_UNREACH,
        icmp_code: ICMP_PORT_UNREACH,
        icmp_check: 0,
        unused: [0; 2],
        quoted_ip: orig.ip,
        quoted_l4: orig.l4,
    };
    // The ICMP message starts right after the outer IPv4 header: 36 bytes = 18 words.
    let mut sum = u16::from_ne_bytes([out.icmp_type, out.icmp_code]) as u32;
    sum = sum_words::<[u16; 2], 2>(&out.unused, sum);
    sum = sum_words::<IpHdr, 10>(&out.quoted_ip, sum);
    sum = sum_words::<[u16; 4], 4>(&out.quoted_l4, sum);
    out.icmp_check = !csum::fold(sum);
    out
}
