//! skiff-control: a Kubernetes-compatible apiserver over a revisioned store.

pub mod store;
