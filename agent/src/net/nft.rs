//! Running `nft` inside a chosen network namespace: JSON batches in, listings out (bounded in time).
//!
//! The command runs from a thread that entered the namespace (a child process starts in its parent thread's
//! network namespace), so the agent itself never leaves the host namespaces.
use std::{
    io::Write,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use nftables::schema::Nftables;

use super::{
    masquerade::{self, MasqueradeRules},
    nl::Netns,
};

/// How long one `nft` invocation may take.
const NFT_TIMEOUT: Duration = Duration::from_secs(10);

/// nftables failures.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("running nft in {ns:?}: {source} (is the nftables package installed?)")]
    Spawn { ns: Netns, source: std::io::Error },
    #[error("entering {ns:?} for nft: {source}")]
    Enter { ns: Netns, source: super::nl::NetError },
    #[error("nft {args} in {ns:?} failed: {stderr}")]
    Failed { ns: Netns, args: String, stderr: String },
    #[error("nft {args} in {ns:?} did not finish within {NFT_TIMEOUT:?}")]
    Timeout { ns: Netns, args: String },
    #[error("nft worker thread panicked")]
    Panicked,
}

/// Runs `nft ARGS` in `ns` with `stdin`; returns its stdout, or its stderr as the error when it fails.
pub fn run(ns: &Netns, args: &[&str], stdin: Option<String>) -> Result<String, NftError> {
    let (ns, args_s) = (ns.clone(), args.join(" "));
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let (tx, rx) = mpsc::channel();
    let worker_ns = ns.clone();
    let worker = std::thread::Builder::new()
        .name("skiff-nft".into())
        .spawn(move || -> Result<std::process::Output, NftError> {
            worker_ns.enter().map_err(|source| NftError::Enter {
                ns: worker_ns.clone(),
                source,
            })?;
            let mut child = Command::new("nft")
                .args(&args)
                .stdin(if stdin.is_some() {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|source| NftError::Spawn {
                    ns: worker_ns.clone(),
                    source,
                })?;
            let _ = tx.send(child.id());
            if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
                // A write error shows up as nft's failure below.
                let _ = pipe.write_all(input.as_bytes());
            }
            child.wait_with_output().map_err(|source| NftError::Spawn {
                ns: worker_ns.clone(),
                source,
            })
        })
        .map_err(|source| NftError::Spawn {
            ns: ns.clone(),
            source,
        })?;
    let pid = rx.recv_timeout(NFT_TIMEOUT).ok();
    let started = std::time::Instant::now();
    while !worker.is_finished() {
        if started.elapsed() > NFT_TIMEOUT {
            if let Some(pid) = pid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = worker.join();
            return Err(NftError::Timeout { ns, args: args_s });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = worker.join().map_err(|_| NftError::Panicked)??;
    if !out.status.success() {
        return Err(NftError::Failed {
            ns,
            args: args_s,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Applies a JSON batch in `ns` (one transaction: all of it or nothing).
pub fn apply(ns: &Netns, batch: &Nftables<'_>) -> Result<(), NftError> {
    let json = serde_json::to_string(batch).expect("an nftables batch serialises");
    run(ns, &["-j", "-f", "-"], Some(json)).map(drop)
}

/// Whether Skiff's nat table exists in `ns`.
pub fn table_exists(ns: &Netns) -> Result<bool, NftError> {
    let out = run(ns, &["list", "tables", "ip"], None)?;
    Ok(out
        .lines()
        .any(|l| l.trim() == format!("table ip {}", masquerade::TABLE)))
}

/// Replaces Skiff's nat table in `ns` with `rules`.
pub fn replace(ns: &Netns, rules: &MasqueradeRules) -> Result<(), NftError> {
    apply(ns, &masquerade::replace_batch(rules))
}

/// Removes Skiff's nat table from `ns`; returns whether there was one.
pub fn remove(ns: &Netns) -> Result<bool, NftError> {
    let existed = table_exists(ns)?;
    if existed {
        apply(ns, &masquerade::delete_batch())?;
    }
    Ok(existed)
}
