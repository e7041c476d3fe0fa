//! The HTTP API: routing, discovery, CRUD, watch streams and Kubernetes `Status` errors.

pub mod apply;
pub mod deletion;
pub mod discovery;
pub mod fuzzing;
pub mod objects;
pub mod openapi;
pub mod path;
pub mod pod_exec;
pub mod pods;
pub mod protobuf;
pub mod query;
pub mod read;
pub mod router;
pub mod scale;
pub mod selector;
pub mod status;
pub mod strategic;
pub mod table;
pub mod watch;
pub mod write;
