//! skiff-agent: the per-node daemon. The heart is `proxy` (Services + EndpointSlices -> desired dataplane state ->
//! ordered map writes) and `bpf` (loading, attaching and writing Skiff's eBPF programs and maps).
pub mod agnhost;
pub mod bpf;
pub mod cli;
pub mod healthz;
pub mod incluster;
pub mod kube_proxy_cleanup;
pub mod metrics;
pub mod net;
pub mod node;
pub mod node_env;
pub mod pods;
pub mod preflight;
pub mod proxy;
pub mod run;
pub mod service_events;
pub mod service_health;
