//! The pod runtime: pods as namespaces held by a sandbox process, containers as processes entered into them.
pub mod backoff;
pub mod env;
pub mod image;
pub mod plan;
pub mod probe;
pub mod quantity;
