//! Authentication (client certificates, bearer tokens, ServiceAccount JWTs), impersonation and authorization.

pub mod attributes;
pub mod authn;
pub mod impersonate;
pub mod mirror;
pub mod noderestriction;
pub mod pki;
pub mod protobuf;
pub mod rbac;
pub mod reviews;
pub mod serviceaccounts;
pub mod subject;
pub mod tokens;

pub use attributes::Attributes;
pub use authn::Authenticator;

/// The group every authenticated user is in.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The group of requests without credentials.
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
/// The group whose members are cluster administrators.
pub const MASTERS: &str = "system:masters";

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    pub name: String,
    /// A unique id (the ServiceAccount's uid for its tokens); empty when unknown.
    pub uid: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    pub fn anonymous() -> Self {
        Self {
            name: "system:anonymous".into(),
            uid: String::new(),
            groups: vec![UNAUTHENTICATED.into()],
        }
    }

    /// An authenticated user: `groups` plus `system:authenticated`.
    pub fn authenticated(name: String, mut groups: Vec<String>) -> Self {
        if !groups.iter().any(|g| g == AUTHENTICATED) {
            groups.push(AUTHENTICATED.into());
        }
        Self {
            name,
            uid: String::new(),
            groups,
        }
    }

    /// The user a verified client certificate names (CN = user, O = groups).
    pub fn from_certificate(der: &[u8]) -> Option<Self> {
        let (cn, orgs) = subject::subject(der)?;
        Some(Self::authenticated(cn, orgs))
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// The identity of a TLS peer, attached to each request of its connection.
#[derive(Debug, Clone)]
pub struct PeerUser(pub UserInfo);

/// Decides whether a user may perform a request.
pub trait Authorizer: Send + Sync {
    /// `Err(reason)` denies; the reason may be empty (kube-apiserver then shows only the forbidden message).
    fn authorize(&self, user: &UserInfo, request: &Attributes) -> Result<(), String>;

    /// The rules granted to `user` in `namespace`, when the authorizer is rule based (rules reviews).
    fn rules_for(
        &self,
        _user: &UserInfo,
        _namespace: &str,
    ) -> Option<Vec<k8s_openapi::api::rbac::v1::PolicyRule>> {
        None
    }

    /// The rules of a Role or ClusterRole, when the authorizer is rule based (escalation checks).
    fn role_rules(
        &self,
        _kind: &str,
        _namespace: &str,
        _name: &str,
    ) -> Option<Vec<k8s_openapi::api::rbac::v1::PolicyRule>> {
        None
    }
}

impl<T: Authorizer + ?Sized> Authorizer for std::sync::Arc<T> {
    fn authorize(&self, user: &UserInfo, request: &Attributes) -> Result<(), String> {
        (**self).authorize(user, request)
    }

    fn rules_for(
        &self,
        user: &UserInfo,
        namespace: &str,
    ) -> Option<Vec<k8s_openapi::api::rbac::v1::PolicyRule>> {
        (**self).rules_for(user, namespace)
    }

    fn role_rules(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Vec<k8s_openapi::api::rbac::v1::PolicyRule>> {
        (**self).role_rules(kind, namespace, name)
    }
}

/// Every authenticated user may do everything (`--authorization-mode AlwaysAllow`).
pub struct AuthenticatedIsAdmin;

impl Authorizer for AuthenticatedIsAdmin {
    fn authorize(&self, user: &UserInfo, _: &Attributes) -> Result<(), String> {
        if user.in_group(AUTHENTICATED) {
            Ok(())
        } else {
            Err("anonymous access is not allowed".into())
        }
    }
}

/// Allows everything (plain-HTTP development and test servers on loopback only).
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, _: &UserInfo, _: &Attributes) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn always_allow_denies_only_anonymous() {
        let attrs = Attributes::resource("list", "", "pods", "default", "");
        assert!(
            AuthenticatedIsAdmin
                .authorize(&UserInfo::anonymous(), &attrs)
                .is_err()
        );
        let user = UserInfo::authenticated("u".into(), vec![]);
        assert!(AuthenticatedIsAdmin.authorize(&user, &attrs).is_ok());
        assert_eq!(user.groups, vec![AUTHENTICATED.to_owned()]);
    }
}
