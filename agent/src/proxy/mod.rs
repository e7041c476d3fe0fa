//! The proxy: Services + EndpointSlices -> desired dataplane state (pure) -> diff -> ordered map writes.
pub mod model;
