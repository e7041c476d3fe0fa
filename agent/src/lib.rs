//! skiff-agent: the per-node daemon. The heart is `proxy` (Services + EndpointSlices -> desired dataplane state ->
//! ordered map writes) and `bpf` (loading, attaching and writing Skiff's eBPF programs and maps).
pub mod bpf;
pub mod proxy;
pub mod metrics;
pub mod cli;
pub mod run;
pub mod healthz;
pub mod service_health;
pub mod kube_proxy_cleanup;
pub mod incluster;
pub mod preflight;
pub mod node_env;
pub mod pods;
pub mod net;
pub mod agnhost;
pub mod node;
