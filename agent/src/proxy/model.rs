//! The contract between the pure planner and the map writer: map contents as plain data, and the ordered map
//! operations that turn one into another.
//!
//! The planner (`proxy::plan`) only ever sees `MapContents` (read back from the pinned maps on start, so a restarted
//! agent continues where it stopped) and emits `MapOp`s; `bpf::maps` applies them in order and never reorders.
use std::collections::BTreeMap;

use skiff_common::{Backend, RevNat, ServiceKey, ServiceValue, SlotKey};

/// What the service-defining maps hold (conntrack, affinity and stats are owned by the datapath).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapContents {
    pub services: BTreeMap<ServiceKey, ServiceValue>,
    pub backends: BTreeMap<u32, Backend>,
    pub slots: BTreeMap<SlotKey, u32>,
    pub rev_nat: BTreeMap<u32, RevNat>,
}

/// One map write. A plan is a `Vec<MapOp>` whose order matters: the datapath may run between any two ops and must
/// always see a consistent service (backends before slots before service entries; shrink counts before deleting
/// slots; a Maglev table is written under a fresh table id and swapped in by one service update).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapOp {
    PutBackend(u32, Backend),
    PutRevNat(u32, RevNat),
    PutSlot(SlotKey, u32),
    PutService(ServiceKey, ServiceValue),
    DeleteService(ServiceKey),
    DeleteSlot(SlotKey),
    DeleteRevNat(u32),
    DeleteBackend(u32),
    /// Remove conntrack entries of UDP flows to this backend at once (a removed UDP backend must not keep
    /// receiving a flow that has no connection to close). Issued after the backend left every slot.
    PurgeUdpConntrack(u32),
}

impl MapContents {
    /// Applies ops to this in-memory copy (the writer keeps its view of the maps in sync this way; tests use it to
    /// check that a plan reaches the desired contents).
    pub fn apply(&mut self, ops: &[MapOp]) {
        for op in ops {
            match *op {
                MapOp::PutBackend(id, b) => {
                    self.backends.insert(id, b);
                }
                MapOp::PutRevNat(id, r) => {
                    self.rev_nat.insert(id, r);
                }
                MapOp::PutSlot(k, v) => {
                    self.slots.insert(k, v);
                }
                MapOp::PutService(k, v) => {
                    self.services.insert(k, v);
                }
                MapOp::DeleteService(k) => {
                    self.services.remove(&k);
                }
                MapOp::DeleteSlot(k) => {
                    self.slots.remove(&k);
                }
                MapOp::DeleteRevNat(id) => {
                    self.rev_nat.remove(&id);
                }
                MapOp::DeleteBackend(id) => {
                    self.backends.remove(&id);
                }
                MapOp::PurgeUdpConntrack(_) => {}
            }
        }
    }
}
