//! ServiceAccounts for authentication: the index of live accounts (name -> uid) and of live pods (name -> uid,
//! for pod-bound tokens) that token verification checks, and the controller that gives every active namespace its
//! `default` ServiceAccount.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::{Value, json};
use tokio::sync::Notify;

use super::mirror::{Mirror, Objects};
use super::tokens::KubernetesClaims;
use crate::api::objects;
use crate::registry::{kinds, meta};
use crate::store::{self, EventKind, ListOptions, Store, WatchItem};

/// Live ServiceAccounts and pods: `(namespace, name)` -> uid.
#[derive(Default)]
pub struct ServiceAccountIndex {
    uids: RwLock<HashMap<(String, String), String>>,
    pods: RwLock<HashMap<(String, String), String>>,
}

/// `(namespace, name)` and uid of a stored object.
fn identity(object: &Value) -> Option<((String, String), String)> {
    let meta = object.get("metadata")?;
    let field = |f: &str| meta.get(f).and_then(Value::as_str).map(str::to_owned);
    Some(((field("namespace")?, field("name")?), field("uid")?))
}

impl ServiceAccountIndex {
    /// The uid of a live pod.
    pub fn pod_uid(&self, namespace: &str, name: &str) -> Option<String> {
        self.pods
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Whether the objects a token is bound to still exist: its ServiceAccount and, for a pod-bound token, its
    /// pod (same name and uid), as kube-apiserver checks them.
    pub fn token_objects_live(&self, claims: &KubernetesClaims) -> bool {
        let account = self.uid(&claims.namespace, &claims.serviceaccount.name);
        if account.as_deref() != Some(claims.serviceaccount.uid.as_str()) {
            return false;
        }
        claims
            .pod
            .as_ref()
            .is_none_or(|pod| self.pod_uid(&claims.namespace, &pod.name).as_deref() == Some(pod.uid.as_str()))
    }

    fn pods_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<(String, String), String>> {
        self.pods
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies one stored pod write (`None`: the pod is gone).
    fn apply_pod(&self, key: &str, value: Option<&[u8]>) {
        let Some(((ns, name), uid)) = value
            .and_then(|v| serde_json::from_slice::<Value>(v).ok())
            .as_ref()
            .and_then(identity)
        else {
            // A deletion (or an undecodable value): the key is `<prefix><namespace>/<name>`.
            let mut parts = key.rsplitn(3, '/');
            if let (Some(name), Some(ns)) = (parts.next(), parts.next()) {
                self.pods_mut().remove(&(ns.to_owned(), name.to_owned()));
            }
            return;
        };
        self.pods_mut().insert((ns, name), uid);
    }
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
        let uids = objects.values().filter_map(identity).collect();
        *self
            .uids
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = uids;
    }

    #[cfg(test)]
    pub fn set_pod_for_tests(&self, namespace: &str, name: &str, uid: &str) {
        self.pods_mut()
            .insert((namespace.to_owned(), name.to_owned()), uid.to_owned());
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

/// Wait before re-listing pods after a failed watch.
const RETRY: std::time::Duration = std::time::Duration::from_millis(500);

/// Lists the pods into the index; the revision to watch from.
async fn list_pods(
    store: &dyn Store,
    prefix: &str,
    index: &ServiceAccountIndex,
) -> Result<store::Revision, store::Error> {
    let list = store.list(prefix, ListOptions::default()).await?;
    let pods = list
        .items
        .iter()
        .filter_map(|kv| identity(&serde_json::from_slice(&kv.value).ok()?))
        .collect();
    *index.pods_mut() = pods;
    Ok(list.revision)
}

/// Keeps the pod part of `index` current: only names and uids are kept, updated event by event.
async fn follow_pods(
    store: Arc<dyn Store>,
    prefix: String,
    index: Arc<ServiceAccountIndex>,
    mut revision: store::Revision,
) {
    loop {
        match store.watch(&prefix, revision).await {
            Ok(mut events) => {
                while let Some(item) = events.recv().await {
                    match item {
                        Ok(WatchItem::Event(e)) => {
                            revision = revision.max(e.revision);
                            let value = (e.kind != EventKind::Deleted).then_some(e.kv.value.as_slice());
                            index.apply_pod(&e.kv.key, value);
                        }
                        Ok(WatchItem::Progress(at)) => revision = revision.max(at),
                        Err(e) => {
                            tracing::warn!(error = %e, "pod watch for token validation ended; re-listing");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch pods for token validation; retrying"),
        }
        tokio::time::sleep(RETRY).await;
        match list_pods(&*store, &prefix, &index).await {
            Ok(at) => revision = at,
            Err(e) => tracing::warn!(error = %e, "cannot list pods for token validation; retrying"),
        }
    }
}

/// Follows namespaces, ServiceAccounts and pods: keeps `index` current and creates missing `default` accounts.
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
    let pod_prefix = kinds::find("", "v1", "pods").expect("served").key_prefix();
    let revision = list_pods(&*store, &pod_prefix, &index).await?;
    tasks.spawn(follow_pods(
        Arc::clone(&store),
        pod_prefix,
        Arc::clone(&index),
        revision,
    ));
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
    use crate::auth::tokens::ObjectRef;

    fn claims(pod: Option<(&str, &str)>) -> KubernetesClaims {
        KubernetesClaims {
            namespace: "ns".into(),
            serviceaccount: ObjectRef {
                name: "default".into(),
                uid: "sa-1".into(),
            },
            pod: pod.map(|(name, uid)| ObjectRef {
                name: name.into(),
                uid: uid.into(),
            }),
        }
    }

    #[test]
    fn pod_bound_tokens_live_only_as_long_as_their_pod() {
        let index = ServiceAccountIndex::default();
        index.set_for_tests("ns", "default", "sa-1");
        assert!(index.token_objects_live(&claims(None)));
        assert!(
            !index.token_objects_live(&claims(Some(("web", "p-1")))),
            "no such pod"
        );
        let pod = |uid: &str| format!(r#"{{"metadata":{{"namespace":"ns","name":"web","uid":"{uid}"}}}}"#);
        index.apply_pod("/core/pods/ns/web", Some(pod("p-1").as_bytes()));
        assert!(index.token_objects_live(&claims(Some(("web", "p-1")))));
        // A new pod of the same name is another pod.
        index.apply_pod("/core/pods/ns/web", Some(pod("p-2").as_bytes()));
        assert!(!index.token_objects_live(&claims(Some(("web", "p-1")))));
        index.apply_pod("/core/pods/ns/web", None);
        assert!(
            !index.token_objects_live(&claims(Some(("web", "p-2")))),
            "pod deleted"
        );
        // A deleted ServiceAccount invalidates every token of it.
        index.set_pod_for_tests("ns", "web", "p-3");
        index.set_for_tests("ns", "default", "sa-2");
        assert!(!index.token_objects_live(&claims(Some(("web", "p-3")))));
    }

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
