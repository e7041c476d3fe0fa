//! Every map of the datapath, pinned by name so the agent reuses them across restarts.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use skiff_common::{
    AffinityKey, AffinityValue, Backend, Config, Counters, CtKey, CtValue, DropReason, RevNat, ServiceKey,
    ServiceValue, SlotKey, SlotValue, SockRevNatKey, SockRevNatValue, sizes,
};

#[map(name = "SKIFF_SVC_V1")]
pub static SERVICES: HashMap<ServiceKey, ServiceValue> = HashMap::pinned(sizes::SERVICES, 0);

#[map(name = "SKIFF_BACKENDS_V1")]
pub static BACKENDS: HashMap<u32, Backend> = HashMap::pinned(sizes::BACKENDS, 0);

#[map(name = "SKIFF_SLOTS_V1")]
pub static SLOTS: HashMap<SlotKey, SlotValue> = HashMap::pinned(sizes::SLOTS, 0);

#[map(name = "SKIFF_REVNAT_V1")]
pub static REV_NAT: HashMap<u32, RevNat> = HashMap::pinned(sizes::REV_NAT, 0);

#[map(name = "SKIFF_CT_V1")]
pub static CONNTRACK: LruHashMap<CtKey, CtValue> = LruHashMap::pinned(sizes::CONNTRACK, 0);

#[map(name = "SKIFF_SOCK_REVNAT_V1")]
pub static SOCK_REV_NAT: LruHashMap<SockRevNatKey, SockRevNatValue> =
    LruHashMap::pinned(sizes::SOCK_REV_NAT, 0);

#[map(name = "SKIFF_AFFINITY_V1")]
pub static AFFINITY: LruHashMap<AffinityKey, AffinityValue> = LruHashMap::pinned(sizes::AFFINITY, 0);

#[map(name = "SKIFF_CONFIG_V1")]
pub static CONFIG: Array<Config> = Array::pinned(1, 0);

#[map(name = "SKIFF_SVC_STATS_V1")]
pub static SVC_STATS: PerCpuArray<Counters> = PerCpuArray::pinned(sizes::SVC_STATS, 0);

#[map(name = "SKIFF_BE_STATS_V1")]
pub static BACKEND_STATS: PerCpuArray<Counters> = PerCpuArray::pinned(sizes::BACKEND_STATS, 0);

#[map(name = "SKIFF_DROPS_V1")]
pub static DROPS: PerCpuArray<Counters> = PerCpuArray::pinned(DropReason::COUNT, 0);

/// The node-wide settings (all zero until the agent writes them).
#[inline(always)]
pub fn config() -> Config {
    match CONFIG.get(0) {
        Some(c) => *c,
        None => Config::default(),
    }
}
