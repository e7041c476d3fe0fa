//! The HTTP API: routing, discovery, CRUD, watch streams and Kubernetes `Status` errors.

pub mod path;
pub mod selector;
pub mod status;
