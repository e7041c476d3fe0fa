//! Shared reflector caches (one writer per kind, many readers) and a change signal for reconcile loops.

use std::fmt::Debug;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Cached views of the kinds the controllers read.
pub struct Caches {
    pub pods: Store<Pod>,
    pub nodes: Store<Node>,
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
    pub endpoints: Store<Endpoints>,
    pub replicasets: Store<ReplicaSet>,
    pub deployments: Store<Deployment>,
    pub daemonsets: Store<DaemonSet>,
    /// Node heartbeats (namespace kube-node-lease).
    pub leases: Store<Lease>,
    changes: watch::Sender<u64>,
    ready: watch::Receiver<bool>,
}

fn reflect<K>(api: Api<K>, changes: watch::Sender<u64>, tasks: &mut JoinSet<()>) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()).default_backoff());
    tasks.spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(_) => {
                    changes.send_modify(|n| *n = n.wrapping_add(1));
                }
                Err(e) => tracing::debug!(error = %e, kind = %K::kind(&Default::default()), "watch failed; retrying"),
            }
        }
    });
    reader
}

impl Caches {
    /// Starts one watch per kind; the caches fill in the background.
    pub fn start(client: &Client, tasks: &mut JoinSet<()>) -> Self {
        let (changes, _) = watch::channel(0);
        let pods = reflect(Api::all(client.clone()), changes.clone(), tasks);
        let nodes = reflect(Api::all(client.clone()), changes.clone(), tasks);
        let services = reflect(Api::all(client.clone()), changes.clone(), tasks);
        let slices = reflect(Api::all(client.clone()), changes.clone(), tasks);
        let endpoints = reflect(Api::all(client.clone()), changes.clone(), tasks);
        let replicasets = reflect(Api::all(client.clone()), changes.clone(), tasks);
        let deployments = reflect(Api::all(client.clone()), changes.clone(), tasks);
        let daemonsets = reflect(Api::all(client.clone()), changes.clone(), tasks);
        let leases = reflect(
            Api::namespaced(client.clone(), "kube-node-lease"),
            changes.clone(),
            tasks,
        );
        // A store's readiness is awaited once here; every loop then waits on this flag.
        let (ready_tx, ready) = watch::channel(false);
        let stores = (
            pods.clone(),
            nodes.clone(),
            services.clone(),
            slices.clone(),
            endpoints.clone(),
            replicasets.clone(),
            deployments.clone(),
            daemonsets.clone(),
            leases.clone(),
        );
        tasks.spawn(async move {
            let _ = stores.0.wait_until_ready().await;
            let _ = stores.1.wait_until_ready().await;
            let _ = stores.2.wait_until_ready().await;
            let _ = stores.3.wait_until_ready().await;
            let _ = stores.4.wait_until_ready().await;
            let _ = stores.5.wait_until_ready().await;
            let _ = stores.6.wait_until_ready().await;
            let _ = stores.7.wait_until_ready().await;
            let _ = stores.8.wait_until_ready().await;
            let _ = ready_tx.send(true);
            // Keep the sender so waiters never see a closed channel.
            std::future::pending::<()>().await;
        });
        Self {
            pods,
            nodes,
            services,
            slices,
            endpoints,
            replicasets,
            deployments,
            daemonsets,
            leases,
            changes,
            ready,
        }
    }

    /// A receiver that sees every later change of any cached kind.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Waits until every cache holds its initial list.
    pub async fn ready(&self) {
        let mut ready = self.ready.clone();
        // Errors only when the server is stopping.
        let _ = ready.wait_for(|r| *r).await;
    }
}

/// Waits for the next change, then lets a burst of changes settle for `debounce`; false when the caches stopped.
pub async fn next_change(rx: &mut watch::Receiver<u64>, debounce: Duration) -> bool {
    if rx.changed().await.is_err() {
        return false;
    }
    tokio::time::sleep(debounce).await;
    rx.borrow_and_update();
    true
}

/// The rounds of a controller's reconcile loop: the first once the caches hold their initial lists, each next one
/// after a (debounced) change, or after `retry` when the last pass left work unfinished (failed writes, unmet
/// expectations, timed decisions).
pub struct Rounds {
    changes: watch::Receiver<u64>,
    debounce: Duration,
    retry: Duration,
}

impl Rounds {
    /// Waits until the caches are ready.
    pub async fn start(caches: &Caches, debounce: Duration, retry: Duration) -> Self {
        let changes = caches.subscribe();
        caches.ready().await;
        Self {
            changes,
            debounce,
            retry,
        }
    }

    /// Waits for the next round; false when the caches stopped.
    pub async fn next(&mut self, unfinished: bool) -> bool {
        let change = next_change(&mut self.changes, self.debounce);
        if unfinished {
            tokio::time::timeout(self.retry, change).await.unwrap_or(true)
        } else {
            change.await
        }
    }
}
