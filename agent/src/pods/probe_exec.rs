//! Running probes: HTTP GET and TCP connect from inside the pod's network namespace, exec inside the container.
use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::probe::{ProbeAction, ProbeSpec};
use crate::net::nl::Netns;

/// Where a probe runs.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    /// The pod's network namespace.
    pub netns: PathBuf,
    /// The address probes connect to when they name no host (the pod IP, else loopback).
    pub pod_ip: Option<Ipv4Addr>,
    /// The container's main process (exec probes join its namespaces).
    pub container_pid: u32,
    pub agent_exe: PathBuf,
}

fn addr(host: &Option<String>, port: u16, t: &ProbeTarget) -> Option<SocketAddr> {
    match host {
        Some(h) => (h.as_str(), port).to_socket_addrs().ok()?.next(),
        None => Some(SocketAddr::new(
            IpAddr::V4(t.pod_ip.unwrap_or(Ipv4Addr::LOCALHOST)),
            port,
        )),
    }
}

fn http_get(to: SocketAddr, path: &str, timeout: Duration) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&to, timeout) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {to}\r\nUser-Agent: kube-probe/1.35\r\nConnection: close\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    status_ok(&head[..n])
}

/// Whether a response starts with a 2xx or 3xx status line (what the kubelet counts as success).
pub fn status_ok(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    let mut parts = text.split(' ');
    parts.next().is_some_and(|v| v.starts_with("HTTP/"))
        && parts
            .next()
            .and_then(|c| c.get(..3)?.parse::<u16>().ok())
            .is_some_and(|c| (200..400).contains(&c))
}

fn net_probe(t: &ProbeTarget, spec: &ProbeSpec) -> bool {
    let netns = Netns::Path(t.netns.clone());
    let (t, spec) = (t.clone(), spec.clone());
    std::thread::spawn(move || {
        if netns.enter().is_err() {
            return false;
        }
        match &spec.action {
            ProbeAction::Http {
                port,
                path,
                host,
                https,
            } => {
                // HTTPS probes check the TCP handshake only (no TLS stack here); the kubelet skips verification.
                let Some(to) = addr(host, *port, &t) else {
                    return false;
                };
                if *https {
                    TcpStream::connect_timeout(&to, spec.timeout).is_ok()
                } else {
                    http_get(to, path, spec.timeout)
                }
            }
            ProbeAction::Tcp { port, host } => {
                addr(host, *port, &t).is_some_and(|to| TcpStream::connect_timeout(&to, spec.timeout).is_ok())
            }
            ProbeAction::Exec { .. } => false,
        }
    })
    .join()
    .unwrap_or(false)
}

fn exec_probe(agent_exe: &Path, pid: u32, argv: &[String], timeout: Duration) -> bool {
    if argv.is_empty() {
        return false;
    }
    let Ok(mut child) = Command::new(agent_exe)
        .args(["__enter-pod", "exec", "--pid", &pid.to_string(), "--"])
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return st.success(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// Runs one probe check (blocking, bounded by the probe's timeout).
pub fn check(t: &ProbeTarget, spec: &ProbeSpec) -> bool {
    match &spec.action {
        ProbeAction::Exec { argv } => exec_probe(&t.agent_exe, t.container_pid, argv, spec.timeout),
        _ => net_probe(t, spec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert!(status_ok(b"HTTP/1.1 200 OK\r\n"));
        assert!(status_ok(b"HTTP/1.0 302 Found"));
        assert!(!status_ok(b"HTTP/1.1 404 Not Found"));
        assert!(!status_ok(b"HTTP/1.1 500"));
        assert!(!status_ok(b"garbage"));
        assert!(!status_ok(b""));
    }
}
