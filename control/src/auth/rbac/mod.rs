//! RBAC authorization (rbac.authorization.k8s.io/v1) from a cached, always-current policy index.

pub mod defaults;
pub mod escalation;
pub mod policy;
pub mod rules;

use std::sync::{Arc, RwLock};

use k8s_openapi::api::rbac::v1::PolicyRule;
use tokio::task::JoinSet;

use super::mirror::Mirror;
use super::{Attributes, Authorizer, UserInfo};
use crate::store::{self, Store};
pub use policy::Policy;

/// Authorizes with the RBAC objects in the store, through a policy index rebuilt on every change.
pub struct RbacAuthorizer {
    policy: RwLock<Arc<Policy>>,
}

impl RbacAuthorizer {
    /// Loads the policy and follows changes in a task on `tasks`.
    pub async fn start(store: Arc<dyn Store>, tasks: &mut JoinSet<()>) -> Result<Arc<Self>, store::Error> {
        let authorizer = Arc::new(Self {
            policy: RwLock::new(Arc::default()),
        });
        let target = Arc::clone(&authorizer);
        Mirror::start(
            store,
            policy::PREFIX,
            Box::new(move |objects| {
                let policy = Arc::new(Policy::build(objects));
                *target
                    .policy
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = policy;
            }),
            tasks,
        )
        .await?;
        Ok(authorizer)
    }

    fn policy(&self) -> Arc<Policy> {
        Arc::clone(
            &self
                .policy
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

impl Authorizer for RbacAuthorizer {
    fn authorize(&self, user: &UserInfo, request: &Attributes) -> Result<(), String> {
        self.policy().authorize(user, request)
    }

    fn rules_for(&self, user: &UserInfo, namespace: &str) -> Option<Vec<PolicyRule>> {
        Some(self.policy().rules_for(user, namespace))
    }

    fn role_rules(&self, kind: &str, namespace: &str, name: &str) -> Option<Vec<PolicyRule>> {
        self.policy()
            .role(kind, namespace, name)
            .map(<[PolicyRule]>::to_vec)
    }
}
