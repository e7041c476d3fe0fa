//! skiff-control: a Kubernetes-compatible apiserver over a revisioned store.

pub mod api;
pub mod registry;
pub mod store;
