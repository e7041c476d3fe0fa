//! Who is asking and may they: client certificates (verified by TLS against the cluster CA) or bearer tokens
//! checked with a TokenReview, then a SubjectAccessReview per request; answers are cached briefly, like
//! kubelet's `--authentication-token-webhook` and `--authorization-mode=Webhook`.
use std::{
    collections::HashMap,
    hash::Hash,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::api::{Api, PostParams};

use super::request::Attributes;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

/// How long a token's user is remembered (kubelet: 2 min).
pub const AUTHN_TTL: Duration = Duration::from_secs(120);
/// How long an allowed decision is remembered; denials are asked again every time.
pub const ALLOWED_TTL: Duration = Duration::from_secs(30);
/// Entries kept per cache before expired ones are swept.
const CACHE_SWEEP_AT: usize = 1024;

/// A map whose entries expire `ttl` after insertion.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    ttl: Duration,
    entries: HashMap<K, (Instant, V)>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: HashMap::new(),
        }
    }

    /// The value for `key` if it was inserted less than the TTL before `now`.
    pub fn get(&self, key: &K, now: Instant) -> Option<V> {
        self.entries
            .get(key)
            .filter(|(at, _)| now.saturating_duration_since(*at) < self.ttl)
            .map(|(_, v)| v.clone())
    }

    pub fn insert(&mut self, key: K, value: V, now: Instant) {
        if self.entries.len() >= CACHE_SWEEP_AT {
            let ttl = self.ttl;
            self.entries
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < ttl);
        }
        self.entries.insert(key, (now, value));
    }
}

/// A review the apiserver could not answer.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct ReviewError {
    what: &'static str,
    source: kube::Error,
}

/// The authenticator and authorizer of the endpoint, backed by the apiserver's review APIs.
pub struct Gate {
    client: kube::Client,
    tokens: Mutex<TtlCache<String, Option<User>>>,
    allowed: Mutex<TtlCache<(User, Attributes), ()>>,
}

impl Gate {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            tokens: Mutex::new(TtlCache::new(AUTHN_TTL)),
            allowed: Mutex::new(TtlCache::new(ALLOWED_TTL)),
        }
    }

    /// The user of a bearer token (`None`: the apiserver does not know it).
    pub async fn authenticate_token(&self, token: &str) -> Result<Option<User>, ReviewError> {
        if let Some(hit) = self
            .tokens
            .lock()
            .expect("token cache")
            .get(&token.to_owned(), Instant::now())
        {
            return Ok(hit);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|source| ReviewError {
                what: "TokenReview",
                source,
            })?;
        let user = answer
            .status
            .filter(|s| s.authenticated == Some(true))
            .and_then(|s| s.user)
            .and_then(|u| {
                Some(User {
                    name: u.username.filter(|n| !n.is_empty())?,
                    uid: u.uid.unwrap_or_default(),
                    groups: u.groups.unwrap_or_default(),
                })
            });
        self.tokens
            .lock()
            .expect("token cache")
            .insert(token.to_owned(), user.clone(), Instant::now());
        Ok(user)
    }

    /// Whether `user` may do `attrs` on this node: `Ok(Err(reason))` is a denial.
    pub async fn authorize(
        &self,
        user: &User,
        attrs: &Attributes,
    ) -> Result<Result<(), String>, ReviewError> {
        let key = (user.clone(), attrs.clone());
        if self
            .allowed
            .lock()
            .expect("authorization cache")
            .get(&key, Instant::now())
            .is_some()
        {
            return Ok(Ok(()));
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: Some(user.uid.clone()).filter(|u| !u.is_empty()),
                groups: Some(user.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(attrs.verb.clone()),
                    group: Some(String::new()),
                    version: Some("v1".into()),
                    resource: Some("nodes".into()),
                    subresource: Some(attrs.subresource.into()),
                    name: Some(attrs.node.clone()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|source| ReviewError {
                what: "SubjectAccessReview",
                source,
            })?;
        let status = answer.status.unwrap_or_default();
        if status.allowed {
            self.allowed
                .lock()
                .expect("authorization cache")
                .insert(key, (), Instant::now());
            Ok(Ok(()))
        } else {
            Ok(Err(status.reason.unwrap_or_default()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_entries_expire_after_the_ttl() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(Duration::from_secs(30));
        c.insert("a".to_owned(), 1, t0);
        assert_eq!(c.get(&"a".to_owned(), t0 + Duration::from_secs(29)), Some(1));
        assert_eq!(c.get(&"a".to_owned(), t0 + Duration::from_secs(30)), None);
        assert_eq!(c.get(&"b".to_owned(), t0), None);
        for i in 1..CACHE_SWEEP_AT {
            c.insert(format!("k{i}"), i, t0);
        }
        assert_eq!(c.entries.len(), CACHE_SWEEP_AT);
        c.insert("z".to_owned(), 0, t0 + Duration::from_secs(31));
        assert_eq!(c.entries.len(), 1, "expired entries are swept");
    }
}
