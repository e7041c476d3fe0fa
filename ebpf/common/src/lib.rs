//! Map keys, values and constants shared by Skiff's eBPF programs and the agent.
//!
//! Every type is `#[repr(C)]` with explicit `_pad` fields, so no byte of a key is left to chance (the kernel hashes
//! keys as raw bytes). Addresses and ports are kept in network byte order (`be` in a field name says so); everything
//! else is host order. Map names carry a layout version: change a layout, bump the version.
#![no_std]

/// Directory under bpffs where an agent pins its maps and links: `/sys/fs/bpf/skiff/<node-name>/`.
pub const PIN_ROOT: &str = "/sys/fs/bpf/skiff";

/// Map names (as they appear in the object file and under the pin directory).
pub mod maps {
    pub const SERVICES: &str = "SKIFF_SVC_V1";
    pub const BACKENDS: &str = "SKIFF_BACKENDS_V1";
    pub const SLOTS: &str = "SKIFF_SLOTS_V1";
    pub const REV_NAT: &str = "SKIFF_REVNAT_V1";
    pub const CONNTRACK: &str = "SKIFF_CT_V1";
    pub const SOCK_REV_NAT: &str = "SKIFF_SOCK_REVNAT_V1";
    pub const AFFINITY: &str = "SKIFF_AFFINITY_V1";
    pub const CONFIG: &str = "SKIFF_CONFIG_V1";
    pub const SVC_STATS: &str = "SKIFF_SVC_STATS_V1";
    pub const BACKEND_STATS: &str = "SKIFF_BE_STATS_V1";
    pub const DROPS: &str = "SKIFF_DROPS_V1";

    /// Every map name, for pinning and cleanup.
    pub const ALL: [&str; 11] = [
        SERVICES,
        BACKENDS,
        SLOTS,
        REV_NAT,
        CONNTRACK,
        SOCK_REV_NAT,
        AFFINITY,
        CONFIG,
        SVC_STATS,
        BACKEND_STATS,
        DROPS,
    ];
}

/// Program names (the Rust function names of the entry points in `skiff-ebpf`).
pub mod programs {
    pub const CONNECT4: &str = "skiff_connect4";
    pub const SENDMSG4: &str = "skiff_sendmsg4";
    pub const RECVMSG4: &str = "skiff_recvmsg4";
    pub const GETPEERNAME4: &str = "skiff_getpeername4";
    /// TC ingress on a pod-facing interface (packets leaving the pod): DNAT to a backend.
    pub const TC_FROM_POD: &str = "skiff_tc_from_pod";
    /// TC egress on a pod-facing interface (packets entering the pod): reverse NAT of replies.
    pub const TC_TO_POD: &str = "skiff_tc_to_pod";
    /// XDP on the node uplink: NodePort, LoadBalancer and ExternalIP traffic from outside, and its replies.
    pub const XDP_UPLINK: &str = "skiff_xdp_uplink";
    /// TC egress on the node uplink: reverse NAT of replies from local backends to flows XDP DNATed.
    pub const TC_UPLINK_EGRESS: &str = "skiff_tc_uplink_egress";
    /// XDP_PASS-only program for the peer of a veth that receives XDP_TX/REDIRECT frames (see EBPF-NOTES).
    pub const XDP_PASS: &str = "skiff_xdp_pass";
}

/// Default map sizes (the agent may override them at load time).
pub mod sizes {
    pub const SERVICES: u32 = 65_536;
    pub const BACKENDS: u32 = 262_144;
    pub const SLOTS: u32 = 1_048_576;
    pub const REV_NAT: u32 = 65_536;
    pub const CONNTRACK: u32 = 262_144;
    pub const SOCK_REV_NAT: u32 = 262_144;
    pub const AFFINITY: u32 = 65_536;
    /// Per-CPU stats arrays are indexed by rev-NAT id and backend id respectively.
    pub const SVC_STATS: u32 = REV_NAT;
    pub const BACKEND_STATS: u32 = 65_536;
}

/// Size of a Maglev lookup table (prime, as Maglev requires; 100 x the usual backend count keeps disruption low).
pub const MAGLEV_TABLE_SIZE: u32 = 16_381;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Which clients a service entry is for: traffic from inside the cluster (pods and the host, seen by the socket and
/// TC hooks) or from outside (seen by XDP on the uplink). Traffic policies make the two backend sets differ.
pub const SCOPE_INTERNAL: u8 = 0;
pub const SCOPE_EXTERNAL: u8 = 1;

/// Murmur3-finalizer mixing step of the flow hash.
#[inline(always)]
pub fn hash_mix(mut h: u32, v: u32) -> u32 {
    h ^= v;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Hash of a flow's 5-tuple (wire-order fields), stable for the life of the flow. The datapath picks Maglev slots
/// and SNAT ports with it; `skiff-agent inspect flow` uses it to explain those choices.
#[inline(always)]
pub fn flow_hash(saddr_be: u32, daddr_be: u32, sport_be: u16, dport_be: u16, proto: u8) -> u32 {
    let h = hash_mix(0x5eed_5eed, saddr_be);
    let h = hash_mix(h, daddr_be);
    let h = hash_mix(h, ((sport_be as u32) << 16) | dport_be as u32);
    hash_mix(h, proto as u32)
}

/// A service frontend: VIP (ClusterIP, ExternalIP, LoadBalancer IP or a node address for NodePort), port, protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ServiceKey {
    pub addr_be: u32,
    pub port_be: u16,
    pub proto: u8,
    pub scope: u8,
}

/// Service flags.
pub mod svc_flags {
    /// Pick the backend from a Maglev table (`MAGLEV_TABLE_SIZE` slots) by flow hash instead of at random.
    pub const MAGLEV: u16 = 1 << 0;
    /// The frontend is a NodePort on a node address (XDP: may SNAT to the node when the backend is remote).
    pub const NODEPORT: u16 = 1 << 1;
    /// The frontend is an ExternalIP or LoadBalancer IP.
    pub const EXTERNAL_IP: u16 = 1 << 2;
    /// Traffic policy Local: only node-local backends are in the table; no SNAT is ever needed.
    pub const LOCAL_ONLY: u16 = 1 << 3;
}

/// How to pick a backend for a new flow to a frontend.
///
/// Slots `[0, ready_count)` of table `table_id` hold ready backends; slots `[ready_count, ready_count +
/// terminating_count)` hold serving-but-terminating ones, used only when there is no ready backend (KEP-1669).
/// With `svc_flags::MAGLEV` the table has `MAGLEV_TABLE_SIZE` slots and `ready_count` equals it. Both counts zero:
/// the service has no endpoints and new flows are rejected.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ServiceValue {
    pub ready_count: u32,
    pub terminating_count: u32,
    pub table_id: u32,
    /// sessionAffinity ClientIP timeout in seconds; 0 = no affinity.
    pub affinity_timeout_s: u32,
    /// Identifies the service port for reverse NAT, affinity and stats.
    pub rev_nat_id: u16,
    pub flags: u16,
}

/// Key of the selection-table map: slot `slot` of table `table_id`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SlotKey {
    pub table_id: u32,
    pub slot: u32,
}

/// Value of the selection-table map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SlotValue {
    pub backend_id: u32,
}

/// Backend flags.
pub mod backend_flags {
    /// The backend runs on this node (XDP: DNAT and pass, no SNAT).
    pub const LOCAL: u8 = 1 << 0;
}

/// Backends map value, keyed by backend id (`u32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Backend {
    pub addr_be: u32,
    pub port_be: u16,
    pub proto: u8,
    pub flags: u8,
}

/// Reverse-NAT map value, keyed by rev-NAT id (`u32`): the frontend replies must appear to come from.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RevNat {
    pub addr_be: u32,
    pub port_be: u16,
    pub _pad: u16,
}

/// Conntrack direction / kind of entry.
pub mod ct_kind {
    /// Original direction of a DNATed flow, keyed by (client, frontend): which backend it uses.
    pub const SERVICE: u8 = 1;
    /// Reply direction keyed by (backend, client): replies get their source rewritten to the frontend.
    pub const REPLY: u8 = 2;
    /// Reply direction of an XDP-SNATed flow keyed by (backend, node:nat_port): restore the client as destination.
    pub const SNAT_REPLY: u8 = 3;
}

/// Conntrack key: a 5-tuple as seen on the wire for that direction, plus the entry kind.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CtKey {
    pub saddr_be: u32,
    pub daddr_be: u32,
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    pub kind: u8,
    pub _pad: u16,
}

/// Conntrack flags.
pub mod ct_flags {
    /// A FIN or RST was seen; the entry may be reused by a new connection on the same tuple.
    pub const CLOSING: u16 = 1 << 0;
    /// The flow was SNATed to the node address by XDP (remote backend).
    pub const SNAT: u16 = 1 << 1;
    /// The flow was SNATed for hairpin (a pod reaching itself through its service).
    pub const HAIRPIN: u16 = 1 << 2;
    /// The flow came in through the uplink (XDP, local backend). Its replies are reverse-translated after routing,
    /// by the uplink's TC egress: a node address as source before routing would be dropped as a martian.
    pub const UPLINK: u16 = 1 << 3;
}

/// Conntrack value.
///
/// For `SERVICE` entries `nat_addr_be/nat_port_be` hold the source the flow was SNATed to (if `ct_flags::SNAT` or
/// `HAIRPIN`); for `SNAT_REPLY` entries they hold the original client to restore.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CtValue {
    /// `bpf_ktime_get_ns()` of the last packet; the agent's GC removes idle entries.
    pub last_seen_ns: u64,
    pub backend_id: u32,
    pub nat_addr_be: u32,
    pub nat_port_be: u16,
    pub rev_nat_id: u16,
    pub flags: u16,
    pub _pad: u16,
}

/// Socket reverse-NAT key (socket LB): which socket talked to which backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SockRevNatKey {
    pub cookie: u64,
    pub addr_be: u32,
    pub port_be: u16,
    pub _pad: u16,
}

/// Socket reverse-NAT value: the frontend the application asked for.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SockRevNatValue {
    pub addr_be: u32,
    pub port_be: u16,
    pub rev_nat_id: u16,
}

/// sessionAffinity ClientIP key.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct AffinityKey {
    pub client_addr_be: u32,
    pub rev_nat_id: u16,
    pub _pad: u16,
}

/// sessionAffinity ClientIP value.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AffinityValue {
    pub last_used_ns: u64,
    pub backend_id: u32,
    pub _pad: u32,
}

/// Node-wide settings, element 0 of the `CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Config {
    /// The node address XDP SNATs remote-backend NodePort flows to.
    pub node_addr_be: u32,
    /// Address used as source for hairpin flows (a pod reaching itself through a service).
    pub hairpin_addr_be: u32,
    /// Lowest and highest source port XDP uses for SNAT (host order).
    pub snat_port_min: u16,
    pub snat_port_max: u16,
    pub flags: u32,
}

/// Per-service and per-backend counters (per-CPU arrays; the agent sums CPUs).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

/// Why the datapath dropped or rejected a packet; index into the `DROPS` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    NoBackend = 0,
    BackendMissing = 1,
    SlotMissing = 2,
    RevNatMissing = 3,
    CtInsertFailed = 4,
    SnatPortsExhausted = 5,
    FibLookupFailed = 6,
    Malformed = 7,
    Fragment = 8,
}

impl DropReason {
    pub const COUNT: u32 = 9;
    pub const ALL: [DropReason; 9] = [
        DropReason::NoBackend,
        DropReason::BackendMissing,
        DropReason::SlotMissing,
        DropReason::RevNatMissing,
        DropReason::CtInsertFailed,
        DropReason::SnatPortsExhausted,
        DropReason::FibLookupFailed,
        DropReason::Malformed,
        DropReason::Fragment,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            DropReason::NoBackend => "no_backend",
            DropReason::BackendMissing => "backend_missing",
            DropReason::SlotMissing => "slot_missing",
            DropReason::RevNatMissing => "rev_nat_missing",
            DropReason::CtInsertFailed => "ct_insert_failed",
            DropReason::SnatPortsExhausted => "snat_ports_exhausted",
            DropReason::FibLookupFailed => "fib_lookup_failed",
            DropReason::Malformed => "malformed",
            DropReason::Fragment => "fragment",
        }
    }
}

#[cfg(feature = "user")]
mod pod_impls {
    use super::*;
    // SAFETY: every type is #[repr(C)], made of plain integers, with explicit padding and no implicit holes
    // (checked by the size tests below).
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for ServiceValue {}
    unsafe impl aya::Pod for SlotKey {}
    unsafe impl aya::Pod for SlotValue {}
    unsafe impl aya::Pod for Backend {}
    unsafe impl aya::Pod for RevNat {}
    unsafe impl aya::Pod for CtKey {}
    unsafe impl aya::Pod for CtValue {}
    unsafe impl aya::Pod for SockRevNatKey {}
    unsafe impl aya::Pod for SockRevNatValue {}
    unsafe impl aya::Pod for AffinityKey {}
    unsafe impl aya::Pod for AffinityValue {}
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for Counters {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    /// A size that differs from the sum of the fields means the compiler inserted padding we do not control.
    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<ServiceKey>(), 4 + 2 + 1 + 1);
        assert_eq!(size_of::<ServiceValue>(), 4 * 4 + 2 + 2);
        assert_eq!(size_of::<SlotKey>(), 8);
        assert_eq!(size_of::<SlotValue>(), 4);
        assert_eq!(size_of::<Backend>(), 4 + 2 + 1 + 1);
        assert_eq!(size_of::<RevNat>(), 8);
        assert_eq!(size_of::<CtKey>(), 4 + 4 + 2 + 2 + 1 + 1 + 2);
        assert_eq!(size_of::<CtValue>(), 8 + 4 + 4 + 2 + 2 + 2 + 2);
        assert_eq!(size_of::<SockRevNatKey>(), 8 + 4 + 2 + 2);
        assert_eq!(size_of::<SockRevNatValue>(), 8);
        assert_eq!(size_of::<AffinityKey>(), 8);
        assert_eq!(size_of::<AffinityValue>(), 16);
        assert_eq!(size_of::<Config>(), 4 + 4 + 2 + 2 + 4);
        assert_eq!(size_of::<Counters>(), 16);
    }

    #[test]
    fn drop_reasons_are_dense() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as u32, i as u32);
        }
        assert_eq!(DropReason::ALL.len() as u32, DropReason::COUNT);
    }
}
