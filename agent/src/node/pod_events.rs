//! events.k8s.io/v1 Events about pods, as the kubelet records them (what `kubectl describe pod` shows); an event that
//! cannot be written is logged, never a reason to fail the pod's work.

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};

/// The `reportingController` of the agent's events (the kubelet's own name, which tools filter on).
pub const REPORTER: &str = "kubelet";

/// The Event (pure): `reason`/`note` about `pod`, reported by node `node`.
pub fn event(
    pod: &Pod,
    node: &str,
    type_: &str,
    reason: &str,
    action: &str,
    note: &str,
    now: Timestamp,
) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{:x}", pod.name_any(), now.as_nanosecond())),
            namespace: Some(pod.namespace().unwrap_or_else(|| "default".to_owned())),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some(type_.to_owned()),
        reason: Some(reason.to_owned()),
        action: Some(action.to_owned()),
        note: Some(note.chars().take(1024).collect()),
        reporting_controller: Some(REPORTER.to_owned()),
        reporting_instance: Some(node.to_owned()),
        regarding: Some(ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Pod".to_owned()),
            name: pod.metadata.name.clone(),
            namespace: pod.namespace(),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        }),
        ..Event::default()
    }
}

/// Records one Normal/Warning event about `pod`.
pub async fn record(
    client: &Client,
    pod: &Pod,
    node: &str,
    type_: &str,
    reason: &str,
    action: &str,
    note: &str,
) {
    let ev = event(pod, node, type_, reason, action, note, Timestamp::now());
    let ns = ev.metadata.namespace.clone().unwrap_or_default();
    if let Err(e) = Api::<Event>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &ev)
        .await
    {
        tracing::debug!(reason, error = %e, "recording an event failed");
    }
}

/// The kubelet's "Killing" events: one per container being stopped.
pub async fn killing(client: &Client, pod: &Pod, node: &str) {
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    for c in containers {
        let note = format!("Stopping container {}", c.name);
        record(client, pod, node, "Normal", "Killing", "Kill", &note).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_name_the_pod_and_the_reporting_node() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u1"},
            "spec": {"containers": [{"name": "web"}]}
        }))
        .unwrap();
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let ev = event(
            &pod,
            "node-a",
            "Normal",
            "Killing",
            "Kill",
            "Stopping container web",
            now,
        );
        assert_eq!(ev.metadata.namespace.as_deref(), Some("shop"));
        assert!(ev.metadata.name.as_deref().unwrap().starts_with("web-1."));
        let about = ev.regarding.unwrap();
        assert_eq!(
            (about.kind.as_deref(), about.name.as_deref(), about.uid.as_deref()),
            (Some("Pod"), Some("web-1"), Some("u1"))
        );
        assert_eq!(ev.reporting_instance.as_deref(), Some("node-a"));
        assert_eq!(ev.reason.as_deref(), Some("Killing"));
    }
}
