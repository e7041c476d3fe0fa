//! Namespace deletion: empties a Terminating namespace of every namespaced object, then removes it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::api::deletion::{self, DeleteOptions, Outcome, Propagation};
use crate::api::objects;
use crate::api::router::ApiState;
use crate::registry::kinds::{self, KINDS};
use crate::registry::meta;
use crate::store::ListOptions;

/// Namespaces that can never be deleted.
pub const IMMORTAL: &[&str] = &["default", "kube-system", "kube-public"];

/// How often a namespace whose objects are still terminating or held by finalizers is looked at again.
const RETRY: Duration = Duration::from_secs(1);

/// Deletes the objects of one pass as a Background DELETE each (pods gracefully, like kube-controller-manager's
/// namespace controller); returns how many are still there (pods in their grace period, objects held by finalizers).
async fn sweep(state: &ApiState, namespace: &str) -> Result<usize, crate::store::Error> {
    let options = DeleteOptions {
        propagation: Some(Propagation::Background),
        ..DeleteOptions::default()
    };
    let mut remaining = 0;
    // A view kind shares its storage with another kind, which deletes those objects once.
    for kind in KINDS.iter().filter(|k| k.namespaced && !k.is_view()) {
        let list = state
            .store
            .list(&kind.list_prefix(Some(namespace)), ListOptions::default())
            .await?;
        let is_pod = kind.plural == "pods" && kind.group.is_empty();
        for kv in list.items {
            let Ok(object) = objects::from_kv(&kv) else {
                continue;
            };
            match deletion::decide(&object, is_pod, &options, meta::unix_now()) {
                Outcome::Remove => {
                    if state.store.delete(&kv.key, Some(kv.mod_revision)).await.is_ok() {
                        state.registry.deleted(kind, &object);
                    } else {
                        remaining += 1;
                    }
                }
                Outcome::Mark(marked) => {
                    remaining += 1;
                    let _ = state
                        .store
                        .update(&kv.key, objects::to_store(&marked), Some(kv.mod_revision))
                        .await;
                }
                Outcome::Pending => remaining += 1,
            }
        }
    }
    Ok(remaining)
}

/// Runs until the namespace and everything in it are gone (or the server stops).
pub async fn finalize(state: Arc<ApiState>, namespace: String) {
    let namespaces = kinds::find("", "v1", "namespaces").expect("namespaces are served");
    let key = namespaces.key(None, &namespace);
    loop {
        match sweep(&state, &namespace).await {
            Ok(0) => match state.store.get(&key).await {
                Ok(Some(kv)) => match state.store.delete(&key, Some(kv.mod_revision)).await {
                    Ok(_) => {
                        tracing::info!(%namespace, "namespace deleted");
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(%namespace, error = %e, "namespace changed while finalizing; retrying")
                    }
                },
                Ok(None) => return,
                Err(e) => tracing::warn!(%namespace, error = %e, "reading namespace"),
            },
            Ok(remaining) => tracing::debug!(%namespace, remaining, "waiting for finalizers"),
            Err(e) => tracing::warn!(%namespace, error = %e, "emptying namespace"),
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Resumes finalization of namespaces that were Terminating when the server stopped.
pub async fn resume(state: Arc<ApiState>) -> Result<(), crate::store::Error> {
    let namespaces = kinds::find("", "v1", "namespaces").expect("namespaces are served");
    let list = state
        .store
        .list(&namespaces.key_prefix(), ListOptions::default())
        .await?;
    for kv in list.items {
        let Ok(object) = objects::from_kv(&kv) else {
            continue;
        };
        if object.pointer("/metadata/deletionTimestamp").is_some()
            && let Some(name) = object.pointer("/metadata/name").and_then(Value::as_str)
        {
            state.spawn(finalize(Arc::clone(&state), name.to_owned()));
        }
    }
    Ok(())
}
