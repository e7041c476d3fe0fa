//! Checks at start that the agent's credentials may list and watch what the proxy needs, so a missing RBAC rule is
//! one clear error instead of watch retries forever.
use std::fmt::Debug;

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, Resource,
    api::{ListParams, WatchParams},
};
use serde::de::DeserializeOwned;

/// The ClusterRole the manifests in `deploy/` grant.
pub const CLUSTER_ROLE: &str = "skiff-agent";

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "forbidden: cannot {verb} {resource}: the agent's ServiceAccount needs ClusterRole {CLUSTER_ROLE} \
         (deploy/rbac.yaml){detail}"
    )]
    Forbidden {
        verb: &'static str,
        resource: String,
        detail: String,
    },
    #[error(
        "unauthorized: the API server rejected the agent's credentials ({0}); check the token or kubeconfig"
    )]
    Unauthorized(String),
}

/// Why a request failed, for the decision above.
fn classify(verb: &'static str, resource: &str, e: &kube::Error) -> Option<PreflightError> {
    let kube::Error::Api(status) = e else {
        return None;
    };
    if status.is_forbidden() {
        let detail = if status.message.is_empty() {
            String::new()
        } else {
            format!(" [server said: {}]", status.message)
        };
        return Some(PreflightError::Forbidden {
            verb,
            resource: resource.to_string(),
            detail,
        });
    }
    (status.code == 401).then(|| PreflightError::Unauthorized(status.message.clone()))
}

async fn check<K>(client: &Client) -> Result<(), PreflightError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let resource = K::plural(&()).to_string();
    let api: Api<K> = Api::all(client.clone());
    let version = match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(list) => list.metadata.resource_version.unwrap_or_else(|| "0".into()),
        Err(e) => {
            return match classify("list", &resource, &e) {
                Some(err) => Err(err),
                None => {
                    // Not a permission problem (e.g. the API server is not reachable yet): the watchers retry.
                    tracing::warn!(resource, error = %e, "could not check permissions; continuing");
                    Ok(())
                }
            };
        }
    };
    // Authorization happens when the watch starts; the stream itself is not needed.
    match api
        .watch_metadata(&WatchParams::default().timeout(1), &version)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => classify("watch", &resource, &e).map_or(Ok(()), Err),
    }
}

/// Verifies list and watch on Services, EndpointSlices and Nodes.
pub async fn check_permissions(client: &Client) -> Result<(), PreflightError> {
    let (s, e, n) = futures::join!(
        check::<Service>(client),
        check::<EndpointSlice>(client),
        check::<Node>(client)
    );
    s.and(e).and(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": code, "reason": reason, "message": message,
        }))
        .unwrap();
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn forbidden_names_the_permission_and_the_role() {
        let e = api_error(
            403,
            "Forbidden",
            "services is forbidden: User \"system:serviceaccount:kube-system:x\" cannot list resource \"services\"",
        );
        let msg = classify("list", "services", &e).unwrap().to_string();
        assert!(
            msg.starts_with("forbidden: cannot list services: the agent's ServiceAccount needs ClusterRole skiff-agent (deploy/rbac.yaml)"),
            "{msg}"
        );
        assert!(msg.contains("system:serviceaccount:kube-system:x"), "{msg}");
    }

    #[test]
    fn unauthorized_and_other_errors() {
        let msg = classify("list", "nodes", &api_error(401, "Unauthorized", "Unauthorized"))
            .unwrap()
            .to_string();
        assert!(msg.starts_with("unauthorized"), "{msg}");
        assert!(classify("list", "nodes", &api_error(500, "InternalError", "boom")).is_none());
        assert!(classify("list", "nodes", &api_error(404, "NotFound", "")).is_none());
    }
}
