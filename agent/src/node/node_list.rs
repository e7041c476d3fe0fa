//! One watch of every Node, shared by the node's tasks that follow the cluster's nodes (routes to their podCIDRs,
//! the masquerade ranges): the whole list is published after the initial listing and after every change.
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, reflector, watcher},
};
use tokio::{sync::watch, task::JoinHandle};

/// Every Node, as of the latest event.
pub type Nodes = Arc<Vec<Arc<Node>>>;

/// Starts the watch; the receiver holds `None` until the first complete list. The task ends with `stop`.
pub fn spawn(
    client: Client,
    mut stop: watch::Receiver<bool>,
) -> (watch::Receiver<Option<Nodes>>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(None);
    let task = tokio::spawn(async move {
        let (store, writer) = reflector::store::<Node>();
        let stream = reflector::reflector(
            writer,
            watcher(Api::<Node>::all(client), watcher::Config::default()).default_backoff(),
        );
        let mut stream = std::pin::pin!(stream);
        let mut listed = false;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                ev = stream.next() => match ev {
                    Some(Ok(watcher::Event::InitDone)) => listed = true,
                    // A re-list's objects are only complete at its InitDone.
                    Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => continue,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "watching Nodes failed; retrying");
                        continue;
                    }
                    None => return,
                },
            }
            // The store is complete only after the initial list.
            if listed {
                tx.send_replace(Some(Arc::new(store.state())));
            }
        }
    });
    (rx, task)
}

/// Waits for the next published list; `None` when the watch task is gone.
pub async fn next(rx: &mut watch::Receiver<Option<Nodes>>) -> Option<Nodes> {
    loop {
        rx.changed().await.ok()?;
        if let Some(nodes) = rx.borrow_and_update().clone() {
            return Some(nodes);
        }
    }
}
