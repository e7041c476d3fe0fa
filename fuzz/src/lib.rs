//! Helpers of the fuzz targets: arbitrary cluster changes as Kubernetes objects, and dataplane map invariants.
pub mod maps;
pub mod world;
