//! Built-in implementations of the Kubernetes e2e test image `agnhost`: `netexec`, `serve-hostname` and `pause`.
//!
//! Run as `skiff-agent agnhost <command> [flags]`, with agnhost's flag names (`--http-port=8080` or `-http-port 8080`).
pub mod http;
pub mod netexec;
pub mod pause;
pub mod serve_hostname;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// `agnhost`'s command line.
#[derive(Debug, Parser)]
#[command(
    name = "agnhost",
    about = "Built-in agnhost test server (netexec, serve-hostname, pause)"
)]
pub struct Agnhost {
    #[command(subcommand)]
    pub command: AgnhostCommand,
}

/// The supported agnhost commands.
#[derive(Debug, Subcommand)]
pub enum AgnhostCommand {
    /// HTTP and UDP test server: /hostname, /echo?msg=, /clientip, /healthz, /exit?code=; UDP hostname/echo/clientip.
    Netexec(netexec::NetexecArgs),
    /// Answers every request with the hostname, over HTTP, TCP and/or UDP.
    ServeHostname(serve_hostname::ServeHostnameArgs),
    /// Sleeps until SIGTERM or SIGINT.
    Pause,
}

/// Rewrites Go-style single-dash long flags (`-http-port=8080`) to clap's `--http-port=8080`.
pub fn normalize_flags(args: Vec<String>) -> Vec<String> {
    args.into_iter()
        .map(|a| {
            let bytes = a.as_bytes();
            if bytes.len() > 2 && bytes[0] == b'-' && bytes[1] != b'-' {
                format!("-{a}")
            } else {
                a
            }
        })
        .collect()
}

/// Parses agnhost arguments (without the program name).
pub fn parse(args: Vec<String>) -> Result<Agnhost, clap::Error> {
    Agnhost::try_parse_from(std::iter::once("agnhost".to_string()).chain(normalize_flags(args)))
}

/// Entry point of `skiff-agent agnhost ...`: `args` are the words after `agnhost`.
pub fn main(args: Vec<String>) -> Result<()> {
    let cli = match parse(args) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            AgnhostCommand::Netexec(a) => netexec::run(a).await,
            AgnhostCommand::ServeHostname(a) => serve_hostname::run(a).await,
            AgnhostCommand::Pause => pause::run().await,
        }
    })
}

/// The hostname of this UTS namespace (the pod name inside a pod).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_upstream_netexec_flags() {
        let cli = parse(v(&["netexec", "--http-port=8080", "-udp-port", "8081"])).unwrap();
        match cli.command {
            AgnhostCommand::Netexec(a) => {
                assert_eq!(a.http_port, 8080);
                assert_eq!(a.udp_port, 8081);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn parses_serve_hostname_bool_flags() {
        let cli = parse(v(&["serve-hostname", "--udp", "--http=false", "--port=9000"])).unwrap();
        match cli.command {
            AgnhostCommand::ServeHostname(a) => {
                assert!(a.udp);
                assert!(!a.http);
                assert!(!a.tcp);
                assert_eq!(a.port, 9000);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn rejects_unknown_commands() {
        assert!(parse(v(&["liveness"])).is_err());
    }
}
