//! Watch fan-out: many watchers on one namespace's pods, one pod updated M times, time from the write's
//! acknowledgement to the last watcher receiving it.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hyper::Method;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::fixtures;
use super::http::{Conn, JSON, MERGE_PATCH};

/// How long one update may take to reach every watcher before it counts as lost.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the fan-out measured.
pub struct Fanout {
    /// Per update: last watcher's receive time minus the write's acknowledgement (zero if all came earlier).
    pub latencies: Vec<Duration>,
    pub delivered: usize,
    pub expected: usize,
}

/// A watcher saw update `seq` at `at`.
struct Receipt {
    seq: usize,
    at: Instant,
}

/// Tracks, per update, how many watchers have seen it and when the last one did.
#[derive(Default)]
pub struct Tally {
    seen: HashMap<usize, (usize, Option<Instant>)>,
}

impl Tally {
    pub fn record(&mut self, seq: usize, at: Instant) {
        let e = self.seen.entry(seq).or_insert((0, None));
        e.0 += 1;
        e.1 = Some(e.1.map_or(at, |last: Instant| last.max(at)));
    }

    pub fn count(&self, seq: usize) -> usize {
        self.seen.get(&seq).map_or(0, |e| e.0)
    }

    pub fn last(&self, seq: usize) -> Option<Instant> {
        self.seen.get(&seq).and_then(|e| e.1)
    }

    /// Receipts of updates in `range`.
    pub fn total(&self, range: std::ops::RangeInclusive<usize>) -> usize {
        range.map(|s| self.count(s)).sum()
    }
}

/// Creates the watched pod in `ns`, opens `watchers` watches, then applies `updates` merge patches one at a
/// time, each after the previous one reached every watcher (or timed out).
pub async fn measure(addr: SocketAddr, ns: &str, watchers: usize, updates: usize) -> Result<Fanout> {
    let mut writer = Conn::connect(addr).await?;
    let created = writer
        .ok(
            Method::POST,
            &format!("/api/v1/namespaces/{ns}/pods"),
            JSON,
            Some((JSON, serde_json::to_vec(&fixtures::pod(0))?)),
        )
        .await?;
    let created: serde_json::Value = serde_json::from_slice(&created)?;
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .context("created pod without resourceVersion")?
        .to_owned();
    let name = fixtures::pod_name(0);
    let watch_path =
        format!("/api/v1/namespaces/{ns}/pods?watch=true&resourceVersion={rv}&timeoutSeconds=600");
    let (tx, mut rx) = mpsc::unbounded_channel::<Receipt>();
    let mut tasks = JoinSet::new();
    for _ in 0..watchers {
        let mut watch = Conn::connect(addr).await?.watch(&watch_path).await?;
        let tx = tx.clone();
        tasks.spawn(async move {
            while let Some(line) = watch.next_line().await? {
                let at = Instant::now();
                if let Some(seq) = fixtures::seq_of(&line)
                    && tx.send(Receipt { seq, at }).is_err()
                {
                    break;
                }
            }
            anyhow::Ok(())
        });
    }
    drop(tx);
    let patch_path = format!("/api/v1/namespaces/{ns}/pods/{name}");
    let mut tally = Tally::default();
    let mut latencies = Vec::with_capacity(updates);
    // Update 1 is a warm-up that also proves every watch is live; updates 2..=updates+1 are measured.
    for seq in 1..=updates + 1 {
        let body = serde_json::to_vec(&fixtures::seq_patch(seq))?;
        writer
            .ok(Method::PATCH, &patch_path, JSON, Some((MERGE_PATCH, body)))
            .await?;
        let ack = Instant::now();
        let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
        while tally.count(seq) < watchers {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) => tally.record(r.seq, r.at),
                Ok(None) => bail!("every watch stream ended (update {seq})"),
                Err(_) => break,
            }
        }
        if seq == 1 && tally.count(1) < watchers {
            bail!(
                "only {} of {watchers} watchers saw the first update within {DELIVERY_TIMEOUT:?}",
                tally.count(1)
            );
        }
        if seq > 1 && tally.count(seq) == watchers {
            latencies.push(
                tally
                    .last(seq)
                    .map_or(Duration::ZERO, |last| last.saturating_duration_since(ack)),
            );
        }
    }
    // Late or duplicate deliveries still count towards the total.
    while let Ok(r) = rx.try_recv() {
        tally.record(r.seq, r.at);
    }
    tasks.abort_all();
    Ok(Fanout {
        latencies,
        delivered: tally.total(2..=updates + 1),
        expected: watchers * updates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_per_update_and_keeps_the_latest_receipt() {
        let t0 = Instant::now();
        let mut t = Tally::default();
        t.record(2, t0 + Duration::from_millis(5));
        t.record(2, t0 + Duration::from_millis(1));
        t.record(3, t0);
        assert_eq!(t.count(2), 2);
        assert_eq!(t.last(2), Some(t0 + Duration::from_millis(5)));
        assert_eq!(t.total(2..=3), 3);
        assert_eq!(t.total(4..=9), 0);
    }
}
