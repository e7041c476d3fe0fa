//! Objects that exist from the first start: the system namespaces and the `default/kubernetes` Service.

use serde_json::{Value, json};

use crate::api::objects;
use crate::registry::kinds::{self, Kind};
use crate::registry::{Registry, meta};
use crate::store::{self, ListOptions, Store};

/// Namespaces every cluster has.
pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

fn kind(group: &str, plural: &str) -> &'static Kind {
    kinds::find(group, "v1", plural).expect("bootstrap kinds are served")
}

async fn create_if_missing(
    store: &dyn Store,
    registry: &Registry,
    kind: &Kind,
    namespace: Option<&str>,
    mut object: Value,
) -> Result<(), store::Error> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let key = kind.key(namespace, &name);
    if store.get(&key).await?.is_some() {
        return Ok(());
    }
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
    meta::prepare_create(kind, &mut object, namespace, &mut rng)
        .map_err(|e| store::Error::Backend(format!("bootstrap {name}: {e:?}")))?;
    let claims = registry
        .admit_create(kind, &mut object)
        .map_err(|e| store::Error::Backend(format!("bootstrap {name}: {e:?}")))?;
    match store.create(&key, objects::to_store(&object)).await {
        Ok(_) | Err(store::Error::AlreadyExists(_)) => Ok(()),
        Err(e) => {
            registry.release(&claims);
            Err(e)
        }
    }
}

/// Marks the addresses and ports held by stored Services as taken.
pub async fn restore_allocations(store: &dyn Store, registry: &Registry) -> Result<usize, store::Error> {
    let services = kind("", "services");
    let list = store.list(&services.key_prefix(), ListOptions::default()).await?;
    for kv in &list.items {
        if let Ok(object) = serde_json::from_slice::<Value>(&kv.value) {
            registry.restore(services, &object);
        }
    }
    Ok(list.items.len())
}

/// Creates `desired` when missing; otherwise copies the listed top-level fields over when they differ.
async fn reconcile(
    store: &dyn Store,
    registry: &Registry,
    kind: &Kind,
    namespace: Option<&str>,
    desired: Value,
    fields: &[&str],
) -> Result<(), store::Error> {
    let name = desired["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let Some(kv) = store.get(&kind.key(namespace, &name)).await? else {
        return create_if_missing(store, registry, kind, namespace, desired).await;
    };
    let mut current: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| store::Error::Backend(format!("bootstrap {name}: {e}")))?;
    let mut changed = false;
    for field in fields {
        let want = desired.pointer(field).cloned().unwrap_or(Value::Null);
        if current.pointer(field) != Some(&want) {
            let (parent, leaf) = field.rsplit_once('/').unwrap_or(("", field));
            if let Some(target) = current.pointer_mut(parent).and_then(Value::as_object_mut) {
                target.insert(leaf.to_owned(), want);
                changed = true;
            }
        }
    }
    if changed {
        store
            .update(&kv.key, objects::to_store(&current), Some(kv.mod_revision))
            .await?;
    }
    Ok(())
}

/// Creates the system namespaces, and points the `default/kubernetes` Service, Endpoints and
/// EndpointSlice at this apiserver (`advertise`:`api_port`), updating them when the address changed.
pub async fn ensure(
    store: &dyn Store,
    registry: &Registry,
    advertise: std::net::IpAddr,
    api_port: u16,
) -> Result<(), store::Error> {
    let namespaces = kind("", "namespaces");
    for ns in SYSTEM_NAMESPACES {
        let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}});
        create_if_missing(store, registry, namespaces, None, object).await?;
    }
    let cluster_ip = registry.config().service_cidr.first_host().to_string();
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kubernetes", "labels": labels},
        "spec": {
            "clusterIP": cluster_ip,
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": api_port}],
        },
    });
    let default = Some("default");
    reconcile(
        store,
        registry,
        kind("", "services"),
        default,
        service,
        &["/spec/ports"],
    )
    .await?;
    let ip = advertise.to_string();
    let endpoints = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "https", "port": api_port, "protocol": "TCP"}]}],
    });
    reconcile(
        store,
        registry,
        kind("", "endpoints"),
        default,
        endpoints,
        &["/subsets"],
    )
    .await?;
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "labels": {
            "kubernetes.io/service-name": "kubernetes",
            "endpointslice.kubernetes.io/managed-by": "skiff-control",
        }},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true, "serving": true, "terminating": false}}],
        "ports": [{"name": "https", "port": api_port, "protocol": "TCP"}],
    });
    let slices = kinds::find("discovery.k8s.io", "v1", "endpointslices").expect("endpointslices are served");
    reconcile(store, registry, slices, default, slice, &["/endpoints", "/ports"]).await
}

/// Creates the default ClusterRoles and ClusterRoleBindings that are missing (kube-apiserver's bootstrap
/// policy); existing ones are left as they are.
pub async fn ensure_rbac(store: &dyn Store, registry: &Registry) -> Result<(), store::Error> {
    for (plural, object) in crate::auth::rbac::defaults::objects() {
        let kind = kinds::find("rbac.authorization.k8s.io", "v1", plural).expect("RBAC kinds are served");
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let key = kind.key(None, &name);
        match store.get(&key).await? {
            None => create_if_missing(store, registry, kind, None, object).await?,
            // A data dir from an earlier version: grant what this version's default grants.
            Some(kv) => {
                let stored =
                    objects::from_kv(&kv).map_err(|e| store::Error::Backend(format!("{name}: {e:?}")))?;
                if let Some(updated) = crate::auth::rbac::defaults::reconciled(&stored, &object) {
                    match store
                        .update(&key, objects::to_store(&updated), Some(kv.mod_revision))
                        .await
                    {
                        Ok(_) => tracing::info!(%name, "reconciled a default RBAC object"),
                        // Changed meanwhile by someone else: theirs wins, the next start reconciles again.
                        Err(store::Error::Conflict { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
    Ok(())
}
