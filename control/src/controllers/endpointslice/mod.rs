//! EndpointSlice controller: keeps each selector Service's slices and legacy Endpoints equal to its pods.

pub mod desired;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client, ResourceExt};

use super::cache::{self, Caches};
use desired::{MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL, SKIP_MIRROR_LABEL};

/// Changes arriving within this window are handled in one pass.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// A pass with failed writes is repeated after this long even without changes.
const RETRY: Duration = Duration::from_secs(1);

/// Runs the controller until the caches stop.
pub async fn run(client: Client, caches: Arc<Caches>) {
    let mut rounds = cache::Rounds::start(&caches, DEBOUNCE, RETRY).await;
    loop {
        let unfinished = reconcile_all(&client, &caches).await > 0;
        if !rounds.next(unfinished).await {
            return;
        }
    }
}

fn zones(caches: &Caches) -> HashMap<String, String> {
    caches
        .nodes
        .state()
        .iter()
        .filter_map(|n| Some((n.name_any(), n.labels().get(desired::ZONE_LABEL)?.clone())))
        .collect()
}

/// Slices and Endpoints have these fields compared; metadata the server adds is ignored.
fn same_slice(have: &EndpointSlice, want: &EndpointSlice) -> bool {
    have.endpoints == want.endpoints
        && have.ports.as_deref().unwrap_or_default() == want.ports.as_deref().unwrap_or_default()
        && have.address_type == want.address_type
        && have.metadata.labels == want.metadata.labels
        && have.metadata.owner_references == want.metadata.owner_references
}

/// One pass over every Service; returns how many writes failed.
async fn reconcile_all(client: &Client, caches: &Caches) -> usize {
    let zones = zones(caches);
    let pods = caches.pods.state();
    let services = caches.services.state();
    let slices = caches.slices.state();
    let endpoints = caches.endpoints.state();
    let mut failures = 0;
    let mut live: HashSet<(String, String)> = HashSet::new();
    for svc in services.iter().filter(|s| desired::is_managed(s)) {
        let ns = svc.namespace().unwrap_or_default();
        let name = svc.name_any();
        live.insert((ns.clone(), name.clone()));
        let in_ns: Vec<_> = pods
            .iter()
            .map(|p| &**p)
            .filter(|p| p.namespace().as_deref() == Some(&ns))
            .collect();
        let want = desired::slices(svc, &in_ns, &zones);
        let have: Vec<_> = slices
            .iter()
            .filter(|s| s.namespace().as_deref() == Some(&ns) && owned_by(s, &name))
            .collect();
        failures += sync_slices(client, &ns, &want, &have).await;
        let want_ep = desired::endpoints(svc, &want);
        let have_ep = endpoints
            .iter()
            .find(|e| e.namespace().as_deref() == Some(&ns) && e.name_any() == name);
        failures += sync_endpoints(client, &ns, want_ep, have_ep.map(|e| &**e)).await;
    }
    // Slices of Services that are gone or lost their selector; Endpoints of Services that are gone
    // (Endpoints of a selector-less Service belong to whoever wrote them).
    for slice in slices
        .iter()
        .filter(|s| s.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY))
    {
        let ns = slice.namespace().unwrap_or_default();
        let Some(svc) = slice.labels().get(SERVICE_NAME_LABEL) else {
            continue;
        };
        if !live.contains(&(ns.clone(), svc.clone())) {
            failures += delete(
                &Api::<EndpointSlice>::namespaced(client.clone(), &ns),
                &slice.name_any(),
            )
            .await;
        }
    }
    for ep in endpoints
        .iter()
        .filter(|e| e.labels().get(SKIP_MIRROR_LABEL).map(String::as_str) == Some("true"))
    {
        let ns = ep.namespace().unwrap_or_default();
        let exists = services
            .iter()
            .any(|s| s.namespace().as_deref() == Some(&ns) && s.name_any() == ep.name_any());
        if !exists {
            failures += delete(&Api::<Endpoints>::namespaced(client.clone(), &ns), &ep.name_any()).await;
        }
    }
    failures
}

fn owned_by(slice: &EndpointSlice, service: &str) -> bool {
    let labels = slice.labels();
    labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
        && labels.get(SERVICE_NAME_LABEL).map(String::as_str) == Some(service)
}

async fn delete<K>(api: &Api<K>, name: &str) -> usize
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => 0,
        Err(kube::Error::Api(s)) if s.code == 404 => 0,
        Err(e) => {
            tracing::warn!(name, error = %e, "deleting");
            1
        }
    }
}

async fn sync_slices(
    client: &Client,
    ns: &str,
    want: &[EndpointSlice],
    have: &[&Arc<EndpointSlice>],
) -> usize {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let mut failures = 0;
    for slice in want {
        let name = slice.name_any();
        let result = match have.iter().find(|h| h.name_any() == name) {
            Some(h) if same_slice(h, slice) => continue,
            Some(h) => {
                let mut update = slice.clone();
                update.metadata.resource_version = h.resource_version();
                api.replace(&name, &PostParams::default(), &update).await
            }
            None => api.create(&PostParams::default(), slice).await,
        };
        if let Err(e) = result {
            tracing::debug!(ns, name, error = %e, "writing EndpointSlice; retrying");
            failures += 1;
        }
    }
    for extra in have
        .iter()
        .filter(|h| !want.iter().any(|w| w.name_any() == h.name_any()))
    {
        failures += delete(&api, &extra.name_any()).await;
    }
    failures
}

async fn sync_endpoints(client: &Client, ns: &str, want: Endpoints, have: Option<&Endpoints>) -> usize {
    let api: Api<Endpoints> = Api::namespaced(client.clone(), ns);
    let name = want.name_any();
    let result = match have {
        Some(h) if h.subsets == want.subsets && h.metadata.labels == want.metadata.labels => return 0,
        Some(h) => {
            let mut update = want;
            update.metadata.resource_version = h.resource_version();
            api.replace(&name, &PostParams::default(), &update).await
        }
        None => api.create(&PostParams::default(), &want).await,
    };
    match result {
        Ok(_) => 0,
        Err(e) => {
            tracing::debug!(ns, name, error = %e, "writing Endpoints; retrying");
            1
        }
    }
}
