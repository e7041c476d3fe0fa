//! Netlink sessions inside a chosen network namespace: a dedicated thread that entered it, with its own runtime.
//!
//! `setns(CLONE_NEWNET)` moves only the calling thread, so the work never runs on a shared tokio worker.
use std::{
    fs::File,
    future::Future,
    io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use futures::TryStreamExt;
use nix::sched::{CloneFlags, setns};
use rtnetlink::{Handle, LinkUnspec, packet_route::link::LinkAttribute};

/// Route protocol number marking the routes Skiff installs (so it only ever removes its own).
pub const SKIFF_ROUTE_PROTOCOL: u8 = 157;

/// Network set-up failures.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("opening network namespace {path}: {source}")]
    OpenNetns { path: PathBuf, source: io::Error },
    #[error("entering network namespace {path}: {source}")]
    EnterNetns { path: PathBuf, source: nix::Error },
    #[error("netlink socket: {0}")]
    Socket(io::Error),
    #[error("{what}: {source}")]
    Netlink { what: String, source: rtnetlink::Error },
    #[error("no interface named {0}")]
    NoLink(String),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("network worker thread panicked")]
    Panicked,
    #[error(transparent)]
    Ipam(#[from] super::ipam::IpamError),
}

/// Shorthand for mapping an rtnetlink error with context.
pub fn nl_err(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let what = what.into();
    move |source| NetError::Netlink { what, source }
}

/// Which network namespace to work in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Netns {
    /// The namespace the agent's main thread is in.
    Current,
    /// A namespace file: `/run/netns/NAME`, `/proc/PID/ns/net`, or a bind mount of one.
    Path(PathBuf),
}

impl Netns {
    /// A named namespace (`ip netns add NAME`).
    pub fn named(name: &str) -> Self {
        Self::Path(PathBuf::from("/run/netns").join(name))
    }

    /// The namespace of a process.
    pub fn of_pid(pid: u32) -> Self {
        Self::Path(PathBuf::from(format!("/proc/{pid}/ns/net")))
    }

    /// Moves the calling thread into this namespace.
    pub fn enter(&self) -> Result<(), NetError> {
        let Self::Path(path) = self else {
            return Ok(());
        };
        let f = open_ns(path)?;
        setns(&f, CloneFlags::CLONE_NEWNET).map_err(|source| NetError::EnterNetns {
            path: path.clone(),
            source,
        })
    }
}

/// Opens a namespace file.
pub fn open_ns(path: &Path) -> Result<File, NetError> {
    File::open(path).map_err(|source| NetError::OpenNetns {
        path: path.to_path_buf(),
        source,
    })
}

/// Runs `f` with a netlink handle inside `ns`, on a fresh thread; blocks until it is done.
pub fn run_in<T, F, Fut>(ns: &Netns, f: F) -> Result<T, NetError>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, NetError>>,
{
    let ns = ns.clone();
    std::thread::Builder::new()
        .name("skiff-netlink".into())
        .spawn(move || {
            ns.enter()?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(NetError::Socket)?;
            rt.block_on(async move {
                let (conn, handle, _) = rtnetlink::new_connection().map_err(NetError::Socket)?;
                let conn = tokio::spawn(conn);
                let out = f(handle).await;
                conn.abort();
                out
            })
        })
        .map_err(NetError::Socket)?
        .join()
        .map_err(|_| NetError::Panicked)?
}

/// Writes a sysctl (path under /proc/sys, e.g. `net/ipv4/ip_forward`) inside `ns`.
pub fn write_sysctl(ns: &Netns, key: &str, value: &str) -> Result<(), NetError> {
    let ns = ns.clone();
    let path = PathBuf::from("/proc/sys").join(key);
    let value = value.to_string();
    std::thread::spawn(move || {
        ns.enter()?;
        std::fs::write(&path, value).map_err(|source| NetError::Io {
            what: format!("writing {}", path.display()),
            source,
        })
    })
    .join()
    .map_err(|_| NetError::Panicked)?
}

/// Whether an rtnetlink error is the kernel's "no such device" / "not found".
pub fn is_not_found(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if matches!(-m.raw_code(), libc::ENODEV | libc::ENOENT | libc::ESRCH))
}

/// The index of interface `name`, or `None` when there is none.
pub async fn link_index(h: &Handle, name: &str) -> Result<Option<u32>, NetError> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(Some(msg.header.index)),
        Ok(None) => Ok(None),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(nl_err(format!("looking up {name}"))(e)),
    }
}

/// Names of all interfaces whose name starts with `prefix`.
pub async fn links_with_prefix(h: &Handle, prefix: &str) -> Result<Vec<(u32, String)>, NetError> {
    let mut links = h.link().get().execute();
    let mut out = Vec::new();
    while let Some(msg) = links.try_next().await.map_err(nl_err("listing links"))? {
        for attr in &msg.attributes {
            if let LinkAttribute::IfName(n) = attr
                && n.starts_with(prefix)
            {
                out.push((msg.header.index, n.clone()));
            }
        }
    }
    Ok(out)
}

/// Deletes interface `name` if it exists; returns whether it did.
pub async fn delete_link(h: &Handle, name: &str) -> Result<bool, NetError> {
    let Some(idx) = link_index(h, name).await? else {
        return Ok(false);
    };
    match h.link().del(idx).execute().await {
        Ok(()) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(nl_err(format!("deleting {name}"))(e)),
    }
}

/// Brings interface `idx` up.
pub async fn link_up(h: &Handle, idx: u32, what: &str) -> Result<(), NetError> {
    h.link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .map_err(nl_err(format!("bringing {what} up")))
}

/// Adds `ip/prefix` to interface `idx` (replacing an identical one).
pub async fn add_addr(h: &Handle, idx: u32, ip: Ipv4Addr, prefix: u8, what: &str) -> Result<(), NetError> {
    h.address()
        .add(idx, ip.into(), prefix)
        .replace()
        .execute()
        .await
        .map_err(nl_err(format!("adding {ip}/{prefix} to {what}")))
}
