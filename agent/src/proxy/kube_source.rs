//! The Kubernetes API source: reflectors for Services, EndpointSlices and Nodes, merged into debounced snapshots.
use std::{fmt::Debug, hash::Hash, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, Resource,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::{info, warn};

use super::source::Snapshot;

/// How long a burst of changes may keep arriving before a snapshot is published.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Starts the three reflectors and the task that publishes snapshots once all initial lists are complete.
pub fn spawn_kube(client: Client) -> watch::Receiver<Option<Snapshot>> {
    let (tx, rx) = watch::channel(None);
    let (changed_tx, changed_rx) = watch::channel(0u64);
    let services = spawn_reflector::<Service>(Api::all(client.clone()), changed_tx.clone());
    let slices = spawn_reflector::<EndpointSlice>(Api::all(client.clone()), changed_tx.clone());
    let nodes = spawn_reflector::<Node>(Api::all(client), changed_tx);
    tokio::spawn(publish(services, slices, nodes, changed_rx, tx));
    rx
}

/// Runs a reflector for `K` in its own task; every event bumps `changed`.
fn spawn_reflector<K>(api: Api<K>, changed: watch::Sender<u64>) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()).default_backoff());
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    changed.send_modify(|n| *n = n.wrapping_add(1));
                }
                // The watcher recovers by itself (with backoff); say why it had to.
                Err(e) => warn!(kind, error = %e, "watch failed; retrying"),
            }
            if changed.is_closed() {
                return;
            }
        }
    });
    reader
}

async fn publish(
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    nodes: Store<Node>,
    mut changed: watch::Receiver<u64>,
    tx: watch::Sender<Option<Snapshot>>,
) {
    // The first snapshot only once every initial list is complete.
    let ready = async {
        services.wait_until_ready().await?;
        slices.wait_until_ready().await?;
        nodes.wait_until_ready().await
    };
    if ready.await.is_err() {
        return;
    }
    info!("initial Service, EndpointSlice and Node lists complete");
    loop {
        changed.borrow_and_update();
        let snapshot = Snapshot {
            services: services.state().iter().map(|o| (**o).clone()).collect(),
            slices: slices.state().iter().map(|o| (**o).clone()).collect(),
            nodes: nodes.state().iter().map(|o| (**o).clone()).collect(),
        };
        if tx.send(Some(snapshot)).is_err() {
            return;
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            _ = tx.closed() => return,
        }
        tokio::time::sleep(DEBOUNCE).await;
    }
}
