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

#[cfg(test)]
mod tests {
    use kube::runtime::watcher::Event;

    use super::*;

    fn named<K: Resource<DynamicType = ()> + Default>(name: &str) -> K {
        let mut o = K::default();
        o.meta_mut().name = Some(name.into());
        o.meta_mut().namespace = Some("default".into());
        o
    }

    fn list<K>(writer: &mut reflector::store::Writer<K>, objects: Vec<K>)
    where
        K: Resource + Clone,
        K::DynamicType: Eq + Hash + Clone,
    {
        writer.apply_watcher_event(&Event::Init);
        for o in objects {
            writer.apply_watcher_event(&Event::InitApply(o));
        }
        writer.apply_watcher_event(&Event::InitDone);
    }

    async fn next(rx: &mut watch::Receiver<Option<Snapshot>>) -> Snapshot {
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("a snapshot in time")
            .unwrap();
        rx.borrow_and_update()
            .clone()
            .expect("published snapshots are complete")
    }

    #[tokio::test]
    async fn publishes_only_after_every_initial_list_then_on_changes() {
        let (svc_reader, mut svc_writer) = reflector::store::<Service>();
        let (slice_reader, mut slice_writer) = reflector::store::<EndpointSlice>();
        let (node_reader, mut node_writer) = reflector::store::<Node>();
        let (changed_tx, changed_rx) = watch::channel(0u64);
        let (tx, mut rx) = watch::channel(None);
        tokio::spawn(publish(svc_reader, slice_reader, node_reader, changed_rx, tx));

        list(&mut svc_writer, vec![named::<Service>("a")]);
        list(&mut slice_writer, vec![]);
        changed_tx.send_modify(|n| *n += 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            rx.borrow().is_none(),
            "published before the Node list was complete"
        );

        list(&mut node_writer, vec![named::<Node>("n1")]);
        let s = next(&mut rx).await;
        assert_eq!((s.services.len(), s.slices.len(), s.nodes.len()), (1, 0, 1));

        // A burst of changes gives one snapshot with all of them.
        for name in ["b", "c", "d"] {
            svc_writer.apply_watcher_event(&Event::Apply(named::<Service>(name)));
            changed_tx.send_modify(|n| *n += 1);
        }
        let s = next(&mut rx).await;
        assert_eq!(s.services.len(), 4);
        svc_writer.apply_watcher_event(&Event::Delete(named::<Service>("a")));
        changed_tx.send_modify(|n| *n += 1);
        assert_eq!(next(&mut rx).await.services.len(), 3);
    }
}
