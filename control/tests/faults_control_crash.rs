//! `kill -9` of skiff-control during a write burst (creates, updates, deletes), on the embedded store and on
//! etcd: every acknowledged write survives with at least its resourceVersion, and a watcher that resumes from its
//! last resourceVersion (as client-go's reflector does) sees every acknowledged write once, in order, ending in
//! the same state as a fresh list.

mod common;
mod etcd_support;

use std::time::{Duration, Instant};

use common::faults::{self, ControlProcess, Watcher};
use etcd_support::Etcd;
use hyper::StatusCode;
use serde_json::json;

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";
const WRITERS: usize = 8;
/// How long the burst runs before the kill.
const BURST: Duration = Duration::from_secs(3);

/// Runs the burst, the kill and the restart; returns the live and the returning watcher's logs.
async fn burst_kill_restart(
    process: &mut ControlProcess,
    label: &str,
) -> (faults::WatchLog, faults::WatchLog) {
    process.wait_ready(Duration::from_secs(30)).await;
    let addr = process.addr;
    let (status, list) = faults::request(addr, "GET", CONFIGMAPS, None)
        .await
        .expect("initial list");
    assert_eq!(status, StatusCode::OK, "{list}");
    let (initial, start_rv) = faults::list_state(&list);
    let watcher = Watcher::start(addr, CONFIGMAPS, start_rv, initial.clone());
    // A second watcher goes away mid-burst and comes back only after the restart: it must get the writes it
    // missed from the store's history, across the crash.
    let stale = Watcher::start(addr, CONFIGMAPS, start_rv, initial);

    let (ledger, writers) = faults::start_burst(addr, CONFIGMAPS, WRITERS);
    tokio::time::sleep(BURST / 2).await;
    let stale = stale.stop().await;
    let (stale_events, stale_rv) = (stale.events.len(), stale.last_rv);
    tokio::time::sleep(BURST / 2).await;
    process.kill();
    let killed = Instant::now();
    for writer in writers {
        tokio::time::timeout(Duration::from_secs(20), writer)
            .await
            .expect("writers stop once the server is gone")
            .expect("writer task");
    }
    let acked = ledger.lock().unwrap().acks.len();
    assert!(acked >= 20, "{label}: the burst acknowledged only {acked} writes");

    process.restart();
    let ready_after = process.wait_ready(Duration::from_secs(30)).await;
    let (status, marker) = faults::request(
        addr,
        "POST",
        CONFIGMAPS,
        Some(&json!({"metadata": {"name": "marker"}, "data": {"step": "end"}})),
    )
    .await
    .expect("write after the restart");
    assert_eq!(status, StatusCode::CREATED, "{marker}");
    let recovery = killed.elapsed();
    let stale = Watcher::resume(addr, CONFIGMAPS, stale);
    assert!(
        stale.wait_for("marker", Duration::from_secs(30)).await,
        "{label}: the watcher that left mid-burst did not resume"
    );
    assert!(
        watcher.wait_for("marker", Duration::from_secs(30)).await,
        "{label}: the watcher did not resume and see a write made after the restart"
    );
    let (status, list) = faults::request(addr, "GET", CONFIGMAPS, None)
        .await
        .expect("final list");
    assert_eq!(status, StatusCode::OK, "{list}");
    let (final_state, _) = faults::list_state(&list);
    let log = watcher.stop().await;
    let stale = stale.stop().await;
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    check(label, "live watcher", &ledger, &log, &final_state);
    println!(
        "{label}: the watcher that left mid-burst (at resourceVersion {stale_rv}, after {stale_events} events) \
         replayed {} events from history after the restart",
        stale.events.len() - stale_events
    );
    check(label, "returning watcher", &ledger, &stale, &final_state);
    println!(
        "{label}: restart ready in {:.2} s, recovery (kill to first acknowledged write) {:.2} s",
        ready_after.as_secs_f64(),
        recovery.as_secs_f64()
    );
    (log, stale)
}

/// Prints and asserts the verdict of one watcher.
fn check(
    label: &str,
    who: &str,
    ledger: &faults::Ledger,
    log: &faults::WatchLog,
    final_state: &std::collections::BTreeMap<String, faults::Seen>,
) {
    let verdict = faults::judge(ledger, log, final_state);

    println!(
        "{label}, {who}: writes acknowledged {}, lost {}; events {}, missing {}, out of order {}, duplicates {}; \
         watches {} (resumed {}), relists after 410: {}; final state {} objects, mismatches {}",
        verdict.acknowledged,
        verdict.lost.len(),
        log.events.len(),
        verdict.missing_events.len(),
        log.out_of_order,
        log.duplicates,
        log.watches,
        log.watches.saturating_sub(1),
        log.relists.len(),
        final_state.len(),
        verdict.state_mismatches.len(),
    );
    if !log.relists.is_empty() {
        println!(
            "{label}, {who}: the watcher got 410 Gone and relisted at {:?}; events up to there are compared with the relist",
            log.relists
        );
    }
    assert!(
        verdict.lost.is_empty(),
        "{label}, {who}: acknowledged writes lost: {:?}",
        verdict.lost
    );
    assert!(
        verdict.missing_events.is_empty(),
        "{label}, {who}: acknowledged writes without their event: {:?}",
        verdict.missing_events
    );
    assert_eq!(
        log.out_of_order, 0,
        "{label}, {who}: events out of resourceVersion order"
    );
    assert_eq!(log.duplicates, 0, "{label}, {who}: events delivered twice");
    assert!(
        verdict.state_mismatches.is_empty(),
        "{label}, {who}: the event stream's final state differs from the list for {:?}",
        verdict.state_mismatches
    );
    assert!(log.watches >= 2, "{label}, {who}: the watch was never resumed");
    assert!(
        log.errors.is_empty(),
        "{label}, {who}: watch errors: {:?}",
        log.errors
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_write_burst_on_the_embedded_store() {
    let dir = tempfile::Builder::new()
        .prefix("skiff-ctl-fault-crash-")
        .tempdir()
        .unwrap();
    let mut process = ControlProcess::start(dir.path(), &[]);
    let (live, _) = burst_kill_restart(&mut process, "embedded").await;
    assert!(live.relists.is_empty(), "history covers the live watcher's gap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_short_history_makes_a_returning_watcher_relist() {
    let dir = tempfile::Builder::new()
        .prefix("skiff-ctl-fault-crash-short-")
        .tempdir()
        .unwrap();
    let mut process = ControlProcess::start(dir.path(), &["--history-limit", "20"]);
    let (_, stale) = burst_kill_restart(&mut process, "embedded, history 20").await;
    assert!(
        !stale.relists.is_empty(),
        "a watcher that missed more than the kept history must get 410 Gone and relist"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_write_burst_on_etcd() {
    let etcd = Etcd::start().await;
    let dir = tempfile::Builder::new()
        .prefix("skiff-ctl-fault-crash-etcd-")
        .tempdir()
        .unwrap();
    let endpoint = etcd.endpoint();
    let mut process = ControlProcess::start(
        dir.path(),
        &[
            "--store",
            "etcd",
            "--etcd-endpoints",
            &endpoint,
            "--etcd-prefix",
            "/skiff-ctl-fault",
        ],
    );
    let (live, _) = burst_kill_restart(&mut process, "etcd").await;
    assert!(live.relists.is_empty(), "history covers the live watcher's gap");
}
