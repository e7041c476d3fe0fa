//! The pods bound to this node: watches them (`spec.nodeName=<node>`), re-adopts what an earlier agent left
//! running, and keeps one worker per pod, started, stopped and deleted as [`decide`](super::decide) says.
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    runtime::{WatchStreamExt, reflector, watcher},
};
use tokio::{sync::mpsc, task::JoinHandle};

use super::{
    decide::{Action, Bound, Worker, decide},
    pod_worker::{self, NodeCtx, Order},
};

struct Running {
    orders: mpsc::Sender<Order>,
    state: Worker,
    task: JoinHandle<()>,
}

/// Runs until `stop` fires; then detaches every pod (they keep running for the next agent).
pub async fn run(ctx: Arc<NodeCtx>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node_name));
    let (store, writer) = reflector::store::<Pod>();
    let stream = reflector::reflector(writer, watcher(api, cfg).default_backoff());
    let mut stream = std::pin::pin!(stream);
    let mut workers: BTreeMap<String, Running> = BTreeMap::new();
    let mut adopted = false;
    let mut listed = false;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            ev = stream.next() => match ev {
                Some(Ok(watcher::Event::InitDone)) => listed = true,
                Some(Ok(_)) => {}
                Some(Err(e)) => tracing::warn!(error = %e, "watching this node's pods failed; retrying"),
                None => break,
            },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        // The store is complete only after the initial list (never wait for it here: that would stop the
        // stream that fills it).
        if !listed {
            continue;
        }
        let pods: Vec<Arc<Pod>> = store.state();
        let by_uid: BTreeMap<String, Arc<Pod>> = pods
            .iter()
            .filter_map(|p| Some((p.metadata.uid.clone()?, p.clone())))
            .collect();
        if !adopted {
            adopted = true;
            adopt(&ctx, &by_uid, &mut workers).await;
        }
        workers.retain(|uid, w| {
            let done = w.task.is_finished();
            if done {
                tracing::debug!(uid, "pod worker finished");
            }
            !done
        });
        let bound: Vec<Bound> = pods.iter().filter_map(|p| Bound::from_pod(p)).collect();
        let states = workers.iter().map(|(u, w)| (u.clone(), w.state)).collect();
        for action in decide(&bound, &states) {
            match action {
                Action::Start(uid) => {
                    let Some(pod) = by_uid.get(&uid) else { continue };
                    workers.insert(uid, spawn(&ctx, (**pod).clone(), None));
                }
                Action::Stop { uid, grace, delete } => {
                    if let Some(w) = workers.get_mut(&uid) {
                        let _ = w.orders.try_send(Order::Stop { grace, delete });
                        w.state = Worker::Stopping;
                    }
                }
                Action::Delete(uid) => {
                    let Some(pod) = by_uid.get(&uid) else { continue };
                    let (ns, name) = (
                        pod.metadata.namespace.clone().unwrap_or_default(),
                        pod.metadata.name.clone().unwrap_or_default(),
                    );
                    let client = ctx.client.clone();
                    // Marked so the next round does not delete it twice.
                    workers.insert(
                        uid.clone(),
                        Running {
                            orders: mpsc::channel(1).0,
                            state: Worker::Stopping,
                            task: tokio::spawn(async move {
                                pod_worker::final_delete(&client, &ns, &name, &uid).await
                            }),
                        },
                    );
                }
            }
        }
    }
    tracing::info!(pods = workers.len(), "detaching pods; they keep running");
    for w in workers.values() {
        let _ = w.orders.try_send(Order::Detach);
    }
    for (_, w) in workers {
        let _ = tokio::time::timeout(Duration::from_secs(5), w.task).await;
    }
}

fn spawn(
    ctx: &Arc<NodeCtx>,
    pod: Pod,
    adopted: Option<(crate::pods::plan::RuntimePlan, crate::pods::sandbox::Sandbox)>,
) -> Running {
    let (tx, rx) = mpsc::channel(4);
    Running {
        orders: tx,
        state: Worker::Running,
        task: tokio::spawn(pod_worker::run(ctx.clone(), pod, adopted, rx)),
    }
}

/// Picks up pods an earlier agent left: running ones that still exist get a worker, the rest are removed.
async fn adopt(
    ctx: &Arc<NodeCtx>,
    pods: &BTreeMap<String, Arc<Pod>>,
    workers: &mut BTreeMap<String, Running>,
) {
    let rt = ctx.runtime.clone();
    let Ok((live, dead)) = tokio::task::spawn_blocking(move || rt.adoptable()).await else {
        return;
    };
    let mut gone = dead;
    for (plan, sandbox) in live {
        match pods.get(&plan.uid) {
            Some(pod) if pod.metadata.deletion_timestamp.is_none() => {
                tracing::info!(pod = %format!("{}/{}", plan.namespace, plan.name), "re-adopting a running pod");
                let uid = plan.uid.clone();
                workers.insert(uid, spawn(ctx, (**pod).clone(), Some((plan, sandbox))));
            }
            _ => gone.push(plan.uid),
        }
    }
    for uid in gone {
        tracing::info!(
            uid,
            "removing a pod left by an earlier agent that is no longer bound here"
        );
        let c = ctx.clone();
        let _ = tokio::task::spawn_blocking(move || pod_worker::tear_down(&c, &uid, None)).await;
    }
}
