//! Creating many objects with concurrent clients: wall time and per-request latencies.
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::task::JoinSet;

use super::http::Conn;

/// What a batch of creates took.
pub struct Timed {
    /// From the first request sent to the last answer received.
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
}

/// The collection path and body of object `i`.
pub type MakeObject = Arc<dyn Fn(usize) -> (String, serde_json::Value) + Send + Sync>;

/// Creates objects `0..n` with `concurrency` clients, each on its own connection, pulling the next index from a
/// shared counter. The first failed create stops the batch.
pub async fn create_all(addr: SocketAddr, n: usize, concurrency: usize, make: MakeObject) -> Result<Timed> {
    let mut conns = Vec::new();
    for _ in 0..concurrency.clamp(1, n.max(1)) {
        conns.push(Conn::connect(addr).await?);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for mut conn in conns {
        let (next, make) = (next.clone(), make.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(latencies);
                }
                let (path, object) = make(i);
                let body = serde_json::to_vec(&object)?;
                let t = Instant::now();
                conn.ok(
                    hyper::Method::POST,
                    &path,
                    super::http::JSON,
                    Some((super::http::JSON, body)),
                )
                .await
                .with_context(|| format!("creating object {i}"))?;
                latencies.push(t.elapsed());
            }
        });
    }
    let mut latencies = Vec::with_capacity(n);
    while let Some(joined) = tasks.join_next().await {
        latencies.extend(joined.context("a create worker panicked")??);
    }
    Ok(Timed {
        elapsed: started.elapsed(),
        latencies,
    })
}
