//! The desired dataplane state as plain data: frontends with their backends, flags and origin.
use std::{fmt, net::Ipv4Addr, sync::Arc};

use skiff_common::{SCOPE_EXTERNAL, SCOPE_INTERNAL, ServiceKey, svc_flags};

/// Converts an address to the `addr_be` form of the map types (network byte order in memory).
pub fn addr_be(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

/// Converts a port to the `port_be` form of the map types (network byte order in memory).
pub fn port_be(port: u16) -> u16 {
    port.to_be()
}

/// Inverse of [`addr_be`].
pub fn addr_from_be(addr_be: u32) -> Ipv4Addr {
    Ipv4Addr::from(addr_be.to_ne_bytes())
}

/// Inverse of [`port_be`].
pub fn port_from_be(port_be: u16) -> u16 {
    u16::from_be(port_be)
}

/// The node the agent programs: its name (to tell local endpoints), addresses (NodePort frontends) and zone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub addresses: Vec<Ipv4Addr>,
    pub zone: Option<String>,
}

/// Which clients a frontend entry serves (see `skiff_common::SCOPE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Internal,
    External,
}

impl Scope {
    pub fn as_u8(self) -> u8 {
        match self {
            Scope::Internal => SCOPE_INTERNAL,
            Scope::External => SCOPE_EXTERNAL,
        }
    }
}

/// L4 protocol of a frontend or backend (SCTP is not load-balanced).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// Parses a Kubernetes protocol name; `None` (unset) means TCP, SCTP and unknown names give `None`.
    pub fn from_k8s(name: Option<&str>) -> Option<Protocol> {
        match name.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            _ => None,
        }
    }

    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => skiff_common::PROTO_TCP,
            Protocol::Udp => skiff_common::PROTO_UDP,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

/// How new flows pick a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// Uniformly at random over the slot table.
    Random,
    /// Consistent hashing over a Maglev lookup table of `MAGLEV_TABLE_SIZE` slots.
    Maglev,
}

/// One endpoint as the datapath sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendSpec {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    /// The endpoint runs on this node.
    pub local: bool,
}

impl BackendSpec {
    /// The identity of a backend across services: (address, port, protocol). `local` is an attribute.
    pub fn identity(&self) -> (Ipv4Addr, u16, Protocol) {
        (self.addr, self.port, self.protocol)
    }
}

impl fmt::Display for BackendSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.addr, self.port, self.protocol.name())
    }
}

/// The Service port a frontend came from (for `inspect` and metrics labels). Shared strings: every frontend of a
/// Service, and the planner's copy of it, point at the same (interned) names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceRef {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    /// The Service port's name ("" when unnamed).
    pub port_name: Arc<str>,
    /// The Service port's number.
    pub port: u16,
}

impl fmt::Display for ServiceRef {
    /// `namespace/name:port`, with the port's name, or its number when it has no name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port_name.is_empty() {
            write!(f, "{}/{}:{}", self.namespace, self.name, self.port)
        } else {
            write!(f, "{}/{}:{}", self.namespace, self.name, self.port_name)
        }
    }
}

/// One service map entry: a (VIP, port, protocol, scope) and how to balance it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frontend {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    pub scope: Scope,
    /// `skiff_common::svc_flags` bits.
    pub flags: u16,
    /// sessionAffinity ClientIP timeout; 0 = none.
    pub affinity_timeout_s: u32,
    pub algorithm: Algorithm,
    /// Ready endpoints, sorted and deduplicated by address.
    pub ready: Vec<BackendSpec>,
    /// Serving but terminating endpoints (used only when `ready` is empty), sorted.
    pub terminating: Vec<BackendSpec>,
    pub origin: ServiceRef,
}

impl Frontend {
    /// The services map key of this frontend.
    pub fn key(&self) -> ServiceKey {
        ServiceKey {
            addr_be: addr_be(self.addr),
            port_be: port_be(self.port),
            proto: self.protocol.number(),
            scope: self.scope.as_u8(),
        }
    }

    /// The backends new flows may use: the ready ones, or the terminating ones when none is ready (KEP-1669).
    pub fn active_backends(&self) -> &[BackendSpec] {
        if self.ready.is_empty() {
            &self.terminating
        } else {
            &self.ready
        }
    }

    pub fn is_maglev(&self) -> bool {
        self.flags & svc_flags::MAGLEV != 0
    }
}

/// Everything the dataplane should serve, sorted by services map key (so plans are deterministic).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataplaneState {
    pub frontends: Vec<Frontend>,
}

impl DataplaneState {
    /// Builds a state from frontends in any order; sorts them and keeps the first frontend for a duplicate key.
    pub fn from_frontends(mut frontends: Vec<Frontend>) -> DataplaneState {
        frontends.sort_by_key(|f| f.key());
        frontends.dedup_by_key(|f| f.key());
        DataplaneState { frontends }
    }

    /// The frontend with this services map key, if any.
    pub fn get(&self, key: &ServiceKey) -> Option<&Frontend> {
        self.frontends
            .binary_search_by_key(key, |f| f.key())
            .ok()
            .map(|i| &self.frontends[i])
    }
}
