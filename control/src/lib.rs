//! skiff-control: a Kubernetes-compatible apiserver over a revisioned store.

pub mod api;
pub mod auth;
pub mod bootstrap;
pub mod controllers;
pub mod private_dir;
pub mod quantity;
pub mod registry;
pub mod scheduler;
pub mod server;
pub mod store;
