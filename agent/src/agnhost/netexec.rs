//! `agnhost netexec`: HTTP (/hostname, /echo, /clientip, /healthz, /exit) and UDP (hostname, echo, clientip) test
//! server.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use clap::Args;
use tokio::net::UdpSocket;

use super::{
    hostname,
    http::{self, After, Request, Response},
    serve_hostname::{bind_tcp, bind_udp, unmap},
};

/// `netexec` flags (agnhost's names and defaults).
#[derive(Debug, Args)]
pub struct NetexecArgs {
    /// HTTP port.
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    /// UDP port; -1 disables it.
    #[arg(long, default_value_t = 8081, allow_negative_numbers = true)]
    pub udp_port: i32,
    /// SCTP port (accepted for compatibility; SCTP is not served).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub sctp_port: i32,
    /// Seconds to keep serving after SIGTERM.
    #[arg(long, default_value_t = 0)]
    pub delay_shutdown: u64,
}

/// Answers one HTTP request.
pub fn respond(req: &Request, host: &str) -> Response {
    match req.path.as_str() {
        "/" => Response::ok(format!("NOW: {}", k8s_openapi::jiff::Timestamp::now())),
        "/hostname" => Response::ok(host.to_string()),
        "/echo" => {
            let msg = req.param("msg").unwrap_or_default().to_string();
            match req.param("code").map(str::parse::<u16>) {
                Some(Ok(code)) => Response::status(code, msg),
                Some(Err(_)) => Response::status(400, "invalid code\n"),
                None => Response::ok(msg),
            }
        }
        "/clientip" => Response::ok(unmap(req.peer).to_string()),
        "/healthz" => Response::ok("ok"),
        "/exit" => match req.param("code").unwrap_or("0").parse::<i32>() {
            Ok(code) if (0..=127).contains(&code) => Response {
                after: After::Exit(code),
                ..Response::status(204, "")
            },
            _ => Response::status(400, "code must be an integer in 0..=127\n"),
        },
        _ => Response::status(404, "404 page not found\n"),
    }
}

/// Answers one UDP datagram; `None` for an unknown command.
pub fn udp_reply(msg: &str, peer: SocketAddr, host: &str) -> Option<String> {
    let msg = msg.trim();
    let (cmd, rest) = msg.split_once(' ').unwrap_or((msg, ""));
    match cmd {
        "hostname" => Some(host.to_string()),
        "echo" => Some(rest.to_string()),
        "clientip" => Some(unmap(peer).to_string()),
        _ => None,
    }
}

async fn serve_udp(sock: UdpSocket) -> Result<()> {
    let host = hostname();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, peer) = sock.recv_from(&mut buf).await?;
        let msg = String::from_utf8_lossy(&buf[..n]);
        match udp_reply(&msg, peer, &host) {
            Some(reply) => {
                sock.send_to(reply.as_bytes(), peer).await?;
            }
            None => tracing::debug!(%peer, "unknown UDP command {msg:?}"),
        }
    }
}

/// Runs the server until SIGTERM/SIGINT (plus `--delay-shutdown`).
pub async fn run(a: NetexecArgs) -> Result<()> {
    let host = hostname();
    let listener = bind_tcp(a.http_port).await?;
    let handler: http::Handler = Arc::new(move |req: &Request| respond(req, &host));
    let http = tokio::spawn(http::serve(listener, handler));
    let udp = if a.udp_port > 0 {
        let port = u16::try_from(a.udp_port).context("--udp-port out of range")?;
        Some(tokio::spawn(serve_udp(bind_udp(port).await?)))
    } else {
        None
    };
    tracing::info!(http_port = a.http_port, udp_port = a.udp_port, "netexec serving");
    super::pause::run().await?;
    if a.delay_shutdown > 0 {
        tokio::time::sleep(Duration::from_secs(a.delay_shutdown)).await;
    }
    http.abort();
    if let Some(u) = udp {
        u.abort();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agnhost::http::parse_head;

    fn req(target: &str) -> Request {
        parse_head(
            format!("GET {target} HTTP/1.1\r\nHost: x").as_bytes(),
            "[::ffff:10.244.1.7]:5555".parse().unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn http_endpoints() {
        assert_eq!(respond(&req("/hostname"), "pod-a"), Response::ok("pod-a"));
        assert_eq!(respond(&req("/echo?msg=hi+there"), "p"), Response::ok("hi there"));
        assert_eq!(respond(&req("/echo?msg=x&code=503"), "p").status, 503);
        assert_eq!(respond(&req("/clientip"), "p"), Response::ok("10.244.1.7:5555"));
        assert_eq!(respond(&req("/healthz"), "p").status, 200);
        assert_eq!(respond(&req("/nope"), "p").status, 404);
        assert!(respond(&req("/"), "p").body.starts_with("NOW: "));
    }

    #[test]
    fn exit_endpoint_validates_code() {
        assert_eq!(respond(&req("/exit?code=3"), "p").after, After::Exit(3));
        assert_eq!(respond(&req("/exit"), "p").after, After::Exit(0));
        let bad = respond(&req("/exit?code=300"), "p");
        assert_eq!((bad.status, bad.after), (400, After::Continue));
    }

    #[test]
    fn udp_commands() {
        let peer: SocketAddr = "10.0.0.2:999".parse().unwrap();
        assert_eq!(udp_reply("hostname\n", peer, "h").as_deref(), Some("h"));
        assert_eq!(udp_reply("echo a b", peer, "h").as_deref(), Some("a b"));
        assert_eq!(udp_reply("clientip", peer, "h").as_deref(), Some("10.0.0.2:999"));
        assert_eq!(udp_reply("shell ls", peer, "h"), None);
    }
}
