//! A minimal HTTP/1.1 server for the agnhost commands: request parsing (pure) and a keep-alive connection loop.
use std::{net::SocketAddr, sync::Arc};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body read (and discarded).
const MAX_BODY: usize = 1024 * 1024;

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub peer: SocketAddr,
    pub keep_alive: bool,
    pub content_length: usize,
}

impl Request {
    /// The first value of query parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// What to do after answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Continue,
    Exit(i32),
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
    pub after: After,
}

impl Response {
    pub fn ok(body: impl Into<String>) -> Self {
        Self {
            status: 200,
            body: body.into(),
            after: After::Continue,
        }
    }

    pub fn status(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            body: body.into(),
            after: After::Continue,
        }
    }
}

/// Why a request head could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("malformed request line")]
    RequestLine,
    #[error("request head is not UTF-8")]
    Encoding,
    #[error("bad Content-Length")]
    ContentLength,
}

/// Parses a request head (everything before the blank line).
pub fn parse_head(head: &[u8], peer: SocketAddr) -> Result<Request, ParseError> {
    let text = std::str::from_utf8(head).map_err(|_| ParseError::Encoding)?;
    let mut lines = text.split("\r\n");
    let mut parts = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ParseError::RequestLine);
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() {
        return Err(ParseError::RequestLine);
    }
    let mut keep_alive = version == "HTTP/1.1";
    let mut content_length = 0;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case("close") {
                keep_alive = false;
            } else if value.eq_ignore_ascii_case("keep-alive") {
                keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().map_err(|_| ParseError::ContentLength)?;
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
        query: form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
        peer,
        keep_alive,
        content_length,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        412 => "Precondition Failed",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Serialises a response.
pub fn render(resp: &Response, keep_alive: bool) -> Vec<u8> {
    format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{}",
        resp.status,
        reason(resp.status),
        resp.body.len(),
        if keep_alive { "keep-alive" } else { "close" },
        resp.body
    )
    .into_bytes()
}

/// A request handler.
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// Accepts connections forever, answering each request with `handler`.
pub async fn serve(listener: TcpListener, handler: Handler) -> std::io::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        let handler = handler.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, peer, handler).await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
}

async fn connection(mut stream: TcpStream, peer: SocketAddr, handler: Handler) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            if buf.len() > MAX_HEAD {
                let resp = Response::status(400, "request head too large\n");
                return stream.write_all(&render(&resp, false)).await;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let req = match parse_head(&buf[..head_end], peer) {
            Ok(r) => r,
            Err(e) => {
                let resp = Response::status(400, format!("{e}\n"));
                return stream.write_all(&render(&resp, false)).await;
            }
        };
        buf.drain(..head_end + 4);
        if req.content_length > MAX_BODY {
            let resp = Response::status(400, "body too large\n");
            return stream.write_all(&render(&resp, false)).await;
        }
        while buf.len() < req.content_length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..req.content_length);
        let resp = handler(&req);
        stream.write_all(&render(&resp, req.keep_alive)).await?;
        if let After::Exit(code) = resp.after {
            stream.flush().await?;
            tracing::info!(code, "exiting as requested");
            std::process::exit(code);
        }
        if !req.keep_alive {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "10.0.0.9:4242".parse().unwrap()
    }

    #[test]
    fn parses_path_query_and_connection() {
        let r = parse_head(
            b"GET /echo?msg=hello%20world&x=1 HTTP/1.1\r\nHost: a\r\nConnection: close",
            peer(),
        )
        .unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/echo");
        assert_eq!(r.param("msg"), Some("hello world"));
        assert_eq!(r.param("x"), Some("1"));
        assert!(!r.keep_alive);
    }

    #[test]
    fn http10_closes_unless_keep_alive() {
        assert!(!parse_head(b"GET / HTTP/1.0", peer()).unwrap().keep_alive);
        assert!(
            parse_head(b"GET / HTTP/1.0\r\nconnection: Keep-Alive", peer())
                .unwrap()
                .keep_alive
        );
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_head(b"HELLO", peer()), Err(ParseError::RequestLine));
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nContent-Length: x", peer()),
            Err(ParseError::ContentLength)
        );
    }

    #[test]
    fn renders_length_and_connection() {
        let out = String::from_utf8(render(&Response::ok("abc"), true)).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("Content-Length: 3\r\n"), "{out}");
        assert!(out.contains("Connection: keep-alive\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\nabc"), "{out}");
    }
}
