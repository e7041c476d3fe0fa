//! Authentication (client certificates, bearer tokens) and authorization behind a trait RBAC can replace.

pub mod pki;
pub mod subject;

use std::collections::HashMap;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    pub fn anonymous() -> Self {
        Self {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
        }
    }

    fn authenticated(name: String, mut groups: Vec<String>) -> Self {
        groups.push("system:authenticated".into());
        Self { name, groups }
    }

    /// The user a verified client certificate names (CN = user, O = groups).
    pub fn from_certificate(der: &[u8]) -> Option<Self> {
        let (cn, orgs) = subject::subject(der)?;
        Some(Self::authenticated(cn, orgs))
    }
}

/// The identity of a TLS peer, attached to each request of its connection.
#[derive(Debug, Clone)]
pub struct PeerUser(pub UserInfo);

/// What a request wants to do, for authorization.
#[derive(Debug, Clone, Copy)]
pub struct Attributes<'a> {
    /// Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: &'a str,
    pub path: &'a str,
    pub resource: Option<&'a str>,
    pub namespace: Option<&'a str>,
}

/// Decides whether a user may perform a request.
pub trait Authorizer: Send + Sync {
    /// `Err(reason)` denies.
    fn authorize(&self, user: &UserInfo, request: &Attributes<'_>) -> Result<(), String>;
}

/// Every authenticated user is an administrator (the starting policy until RBAC lands).
pub struct AuthenticatedIsAdmin;

impl Authorizer for AuthenticatedIsAdmin {
    fn authorize(&self, user: &UserInfo, _: &Attributes<'_>) -> Result<(), String> {
        if user.groups.iter().any(|g| g == "system:authenticated") {
            Ok(())
        } else {
            Err("anonymous access is not allowed".into())
        }
    }
}

/// Allows everything (plain-HTTP development and test servers on loopback only).
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, _: &UserInfo, _: &Attributes<'_>) -> Result<(), String> {
        Ok(())
    }
}

/// Maps credentials on a request to a user.
#[derive(Default)]
pub struct Authenticator {
    tokens: HashMap<String, UserInfo>,
    /// Whether requests without credentials proceed as `system:anonymous` (else 401).
    pub allow_anonymous: bool,
}

impl Authenticator {
    pub fn new(allow_anonymous: bool) -> Self {
        Self {
            tokens: HashMap::new(),
            allow_anonymous,
        }
    }

    /// Accepts `Authorization: Bearer <token>` as `user` in `groups`.
    pub fn add_token(&mut self, token: &str, user: &str, groups: &[&str]) {
        let groups = groups.iter().map(|g| (*g).to_owned()).collect();
        self.tokens
            .insert(token.to_owned(), UserInfo::authenticated(user.to_owned(), groups));
    }

    /// The request's user; `None` means 401 Unauthorized.
    pub fn authenticate(&self, headers: &HeaderMap, peer: Option<&PeerUser>) -> Option<UserInfo> {
        if let Some(value) = headers.get(AUTHORIZATION) {
            let token = value.to_str().ok()?.strip_prefix("Bearer ")?.trim();
            // Compare against every token without an early exit on the first differing byte.
            let mut found = None;
            for (known, user) in &self.tokens {
                if constant_time_eq(known.as_bytes(), token.as_bytes()) {
                    found = Some(user.clone());
                }
            }
            return found;
        }
        if let Some(PeerUser(user)) = peer {
            return Some(user.clone());
        }
        self.allow_anonymous.then(UserInfo::anonymous)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        h
    }

    #[test]
    fn tokens_certificates_and_anonymous() {
        let mut authn = Authenticator::new(false);
        authn.add_token("s3cret", "admin", &["system:masters"]);
        let admin = authn.authenticate(&bearer("s3cret"), None).unwrap();
        assert_eq!(admin.name, "admin");
        assert!(admin.groups.contains(&"system:authenticated".to_owned()));
        assert_eq!(authn.authenticate(&bearer("wrong"), None), None);
        assert_eq!(authn.authenticate(&HeaderMap::new(), None), None);
        let peer = PeerUser(UserInfo::authenticated(
            "node-1".into(),
            vec!["system:nodes".into()],
        ));
        assert_eq!(
            authn.authenticate(&HeaderMap::new(), Some(&peer)).unwrap().name,
            "node-1"
        );
        let open = Authenticator::new(true);
        assert_eq!(
            open.authenticate(&HeaderMap::new(), None),
            Some(UserInfo::anonymous())
        );
    }

    #[test]
    fn default_policy_denies_anonymous() {
        let attrs = Attributes {
            verb: "list",
            path: "/api/v1/pods",
            resource: Some("pods"),
            namespace: None,
        };
        assert!(
            AuthenticatedIsAdmin
                .authorize(&UserInfo::anonymous(), &attrs)
                .is_err()
        );
        let user = UserInfo::authenticated("u".into(), vec![]);
        assert!(AuthenticatedIsAdmin.authorize(&user, &attrs).is_ok());
    }
}
