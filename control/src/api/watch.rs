//! Watch streams: newline-delimited JSON events with initial events, bookmarks, timeouts and 410 expiry.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::objects;
use super::read::Filter;
use super::router::{ApiState, Ctx};
use super::status::ApiError;
use super::table;
use crate::registry::kinds::Kind;
use crate::store::{self, Event, EventKind, ListOptions};

/// Lines buffered towards a slow client before the watch waits.
const LINE_BUFFER: usize = 64;

/// The watch event type and object to send for a store event, or `None` when the filter hides it.
pub fn translate(
    kind: &Kind,
    event: &Event,
    filter: &Filter,
) -> Result<Option<(&'static str, Value)>, ApiError> {
    let object = objects::from_store_as(kind, &event.kv.value, event.revision)?;
    let now = filter.matches(&object);
    let kind = match event.kind {
        EventKind::Created => now.then_some("ADDED"),
        EventKind::Deleted => now.then_some("DELETED"),
        EventKind::Updated => {
            let before = match &event.prev {
                Some(prev) => filter.matches(&objects::from_kv_as(kind, prev)?),
                None => false,
            };
            match (before, now) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            }
        }
    };
    Ok(kind.map(|k| (k, object)))
}

fn bookmark(kind: &Kind, revision: u64, initial_end: bool) -> Value {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"type": "BOOKMARK", "object": {"kind": kind.kind, "apiVersion": kind.api_version(), "metadata": metadata}})
}

fn line(value: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(value).expect("JSON values always serialise");
    bytes.push(b'\n');
    Bytes::from(bytes)
}

struct Emitter {
    tx: mpsc::Sender<Bytes>,
    kind: &'static Kind,
    table: bool,
    query: super::query::Query,
}

impl Emitter {
    /// Sends one event; false when the client went away.
    async fn send(&self, kind: &str, object: Value) -> bool {
        let object = if self.table && kind != "ERROR" && kind != "BOOKMARK" {
            let rv = object
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            table::render(self.kind, &[object], &rv, None, &self.query)
        } else {
            object
        };
        self.tx
            .send(line(&json!({"type": kind, "object": object})))
            .await
            .is_ok()
    }

    async fn raw(&self, value: &Value) -> bool {
        self.tx.send(line(value)).await.is_ok()
    }
}

fn streaming_response(rx: mpsc::Receiver<Bytes>) -> Response {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|bytes| (Ok::<_, Infallible>(bytes), rx))
    });
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = StatusCode::OK;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    response
}

/// GET with `watch=true` on a collection.
pub async fn serve(state: &Arc<ApiState>, ctx: &Ctx) -> Result<Response, ApiError> {
    let filter = Filter::from_ctx(ctx)?;
    let prefix = ctx.kind.list_prefix(ctx.namespace());
    let rv = ctx.query.resource_version()?;
    let send_initial = ctx.query.flag("sendInitialEvents");
    let bookmarks = ctx.query.flag("allowWatchBookmarks");
    let timeout = ctx
        .query
        .number("timeoutSeconds")?
        .map_or(state.options.default_watch_timeout, Duration::from_secs);
    // No resourceVersion (or "0") means: the current state as ADDED events, then changes.
    let synthetic = send_initial || rv.is_none_or(|rv| rv == 0);
    let (initial, start) = if synthetic {
        let page = state
            .store
            .list(&prefix, ListOptions::default())
            .await
            .map_err(|e| ApiError::from_store(e, ctx.kind, ""))?;
        (page.items, page.revision)
    } else {
        (Vec::new(), rv.unwrap_or(0))
    };
    let (tx, rx) = mpsc::channel(LINE_BUFFER);
    let emitter = Emitter {
        tx,
        kind: ctx.kind,
        table: ctx.table,
        query: ctx.query.clone(),
    };
    let events = match state.store.watch(&prefix, start).await {
        Ok(events) => events,
        Err(store::Error::Compacted { requested, compacted }) => {
            let status =
                ApiError::expired(format!("too old resource version: {requested} ({compacted})")).to_status();
            tokio::spawn(async move { emitter.send("ERROR", status).await });
            return Ok(streaming_response(rx));
        }
        Err(e) => return Err(ApiError::from_store(e, ctx.kind, "")),
    };
    let interval = state.options.bookmark_interval;
    tokio::spawn(run(
        emitter,
        events,
        filter,
        initial,
        start,
        send_initial,
        bookmarks,
        timeout,
        interval,
    ));
    Ok(streaming_response(rx))
}

#[allow(
    clippy::too_many_arguments,
    reason = "one call site; a struct would only rename the arguments"
)]
async fn run(
    out: Emitter,
    mut events: store::WatchStream,
    filter: Filter,
    initial: Vec<store::KeyValue>,
    start: u64,
    send_initial: bool,
    bookmarks: bool,
    timeout: Duration,
    interval: Duration,
) {
    for kv in initial {
        let Ok(object) = objects::from_kv_as(out.kind, &kv) else {
            continue;
        };
        if filter.matches(&object) && !out.send("ADDED", object).await {
            return;
        }
    }
    if send_initial && !out.raw(&bookmark(out.kind, start, true)).await {
        return;
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let mut last = start;
    loop {
        tokio::select! {
            () = &mut deadline => return,
            _ = ticker.tick(), if bookmarks => {
                if !out.raw(&bookmark(out.kind, last, false)).await {
                    return;
                }
            }
            () = out.tx.closed() => return,
            event = events.recv() => {
                let event = match event {
                    None => return,
                    Some(Ok(store::WatchItem::Progress(revision))) => {
                        last = last.max(revision);
                        continue;
                    }
                    Some(Ok(store::WatchItem::Event(event))) => event,
                    Some(Err(e)) => {
                        // 410 for compacted history, 503 while the store is unreachable: the client resumes
                        // (or relists) once storage is back; the stream never pretends to be current.
                        let status = ApiError::from_store(e, out.kind, "");
                        out.send("ERROR", status.to_status()).await;
                        return;
                    }
                };
                last = event.revision;
                match translate(out.kind, &event, &filter) {
                    Ok(Some((kind, object))) => {
                        if !out.send(kind, object).await {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        out.send("ERROR", e.to_status()).await;
                        return;
                    }
                }
            }
        }
    }
}
