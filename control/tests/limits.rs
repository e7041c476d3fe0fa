//! Hostile and overloading clients: oversized and deeply nested bodies, slowloris connections, the in-flight
//! limit (429 + Retry-After), the request timeout (504), the per-user watch limit and the health endpoints.

mod common;

use std::time::{Duration, Instant};

use control::server::LimitOptions;
use hyper::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

async fn server_with_limits(tune: impl FnOnce(&mut LimitOptions)) -> common::TestServer {
    let mut limits = LimitOptions::default();
    tune(&mut limits);
    common::server_with(|c| c.limits = limits).await
}

/// Writes a large request in pieces while reading the answer, so an early answer (the server refusing the
/// request before it was fully sent) is read before the server closes the connection.
async fn send_while_reading(addr: std::net::SocketAddr, request: Vec<u8>, limit: Duration) -> String {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        for piece in request.chunks(64 * 1024) {
            if writer.write_all(piece).await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    writing.abort();
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status code of a raw HTTP answer.
fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {answer:?}"))
}

fn configmap(name: &str) -> Value {
    json!({"metadata": {"name": name}, "data": {"a": "b"}})
}

/// The server still creates objects normally.
async fn still_serving(srv: &common::TestServer, name: &str) {
    let (status, body) = common::call(srv, "POST", CONFIGMAPS, Some(configmap(name))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn oversized_bodies_get_413_request_entity_too_large() {
    let srv = common::server().await;
    let big = "x".repeat(3 * 1024 * 1024 + 1);
    let body = serde_json::to_vec(&json!({"metadata": {"name": "big"}, "data": {"a": big}})).unwrap();
    let started = Instant::now();
    let response = common::send(&srv, "POST", CONFIGMAPS, &[], Some(body)).await;
    let status = response.status();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let status_object: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{status_object}");
    assert_eq!(status_object["kind"], "Status");
    assert_eq!(status_object["reason"], "RequestEntityTooLarge");

    // Without a Content-Length (chunked), the limit applies while reading.
    let chunk = vec![b'['; 4 * 1024 * 1024];
    let mut request = format!(
        "POST {CONFIGMAPS} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n",
        chunk.len()
    )
    .into_bytes();
    request.extend_from_slice(&chunk);
    request.extend_from_slice(b"\r\n0\r\n\r\n");
    let answer = send_while_reading(srv.server.addr, request, Duration::from_secs(10)).await;
    assert_eq!(status_of(&answer), 413, "{answer}");
    assert!(answer.contains("RequestEntityTooLarge"), "{answer}");
    println!(
        "body limit: 3 MiB + 1 byte -> 413 in {:.1} ms; 4 MiB chunked -> 413",
        started.elapsed().as_secs_f64() * 1000.0
    );
    still_serving(&srv, "after-big").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_bodies_are_refused_without_overflowing_the_stack() {
    let srv = common::server().await;
    still_serving(&srv, "nested").await;
    const DEPTH: usize = 100_000;
    let arrays = format!("{}{}", "[".repeat(DEPTH), "]".repeat(DEPTH));
    let object = format!(r#"{{"metadata":{{"name":"deep"}},"data":{{"a":"b"}},"x":{arrays}}}"#);
    let yaml_block = format!("metadata:\n  name: nested\nx: {}1\n", "- ".repeat(DEPTH));
    let named = format!("{CONFIGMAPS}/nested");
    let apply = format!("{named}?fieldManager=t");
    let cases: Vec<(&str, &str, &str, String)> = vec![
        ("POST", CONFIGMAPS, "application/json", object.clone()),
        ("PUT", &named, "application/json", object.clone()),
        ("PATCH", &named, "application/merge-patch+json", object.clone()),
        (
            "PATCH",
            &named,
            "application/strategic-merge-patch+json",
            object.clone(),
        ),
        (
            "PATCH",
            &named,
            "application/json-patch+json",
            format!(r#"[{{"op":"add","path":"/x","value":{arrays}}}]"#),
        ),
        ("PATCH", &apply, "application/apply-patch+yaml", object.clone()),
        (
            "PATCH",
            &apply,
            "application/apply-patch+yaml",
            format!("metadata:\n  name: nested\nx: {arrays}\n"),
        ),
        ("PATCH", &apply, "application/apply-patch+yaml", yaml_block),
        ("POST", CONFIGMAPS, "application/json", arrays.clone()),
    ];
    let mut codes = Vec::new();
    for (method, path, content_type, body) in &cases {
        let response = common::send(
            &srv,
            method,
            path,
            &[("content-type", content_type)],
            Some(body.clone().into_bytes()),
        )
        .await;
        let status = response.status();
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY,
            "{method} {path} ({content_type}) with {DEPTH} nested arrays: {status} {text}"
        );
        let status_object: Value = serde_json::from_slice(&bytes).expect("a Status object");
        assert_eq!(status_object["kind"], "Status");
        codes.push(status.as_u16());
    }
    println!(
        "nesting: {} bodies with {DEPTH} nested levels -> {codes:?}; server still serving",
        cases.len()
    );
    still_serving(&srv, "after-deep").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_cut_off_while_others_are_served() {
    const SLOW: usize = 200;
    let timeout = Duration::from_secs(2);
    let srv = server_with_limits(|l| l.header_read_timeout = timeout).await;
    let addr = srv.server.addr;
    // A watch opened before is a long-lived response, not a slow request: it must outlive the header timeout.
    let mut events = open_watch(&srv).await;
    let started = Instant::now();
    let slow: Vec<_> = (0..SLOW)
        .map(|_| {
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.expect("connect");
                let opened = Instant::now();
                let header = format!("GET {CONFIGMAPS} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ");
                // One byte every 500 ms, never finishing the headers; bounded at 30 s.
                for byte in header.bytes().chain(std::iter::repeat(b'a')).take(60) {
                    if stream.write_all(&[byte]).await.is_err() {
                        return Some(opened.elapsed());
                    }
                    let mut buf = [0u8; 512];
                    // Any answer (an error page, EOF or a reset) means the server cut the connection.
                    if tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf))
                        .await
                        .is_ok()
                    {
                        return Some(opened.elapsed());
                    }
                }
                None
            })
        })
        .collect();
    // Meanwhile, normal clients.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut latencies = Vec::new();
    let mut failed = 0;
    for i in 0..40 {
        let begun = Instant::now();
        let (status, _) = common::call(&srv, "GET", CONFIGMAPS, None).await;
        if status != StatusCode::OK {
            failed += 1;
        }
        if i % 2 == 0 {
            let (status, _) = common::call(&srv, "POST", CONFIGMAPS, Some(configmap(&format!("n{i}")))).await;
            if status != StatusCode::CREATED {
                failed += 1;
            }
        }
        latencies.push(begun.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut cut = Vec::new();
    for task in slow {
        cut.push(
            task.await
                .unwrap()
                .expect("a slowloris connection was never cut off"),
        );
    }
    cut.sort();
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let max = *latencies.last().unwrap();
    println!(
        "slowloris: {SLOW} slow connections cut off after {:.2}-{:.2} s (header timeout {:.0} s); \
         meanwhile {} normal rounds, failed {failed}, p50 {:.1} ms, max {:.1} ms; total {:.1} s",
        cut[0].as_secs_f64(),
        cut[SLOW - 1].as_secs_f64(),
        timeout.as_secs_f64(),
        latencies.len(),
        p50.as_secs_f64() * 1000.0,
        max.as_secs_f64() * 1000.0,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(failed, 0);
    still_serving(&srv, "after-slow").await;
    loop {
        let event = events
            .next()
            .await
            .expect("the watch outlived the header timeout");
        if event["object"]["metadata"]["name"] == "after-slow" {
            break;
        }
    }
    assert!(
        cut[0] >= timeout - Duration::from_millis(100),
        "cut off before the timeout: {:?}",
        cut[0]
    );
    assert!(
        cut[SLOW - 1] < timeout + Duration::from_secs(3),
        "cut off late: {:?}",
        cut[SLOW - 1]
    );
    assert!(
        max < Duration::from_secs(1),
        "normal requests slowed down: max {max:?}"
    );
}

/// Opens a POST whose body never arrives: the request occupies a mutating slot (reading its body).
async fn stalled_post(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.expect("send");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_limit_answers_429_with_retry_after() {
    let srv = server_with_limits(|l| {
        l.max_mutating_requests_inflight = 2;
        l.max_requests_inflight = 2;
    })
    .await;
    let addr = srv.server.addr;
    let held = vec![
        stalled_post(addr, CONFIGMAPS).await,
        stalled_post(addr, CONFIGMAPS).await,
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = common::send(
        &srv,
        "POST",
        CONFIGMAPS,
        &[],
        Some(serde_json::to_vec(&configmap("third")).unwrap()),
    )
    .await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "1");
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let status: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(status["reason"], "TooManyRequests", "{status}");
    assert_eq!(status["details"]["retryAfterSeconds"], 1);
    // Reads have their own budget, and watches are not counted.
    let (code, _) = common::call(&srv, "GET", CONFIGMAPS, None).await;
    assert_eq!(code, StatusCode::OK);
    let watch = common::send(&srv, "GET", &format!("{CONFIGMAPS}?watch=true"), &[], None).await;
    assert_eq!(watch.status(), StatusCode::OK);
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (code, body) = common::call(&srv, "POST", CONFIGMAPS, Some(configmap("fourth"))).await;
        if code == StatusCode::CREATED {
            break;
        }
        assert!(Instant::now() < deadline, "slots not released: {code} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "in-flight: 2 mutating slots held -> 3rd write 429 Retry-After 1; reads and watches served; slots freed on disconnect"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_time_out_with_504_but_watches_do_not() {
    let limit = Duration::from_secs(1);
    let srv = server_with_limits(|l| l.request_timeout = limit).await;
    let addr = srv.server.addr;
    let started = Instant::now();
    let mut stream = stalled_post(addr, CONFIGMAPS).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(7).any(|w| w == b"Timeout") {
                break;
            }
        }
    })
    .await;
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert_eq!(status_of(&answer), 504, "{answer}");
    assert!(answer.contains("\"reason\":\"Timeout\""), "{answer}");
    assert!(
        took >= limit && took < limit + Duration::from_secs(2),
        "504 after {took:?}"
    );

    // A client's ?timeout= shortens the limit.
    let srv2 = server_with_limits(|l| l.request_timeout = Duration::from_secs(30)).await;
    let begun = Instant::now();
    let mut stream = stalled_post(srv2.server.addr, &format!("{CONFIGMAPS}?timeout=1s")).await;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("an answer before 10 s")
        .unwrap();
    let short = begun.elapsed();
    assert_eq!(status_of(&String::from_utf8_lossy(&buf[..n])), 504);
    assert!(
        short < Duration::from_secs(3),
        "?timeout=1s answered after {short:?}"
    );

    // A watch outlives the request timeout.
    let mut lines = open_watch(&srv).await;
    tokio::time::sleep(limit * 2).await;
    still_serving(&srv, "late").await;
    let event = lines
        .next()
        .await
        .expect("the watch is still open after twice the request timeout");
    assert_eq!(event["type"], "ADDED");
    assert_eq!(event["object"]["metadata"]["name"], "late");
    println!(
        "request timeout: stalled write -> 504 after {:.2} s (limit {:.0} s); ?timeout=1s -> 504 after {:.2} s; \
         watch still open after {:.0} s",
        took.as_secs_f64(),
        limit.as_secs_f64(),
        short.as_secs_f64(),
        (limit * 2).as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_per_user_are_limited() {
    let srv = server_with_limits(|l| l.max_watches_per_user = 3).await;
    let path = format!("{CONFIGMAPS}?watch=true");
    let mut open = Vec::new();
    for _ in 0..3 {
        let watch = common::send(&srv, "GET", &path, &[], None).await;
        assert_eq!(watch.status(), StatusCode::OK);
        open.push(watch);
    }
    let refused = common::send(&srv, "GET", &path, &[], None).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "1");
    // Lists are not watches.
    let (code, _) = common::call(&srv, "GET", CONFIGMAPS, None).await;
    assert_eq!(code, StatusCode::OK);
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let again = common::send(&srv, "GET", &path, &[], None).await;
        if again.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "a closed watch did not free its slot");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("watches per user: limit 3 -> 4th 429; a closed watch frees its slot");
}

#[tokio::test]
async fn health_endpoints_report_the_store_check() {
    let srv = common::server().await;
    let (status, body) = common::call(&srv, "GET", "/readyz", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!("ok")));
    let (status, body) = common::call(&srv, "GET", "/readyz?verbose", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!("[+]ping ok\n[+]store ok\nreadyz check passed\n"));
    let (status, body) = common::call(&srv, "GET", "/livez?verbose", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!("[+]ping ok\nlivez check passed\n"));
    let (status, _) = common::call(&srv, "GET", "/readyz/store", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = common::call(&srv, "GET", "/readyz/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A ConfigMap watch from resourceVersion 0, answered 200.
async fn open_watch(srv: &common::TestServer) -> common::Lines {
    let watch = common::send(
        srv,
        "GET",
        &format!("{CONFIGMAPS}?watch=true&resourceVersion=0"),
        &[],
        None,
    )
    .await;
    assert_eq!(watch.status(), StatusCode::OK);
    common::Lines::new(watch)
}
