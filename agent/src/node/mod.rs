//! The lab node (`skiff-agent node`): Node registration and heartbeats, pod workers, node routes, the log and exec
//! endpoints, and the dataplane wired to the apiserver.
//!
//! Pure decisions: [`capacity`], [`node_status`], [`pod_status`], [`decide`]. I/O: [`heartbeat`], [`node_list`]
//! (one Node watch) feeding [`peers`] and the masquerade sync, [`pod_manager`] and [`pod_worker`], [`pod_events`],
//! [`kubelet_server`] with [`logs_http`] and [`exec_http`]; [`daemon`] wires them together.
pub mod args;
pub mod capacity;
pub mod daemon;
pub mod decide;
pub mod exec_http;
pub mod heartbeat;
pub mod kubelet_server;
pub mod logs_http;
pub mod node_list;
pub mod node_status;
pub mod peers;
pub mod pod_events;
pub mod pod_manager;
pub mod pod_status;
pub mod pod_worker;
