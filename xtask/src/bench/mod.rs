//! `cargo xtask bench`: Skiff against kube-proxy's iptables and nftables rule sets, in netns testbeds.
use anyhow::Result;

mod hash;
mod iptables;
mod model;
mod nftables;
mod stats;

/// Options of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Smaller service counts and fewer rounds (CI smoke run, under 5 minutes).
    #[arg(long)]
    pub quick: bool,
}

pub fn run(_args: BenchArgs) -> Result<()> {
    anyhow::bail!("cargo xtask bench is not implemented yet")
}
