//! IP address management for one node's podCIDR: a pure allocator and its JSON file in the state directory.
//!
//! The network address, the broadcast address and `.1` (the gateway on the node side of every pod veth) are never
//! handed out. Allocation is idempotent per owner (pod UID), so a retried pod set-up gets the same address.
use std::{
    collections::BTreeMap,
    io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::cidr::Ipv4Cidr;

/// IPAM failures.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("podCIDR {0} is exhausted: no free pod addresses")]
    Exhausted(Ipv4Cidr),
    #[error("podCIDR {0} is too small for pods (need at least a /30)")]
    TooSmall(Ipv4Cidr),
    #[error(
        "IPAM state {path} belongs to podCIDR {found}, but the node's podCIDR is {want}; remove the file"
    )]
    CidrChanged {
        path: PathBuf,
        found: Ipv4Cidr,
        want: Ipv4Cidr,
    },
    #[error("IPAM state {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("IPAM state {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Allocations from one podCIDR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipam {
    cidr: Ipv4Cidr,
    /// address -> owner (pod UID)
    allocated: BTreeMap<Ipv4Addr, String>,
    /// Where the next search starts, so released addresses are not reused at once.
    next: u64,
}

impl Ipam {
    pub fn new(cidr: Ipv4Cidr) -> Result<Self, IpamError> {
        if cidr.size() < 4 {
            return Err(IpamError::TooSmall(cidr));
        }
        Ok(Self {
            cidr,
            allocated: BTreeMap::new(),
            next: 2,
        })
    }

    pub fn cidr(&self) -> Ipv4Cidr {
        self.cidr
    }

    /// The node-side gateway address (`.1`).
    pub fn gateway(&self) -> Ipv4Addr {
        self.cidr.nth(1).expect("a /30 or larger has .1")
    }

    /// The address owned by `owner`, if any.
    pub fn lookup(&self, owner: &str) -> Option<Ipv4Addr> {
        self.allocated
            .iter()
            .find(|(_, o)| o.as_str() == owner)
            .map(|(ip, _)| *ip)
    }

    /// Every allocation, address -> owner.
    pub fn allocations(&self) -> &BTreeMap<Ipv4Addr, String> {
        &self.allocated
    }

    /// An address for `owner`: the one it already has, else the next free one.
    pub fn allocate(&mut self, owner: &str) -> Result<Ipv4Addr, IpamError> {
        if let Some(ip) = self.lookup(owner) {
            return Ok(ip);
        }
        let first = 2;
        let last = self.cidr.size() - 2; // broadcast excluded
        let span = last - first + 1;
        let start = self.next.clamp(first, last);
        for i in 0..span {
            let offset = first + (start - first + i) % span;
            let ip = self.cidr.nth(offset).expect("offset inside the prefix");
            if let std::collections::btree_map::Entry::Vacant(slot) = self.allocated.entry(ip) {
                slot.insert(owner.to_string());
                self.next = offset + 1;
                return Ok(ip);
            }
        }
        Err(IpamError::Exhausted(self.cidr))
    }

    /// Frees `owner`'s address; returns it if there was one.
    pub fn release(&mut self, owner: &str) -> Option<Ipv4Addr> {
        let ip = self.lookup(owner)?;
        self.allocated.remove(&ip);
        Some(ip)
    }

    /// Keeps only the owners for which `keep` is true (garbage collection after a restart).
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) -> Vec<(Ipv4Addr, String)> {
        let gone: Vec<_> = self
            .allocated
            .iter()
            .filter(|(_, o)| !keep(o))
            .map(|(ip, o)| (*ip, o.clone()))
            .collect();
        for (ip, _) in &gone {
            self.allocated.remove(ip);
        }
        gone
    }
}

/// The allocator persisted as JSON (written atomically: temporary file, then rename).
#[derive(Debug)]
pub struct IpamStore {
    path: PathBuf,
}

impl IpamStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved allocator, or a fresh one for `cidr` when nothing was saved.
    pub fn load(&self, cidr: Ipv4Cidr) -> Result<Ipam, IpamError> {
        let io_err = |source| IpamError::Io {
            path: self.path.clone(),
            source,
        };
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                let ipam: Ipam = serde_json::from_slice(&bytes).map_err(|source| IpamError::Corrupt {
                    path: self.path.clone(),
                    source,
                })?;
                if ipam.cidr != cidr {
                    return Err(IpamError::CidrChanged {
                        path: self.path.clone(),
                        found: ipam.cidr,
                        want: cidr,
                    });
                }
                Ok(ipam)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ipam::new(cidr),
            Err(e) => Err(io_err(e)),
        }
    }

    pub fn save(&self, ipam: &Ipam) -> Result<(), IpamError> {
        let io_err = |source| IpamError::Io {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(ipam).expect("IPAM state serialises");
        std::fs::write(&tmp, bytes).map_err(io_err)?;
        std::fs::rename(&tmp, &self.path).map_err(io_err)
    }

    /// Loads, applies `f`, saves: one read-modify-write step.
    pub fn update<T>(
        &self,
        cidr: Ipv4Cidr,
        f: impl FnOnce(&mut Ipam) -> Result<T, IpamError>,
    ) -> Result<T, IpamError> {
        let mut ipam = self.load(cidr)?;
        let out = f(&mut ipam)?;
        self.save(&ipam)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn skips_network_gateway_and_broadcast() {
        let mut ipam = Ipam::new(cidr("10.244.1.0/30")).unwrap();
        assert_eq!(ipam.gateway(), "10.244.1.1".parse::<Ipv4Addr>().unwrap());
        assert_eq!(ipam.allocate("a").unwrap().to_string(), "10.244.1.2");
        assert!(matches!(ipam.allocate("b"), Err(IpamError::Exhausted(_))));
    }

    #[test]
    fn allocation_is_idempotent_and_released_addresses_come_back_last() {
        let mut ipam = Ipam::new(cidr("10.244.1.0/29")).unwrap();
        let a = ipam.allocate("a").unwrap();
        assert_eq!(ipam.allocate("a").unwrap(), a);
        let b = ipam.allocate("b").unwrap();
        assert_ne!(a, b);
        assert_eq!(ipam.release("a"), Some(a));
        assert_eq!(ipam.release("a"), None);
        // .2 is free again but the search continues after the last handed-out address first.
        let c = ipam.allocate("c").unwrap();
        assert_eq!(c.to_string(), "10.244.1.4");
        let rest: Vec<_> = ["d", "e", "f"]
            .iter()
            .map(|o| ipam.allocate(o).unwrap().to_string())
            .collect();
        assert_eq!(rest, ["10.244.1.5", "10.244.1.6", "10.244.1.2"]);
        assert!(ipam.allocate("g").is_err());
    }

    #[test]
    fn too_small_prefix_is_refused() {
        assert!(matches!(
            Ipam::new(cidr("10.0.0.0/31")),
            Err(IpamError::TooSmall(_))
        ));
    }

    #[test]
    fn retain_drops_unknown_owners() {
        let mut ipam = Ipam::new(cidr("10.244.1.0/24")).unwrap();
        ipam.allocate("keep").unwrap();
        let gone_ip = ipam.allocate("gone").unwrap();
        let gone = ipam.retain(|o| o == "keep");
        assert_eq!(gone, vec![(gone_ip, "gone".to_string())]);
        assert!(ipam.lookup("keep").is_some());
    }

    #[test]
    fn store_round_trips_and_detects_a_changed_cidr() {
        let dir = std::env::temp_dir().join(format!("skiff-ipam-test-{}", std::process::id()));
        let store = IpamStore::new(dir.join("ipam.json"));
        let c = cidr("10.244.3.0/24");
        let ip = store.update(c, |i| i.allocate("pod-1")).unwrap();
        assert_eq!(store.load(c).unwrap().lookup("pod-1"), Some(ip));
        assert!(matches!(
            store.load(cidr("10.244.4.0/24")),
            Err(IpamError::CidrChanged { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
