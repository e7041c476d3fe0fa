//! The proxy: Services + EndpointSlices -> desired dataplane state (pure) -> diff -> ordered map writes.
pub mod capacity;
pub mod desired;
pub mod endpoints;
pub mod ids;
pub mod incremental;
pub mod inputs;
pub mod kube_source;
pub mod maglev;
pub mod manifest_source;
pub mod manifests;
pub mod model;
pub mod planner;
pub mod source;
pub mod state;
pub mod tables;

pub use desired::{DataplaneState, NodeInfo, desired};
pub use incremental::{Delta, Desired};
pub use planner::Planner;
pub use source::{Change, SourceConfig, spawn_source};

#[cfg(test)]
mod desired_tests;
#[cfg(test)]
mod incremental_tests;
#[cfg(test)]
mod planner_tests;
#[cfg(test)]
mod testkit;
