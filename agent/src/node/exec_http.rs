//! `kubectl exec` on the kubelet endpoint: `GET /exec/<ns>/<pod>/<container>?command=..&stdin=..&stdout=..
//! &stderr=..&tty=..` (the kubelet path the apiserver proxies `pods/exec` to; see control/src/api/pod_exec.rs),
//! upgraded to a WebSocket that speaks Kubernetes' remotecommand channel protocol, `v5.channel.k8s.io` or
//! `v4.channel.k8s.io`: binary messages whose first byte is the channel (0 stdin, 1 stdout, 2 stderr, 3 error,
//! 4 resize; v5 adds 255 = the peer closed channel N); at the end one `Status` on channel 3, then a close.
//! Errors before the upgrade (unknown pod or container, container not running) are `Status` answers with their
//! HTTP code. SPDY (kubectl's fallback) is not served.
use std::os::fd::OwnedFd;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper::{
    Request, Response, StatusCode,
    body::Incoming,
    header::{
        CONNECTION, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, UPGRADE,
    },
};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::mpsc,
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message,
        handshake::derive_accept_key,
        protocol::{CloseFrame, Role, frame::coding::CloseCode},
    },
};

use super::{
    kubelet_server::{Body, KubeletServer, reply},
    logs_http::Refusal,
};
use crate::pods::{
    exec::{self, ExecIo, ExecProcess, Streams},
    layout::PodDir,
};

/// The remotecommand protocol with the stream-close signal.
pub const V5: &str = "v5.channel.k8s.io";
/// The remotecommand protocol kubectl 1.29 and older speak over WebSockets.
pub const V4: &str = "v4.channel.k8s.io";

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// v5: `[255, N]` says the peer will send nothing more on channel N.
pub const CLOSE: u8 = 255;

/// Largest piece of output sent in one message (client-go reads with a 32 KiB buffer).
const CHUNK: usize = 32 * 1024;

/// A parsed exec request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub command: Vec<String>,
    pub streams: Streams,
}

fn refusal(code: u16, reason: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        reason,
        message: message.into(),
    }
}

fn truthy(v: &str) -> bool {
    matches!(v, "true" | "1" | "True")
}

/// Parses `/exec/<ns>/<pod>/<container>?command=a&command=b&stdin=true&stdout=true&stderr=true&tty=false` with
/// kube-apiserver's checks (a command, at least one stream). Under `tty` stderr is merged into the terminal.
pub fn parse_request(target: &str) -> Result<ExecRequest, Refusal> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ["exec", ns, pod, container] = parts.as_slice() else {
        return Err(refusal(404, "NotFound", format!("no handler for {path}")));
    };
    let mut req = ExecRequest {
        namespace: (*ns).to_owned(),
        pod: (*pod).to_owned(),
        container: (*container).to_owned(),
        command: Vec::new(),
        streams: Streams {
            stdin: false,
            stdout: false,
            stderr: false,
            tty: false,
        },
    };
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "command" => req.command.push(v.into_owned()),
            "stdin" => req.streams.stdin = truthy(&v),
            "stdout" => req.streams.stdout = truthy(&v),
            "stderr" => req.streams.stderr = truthy(&v),
            "tty" => req.streams.tty = truthy(&v),
            _ => {}
        }
    }
    if req.command.is_empty() {
        return Err(refusal(
            400,
            "BadRequest",
            "you must specify at least one command for the container",
        ));
    }
    let s = &mut req.streams;
    if !(s.stdin || s.stdout || s.stderr) {
        return Err(refusal(
            400,
            "BadRequest",
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    if s.tty {
        s.stderr = false;
    }
    Ok(req)
}

/// The protocol to speak among the client's `Sec-WebSocket-Protocol` offers: v5, else v4.
pub fn negotiate<'a>(offers: impl IntoIterator<Item = &'a str>) -> Option<&'static str> {
    let offered: Vec<&str> = offers
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    [V5, V4].into_iter().find(|p| offered.contains(p))
}

/// A message on `channel`.
pub fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(data.len() + 1);
    m.push(channel);
    m.extend_from_slice(data);
    m
}

/// A message from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound<'a> {
    Data(u8, &'a [u8]),
    /// v5: the client sends nothing more on this channel.
    Close(u8),
    /// No channel byte.
    Empty,
}

/// Reads a client message (`v5`: the close signal is understood).
pub fn parse_inbound(v5: bool, msg: &[u8]) -> Inbound<'_> {
    match msg {
        [] => Inbound::Empty,
        [CLOSE, channel, ..] if v5 => Inbound::Close(*channel),
        [channel, data @ ..] => Inbound::Data(*channel, data),
    }
}

/// A resize message (`{"Width":80,"Height":24}`) as (columns, rows).
pub fn parse_resize(data: &[u8]) -> Option<(u16, u16)> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Size {
        width: u16,
        height: u16,
    }
    let size: Size = serde_json::from_slice(data).ok()?;
    Some((size.width, size.height))
}

/// The `Status` kubelet ends an exec with: Success, or NonZeroExitCode with the code as the `ExitCode` cause
/// (from which kubectl takes its own exit code).
pub fn exit_status(code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({"metadata": {}, "status": "Failure",
           "message": format!("command terminated with non-zero exit code: exit status {code}"),
           "reason": "NonZeroExitCode",
           "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
}

/// The `Status` of an exec that could not run (kubectl prints its message).
pub fn error_status(message: &str) -> Value {
    json!({"metadata": {}, "status": "Failure",
           "message": format!("Internal error occurred: error executing command in container: {message}"),
           "reason": "InternalError", "code": 500,
           "details": {"causes": [{"message": format!("error executing command in container: {message}")}]}})
}

/// The first channel the server writes to (kubelet sends it an empty message once the streams are up).
pub fn first_channel(s: Streams) -> u8 {
    if s.stdout || s.tty {
        STDOUT
    } else if s.stderr {
        STDERR
    } else {
        ERROR
    }
}

fn refuse(r: &Refusal) -> Response<Body> {
    reply(r.code, "application/json", r.body())
}

fn header(req: &Request<Incoming>, name: hyper::header::HeaderName) -> &str {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Answers `/exec/...`: 101 and the exec session, or an error `Status`.
pub async fn respond(server: &KubeletServer, req: Request<Incoming>) -> Response<Body> {
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |pq| pq.as_str().to_owned());
    let exec_req = match parse_request(&target) {
        Ok(r) => r,
        Err(r) => return refuse(&r),
    };
    let websocket = header(&req, UPGRADE).eq_ignore_ascii_case("websocket");
    let key = header(&req, SEC_WEBSOCKET_KEY).to_owned();
    if !websocket || key.is_empty() || req.method() != hyper::Method::GET {
        return refuse(&refusal(
            400,
            "BadRequest",
            format!(
                "exec is served over WebSocket only ({V5} or {V4}; kubectl 1.30 or newer), not {:?}",
                header(&req, UPGRADE)
            ),
        ));
    }
    let offers: Vec<&str> = req
        .headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let Some(protocol) = negotiate(offers.iter().copied()) else {
        return refuse(&refusal(
            400,
            "BadRequest",
            format!("no supported exec protocol offered ({offers:?}); this node speaks {V5} and {V4}"),
        ));
    };
    let Some(pod) = server.logs.get(&exec_req.namespace, &exec_req.pod) else {
        return refuse(&refusal(
            404,
            "NotFound",
            format!(
                "pod {}/{} is not running on this node",
                exec_req.namespace, exec_req.pod
            ),
        ));
    };
    let view = pod.status.borrow().clone();
    let pod_dir = PodDir::new(&server.pod_root, &pod.uid);
    let target = match exec::target(&view, &pod_dir, &exec_req.pod, &exec_req.container) {
        Ok(t) => t,
        Err(e) => return refuse(&refusal(e.code, "BadRequest", e.message)),
    };
    let process = match exec::spawn(&server.agent_exe, &target, &exec_req.command, exec_req.streams) {
        Ok(p) => p,
        Err(e) => {
            return refuse(&refusal(
                500,
                "InternalError",
                format!("error executing command in container: {e}"),
            ));
        }
    };
    tracing::info!(pod = %format!("{}/{}", exec_req.namespace, exec_req.pod), container = %exec_req.container,
        command = ?exec_req.command, tty = exec_req.streams.tty, "exec");
    let streams = exec_req.streams;
    tokio::spawn(async move {
        let mut process = process;
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
                session(ws, process, protocol == V5, streams).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "exec upgrade failed");
                process.kill();
            }
        }
    });
    let mut r = Response::new(http_body_util::BodyExt::boxed(
        http_body_util::Empty::<Bytes>::new(),
    ));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&derive_accept_key(key.as_bytes())).expect("base64 is a header value"),
    );
    h.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
    r
}

/// Copies `reader` to the client on `channel` until it ends.
fn pump(mut reader: impl AsyncRead + Unpin + Send + 'static, channel: u8, out: mpsc::Sender<Vec<u8>>) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match reader.read(&mut buf).await {
                // A pseudo-terminal's master reads EIO once every slave is closed: that is its end.
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out.send(frame(channel, &buf[..n])).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
}

/// Writes what the client sends on stdin to `writer`; ends (closing it) when the channel closes.
fn feed(mut writer: impl AsyncWrite + Unpin + Send + 'static) -> mpsc::Sender<Bytes> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        while let Some(data) = rx.recv().await {
            if writer.write_all(&data).await.is_err() || writer.flush().await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    tx
}

/// A pseudo-terminal master as an async file (reads and writes run on the blocking pool).
fn tty_file(master: &OwnedFd) -> std::io::Result<tokio::fs::File> {
    Ok(tokio::fs::File::from_std(std::fs::File::from(
        master.try_clone()?,
    )))
}

/// Runs one exec session over `ws` until the command has exited and its output is sent (or the client left, which
/// kills the command), then sends the final `Status` and closes.
async fn session<S>(mut ws: WebSocketStream<S>, mut process: ExecProcess, v5: bool, streams: Streams)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(16);
    let mut stdin: Option<mpsc::Sender<Bytes>> = None;
    let mut master: Option<OwnedFd> = None;
    let io = std::mem::replace(
        &mut process.io,
        ExecIo::Pipes {
            stdin: None,
            stdout: None,
            stderr: None,
        },
    );
    match io {
        ExecIo::Pipes {
            stdin: i,
            stdout: o,
            stderr: e,
        } => {
            stdin = i.map(feed);
            if let Some(o) = o {
                pump(o, STDOUT, out_tx.clone());
            }
            if let Some(e) = e {
                pump(e, STDERR, out_tx.clone());
            }
        }
        ExecIo::Tty(m) => {
            match (tty_file(&m), tty_file(&m)) {
                (Ok(reader), Ok(writer)) => {
                    pump(reader, STDOUT, out_tx.clone());
                    if streams.stdin {
                        stdin = Some(feed(writer));
                    }
                }
                (Err(e), _) | (_, Err(e)) => tracing::warn!(error = %e, "exec: cloning the terminal"),
            }
            master = Some(m);
        }
    }
    drop(out_tx);
    let mut client_gone = ws
        .send(Message::Binary(vec![first_channel(streams)].into()))
        .await
        .is_err();
    let mut exited = None;
    let mut output_done = false;
    loop {
        if exited.is_some() && (output_done || client_gone) {
            break;
        }
        tokio::select! {
            status = process.child.wait(), if exited.is_none() => {
                exited = Some(status);
            }
            out = out_rx.recv(), if !output_done => match out {
                Some(m) => {
                    if !client_gone && ws.send(Message::Binary(m.into())).await.is_err() {
                        client_gone = true;
                        process.kill();
                    }
                }
                None => output_done = true,
            },
            msg = ws.next(), if !client_gone => match msg {
                Some(Ok(Message::Binary(b))) => match parse_inbound(v5, &b) {
                    Inbound::Data(STDIN, data) => {
                        if let Some(tx) = &stdin
                            && tx.send(Bytes::copy_from_slice(data)).await.is_err()
                        {
                            stdin = None;
                        }
                    }
                    Inbound::Close(STDIN) => stdin = None,
                    Inbound::Data(RESIZE, data) => {
                        if let (Some(m), Some((w, h))) = (&master, parse_resize(data))
                            && let Err(e) = exec::resize(m, w, h)
                        {
                            tracing::debug!(error = %e, "exec: resizing the terminal");
                        }
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    client_gone = true;
                    process.kill();
                }
                Some(Ok(_)) => {}
            },
        }
    }
    drop(stdin);
    if client_gone {
        return;
    }
    let status = match exited {
        Some(Ok(st)) => exit_status(exec::exit_code(st)),
        Some(Err(e)) => error_status(&e.to_string()),
        None => error_status("the command did not finish"),
    };
    let body = serde_json::to_vec(&status).expect("JSON values always serialise");
    let _ = ws.send(Message::Binary(frame(ERROR, &body).into())).await;
    let _ = ws
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    // Wait briefly for the client's close reply so it reads the status before the connection goes.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_like_kubelet() {
        let r = parse_request(
            "/exec/default/p/c?command=sh&command=-c&command=exit%203&stdin=true&stdout=true&stderr=true&tty=false",
        )
        .unwrap();
        assert_eq!(
            (r.namespace.as_str(), r.pod.as_str(), r.container.as_str()),
            ("default", "p", "c")
        );
        assert_eq!(r.command, ["sh", "-c", "exit 3"]);
        assert_eq!(
            r.streams,
            Streams {
                stdin: true,
                stdout: true,
                stderr: true,
                tty: false
            }
        );
        let t = parse_request("/exec/d/p/c?command=sh&stdin=1&stdout=1&stderr=1&tty=1").unwrap();
        assert!(
            t.streams.tty && !t.streams.stderr,
            "a terminal carries stderr itself"
        );
        let none = parse_request("/exec/d/p/c?stdout=true").unwrap_err();
        assert_eq!(
            (none.code, none.message.as_str()),
            (400, "you must specify at least one command for the container")
        );
        assert_eq!(parse_request("/exec/d/p/c?command=ls").unwrap_err().code, 400);
        assert_eq!(
            parse_request("/exec/d/p?command=ls&stdout=1").unwrap_err().code,
            404
        );
    }

    #[test]
    fn protocol_negotiation_prefers_v5() {
        assert_eq!(negotiate(["v5.channel.k8s.io"]), Some(V5));
        assert_eq!(
            negotiate(["v4.channel.k8s.io, v5.channel.k8s.io", "channel.k8s.io"]),
            Some(V5)
        );
        assert_eq!(negotiate(["v4.channel.k8s.io,base64.channel.k8s.io"]), Some(V4));
        assert_eq!(negotiate(["SPDY/3.1"]), None);
        assert_eq!(negotiate([]), None);
    }

    #[test]
    fn channel_framing() {
        assert_eq!(frame(STDOUT, b"hi"), b"\x01hi");
        assert_eq!(frame(ERROR, b""), [3]);
        assert_eq!(parse_inbound(true, b"\x00abc"), Inbound::Data(STDIN, b"abc"));
        assert_eq!(parse_inbound(true, &[CLOSE, STDIN]), Inbound::Close(STDIN));
        assert_eq!(
            parse_inbound(false, &[CLOSE, STDIN]),
            Inbound::Data(CLOSE, &[STDIN]),
            "v4 has no close signal"
        );
        assert_eq!(parse_inbound(true, &[]), Inbound::Empty);
        assert_eq!(parse_resize(br#"{"Width":120,"Height":40}"#), Some((120, 40)));
        assert_eq!(parse_resize(b"{}"), None);
        let tty_only = Streams {
            stdin: true,
            stdout: false,
            stderr: false,
            tty: true,
        };
        assert_eq!(first_channel(tty_only), STDOUT);
        let stderr_only = Streams {
            tty: false,
            stderr: true,
            ..tty_only
        };
        assert_eq!(first_channel(stderr_only), STDERR);
    }

    #[test]
    fn final_status_carries_the_exit_code() {
        assert_eq!(exit_status(0), json!({"metadata": {}, "status": "Success"}));
        let failed = exit_status(3);
        assert_eq!(failed["status"], "Failure");
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(
            failed["details"]["causes"],
            json!([{"reason": "ExitCode", "message": "3"}])
        );
        assert_eq!(
            failed["message"],
            "command terminated with non-zero exit code: exit status 3"
        );
        let err = error_status("boom");
        assert_eq!(
            (err["status"].as_str(), err["code"].as_u64()),
            (Some("Failure"), Some(500))
        );
        assert!(err["message"].as_str().unwrap().ends_with("boom"));
    }
}
