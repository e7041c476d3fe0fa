//! Maps the credentials of a request (static bearer token, ServiceAccount JWT, client certificate) to a user.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

use super::serviceaccounts::ServiceAccountIndex;
use super::tokens::{self, TokenIssuer};
use super::{PeerUser, UserInfo};

/// ServiceAccount token verification: the issuer and the live ServiceAccounts (tokens of deleted ones fail).
pub struct ServiceAccountTokens {
    pub issuer: Arc<TokenIssuer>,
    pub accounts: Arc<ServiceAccountIndex>,
}

/// Maps credentials on a request to a user.
#[derive(Default)]
pub struct Authenticator {
    tokens: HashMap<String, UserInfo>,
    service_accounts: Option<ServiceAccountTokens>,
    /// Whether requests without credentials proceed as `system:anonymous` (else 401).
    pub allow_anonymous: bool,
}

impl Authenticator {
    pub fn new(allow_anonymous: bool) -> Self {
        Self {
            tokens: HashMap::new(),
            service_accounts: None,
            allow_anonymous,
        }
    }

    /// Accepts `Authorization: Bearer <token>` as `user` in `groups`.
    pub fn add_token(&mut self, token: &str, user: &str, groups: &[&str]) {
        let groups = groups.iter().map(|g| (*g).to_owned()).collect();
        self.tokens
            .insert(token.to_owned(), UserInfo::authenticated(user.to_owned(), groups));
    }

    /// Accepts ServiceAccount JWTs signed by `issuer` while their ServiceAccount exists.
    pub fn set_service_accounts(&mut self, service_accounts: ServiceAccountTokens) {
        self.service_accounts = Some(service_accounts);
    }

    /// The ServiceAccount token machinery, when enabled.
    pub fn service_accounts(&self) -> Option<&ServiceAccountTokens> {
        self.service_accounts.as_ref()
    }

    /// The user of a bearer token, for `audiences` (empty: the API server's own).
    pub fn authenticate_token(&self, token: &str, audiences: &[String]) -> Option<UserInfo> {
        // Compare against every static token without an early exit on the first differing byte.
        let mut found = None;
        for (known, user) in &self.tokens {
            if constant_time_eq(known.as_bytes(), token.as_bytes()) {
                found = Some(user.clone());
            }
        }
        if found.is_some() {
            return found;
        }
        let sa = self.service_accounts.as_ref()?;
        if !tokens::looks_like_jwt(token) {
            return None;
        }
        let claims = match sa.issuer.verify(token, audiences) {
            Ok(claims) => claims,
            Err(e) => {
                tracing::debug!(error = %e, "ServiceAccount token rejected");
                return None;
            }
        };
        let k = &claims.kubernetes;
        if !sa.accounts.token_objects_live(k) {
            tracing::debug!(namespace = %k.namespace, name = %k.serviceaccount.name, "token of a deleted ServiceAccount or pod");
            return None;
        }
        let mut user = UserInfo::authenticated(claims.username(), tokens::groups(&k.namespace));
        user.uid = k.serviceaccount.uid.clone();
        Some(user)
    }

    /// The request's user; `None` means 401 Unauthorized.
    pub fn authenticate(&self, headers: &HeaderMap, peer: Option<&PeerUser>) -> Option<UserInfo> {
        if let Some(value) = headers.get(AUTHORIZATION) {
            let value = value.to_str().ok()?;
            let (scheme, token) = value.split_once(' ')?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return None;
            }
            return self.authenticate_token(token.trim(), &[]);
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
    use crate::auth::tokens::TokenSpec;
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
        assert!(admin.in_group("system:authenticated"));
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
    fn service_account_tokens_need_a_live_account_with_the_same_uid() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = Arc::new(TokenIssuer::load_or_create(dir.path()).unwrap());
        let accounts = Arc::new(ServiceAccountIndex::default());
        accounts.set_for_tests("ns1", "robot", "uid-1");
        let mut authn = Authenticator::new(false);
        authn.set_service_accounts(ServiceAccountTokens {
            issuer: Arc::clone(&issuer),
            accounts: Arc::clone(&accounts),
        });
        let spec = |uid| TokenSpec {
            namespace: "ns1",
            name: "robot",
            uid,
            audiences: vec![],
            expiration_seconds: 600,
            pod: None,
        };
        let now = crate::registry::meta::unix_now();
        let (token, _) = issuer.issue(&spec("uid-1"), now).unwrap();
        let user = authn.authenticate(&bearer(&token), None).unwrap();
        assert_eq!(user.name, "system:serviceaccount:ns1:robot");
        assert_eq!(user.uid, "uid-1");
        assert!(user.in_group("system:serviceaccounts:ns1") && user.in_group("system:authenticated"));
        // A recreated account (new uid) does not accept the old account's tokens.
        let (stale, _) = issuer.issue(&spec("uid-0"), now).unwrap();
        assert_eq!(authn.authenticate(&bearer(&stale), None), None);
    }
}
