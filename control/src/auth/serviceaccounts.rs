//! ServiceAccounts for authentication: the index of live accounts (name -> uid) that token verification
//! checks, and the controller that gives every active namespace its `default` ServiceAccount.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::{Value, json};
use tokio::sync::Notify;

use super::mirror::{Mirror, Objects};
use crate::api::objects;
use crate::registry::{kinds, meta};
use crate::store::{self, Store};

/// Live ServiceAccounts: `(namespace, name)` -> uid.
#[derive(Default)]
pub struct ServiceAccountIndex {
    uids: RwLock<HashMap<(String, String), String>>,
}

impl ServiceAccountIndex {
    /// The uid of a live ServiceAccount.
    pub fn uid(&self, namespace: &str, name: &str) -> Option<String> {
        self.uids
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Replaces the index from stored ServiceAccount objects.
    pub fn rebuild(&self, objects: &Objects) {
        let uids = objects
            .values()
            .filter_map(|sa| {
                let meta = sa.get("metadata")?;
                let field = |f: &str| meta.get(f).and_then(Value::as_str).map(str::to_owned);
                Some(((field("namespace")?, field("name")?), field("uid")?))
            })
            .collect();
        *self
            .uids
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = uids;
    }

    #[cfg(test)]
    pub fn set_for_tests(&self, namespace: &str, name: &str, uid: &str) {
        self.uids
            .write()
            .unwrap()
            .insert((namespace.to_owned(), name.to_owned()), uid.to_owned());
    }
}

/// Namespaces that are active (not being deleted) and have no `default` ServiceAccount.
pub fn missing_defaults(namespaces: &Objects, accounts: &ServiceAccountIndex) -> Vec<String> {
    namespaces
        .values()
        .filter(|ns| ns.pointer("/metadata/deletionTimestamp").is_none())
        .filter(|ns| ns.pointer("/status/phase").and_then(Value::as_str) != Some("Terminating"))
        .filter_map(|ns| ns.pointer("/metadata/name").and_then(Value::as_str))
        .filter(|name| accounts.uid(name, "default").is_none())
        .map(str::to_owned)
        .collect()
}

async fn create_default(store: &dyn Store, namespace: &str) -> Result<(), store::Error> {
    let kind = kinds::find("", "v1", "serviceaccounts").expect("serviceaccounts are served");
    let mut object = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
    meta::prepare_create(kind, &mut object, Some(namespace), &mut rng)
        .map_err(|e| store::Error::Backend(format!("default ServiceAccount: {e:?}")))?;
    match store
        .create(&kind.key(Some(namespace), "default"), objects::to_store(&object))
        .await
    {
        Ok(_) | Err(store::Error::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Follows namespaces and ServiceAccounts: keeps `index` current and creates missing `default` accounts.
pub async fn start(
    store: Arc<dyn Store>,
    index: Arc<ServiceAccountIndex>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Result<(), store::Error> {
    let wake = Arc::new(Notify::new());
    let (notify, rebuild) = (Arc::clone(&wake), Arc::clone(&index));
    let sa_prefix = kinds::find("", "v1", "serviceaccounts")
        .expect("served")
        .key_prefix();
    Mirror::start(
        Arc::clone(&store),
        &sa_prefix,
        Box::new(move |objects| {
            rebuild.rebuild(objects);
            notify.notify_one();
        }),
        tasks,
    )
    .await?;
    let notify = Arc::clone(&wake);
    let ns_prefix = kinds::find("", "v1", "namespaces").expect("served").key_prefix();
    let namespaces = Mirror::start(
        Arc::clone(&store),
        &ns_prefix,
        Box::new(move |_| notify.notify_one()),
        tasks,
    )
    .await?;
    // The namespaces that exist now get their account before the server serves (no write races with the
    // first requests); later ones are handled by the task.
    for ns in missing_defaults(&namespaces.snapshot(), &index) {
        create_default(&*store, &ns).await?;
    }
    tasks.spawn(async move {
        loop {
            wake.notified().await;
            for ns in missing_defaults(&namespaces.snapshot(), &index) {
                if let Err(e) = create_default(&*store, &ns).await {
                    tracing::warn!(namespace = %ns, error = %e, "cannot create the default ServiceAccount");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    wake.notify_one();
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_active_namespaces_without_a_default_account_need_one() {
        let ns = |name: &str, extra: Value| {
            let mut o = json!({"metadata": {"name": name}});
            crate::api::objects::merge_patch(&mut o, &extra);
            (format!("/core/namespaces/{name}"), o)
        };
        let namespaces: Objects = [
            ns("a", json!({})),
            ns("b", json!({})),
            ns(
                "gone",
                json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
            ),
            ns("ending", json!({"status": {"phase": "Terminating"}})),
        ]
        .into_iter()
        .collect();
        let index = ServiceAccountIndex::default();
        index.set_for_tests("b", "default", "u");
        assert_eq!(missing_defaults(&namespaces, &index), vec!["a".to_owned()]);
    }
}
