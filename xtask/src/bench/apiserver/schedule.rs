//! Scheduler throughput: fake Ready nodes, a burst of unbound pods, pods bound per second seen through a watch.
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hyper::Method;
use tokio::sync::oneshot;

use super::creates::{self, MakeObject};
use super::fixtures;
use super::http::{Conn, JSON, MERGE_PATCH};

/// How long all pods may take to be bound.
const BIND_TIMEOUT: Duration = Duration::from_secs(180);

pub struct Scheduled {
    /// From the first create sent to the last binding seen.
    pub elapsed: Duration,
    /// How long creating the pods took (the scheduler works concurrently).
    pub create_elapsed: Duration,
    pub pods: usize,
}

/// Registers `count` Ready nodes with the same allocatable resources.
pub async fn create_nodes(addr: SocketAddr, count: usize) -> Result<()> {
    let mut conn = Conn::connect(addr).await?;
    for i in 0..count {
        conn.create("/api/v1/nodes", &fixtures::node(i)).await?;
        let status = serde_json::to_vec(&fixtures::node_status())?;
        let path = format!("/api/v1/nodes/{}/status", fixtures::node_name(i));
        conn.ok(Method::PATCH, &path, JSON, Some((MERGE_PATCH, status)))
            .await?;
    }
    Ok(())
}

/// Creates `pods` unbound pods in `ns` with `concurrency` clients and waits until a watch saw all of them bound.
pub async fn measure(addr: SocketAddr, ns: &str, pods: usize, concurrency: usize) -> Result<Scheduled> {
    let list = Conn::connect(addr)
        .await?
        .get_json(&format!("/api/v1/namespaces/{ns}/pods"))
        .await?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .context("pod list without resourceVersion")?
        .to_owned();
    let path = format!("/api/v1/namespaces/{ns}/pods?watch=true&resourceVersion={rv}&timeoutSeconds=600");
    let mut watch = Conn::connect(addr).await?.watch(&path).await?;
    let (done_tx, done_rx) = oneshot::channel::<Result<Instant>>();
    let watcher = tokio::spawn(async move {
        let mut bound = HashSet::new();
        let result = async {
            while bound.len() < pods {
                let Some(line) = watch.next_line().await? else {
                    bail!("the watch ended after {} bindings", bound.len());
                };
                if let Some(name) = fixtures::bound_pod(&line) {
                    bound.insert(name);
                }
            }
            Ok(Instant::now())
        }
        .await;
        let _ = done_tx.send(result);
    });
    let started = Instant::now();
    let ns_owned = ns.to_owned();
    let make: MakeObject =
        Arc::new(move |i| (format!("/api/v1/namespaces/{ns_owned}/pods"), fixtures::pod(i)));
    let created = creates::create_all(addr, pods, concurrency, make).await?;
    let finished = tokio::time::timeout(BIND_TIMEOUT, done_rx).await;
    watcher.abort();
    let finished = finished
        .with_context(|| {
            format!(
                "not all {pods} pods were bound within {}s",
                BIND_TIMEOUT.as_secs()
            )
        })?
        .context("the binding watcher stopped")??;
    Ok(Scheduled {
        elapsed: finished - started,
        create_elapsed: created.elapsed,
        pods,
    })
}
