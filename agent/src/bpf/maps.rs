//! Typed handles on a node's pinned maps: ordered `MapOp` execution, read-back for restore, config, counters.
use std::net::Ipv4Addr;

use aya::{
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray},
    sys::SyscallError,
};
use skiff_common::{
    AffinityKey, AffinityValue, Backend, Config, Counters, CtKey, CtValue, DropReason, PROTO_UDP, RevNat,
    ServiceKey, ServiceValue, SlotKey, SlotValue, SockRevNatKey, SockRevNatValue, maps,
};

use super::pins::PinDir;
use crate::proxy::{
    capacity::Limits,
    model::{MapContents, MapOp},
};

/// Errors on map access.
#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error(
        "opening pinned map {path}: {source} (is the agent loaded for this node? see `skiff-agent proxy`)"
    )]
    Open {
        path: String,
        #[source]
        source: MapError,
    },
    #[error("{what}: {source}")]
    Op {
        what: String,
        #[source]
        source: MapError,
    },
}

type Result<T, E = MapsError> = std::result::Result<T, E>;

fn op_err(what: impl Into<String>) -> impl FnOnce(MapError) -> MapsError {
    let what = what.into();
    move |source| MapsError::Op { what, source }
}

/// Whether a map error only says the key was not there (deletes are idempotent).
fn is_not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound | MapError::ElementNotFound => true,
        MapError::SyscallError(SyscallError { io_error, .. }) => {
            io_error.raw_os_error() == Some(libc::ENOENT)
        }
        _ => false,
    }
}

fn ignore_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(e) if is_not_found(&e) => Ok(()),
        r => r,
    }
}

fn open(pin: &PinDir, name: &str) -> Result<Map> {
    let path = pin.map(name);
    let data = MapData::from_pin(&path).map_err(|source| MapsError::Open {
        path: path.display().to_string(),
        source,
    })?;
    Map::from_map_data(data).map_err(|source| MapsError::Open {
        path: path.display().to_string(),
        source,
    })
}

fn typed<T: TryFrom<Map, Error = MapError>>(pin: &PinDir, name: &str) -> Result<T> {
    let path = pin.map(name);
    T::try_from(open(pin, name)?).map_err(|source| MapsError::Open {
        path: path.display().to_string(),
        source,
    })
}

fn max_entries<K: aya::Pod, V: aya::Pod>(m: &HashMap<MapData, K, V>) -> u32 {
    use aya::maps::IterableMap;
    IterableMap::<K, V>::map(m)
        .info()
        .map(|i| i.max_entries())
        .unwrap_or(0)
}

/// The service-defining maps (written from plans) plus conntrack for UDP purges.
pub struct ServiceMaps {
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    backends: HashMap<MapData, u32, Backend>,
    slots: HashMap<MapData, SlotKey, SlotValue>,
    rev_nat: HashMap<MapData, u32, RevNat>,
    conntrack: HashMap<MapData, CtKey, CtValue>,
}

/// What one `apply` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    pub ops: usize,
    pub udp_flows_purged: usize,
}

impl ServiceMaps {
    /// Opens the pinned maps of a node.
    pub fn open(pin: &PinDir) -> Result<Self> {
        Ok(Self {
            services: typed(pin, maps::SERVICES)?,
            backends: typed(pin, maps::BACKENDS)?,
            slots: typed(pin, maps::SLOTS)?,
            rev_nat: typed(pin, maps::REV_NAT)?,
            conntrack: typed(pin, maps::CONNTRACK)?,
        })
    }

    /// Executes `ops` strictly in order; stops at the first failure (the caller re-reads and re-plans).
    pub fn apply(&mut self, ops: &[MapOp]) -> Result<ApplyStats> {
        let mut stats = ApplyStats::default();
        for op in ops {
            match *op {
                MapOp::PutBackend(id, b) => self
                    .backends
                    .insert(id, b, 0)
                    .map_err(op_err(format!("writing backend {id}")))?,
                MapOp::PutRevNat(id, r) => self
                    .rev_nat
                    .insert(id, r, 0)
                    .map_err(op_err(format!("writing rev-nat {id}")))?,
                MapOp::PutSlot(k, b) => self
                    .slots
                    .insert(k, SlotValue { backend_id: b }, 0)
                    .map_err(op_err(format!("writing slot {}/{}", k.table_id, k.slot)))?,
                MapOp::PutService(k, v) => self
                    .services
                    .insert(k, v, 0)
                    .map_err(op_err(format!("writing service {}", fmt_service_key(&k))))?,
                MapOp::DeleteService(k) => ignore_missing(self.services.remove(&k))
                    .map_err(op_err(format!("deleting service {}", fmt_service_key(&k))))?,
                MapOp::DeleteSlot(k) => ignore_missing(self.slots.remove(&k))
                    .map_err(op_err(format!("deleting slot {}/{}", k.table_id, k.slot)))?,
                MapOp::DeleteRevNat(id) => ignore_missing(self.rev_nat.remove(&id))
                    .map_err(op_err(format!("deleting rev-nat {id}")))?,
                MapOp::DeleteBackend(id) => ignore_missing(self.backends.remove(&id))
                    .map_err(op_err(format!("deleting backend {id}")))?,
                MapOp::PurgeUdpConntrack(id) => stats.udp_flows_purged += self.purge_udp(id)?,
            }
            stats.ops += 1;
        }
        Ok(stats)
    }

    /// Deletes every UDP conntrack entry that points at backend `id`; returns how many.
    fn purge_udp(&mut self, id: u32) -> Result<usize> {
        let victims: Vec<CtKey> = self
            .conntrack
            .iter()
            .filter_map(|r| r.ok())
            .filter(|(k, v)| k.proto == PROTO_UDP && v.backend_id == id)
            .map(|(k, _)| k)
            .collect();
        for k in &victims {
            ignore_missing(self.conntrack.remove(k)).map_err(op_err("purging UDP conntrack"))?;
        }
        Ok(victims.len())
    }

    /// Reads the service-defining maps back (the planner restores its allocators from this on start).
    pub fn read_contents(&self) -> Result<MapContents> {
        let mut c = MapContents::default();
        for r in self.services.iter() {
            let (k, v) = r.map_err(op_err("reading services"))?;
            c.services.insert(k, v);
        }
        for r in self.backends.iter() {
            let (k, v) = r.map_err(op_err("reading backends"))?;
            c.backends.insert(k, v);
        }
        for r in self.slots.iter() {
            let (k, v) = r.map_err(op_err("reading slots"))?;
            c.slots.insert(k, v.backend_id);
        }
        for r in self.rev_nat.iter() {
            let (k, v) = r.map_err(op_err("reading rev-nat"))?;
            c.rev_nat.insert(k, v);
        }
        Ok(c)
    }

    /// Capacity of the services and backends maps (for pressure metrics).
    pub fn capacities(&self) -> (u32, u32) {
        (max_entries(&self.services), max_entries(&self.backends))
    }

    /// The sizes the planner must plan within (the pinned maps' own, which may differ from the flags: a pinned map
    /// keeps its size).
    pub fn limits(&self) -> Limits {
        Limits {
            services: max_entries(&self.services),
            backends: max_entries(&self.backends),
            slots: max_entries(&self.slots),
            rev_nat: max_entries(&self.rev_nat),
        }
    }
}

/// Fill level of one map: entries and capacity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fill {
    pub map: &'static str,
    pub entries: u64,
    pub max_entries: u64,
    /// An LRU map (evicts when full instead of refusing inserts).
    pub lru: bool,
}

/// Entries and capacity of every map a node's pressure shows in (counted by iterating, so O(entries)).
pub fn fill_levels(pin: &PinDir) -> Result<Vec<Fill>> {
    fn count<K: aya::Pod, V: aya::Pod>(name: &'static str, m: &HashMap<MapData, K, V>) -> Fill {
        use aya::maps::IterableMap;
        let lru = IterableMap::<K, V>::map(m)
            .info()
            .ok()
            .and_then(|i| i.map_type().ok())
            .is_some_and(|t| t == aya::maps::MapType::LruHash);
        Fill {
            map: name,
            entries: m.keys().filter(|k| k.is_ok()).count() as u64,
            max_entries: u64::from(max_entries(m)),
            lru,
        }
    }
    let svc = ServiceMaps::open(pin)?;
    let flows = FlowMaps::open(pin)?;
    let sock: HashMap<MapData, SockRevNatKey, SockRevNatValue> = typed(pin, maps::SOCK_REV_NAT)?;
    Ok(vec![
        count("services", &svc.services),
        count("backends", &svc.backends),
        count("slots", &svc.slots),
        count("rev_nat", &svc.rev_nat),
        count("conntrack", &flows.conntrack),
        count("sock_rev_nat", &sock),
        count("affinity", &flows.affinity),
    ])
}

/// Conntrack and affinity, for GC and `inspect`.
pub struct FlowMaps {
    pub conntrack: HashMap<MapData, CtKey, CtValue>,
    pub affinity: HashMap<MapData, AffinityKey, AffinityValue>,
}

impl FlowMaps {
    pub fn open(pin: &PinDir) -> Result<Self> {
        Ok(Self {
            conntrack: typed(pin, maps::CONNTRACK)?,
            affinity: typed(pin, maps::AFFINITY)?,
        })
    }

    pub fn conntrack_capacity(&self) -> u32 {
        max_entries(&self.conntrack)
    }

    pub fn affinity_capacity(&self) -> u32 {
        max_entries(&self.affinity)
    }

    /// Deletes a conntrack entry (missing is fine: the datapath or LRU may have removed it).
    pub fn delete_ct(&mut self, k: &CtKey) -> Result<()> {
        ignore_missing(self.conntrack.remove(k)).map_err(op_err("deleting conntrack entry"))
    }

    pub fn conntrack_entries(&self) -> Vec<(CtKey, CtValue)> {
        self.conntrack.iter().filter_map(|r| r.ok()).collect()
    }

    pub fn affinity_entries(&self) -> Vec<(AffinityKey, AffinityValue)> {
        self.affinity.iter().filter_map(|r| r.ok()).collect()
    }
}

/// Node-wide settings the datapath reads from `CONFIG[0]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub node_addr: Ipv4Addr,
    pub hairpin_addr: Ipv4Addr,
    pub snat_ports: (u16, u16),
}

impl NodeConfig {
    pub fn to_map_value(self) -> Config {
        Config {
            node_addr_be: u32::from(self.node_addr).to_be(),
            hairpin_addr_be: u32::from(self.hairpin_addr).to_be(),
            snat_port_min: self.snat_ports.0,
            snat_port_max: self.snat_ports.1,
            flags: 0,
        }
    }
}

/// Writes `CONFIG[0]`.
pub fn write_config(pin: &PinDir, cfg: NodeConfig) -> Result<()> {
    let mut arr: Array<MapData, Config> = typed(pin, maps::CONFIG)?;
    arr.set(0, cfg.to_map_value(), 0)
        .map_err(op_err("writing node config"))
}

/// Reads `CONFIG[0]`.
pub fn read_config(pin: &PinDir) -> Result<Config> {
    let arr: Array<MapData, Config> = typed(pin, maps::CONFIG)?;
    arr.get(&0, 0).map_err(op_err("reading node config"))
}

/// The per-CPU counters the datapath keeps (summed over CPUs when read).
pub struct StatsMaps {
    svc: PerCpuArray<MapData, Counters>,
    backend: PerCpuArray<MapData, Counters>,
    drops: PerCpuArray<MapData, Counters>,
}

impl StatsMaps {
    pub fn open(pin: &PinDir) -> Result<Self> {
        Ok(Self {
            svc: typed(pin, maps::SVC_STATS)?,
            backend: typed(pin, maps::BACKEND_STATS)?,
            drops: typed(pin, maps::DROPS)?,
        })
    }

    fn sum(arr: &PerCpuArray<MapData, Counters>, idx: u32) -> Counters {
        match arr.get(&idx, 0) {
            Ok(per_cpu) => per_cpu.iter().fold(Counters::default(), |a, c| Counters {
                packets: a.packets + c.packets,
                bytes: a.bytes + c.bytes,
            }),
            Err(_) => Counters::default(),
        }
    }

    /// Counters of the service port with this rev-NAT id.
    pub fn service(&self, rev_nat_id: u32) -> Counters {
        Self::sum(&self.svc, rev_nat_id)
    }

    /// Counters of a backend.
    pub fn backend(&self, backend_id: u32) -> Counters {
        Self::sum(&self.backend, backend_id)
    }

    /// Drops by reason (packets and bytes).
    pub fn drops(&self) -> Vec<(DropReason, Counters)> {
        DropReason::ALL
            .iter()
            .map(|&r| (r, Self::sum(&self.drops, r as u32)))
            .collect()
    }
}

/// `10.96.0.10:53/udp` (plus ` external` for the external scope).
pub fn fmt_service_key(k: &ServiceKey) -> String {
    let proto = super::table::proto_name(k.proto);
    let addr = Ipv4Addr::from(u32::from_be(k.addr_be));
    let port = u16::from_be(k.port_be);
    let scope = if k.scope == skiff_common::SCOPE_EXTERNAL {
        " external"
    } else {
        ""
    };
    format!("{addr}:{port}/{proto}{scope}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_in_network_order_with_host_order_ports() {
        let c = NodeConfig {
            node_addr: Ipv4Addr::new(10, 0, 0, 1),
            hairpin_addr: Ipv4Addr::new(169, 254, 0, 1),
            snat_ports: (40000, 60999),
        }
        .to_map_value();
        assert_eq!(c.node_addr_be.to_ne_bytes(), [10, 0, 0, 1]);
        assert_eq!(c.hairpin_addr_be.to_ne_bytes(), [169, 254, 0, 1]);
        assert_eq!((c.snat_port_min, c.snat_port_max), (40000, 60999));
    }

    #[test]
    fn service_keys_read_like_addresses() {
        let k = ServiceKey {
            addr_be: u32::from(Ipv4Addr::new(10, 96, 0, 10)).to_be(),
            port_be: 53u16.to_be(),
            proto: PROTO_UDP,
            scope: skiff_common::SCOPE_INTERNAL,
        };
        assert_eq!(fmt_service_key(&k), "10.96.0.10:53/udp");
    }
}
