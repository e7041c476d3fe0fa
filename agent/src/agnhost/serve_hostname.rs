//! `agnhost serve-hostname`: answers every HTTP request, TCP connection or UDP datagram with the hostname.
use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use anyhow::{Context, Result, bail};
use clap::{ArgAction, Args};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, UdpSocket},
};

use super::{
    hostname,
    http::{self, Request, Response},
};

/// `serve-hostname` flags (agnhost's names and defaults).
#[derive(Debug, Args)]
pub struct ServeHostnameArgs {
    /// Port to serve on.
    #[arg(long, default_value_t = 9376)]
    pub port: u16,
    /// Serve raw TCP.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub tcp: bool,
    /// Serve UDP.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub udp: bool,
    /// Serve HTTP.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    pub http: bool,
    /// Close TCP connections after answering (always done here; accepted for compatibility).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub close: bool,
}

/// An IPv4-mapped IPv6 peer shown as IPv4, like Go does.
pub fn unmap(peer: SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => peer,
        },
        v4 => v4,
    }
}

/// Binds a dual-stack TCP listener on `port` (IPv4 only where IPv6 is unavailable).
pub async fn bind_tcp(port: u16) -> Result<TcpListener> {
    match TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)).await {
        Ok(l) => Ok(l),
        Err(_) => TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
            .await
            .with_context(|| format!("binding TCP port {port}")),
    }
}

/// Binds a dual-stack UDP socket on `port` (IPv4 only where IPv6 is unavailable).
pub async fn bind_udp(port: u16) -> Result<UdpSocket> {
    match UdpSocket::bind((Ipv6Addr::UNSPECIFIED, port)).await {
        Ok(s) => Ok(s),
        Err(_) => UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))
            .await
            .with_context(|| format!("binding UDP port {port}")),
    }
}

async fn serve_tcp(listener: TcpListener, host: String) -> Result<()> {
    loop {
        let (mut stream, _) = listener.accept().await?;
        let host = host.clone();
        tokio::spawn(async move {
            let _ = stream.write_all(host.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

async fn serve_udp(sock: UdpSocket, host: String) -> Result<()> {
    let mut buf = vec![0u8; 2048];
    loop {
        let (_, peer) = sock.recv_from(&mut buf).await?;
        sock.send_to(host.as_bytes(), peer).await?;
    }
}

/// Runs until SIGTERM/SIGINT.
pub async fn run(a: ServeHostnameArgs) -> Result<()> {
    if a.tcp && a.http {
        bail!(
            "--tcp and --http cannot both serve port {}: pass --http=false",
            a.port
        );
    }
    if !(a.tcp || a.udp || a.http) {
        bail!("nothing to serve: pass --http, --tcp or --udp");
    }
    let host = hostname();
    let mut tasks = Vec::new();
    if a.http {
        let h = host.clone();
        let handler: http::Handler = Arc::new(move |_: &Request| Response::ok(h.clone()));
        let l = bind_tcp(a.port).await?;
        tasks.push(tokio::spawn(async move { Ok(http::serve(l, handler).await?) }));
    }
    if a.tcp {
        tasks.push(tokio::spawn(serve_tcp(bind_tcp(a.port).await?, host.clone())));
    }
    if a.udp {
        tasks.push(tokio::spawn(serve_udp(bind_udp(a.port).await?, host.clone())));
    }
    tracing::info!(
        port = a.port,
        tcp = a.tcp,
        udp = a.udp,
        http = a.http,
        "serve-hostname serving"
    );
    super::pause::run().await?;
    for t in tasks {
        t.abort();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmaps_v4_mapped_peers_only() {
        assert_eq!(
            unmap("[::ffff:1.2.3.4]:80".parse().unwrap()),
            "1.2.3.4:80".parse().unwrap()
        );
        let v6: SocketAddr = "[fd00::1]:80".parse().unwrap();
        assert_eq!(unmap(v6), v6);
    }
}
