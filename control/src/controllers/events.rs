//! Recording events.k8s.io/v1 Events about objects (what `kubectl describe` shows); failures are only logged.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client, Resource, ResourceExt};

/// The `reportingController` of every event recorded here.
pub const REPORTER: &str = "skiff-control";

/// Builds the Event (pure) for `object`.
pub fn event<K: Resource<DynamicType = ()>>(
    object: &K,
    type_: &str,
    reason: &str,
    action: &str,
    note: &str,
) -> Event {
    let now = k8s_openapi::jiff::Timestamp::now();
    let name = format!("{}.{:x}", object.name_any(), now.as_nanosecond());
    Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(object.namespace().unwrap_or_else(|| "default".to_owned())),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some(type_.to_owned()),
        reason: Some(reason.to_owned()),
        action: Some(action.to_owned()),
        note: Some(note.chars().take(1024).collect()),
        reporting_controller: Some(REPORTER.to_owned()),
        reporting_instance: Some(REPORTER.to_owned()),
        regarding: Some(ObjectReference {
            api_version: Some(K::api_version(&()).into_owned()),
            kind: Some(K::kind(&()).into_owned()),
            name: object.meta().name.clone(),
            namespace: object.namespace(),
            uid: object.meta().uid.clone(),
            resource_version: object.meta().resource_version.clone(),
            ..ObjectReference::default()
        }),
        ..Event::default()
    }
}

/// Creates the Event; an event that cannot be written is not worth failing the caller for.
pub async fn record<K: Resource<DynamicType = ()>>(
    client: &Client,
    object: &K,
    type_: &str,
    reason: &str,
    action: &str,
    note: &str,
) {
    let ev = event(object, type_, reason, action, note);
    let ns = ev.metadata.namespace.clone().unwrap_or_default();
    if let Err(e) = Api::<Event>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &ev)
        .await
    {
        tracing::debug!(reason, error = %e, "recording event failed");
    }
}
