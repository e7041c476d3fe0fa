//! Allocators for Service ClusterIPs (from the service CIDR) and NodePorts (from the port range).
//!
//! As in kube-apiserver, each range has a small static band at its start reserved for requested values;
//! dynamic allocation takes from the rest first and only falls back to the static band when the rest is full.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Allocation failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("range is full")]
    Full,
    #[error("provided value is not in the valid range")]
    OutOfRange,
    #[error("provided value is already allocated")]
    Allocated,
}

/// Offsets `0..size` of a range, some taken.
#[derive(Debug, Clone)]
struct Bitmap {
    size: u32,
    static_band: u32,
    used: BTreeSet<u32>,
    cursor: u32,
}

impl Bitmap {
    fn new(size: u32, static_band: u32) -> Self {
        Self {
            size,
            static_band: static_band.min(size),
            used: BTreeSet::new(),
            cursor: 0,
        }
    }

    fn claim(&mut self, offset: u32) -> Result<(), AllocError> {
        if offset >= self.size {
            return Err(AllocError::OutOfRange);
        }
        if self.used.insert(offset) {
            Ok(())
        } else {
            Err(AllocError::Allocated)
        }
    }

    fn allocate(&mut self) -> Result<u32, AllocError> {
        let dynamic = self.size - self.static_band;
        for band in [(self.static_band, dynamic), (0, self.static_band)] {
            let (start, len) = band;
            for i in 0..len {
                let offset = start + (self.cursor + i) % len;
                if self.used.insert(offset) {
                    self.cursor = (offset - start + 1) % len.max(1);
                    return Ok(offset);
                }
            }
        }
        Err(AllocError::Full)
    }

    fn release(&mut self, offset: u32) {
        self.used.remove(&offset);
    }
}

/// An IPv4 network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not in CIDR notation"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let prefix: u8 = prefix.parse().map_err(|e| format!("{s:?}: {e}"))?;
        if !(8..=30).contains(&prefix) {
            return Err(format!("{s:?}: prefix must be between /8 and /30"));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Self {
            network: Ipv4Addr::from(u32::from(ip) & mask),
            prefix,
        })
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Ipv4Cidr {
    fn size(&self) -> u32 {
        1u32 << (32 - self.prefix)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & (u32::MAX << (32 - self.prefix)) == u32::from(self.network)
    }

    /// The first usable address (the `kubernetes` Service's ClusterIP).
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }
}

/// Allocates ClusterIPs from a CIDR, never the network or broadcast address.
#[derive(Debug, Clone)]
pub struct IpAllocator {
    cidr: Ipv4Cidr,
    bits: Bitmap,
}

impl IpAllocator {
    pub fn new(cidr: Ipv4Cidr) -> Self {
        let usable = cidr.size() - 2;
        let static_band = (usable / 16).clamp(16, 256);
        Self {
            cidr,
            bits: Bitmap::new(usable, static_band),
        }
    }

    pub fn cidr(&self) -> Ipv4Cidr {
        self.cidr
    }

    fn offset(&self, ip: Ipv4Addr) -> Result<u32, AllocError> {
        let host = u32::from(ip).wrapping_sub(u32::from(self.cidr.network));
        if !self.cidr.contains(ip) || host == 0 || host == self.cidr.size() - 1 {
            return Err(AllocError::OutOfRange);
        }
        Ok(host - 1)
    }

    pub fn allocate(&mut self) -> Result<Ipv4Addr, AllocError> {
        let offset = self.bits.allocate()?;
        Ok(Ipv4Addr::from(u32::from(self.cidr.network) + 1 + offset))
    }

    pub fn claim(&mut self, ip: Ipv4Addr) -> Result<(), AllocError> {
        let offset = self.offset(ip)?;
        self.bits.claim(offset)
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        if let Ok(offset) = self.offset(ip) {
            self.bits.release(offset);
        }
    }
}

/// Allocates NodePorts from an inclusive port range.
#[derive(Debug, Clone)]
pub struct PortAllocator {
    first: u16,
    last: u16,
    bits: Bitmap,
}

/// Parses `30000-32767`.
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?} is not FIRST-LAST"))?;
    let first: u16 = a.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
    let last: u16 = b.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
    if first == 0 || last < first {
        return Err(format!("{s:?}: empty or invalid range"));
    }
    Ok((first, last))
}

impl PortAllocator {
    pub fn new(first: u16, last: u16) -> Self {
        let size = u32::from(last - first) + 1;
        Self {
            first,
            last,
            bits: Bitmap::new(size, (size / 32).clamp(16, 128)),
        }
    }

    pub fn range(&self) -> (u16, u16) {
        (self.first, self.last)
    }

    pub fn allocate(&mut self) -> Result<u16, AllocError> {
        let offset = self.bits.allocate()?;
        Ok(self.first + u16::try_from(offset).expect("offset within a u16 range"))
    }

    pub fn claim(&mut self, port: u16) -> Result<(), AllocError> {
        if port < self.first || port > self.last {
            return Err(AllocError::OutOfRange);
        }
        self.bits.claim(u32::from(port - self.first))
    }

    pub fn release(&mut self, port: u16) {
        if (self.first..=self.last).contains(&port) {
            self.bits.release(u32::from(port - self.first));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing() {
        let c: Ipv4Cidr = "10.96.3.4/16".parse().unwrap();
        assert_eq!(c.to_string(), "10.96.0.0/16");
        assert!(c.contains("10.96.255.255".parse().unwrap()));
        assert!(!c.contains("10.97.0.1".parse().unwrap()));
        assert!("10.96.0.0".parse::<Ipv4Cidr>().is_err());
        assert!("10.96.0.0/31".parse::<Ipv4Cidr>().is_err());
    }

    #[test]
    fn ips_come_from_the_dynamic_band_first_and_never_repeat() {
        let mut a = IpAllocator::new("10.96.0.0/24".parse().unwrap());
        let first = a.allocate().unwrap();
        assert!(
            u32::from(first) >= u32::from("10.96.0.17".parse::<Ipv4Addr>().unwrap()),
            "{first}"
        );
        assert_eq!(a.claim(first), Err(AllocError::Allocated));
        assert_eq!(a.claim("10.96.0.10".parse().unwrap()), Ok(()));
        assert_eq!(a.claim("10.96.0.0".parse().unwrap()), Err(AllocError::OutOfRange));
        assert_eq!(
            a.claim("10.96.0.255".parse().unwrap()),
            Err(AllocError::OutOfRange)
        );
        assert_eq!(a.claim("10.97.0.1".parse().unwrap()), Err(AllocError::OutOfRange));
        let mut seen = std::collections::BTreeSet::from([first, "10.96.0.10".parse().unwrap()]);
        while let Ok(ip) = a.allocate() {
            assert!(seen.insert(ip), "{ip} allocated twice");
        }
        assert_eq!(seen.len(), 254, "every usable address once, static band last");
        a.release(first);
        assert_eq!(a.allocate(), Ok(first));
    }

    #[test]
    fn node_ports() {
        let (first, last) = parse_port_range("30000-30063").unwrap();
        let mut p = PortAllocator::new(first, last);
        let port = p.allocate().unwrap();
        assert!(port >= 30016, "dynamic band first: {port}");
        assert_eq!(p.claim(30000), Ok(()));
        assert_eq!(p.claim(30000), Err(AllocError::Allocated));
        assert_eq!(p.claim(29999), Err(AllocError::OutOfRange));
        let mut n = 2;
        while p.allocate().is_ok() {
            n += 1;
        }
        assert_eq!(n, 64);
        assert!(parse_port_range("5-1").is_err());
    }
}
