//! Hand-built Ethernet/IPv4/TCP/UDP frames for BPF fixtures, and an independent reader that checks checksums.
use std::net::Ipv4Addr;

pub const ETH_HLEN: usize = 14;
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// The transport header of a frame to build.
#[derive(Clone, Debug)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
}

/// A frame to build; `build()` fills in lengths and valid checksums.
#[derive(Clone, Debug)]
pub struct FrameSpec {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub saddr: Ipv4Addr,
    pub daddr: Ipv4Addr,
    pub ttl: u8,
    /// IPv4 options (padded to a multiple of 4 bytes).
    pub ip_options: Vec<u8>,
    /// Raw flags + fragment offset field (host order), e.g. 0x2000 for "more fragments".
    pub frag: u16,
    pub l4: L4,
    pub payload: Vec<u8>,
    /// Leave the UDP checksum at zero ("no checksum").
    pub udp_no_csum: bool,
}

impl FrameSpec {
    pub fn tcp(saddr: Ipv4Addr, sport: u16, daddr: Ipv4Addr, dport: u16, flags: u8) -> Self {
        Self::new(
            saddr,
            daddr,
            L4::Tcp {
                sport,
                dport,
                seq: 1000,
                ack: if flags & TCP_ACK != 0 { 5000 } else { 0 },
                flags,
            },
        )
    }

    pub fn udp(saddr: Ipv4Addr, sport: u16, daddr: Ipv4Addr, dport: u16) -> Self {
        let mut f = Self::new(saddr, daddr, L4::Udp { sport, dport });
        f.payload = b"ping".to_vec();
        f
    }

    fn new(saddr: Ipv4Addr, daddr: Ipv4Addr, l4: L4) -> Self {
        Self {
            src_mac: CLIENT_MAC,
            dst_mac: HOST_MAC,
            saddr,
            daddr,
            ttl: 64,
            ip_options: Vec::new(),
            frag: 0,
            l4,
            payload: Vec::new(),
            udp_no_csum: false,
        }
    }

    pub fn with_payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let mut opts = self.ip_options.clone();
        while !opts.len().is_multiple_of(4) {
            opts.push(0);
        }
        let ihl = 20 + opts.len();
        let mut l4 = match self.l4 {
            L4::Tcp {
                sport,
                dport,
                seq,
                ack,
                flags,
            } => {
                let mut h = vec![0u8; 20];
                h[0..2].copy_from_slice(&sport.to_be_bytes());
                h[2..4].copy_from_slice(&dport.to_be_bytes());
                h[4..8].copy_from_slice(&seq.to_be_bytes());
                h[8..12].copy_from_slice(&ack.to_be_bytes());
                h[12] = 5 << 4;
                h[13] = flags;
                h[14..16].copy_from_slice(&64240u16.to_be_bytes());
                h
            }
            L4::Udp { sport, dport } => {
                let mut h = vec![0u8; 8];
                h[0..2].copy_from_slice(&sport.to_be_bytes());
                h[2..4].copy_from_slice(&dport.to_be_bytes());
                h[4..6].copy_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                h
            }
        };
        l4.extend_from_slice(&self.payload);
        let proto = self.proto();
        if !(proto == 17 && self.udp_no_csum) {
            let c = l4_checksum(self.saddr, self.daddr, proto, &l4);
            let off = if proto == 6 { 16 } else { 6 };
            let c = if proto == 17 && c == 0 { 0xffff } else { c };
            l4[off..off + 2].copy_from_slice(&c.to_be_bytes());
        }
        let mut ip = vec![0u8; 20];
        ip[0] = 0x40 | (ihl / 4) as u8;
        ip[2..4].copy_from_slice(&((ihl + l4.len()) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        ip[6..8].copy_from_slice(&self.frag.to_be_bytes());
        ip[8] = self.ttl;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&self.saddr.octets());
        ip[16..20].copy_from_slice(&self.daddr.octets());
        ip.extend_from_slice(&opts);
        let c = checksum(&ip, 0);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let mut frame = Vec::with_capacity(ETH_HLEN + ip.len() + l4.len());
        frame.extend_from_slice(&self.dst_mac);
        frame.extend_from_slice(&self.src_mac);
        frame.extend_from_slice(&0x0800u16.to_be_bytes());
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&l4);
        frame
    }

    fn proto(&self) -> u8 {
        match self.l4 {
            L4::Tcp { .. } => 6,
            L4::Udp { .. } => 17,
        }
    }
}

/// Internet checksum of `data` with an initial one's-complement sum.
pub fn checksum(data: &[u8], init: u32) -> u16 {
    let mut sum = init;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            (chunk[0] as u16) << 8
        };
        sum += word as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo_sum(saddr: Ipv4Addr, daddr: Ipv4Addr, proto: u8, len: usize) -> u32 {
    let s = saddr.octets();
    let d = daddr.octets();
    [
        u16::from_be_bytes([s[0], s[1]]),
        u16::from_be_bytes([s[2], s[3]]),
        u16::from_be_bytes([d[0], d[1]]),
        u16::from_be_bytes([d[2], d[3]]),
    ]
    .iter()
    .map(|w| *w as u32)
    .sum::<u32>()
        + proto as u32
        + len as u32
}

/// TCP/UDP checksum (with the checksum field zeroed or included: a valid segment sums to 0).
pub fn l4_checksum(saddr: Ipv4Addr, daddr: Ipv4Addr, proto: u8, segment: &[u8]) -> u16 {
    checksum(segment, pseudo_sum(saddr, daddr, proto, segment.len()))
}

/// A frame as read back from a program's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub saddr: Ipv4Addr,
    pub daddr: Ipv4Addr,
    pub proto: u8,
    pub ttl: u8,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub tcp_flags: u8,
    /// ICMP type and code (ICMP frames only).
    pub icmp: Option<(u8, u8)>,
    /// Everything after the L4 header (for ICMP: after the 8-byte ICMP header).
    pub payload: Vec<u8>,
}

impl Seen {
    pub fn src(&self) -> (Ipv4Addr, u16) {
        (self.saddr, self.sport)
    }
    pub fn dst(&self) -> (Ipv4Addr, u16) {
        (self.daddr, self.dport)
    }
}

/// Parses an Ethernet/IPv4 frame and verifies its IPv4 and L4 (TCP, UDP unless zero, ICMP) checksums and lengths
/// independently of the code under test.
pub fn read_frame(frame: &[u8]) -> Result<Seen, String> {
    if frame.len() < ETH_HLEN + 20 {
        return Err(format!("frame too short: {} bytes", frame.len()));
    }
    if frame[12..14] != [0x08, 0x00] {
        return Err("not IPv4".into());
    }
    let ip = &frame[ETH_HLEN..];
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    let tot_len = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    if ip[0] >> 4 != 4 || ihl < 20 || tot_len < ihl || tot_len > ip.len() {
        return Err(format!(
            "bad IPv4 header: ihl {ihl} tot_len {tot_len} available {}",
            ip.len()
        ));
    }
    if checksum(&ip[..ihl], 0) != 0 {
        return Err("bad IPv4 header checksum".into());
    }
    let saddr = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let daddr = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let proto = ip[9];
    let seg = &ip[ihl..tot_len];
    let mut seen = Seen {
        src_mac: frame[6..12].try_into().unwrap(),
        dst_mac: frame[0..6].try_into().unwrap(),
        saddr,
        daddr,
        proto,
        ttl: ip[8],
        sport: 0,
        dport: 0,
        seq: 0,
        ack: 0,
        tcp_flags: 0,
        icmp: None,
        payload: Vec::new(),
    };
    match proto {
        6 => {
            if seg.len() < 20 {
                return Err("short TCP header".into());
            }
            if l4_checksum(saddr, daddr, 6, seg) != 0 {
                return Err("bad TCP checksum".into());
            }
            let doff = ((seg[12] >> 4) as usize) * 4;
            seen.sport = u16::from_be_bytes([seg[0], seg[1]]);
            seen.dport = u16::from_be_bytes([seg[2], seg[3]]);
            seen.seq = u32::from_be_bytes(seg[4..8].try_into().unwrap());
            seen.ack = u32::from_be_bytes(seg[8..12].try_into().unwrap());
            seen.tcp_flags = seg[13];
            seen.payload = seg[doff..].to_vec();
        }
        17 => {
            if seg.len() < 8 || u16::from_be_bytes([seg[4], seg[5]]) as usize != seg.len() {
                return Err("bad UDP length".into());
            }
            if u16::from_be_bytes([seg[6], seg[7]]) != 0 && l4_checksum(saddr, daddr, 17, seg) != 0 {
                return Err("bad UDP checksum".into());
            }
            seen.sport = u16::from_be_bytes([seg[0], seg[1]]);
            seen.dport = u16::from_be_bytes([seg[2], seg[3]]);
            seen.payload = seg[8..].to_vec();
        }
        1 => {
            if seg.len() < 8 || checksum(seg, 0) != 0 {
                return Err("bad ICMP checksum".into());
            }
            seen.icmp = Some((seg[0], seg[1]));
            seen.payload = seg[8..].to_vec();
        }
        p => return Err(format!("unexpected protocol {p}")),
    }
    Ok(seen)
}

/// The UDP checksum field of a frame without IP options.
pub fn udp_csum_field(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[ETH_HLEN + 20 + 6], frame[ETH_HLEN + 20 + 7]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn built_frames_read_back_with_valid_checksums() {
        let f = FrameSpec::tcp(a("10.0.0.1"), 1234, a("10.96.0.10"), 80, TCP_SYN).build();
        let s = read_frame(&f).unwrap();
        assert_eq!(
            (s.src(), s.dst(), s.tcp_flags),
            ((a("10.0.0.1"), 1234), (a("10.96.0.10"), 80), TCP_SYN)
        );
        let mut u = FrameSpec::udp(a("10.0.0.1"), 5353, a("10.96.0.10"), 53);
        u.ip_options = vec![1, 1, 1, 1];
        let s = read_frame(&u.build()).unwrap();
        assert_eq!(s.payload, b"ping");
    }

    #[test]
    fn corrupted_checksums_are_caught() {
        let mut f = FrameSpec::tcp(a("10.0.0.1"), 1234, a("10.96.0.10"), 80, TCP_SYN).build();
        f[ETH_HLEN + 16] ^= 1;
        assert!(read_frame(&f).unwrap_err().contains("IPv4"));
        let mut f = FrameSpec::udp(a("10.0.0.1"), 1, a("10.0.0.2"), 2).build();
        let n = f.len();
        f[n - 1] ^= 0x40;
        assert!(read_frame(&f).unwrap_err().contains("UDP"));
    }
}
