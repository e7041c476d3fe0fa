//! One pod's life on this node: IP, sandbox and veth; the runtime's worker; status patches to the apiserver; then
//! graceful stop, tear-down and (for a graceful deletion) the final delete with a UID precondition.
use std::{
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::{
    api::core::v1::{Pod, PodCondition, ServiceAccount},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, Preconditions},
};
use serde_json::json;
use tokio::sync::mpsc;

use super::{
    logs_http::{LogTarget, LogTargets},
    pod_status::{Placement, pod_status},
};
use crate::{
    net::{
        cidr::Ipv4Cidr,
        ipam::IpamStore,
        nl::Netns,
        veth::{self, PodNetSpec},
    },
    pods::{
        plan::{PodContext, RuntimePlan, TokenVolume, VolumeSource, plan},
        runtime::PodRuntime,
        sa_token::{self, BoundPod, IssuedToken},
        sandbox::Sandbox,
        status::PodView,
    },
};

/// What every pod worker of the node shares.
pub struct NodeCtx {
    pub client: Client,
    pub node_name: String,
    pub node_ip: Ipv4Addr,
    /// The node's network namespace (where pod veths live).
    pub node_ns: Netns,
    pub runtime: PodRuntime,
    pub ipam: Mutex<IpamStore>,
    pub pod_cidr: Ipv4Cidr,
    pub logs: LogTargets,
}

/// What the manager tells a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Stop the containers (with this grace, or the pod's own), tear down; then delete the pod object if asked.
    Stop { grace: Option<Duration>, delete: bool },
    /// Leave everything running (agent shutdown): the next agent re-adopts the pod.
    Detach,
}

struct Ready {
    plan: RuntimePlan,
    sandbox: Sandbox,
    ip: Ipv4Addr,
}

fn pod_key(p: &Pod) -> (String, String, String) {
    (
        p.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
        p.metadata.name.clone().unwrap_or_default(),
        p.metadata.uid.clone().unwrap_or_default(),
    )
}

/// Address, plan, sandbox and network for a pod (blocking: netlink threads and files).
fn set_up(
    ctx: &NodeCtx,
    pod: &Pod,
    adopted: Option<(RuntimePlan, Sandbox)>,
    service_account_automount: Option<bool>,
) -> anyhow::Result<Ready> {
    let (_, _, uid) = pod_key(pod);
    let (ip, gateway) = {
        let store = ctx.ipam.lock().expect("ipam lock");
        store.update(ctx.pod_cidr, |i| Ok((i.allocate(&uid)?, i.gateway())))?
    };
    if let Some((plan, sandbox)) = adopted {
        return Ok(Ready { plan, sandbox, ip });
    }
    let plan = plan(
        pod,
        &PodContext {
            node_name: ctx.node_name.clone(),
            pod_ip: Some(ip),
            agent_exe: ctx.runtime.config().agent_exe.clone(),
            service_account_automount,
        },
    )?;
    let sandbox = ctx.runtime.create_sandbox(&plan)?;
    veth::attach(
        &ctx.node_ns,
        &PodNetSpec {
            uid: uid.clone(),
            pod_netns: sandbox.netns_path(),
            pod_ip: ip,
            gateway,
            mtu: None,
        },
    )?;
    Ok(Ready { plan, sandbox, ip })
}

/// `automountServiceAccountToken` of the pod's ServiceAccount (`None` when unset or unreadable).
async fn service_account_automount(client: &Client, pod: &Pod) -> Option<bool> {
    let spec = pod.spec.as_ref()?;
    if spec.automount_service_account_token.is_some() {
        return None;
    }
    let name = spec.service_account_name.as_deref().unwrap_or("default");
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), pod.metadata.namespace.as_deref()?);
    match api.get_opt(name).await {
        Ok(sa) => sa?.automount_service_account_token,
        Err(e) => {
            tracing::debug!(sa = name, error = %e, "reading the pod's ServiceAccount");
            None
        }
    }
}

/// Requests and writes the token of every ServiceAccount token volume of `plan`: (volume, spec, token) each.
async fn fill_token_volumes(
    ctx: &NodeCtx,
    plan: &RuntimePlan,
) -> Result<Vec<(String, TokenVolume, IssuedToken)>, sa_token::TokenError> {
    let bound = BoundPod {
        namespace: plan.namespace.clone(),
        name: plan.name.clone(),
        uid: plan.uid.clone(),
    };
    let mut out = Vec::new();
    for (volume, source) in &plan.volumes {
        let VolumeSource::ServiceAccountToken(spec) = source else {
            continue;
        };
        let issued = sa_token::request(&ctx.client, &bound, spec).await?;
        let dir = ctx.runtime.pod_dir(&plan.uid).volume(volume);
        let ca = ctx.runtime.config().cluster_ca.clone().unwrap_or_default();
        let (token, ns) = (issued.token.clone(), plan.namespace.clone());
        tokio::task::spawn_blocking(move || sa_token::write_volume(&dir, &token, &ca, &ns))
            .await
            .map_err(|e| sa_token::TokenError::Write {
                path: volume.into(),
                source: std::io::Error::other(e),
            })??;
        out.push((volume.clone(), spec.clone(), issued));
    }
    Ok(out)
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Removes everything the node made for pod `uid` (blocking).
pub fn tear_down(ctx: &NodeCtx, uid: &str, ran: Option<(&RuntimePlan, &Sandbox)>) {
    if let Err(e) = veth::detach(&ctx.node_ns, uid) {
        tracing::warn!(uid, error = %e, "removing the pod's veth");
    }
    let released = ctx
        .ipam
        .lock()
        .expect("ipam lock")
        .update(ctx.pod_cidr, |i| Ok(i.release(uid)));
    if let Err(e) = released {
        tracing::warn!(uid, error = %e, "releasing the pod's address");
    }
    let removed = match ran {
        Some((plan, sandbox)) => ctx.runtime.remove(plan, sandbox),
        None => ctx.runtime.remove_uid(uid),
    };
    if let Err(e) = removed {
        tracing::warn!(uid, error = %e, "removing the pod's sandbox and state");
    }
}

/// Patches `pods/<name>/status`.
async fn patch_status(
    api: &Api<Pod>,
    name: &str,
    status: &k8s_openapi::api::core::v1::PodStatus,
) -> kube::Result<()> {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": status})),
    )
    .await
    .map(|_| ())
}

/// Removes the pod object for good (only the pod with this UID; gone already is fine).
pub async fn final_delete(client: &Client, namespace: &str, name: &str, uid: &str) {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => tracing::info!(pod = %format!("{namespace}/{name}"), "pod deleted"),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => tracing::warn!(pod = %format!("{namespace}/{name}"), error = %e, "final pod delete"),
    }
}

/// Runs the pod until an order arrives. Returns when it is stopped (and torn down) or detached.
pub async fn run(
    ctx: Arc<NodeCtx>,
    pod: Pod,
    adopted: Option<(RuntimePlan, Sandbox)>,
    mut orders: mpsc::Receiver<Order>,
) {
    let (namespace, name, uid) = pod_key(&pod);
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut adopted = adopted;
    let was_adopted = adopted.is_some();
    let automount = service_account_automount(&ctx.client, &pod).await;
    let mut set = None;
    // Set-up and the ServiceAccount token, retried until they work or the pod is no longer wanted here.
    let (ready, tokens) = loop {
        if set.is_none() {
            let (c, p, a) = (ctx.clone(), pod.clone(), adopted.take());
            match tokio::task::spawn_blocking(move || set_up(&c, &p, a, automount)).await {
                Ok(Ok(r)) => set = Some(r),
                Ok(Err(e)) => {
                    tracing::warn!(pod = %format!("{namespace}/{name}"), error = format!("{e:#}"), "pod set-up failed; retrying")
                }
                Err(e) => tracing::warn!(error = %e, "pod set-up task"),
            }
        }
        if let Some(r) = set.take() {
            match fill_token_volumes(&ctx, &r.plan).await {
                Ok(t) => break (r, t),
                Err(e) => {
                    tracing::warn!(pod = %format!("{namespace}/{name}"), error = %e, "ServiceAccount token; retrying");
                    set = Some(r);
                }
            }
        }
        tokio::select! {
            o = orders.recv() => {
                let order = o.unwrap_or(Order::Detach);
                if let Order::Stop { delete, .. } = order {
                    let (c, u) = (ctx.clone(), uid.clone());
                    let _ = tokio::task::spawn_blocking(move || tear_down(&c, &u, None)).await;
                    if delete {
                        final_delete(&ctx.client, &namespace, &name, &uid).await;
                    }
                }
                return;
            }
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    };
    tracing::info!(pod = %format!("{namespace}/{name}"), ip = %ready.ip, adopted = was_adopted, "pod running");
    let bound = BoundPod {
        namespace: namespace.clone(),
        name: name.clone(),
        uid: uid.clone(),
    };
    let refreshers: Vec<_> = tokens
        .into_iter()
        .map(|(volume, spec, issued)| {
            let dir = ctx.runtime.pod_dir(&uid).volume(&volume);
            let ca = ctx.runtime.config().cluster_ca.clone().unwrap_or_default();
            AbortOnDrop(tokio::spawn(sa_token::keep_fresh(
                ctx.client.clone(),
                bound.clone(),
                spec,
                dir,
                ca,
                issued,
            )))
        })
        .collect();
    let handle = ctx.runtime.run(ready.plan, ready.sandbox, Some(ready.ip));
    let mut sub = handle.subscribe();
    ctx.logs.insert(
        &namespace,
        &name,
        LogTarget {
            uid: uid.clone(),
            status: sub.clone(),
        },
    );
    let placement = Placement {
        host_ip: ctx.node_ip,
        pod_ip: Some(ready.ip),
        start_time: pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.clone())
            .unwrap_or_else(|| Time(Timestamp::now())),
    };
    let mut conditions: Vec<PodCondition> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut published: Option<PodView> = None;
    let publish = async |view: &PodView,
                         published: &mut Option<PodView>,
                         conditions: &mut Vec<PodCondition>| {
        if published.as_ref() == Some(view) {
            return;
        }
        let status = pod_status(view, &placement, conditions, &Time(Timestamp::now()));
        match patch_status(&api, &name, &status).await {
            Ok(()) => {
                *conditions = status.conditions.unwrap_or_default();
                *published = Some(view.clone());
            }
            Err(kube::Error::Api(s)) if s.code == 404 => *published = Some(view.clone()),
            Err(e) => {
                tracing::debug!(pod = %name, error = %e, "status patch failed; retried on the next change")
            }
        }
    };
    let order = loop {
        let view = sub.borrow_and_update().clone();
        publish(&view, &mut published, &mut conditions).await;
        tokio::select! {
            o = orders.recv() => break o.unwrap_or(Order::Detach),
            r = sub.changed() => if r.is_err() { break Order::Detach },
            // Retry a failed patch even when nothing changes.
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    };
    drop(refreshers);
    let Order::Stop { grace, delete } = order else {
        ctx.logs.remove(&namespace, &name, &uid);
        let _ = handle.detach();
        tracing::info!(pod = %format!("{namespace}/{name}"), "detached (left running for the next agent)");
        return;
    };
    tracing::info!(pod = %format!("{namespace}/{name}"), ?grace, "stopping the pod");
    super::pod_events::killing(&ctx.client, &pod, &ctx.node_name).await;
    let (plan, sandbox, view) = handle.stop(grace).await;
    publish(&view, &mut published, &mut conditions).await;
    ctx.logs.remove(&namespace, &name, &uid);
    let (c, u) = (ctx.clone(), uid.clone());
    let _ = tokio::task::spawn_blocking(move || tear_down(&c, &u, Some((&plan, &sandbox)))).await;
    if delete {
        final_delete(&ctx.client, &namespace, &name, &uid).await;
    }
}
