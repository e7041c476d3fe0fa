//! `cargo xtask`: provisioning, the test command, the lab and the benchmarks.
use anyhow::Result;
use clap::{Parser, Subcommand};

mod bench;
mod cmd;
mod lab;
mod progress;
mod setup;
mod test;

#[derive(Parser)]
#[command(about = "Skiff's developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what this machine lacks (apt packages, nightly + rust-src, bpf-linker, bpffs).
    Setup,
    /// Run setup, then every test suite.
    Test(test::TestArgs),
    /// A multi-node cluster on this machine: `lab` alone = `lab up` + `lab demo`.
    Lab(lab::LabArgs),
    /// Benchmark Skiff against kube-proxy's iptables and nftables rule sets.
    Bench(bench::BenchArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::Test(args) => {
            if !test::run(args)? {
                // The summary's closing line stays the last line of output.
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Lab(args) => lab::run(args),
        Command::Bench(args) => bench::run(args),
    }
}
