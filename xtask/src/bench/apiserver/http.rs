//! A small HTTP/1.1 client for the bench: one hyper connection per worker, plain requests and watch streams.
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// No single request may take longer than this (a list of 10k pods takes well under a second).
const TIMEOUT: Duration = Duration::from_secs(60);

pub const JSON: &str = "application/json";
pub const MERGE_PATCH: &str = "application/merge-patch+json";
/// What `kubectl get` asks for.
pub const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

/// One keep-alive connection to the server.
pub struct Conn {
    addr: SocketAddr,
    send: SendRequest<Full<Bytes>>,
}

/// A finished response.
pub struct Response {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Result<Conn> {
        let tcp = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
            .await
            .with_context(|| format!("connecting to {addr}: timed out"))?
            .with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true)?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .with_context(|| format!("HTTP handshake with {addr}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { addr, send })
    }

    fn request(
        &self,
        method: &Method,
        path: &str,
        accept: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Request<Full<Bytes>>> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, self.addr.to_string())
            .header(header::ACCEPT, accept);
        let body = match body {
            Some((content_type, bytes)) => {
                req = req.header(header::CONTENT_TYPE, content_type);
                Full::new(Bytes::from(bytes))
            }
            None => Full::new(Bytes::new()),
        };
        Ok(req.body(body)?)
    }

    /// Sends one request and reads the whole response.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        accept: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Response> {
        let req = self.request(&method, path, accept, body)?;
        let exchange = async {
            self.send.ready().await?;
            let resp = self.send.send_request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok(Response { status, body })
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .with_context(|| format!("{method} {path}: no answer within {}s", TIMEOUT.as_secs()))?
            .with_context(|| format!("{method} {path}"))
    }

    /// Like [`Conn::send`], but a status other than 2xx is an error carrying the response body.
    pub async fn ok(
        &mut self,
        method: Method,
        path: &str,
        accept: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Bytes> {
        let resp = self.send(method.clone(), path, accept, body).await?;
        if !resp.status.is_success() {
            bail!(
                "{method} {path}: {} {}",
                resp.status,
                String::from_utf8_lossy(&resp.body[..resp.body.len().min(400)])
            );
        }
        Ok(resp.body)
    }

    /// POSTs a JSON object and fails unless it was created.
    pub async fn create(&mut self, path: &str, object: &serde_json::Value) -> Result<()> {
        self.ok(
            Method::POST,
            path,
            JSON,
            Some((JSON, serde_json::to_vec(object)?)),
        )
        .await?;
        Ok(())
    }

    /// GETs a JSON document.
    pub async fn get_json(&mut self, path: &str) -> Result<serde_json::Value> {
        let body = self.ok(Method::GET, path, JSON, None).await?;
        serde_json::from_slice(&body).with_context(|| format!("GET {path}: not JSON"))
    }

    /// Starts a watch (`path` must carry `watch=true`); returns once the response headers arrived.
    pub async fn watch(mut self, path: &str) -> Result<Watch> {
        let req = self.request(&Method::GET, path, JSON, None)?;
        let start = async {
            self.send.ready().await?;
            anyhow::Ok(self.send.send_request(req).await?)
        };
        let resp = tokio::time::timeout(TIMEOUT, start)
            .await
            .with_context(|| format!("watch {path}: no answer within {}s", TIMEOUT.as_secs()))?
            .with_context(|| format!("watch {path}"))?;
        if !resp.status().is_success() {
            bail!("watch {path}: {}", resp.status());
        }
        Ok(Watch {
            body: resp.into_body(),
            buf: Vec::new(),
            _conn: self,
        })
    }
}

/// An open watch stream of newline-delimited JSON events.
pub struct Watch {
    body: Incoming,
    buf: Vec<u8>,
    _conn: Conn,
}

impl Watch {
    /// The next event line (without its newline), or `None` once the server closed the stream.
    pub async fn next_line(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            if let Some(line) = take_line(&mut self.buf) {
                return Ok(Some(line));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(frame) => {
                    if let Ok(data) = frame.context("reading the watch stream")?.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// Removes and returns the first complete line of `buf` (empty lines are skipped).
pub fn take_line(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        let pos = buf.iter().position(|&b| b == b'\n')?;
        let mut line: Vec<u8> = buf.drain(..=pos).collect();
        line.pop();
        if !line.is_empty() {
            return Some(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_across_frames() {
        let mut buf = b"{\"a\":1}\n\n{\"b\"".to_vec();
        assert_eq!(take_line(&mut buf).as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(take_line(&mut buf), None);
        buf.extend_from_slice(b":2}\n");
        assert_eq!(take_line(&mut buf).as_deref(), Some(&b"{\"b\":2}"[..]));
        assert!(buf.is_empty());
    }
}
