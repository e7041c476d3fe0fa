//! Answers for flows to services without endpoints: a TCP RST or an ICMP port unreachable, built from the
//! offending frame (Ethernet + 20-byte IPv4 header) with its addresses turned around.
use crate::{
    csum,
    parse::{ETH_HLEN, TCP_ACK, TCP_FIN, TCP_SYN},
};

/// Frame sizes read from the original packet and written as the answer.
pub const RST_IN: usize = ETH_HLEN + 20 + 20;
pub const RST_LEN: usize = ETH_HLEN + 20 + 20;
pub const ICMP_IN: usize = ETH_HLEN + 20 + 8;
pub const ICMP_LEN: usize = ETH_HLEN + 20 + 8 + 20 + 8;

const IP: usize = ETH_HLEN;
const L4: usize = ETH_HLEN + 20;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_PORT_UNREACH: u8 = 3;
const TCP_RST: u8 = 0x04;

#[inline(always)]
fn copy(dst: &mut [u8], dst_off: usize, src: &[u8], src_off: usize, len: usize) {
    let mut i = 0;
    while i < len {
        if dst_off + i < dst.len() && src_off + i < src.len() {
            dst[dst_off + i] = src[src_off + i];
        }
        i += 1;
    }
}

#[inline(always)]
fn put16(buf: &mut [u8], off: usize, v: u16) {
    let b = v.to_be_bytes();
    buf[off] = b[0];
    buf[off + 1] = b[1];
}

#[inline(always)]
fn put32(buf: &mut [u8], off: usize, v: u32) {
    let b = v.to_be_bytes();
    buf[off] = b[0];
    buf[off + 1] = b[1];
    buf[off + 2] = b[2];
    buf[off + 3] = b[3];
}

#[inline(always)]
fn get32(buf: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]])
}

/// Ethernet with swapped MACs and an IPv4 header from the original destination back to its source.
#[inline(always)]
fn turn_around(orig: &[u8], out: &mut [u8], proto: u8, tot_len: u16) {
    copy(out, 0, orig, 6, 6);
    copy(out, 6, orig, 0, 6);
    copy(out, 12, orig, 12, 2);
    out[IP] = 0x45;
    out[IP + 1] = 0;
    put16(out, IP + 2, tot_len);
    put16(out, IP + 4, 0);
    put16(out, IP + 6, 0x4000);
    out[IP + 8] = 64;
    out[IP + 9] = proto;
    put16(out, IP + 10, 0);
    copy(out, IP + 12, orig, IP + 16, 4);
    copy(out, IP + 16, orig, IP + 12, 4);
    let sum = !csum::fold(csum::sum_be(out, IP, 20, 0));
    put16(out, IP + 10, sum);
}

/// A RST for the TCP segment in `orig` (RFC 9293 3.10.7.1): seq from its ACK, or an ACK of everything it sent.
#[inline(always)]
pub fn tcp_rst(orig: &[u8; RST_IN], out: &mut [u8; RST_LEN]) {
    turn_around(orig, out, IPPROTO_TCP, 40);
    copy(out, L4, orig, L4 + 2, 2);
    copy(out, L4 + 2, orig, L4, 2);
    let in_flags = orig[L4 + 13];
    let tot_len = u16::from_be_bytes([orig[IP + 2], orig[IP + 3]]) as u32;
    let doff = ((orig[L4 + 12] >> 4) as u32) * 4;
    let payload = tot_len.saturating_sub(20 + doff);
    if in_flags & TCP_ACK != 0 {
        put32(out, L4 + 4, get32(orig, L4 + 8));
        put32(out, L4 + 8, 0);
        out[L4 + 13] = TCP_RST;
    } else {
        let mut ack = get32(orig, L4 + 4).wrapping_add(payload);
        if in_flags & TCP_SYN != 0 {
            ack = ack.wrapping_add(1);
        }
        if in_flags & TCP_FIN != 0 {
            ack = ack.wrapping_add(1);
        }
        put32(out, L4 + 4, 0);
        put32(out, L4 + 8, ack);
        out[L4 + 13] = TCP_RST | TCP_ACK;
    }
    out[L4 + 12] = 5 << 4;
    put16(out, L4 + 14, 0);
    put16(out, L4 + 16, 0);
    put16(out, L4 + 18, 0);
    // Pseudo header: addresses, protocol, TCP length.
    let mut sum = csum::sum_be(out, IP + 12, 8, 0);
    sum += IPPROTO_TCP as u32 + 20;
    sum = csum::sum_be(out, L4, 20, sum);
    put16(out, L4 + 16, !csum::fold(sum));
}

/// An ICMP destination unreachable (port unreachable) quoting the IPv4 header and first 8 bytes of `orig`.
#[inline(always)]
pub fn icmp_port_unreachable(orig: &[u8; ICMP_IN], out: &mut [u8; ICMP_LEN]) {
    turn_around(orig, out, IPPROTO_ICMP, (ICMP_LEN - ETH_HLEN) as u16);
    out[L4] = ICMP_DEST_UNREACH;
    out[L4 + 1] = ICMP_PORT_UNREACH;
    put16(out, L4 + 2, 0);
    put32(out, L4 + 4, 0);
    copy(out, L4 + 8, orig, IP, 28);
    let sum = csum::sum_be(out, L4, ICMP_LEN - L4, 0);
    put16(out, L4 + 2, !csum::fold(sum));
}
