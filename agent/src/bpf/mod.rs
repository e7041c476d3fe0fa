//! Loading, attaching and pinning Skiff's eBPF programs; typed map handles; `inspect` and `cleanup`.
pub mod attach;
pub mod cleanup;
pub mod ct_gc;
pub mod explain;
pub mod glob;
pub mod inspect;
pub mod links;
pub mod loader;
pub mod maps;
pub mod names;
pub mod netns;
pub mod pins;
pub mod sys;
pub mod table;

/// The eBPF object built by `build.rs` (crate `skiff-ebpf`), embedded in the agent.
pub fn object_bytes() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/skiff"))
}
