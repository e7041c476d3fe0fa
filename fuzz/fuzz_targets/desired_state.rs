//! Fuzz target: arbitrary Service / EndpointSlice / Node changes through the agent's pure control path.
//!
//! The incremental desired state must equal the full recompute, the delta plan must equal the full plan, and the
//! planned maps must stay consistent after every single op, fit the map sizes and express the desired state.
#![no_main]

use std::collections::BTreeMap;

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use libfuzzer_sys::fuzz_target;
use skiff_agent::proxy::{
    Planner, desired,
    incremental::Desired,
    inputs::{Change, Converter, Kind, ObjKey},
    state::NodeInfo,
};
use skiff_fuzz::{
    maps,
    world::{self, Op},
};

/// Bounds the work of one input (each sync plans twice and checks every op).
const MAX_OPS: usize = 48;

fuzz_target!(|ops: Vec<Op>| {
    let mut services: BTreeMap<(String, String), Service> = BTreeMap::new();
    let mut slices: BTreeMap<(String, String), EndpointSlice> = BTreeMap::new();
    let mut node = world::node(false, None);
    let mut conv = Converter::default();
    let mut inc = Desired::default();
    for kind in Kind::ALL {
        inc.apply(Change::Listed(kind));
    }
    inc.apply(conv.node(&node));
    let (mut full_planner, mut delta_planner) = (Planner::default(), Planner::default());
    let key = |ns: &str, name: &str| ObjKey {
        namespace: ns.into(),
        name: name.into(),
    };
    let last = Op::Sync;
    for (step, op) in ops.iter().take(MAX_OPS).chain([&last]).enumerate() {
        let change = match op {
            Op::PutService { ns, name, spec } => {
                let (ns, name) = (world::namespace(*ns), world::service_name(*name));
                let svc = world::service(ns, &name, spec);
                let change = conv.service(&svc);
                services.insert((ns.into(), name), svc);
                change
            }
            Op::DeleteService { ns, name } => {
                let (ns, name) = (world::namespace(*ns), world::service_name(*name));
                services.remove(&(ns.into(), name.clone()));
                Change::Service(key(ns, &name), None)
            }
            Op::PutSlice { ns, name, spec } => {
                let (ns, name) = (world::namespace(*ns), world::slice_name(*name));
                let slice = world::slice(ns, &name, spec);
                let change = conv.slice(&slice);
                slices.insert((ns.into(), name), slice);
                change
            }
            Op::DeleteSlice { ns, name } => {
                let (ns, name) = (world::namespace(*ns), world::slice_name(*name));
                slices.remove(&(ns.into(), name.clone()));
                Change::Slice(key(ns, &name), None)
            }
            Op::Node { second_address, zone } => {
                node = world::node(*second_address, *zone);
                conv.node(&node)
            }
            Op::Sync => {
                let info = NodeInfo::from_node(&node);
                let delta = inc.update(&info);
                let all_services: Vec<Service> = services.values().cloned().collect();
                let all_slices: Vec<EndpointSlice> = slices.values().cloned().collect();
                let want = desired(&all_services, &all_slices, &info);
                maps::assert_well_formed(&want);
                assert_eq!(
                    inc.state(),
                    want,
                    "step {step}: incremental state differs from the full recompute"
                );
                let before = delta_planner.contents().clone();
                let full_ops = full_planner.plan(&want);
                let delta_ops = delta_planner.plan_delta(&delta.upserts, &delta.removed);
                assert_eq!(
                    delta_ops, full_ops,
                    "step {step}: delta plan differs from the full plan"
                );
                let after = maps::apply_checked(&before, &delta_ops);
                assert_eq!(&after, delta_planner.contents(), "step {step}: planner view");
                maps::assert_within_limits(&after);
                maps::assert_expresses(&after, &want);
                assert!(
                    full_planner.plan(&want).is_empty(),
                    "step {step}: planning the same state twice emits ops"
                );
                continue;
            }
        };
        inc.apply(change);
    }
});
