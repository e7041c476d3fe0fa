//! The proxy: Services + EndpointSlices -> desired dataplane state (pure) -> diff -> ordered map writes.
pub mod desired;
pub mod endpoints;
pub mod maglev;
pub mod model;
pub mod state;

pub use desired::{DataplaneState, NodeInfo, desired};
