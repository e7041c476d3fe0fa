//! Warning Events about Services the proxy refused (too large for the maps), written to the apiserver the agent
//! watches so that `kubectl get events` and `kubectl describe service` show them; never a reason to fail a sync.
use k8s_openapi::{
    api::{
        core::v1::{ObjectReference, Service},
        events::v1::Event,
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};
use tokio::sync::mpsc;

use crate::{
    metrics::Metrics,
    proxy::{Planner, capacity::Refusal},
};

/// The `reportingController` of these events.
pub const REPORTER: &str = "skiff-agent";
/// Reason of the event about a Service that does not fit the maps.
pub const REASON_TOO_LARGE: &str = "ServiceTooLarge";

/// The Event (pure) about refused Service `r`, reported by the agent on `node`; `uid` is the Service's, if known.
pub fn event(r: &Refusal, uid: Option<String>, node: &str, now: Timestamp) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{:x}", r.name, now.as_nanosecond())),
            namespace: Some(r.namespace.clone()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some("Warning".to_owned()),
        reason: Some(REASON_TOO_LARGE.to_owned()),
        action: Some("Program".to_owned()),
        note: Some(format!("node {node}: {r}").chars().take(1024).collect()),
        reporting_controller: Some(REPORTER.to_owned()),
        reporting_instance: Some(format!("{REPORTER}-{node}")),
        regarding: Some(ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Service".to_owned()),
            name: Some(r.name.clone()),
            namespace: Some(r.namespace.clone()),
            uid,
            ..ObjectReference::default()
        }),
        ..Event::default()
    }
}

/// Hands refusals to a background task that writes one Event each.
#[derive(Clone, Debug)]
pub struct ServiceEvents {
    tx: mpsc::UnboundedSender<Refusal>,
}

impl ServiceEvents {
    /// Starts the writer on the current tokio runtime.
    pub fn spawn(client: Client, node: String) -> ServiceEvents {
        let (tx, mut rx) = mpsc::unbounded_channel::<Refusal>();
        tokio::spawn(async move {
            while let Some(r) = rx.recv().await {
                write(&client, &node, &r).await;
            }
        });
        ServiceEvents { tx }
    }

    pub fn send(&self, refusals: impl IntoIterator<Item = Refusal>) {
        for r in refusals {
            // The writer only stops with the runtime.
            let _ = self.tx.send(r);
        }
    }
}

/// After a sync was applied: counts the planner's new refusals, publishes the refused Services as metrics and
/// hands the new refusals to `events` (when the agent watches an apiserver).
pub fn report(planner: &mut Planner, metrics: &Metrics, events: Option<&ServiceEvents>) {
    let new = planner.take_new_refusals();
    let refused: Vec<(String, String, &'static str)> = planner
        .refused()
        .map(|r| (r.namespace.clone(), r.name.clone(), r.shortfall.resource.name()))
        .collect();
    metrics.update(|s| {
        s.refusals += new.len() as u64;
        s.refused = refused;
    });
    if let Some(events) = events {
        events.send(new);
    }
}

/// Writes the Event about `r` (with the Service's uid when a list by name finds it: the proxy role may list
/// Services but not get them).
async fn write(client: &Client, node: &str, r: &Refusal) {
    let services: Api<Service> = Api::namespaced(client.clone(), &r.namespace);
    let by_name = ListParams::default().fields(&format!("metadata.name={}", r.name));
    let uid = match services.list(&by_name).await {
        Ok(list) => list.items.into_iter().find_map(|s| s.metadata.uid),
        Err(_) => None,
    };
    let ev = event(r, uid, node, Timestamp::now());
    match Api::<Event>::namespaced(client.clone(), &r.namespace)
        .create(&PostParams::default(), &ev)
        .await
    {
        Ok(_) => {
            tracing::debug!(service = %format!("{}/{}", r.namespace, r.name), "recorded ServiceTooLarge")
        }
        Err(e) => tracing::warn!(
            service = %format!("{}/{}", r.namespace, r.name),
            error = %e,
            "recording the ServiceTooLarge event failed"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::capacity::{Resource, Shortfall};

    #[test]
    fn the_event_is_a_warning_about_the_service_with_the_numbers() {
        let r = Refusal {
            namespace: "shop".into(),
            name: "big".into(),
            endpoints: 40,
            shortfall: Shortfall {
                resource: Resource::Backends,
                needed: 40,
                free: 30,
                limit: 32,
            },
            kept_previous: false,
        };
        let ev = event(
            &r,
            Some("u1".into()),
            "node-a",
            Timestamp::from_second(1_800_000_000).unwrap(),
        );
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
        assert_eq!(ev.reason.as_deref(), Some("ServiceTooLarge"));
        assert_eq!(ev.reporting_controller.as_deref(), Some("skiff-agent"));
        assert_eq!(ev.metadata.namespace.as_deref(), Some("shop"));
        let about = ev.regarding.unwrap();
        assert_eq!(
            (about.kind.as_deref(), about.name.as_deref(), about.uid.as_deref()),
            (Some("Service"), Some("big"), Some("u1"))
        );
        let note = ev.note.unwrap();
        assert!(
            note.contains("node node-a") && note.contains("40 endpoints"),
            "{note}"
        );
        assert!(
            note.contains("only 30 of 32 are free (raise --backends-size)"),
            "{note}"
        );
    }
}
