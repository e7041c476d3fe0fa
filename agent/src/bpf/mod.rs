//! Loading, attaching and pinning Skiff's eBPF programs; typed map handles; `inspect` and `cleanup`.

/// The eBPF object built by `build.rs` (crate `skiff-ebpf`), embedded in the agent.
pub fn object_bytes() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/skiff"))
}
