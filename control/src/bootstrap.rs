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

/// Creates the system namespaces and the `kubernetes` Service pointing at the apiserver port.
pub async fn ensure(store: &dyn Store, registry: &Registry, api_port: u16) -> Result<(), store::Error> {
    let namespaces = kind("", "namespaces");
    for ns in SYSTEM_NAMESPACES {
        let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}});
        create_if_missing(store, registry, namespaces, None, object).await?;
    }
    let cluster_ip = registry.config().service_cidr.first_host().to_string();
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {
            "clusterIP": cluster_ip,
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": api_port}],
        },
    });
    create_if_missing(store, registry, kind("", "services"), Some("default"), service).await
}
