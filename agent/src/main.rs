//! `skiff-agent`: command-line entry point.
use anyhow::Result;

fn main() -> Result<()> {
    println!("eBPF object: {} bytes", skiff_agent::bpf::object_bytes().len());
    Ok(())
}
