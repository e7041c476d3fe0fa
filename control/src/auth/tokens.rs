//! ServiceAccount tokens: ES256-signed JWTs with kube-apiserver's claims, issued by TokenRequest and
//! verified on every bearer-token request. The signing key is `<data-dir>/pki/sa.key` (owner-only).

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::pki::{self, PkiError};

/// The issuer and default audience of tokens (kube-apiserver's default `--service-account-issuer`).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Token lifetime when a TokenRequest names none (kube-apiserver's default).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest lifetime a TokenRequest may ask for.
pub const MIN_EXPIRATION_SECONDS: i64 = 600;

/// Why a token could not be issued or was rejected.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("signing key: {0}")]
    Key(String),
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("key file: {0}")]
    Pki(#[from] PkiError),
}

/// An object a token is bound to (its name and uid).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

/// The `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    pub namespace: String,
    pub serviceaccount: ObjectRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
}

/// Every claim of a ServiceAccount token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
}

impl Claims {
    /// `system:serviceaccount:<namespace>:<name>`.
    pub fn username(&self) -> String {
        username(&self.kubernetes.namespace, &self.kubernetes.serviceaccount.name)
    }
}

/// The user name of a ServiceAccount.
pub fn username(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The groups of a ServiceAccount user.
pub fn groups(namespace: &str) -> Vec<String> {
    vec![
        "system:serviceaccounts".to_owned(),
        format!("system:serviceaccounts:{namespace}"),
    ]
}

/// `(namespace, name)` of a ServiceAccount user name.
pub fn parse_username(user: &str) -> Option<(&str, &str)> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (ns, name) = rest.split_once(':')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains(':')).then_some((ns, name))
}

/// What a new token is for.
#[derive(Debug, Clone)]
pub struct TokenSpec<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    /// Empty means the API server's own audience.
    pub audiences: Vec<String>,
    pub expiration_seconds: i64,
    pub pod: Option<ObjectRef>,
}

/// Signs and verifies ServiceAccount tokens.
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl TokenIssuer {
    /// Loads `sa.key` from `dir`, generating it (mode 0600) on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self, TokenError> {
        let path = dir.join("sa.key");
        let pem = match pki::read(&path)? {
            Some(pem) => pem,
            None => {
                let key = rcgen::KeyPair::generate().map_err(|e| TokenError::Key(e.to_string()))?;
                let pem = key.serialize_pem();
                pki::write(&path, &pem, true)?;
                pem
            }
        };
        Self::from_pem(&pem)
    }

    /// An issuer for a PKCS#8 P-256 private key.
    pub fn from_pem(pem: &str) -> Result<Self, TokenError> {
        let key = rcgen::KeyPair::from_pem(pem).map_err(|e| TokenError::Key(e.to_string()))?;
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes())?;
        let decoding = DecodingKey::from_ec_der(key.public_key_raw());
        Ok(Self { encoding, decoding })
    }

    /// A signed token and its expiry (Unix seconds).
    pub fn issue(&self, spec: &TokenSpec<'_>, now: i64) -> Result<(String, i64), TokenError> {
        let audiences = if spec.audiences.is_empty() {
            vec![ISSUER.to_owned()]
        } else {
            spec.audiences.clone()
        };
        let exp = now + spec.expiration_seconds;
        let claims = Claims {
            iss: ISSUER.to_owned(),
            sub: username(spec.namespace, spec.name),
            aud: audiences,
            exp,
            iat: now,
            nbf: now,
            jti: crate::registry::meta::new_uid(&mut <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng()),
            kubernetes: KubernetesClaims {
                namespace: spec.namespace.to_owned(),
                serviceaccount: ObjectRef {
                    name: spec.name.to_owned(),
                    uid: spec.uid.to_owned(),
                },
                pod: spec.pod.clone(),
            },
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.encoding)?;
        Ok((token, exp))
    }

    /// The claims of a token signed by this issuer, unexpired, for one of `audiences` (empty: the API server's).
    pub fn verify(&self, token: &str, audiences: &[String]) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.leeway = 0;
        validation.set_issuer(&[ISSUER]);
        if audiences.is_empty() {
            validation.set_audience(&[ISSUER]);
        } else {
            validation.set_audience(audiences);
        }
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)?;
        if data.claims.sub != data.claims.username() {
            return Err(TokenError::Key(
                "subject does not match the kubernetes.io claim".into(),
            ));
        }
        Ok(data.claims)
    }
}

/// Whether a bearer token looks like a JWT (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3 && token.starts_with("eyJ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(seconds: i64) -> TokenSpec<'static> {
        TokenSpec {
            namespace: "ns1",
            name: "robot",
            uid: "uid-1",
            audiences: vec![],
            expiration_seconds: seconds,
            pod: None,
        }
    }

    #[test]
    fn issued_tokens_verify_and_carry_the_service_account() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = TokenIssuer::load_or_create(dir.path()).unwrap();
        let now = crate::registry::meta::unix_now();
        let (token, exp) = issuer.issue(&spec(3600), now).unwrap();
        assert!(looks_like_jwt(&token));
        assert_eq!(exp, now + 3600);
        let claims = issuer.verify(&token, &[]).unwrap();
        assert_eq!(claims.username(), "system:serviceaccount:ns1:robot");
        assert_eq!(claims.kubernetes.serviceaccount.uid, "uid-1");
        // The key persists: a second load verifies the same token.
        let again = TokenIssuer::load_or_create(dir.path()).unwrap();
        assert!(again.verify(&token, &[]).is_ok());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("sa.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn expired_foreign_tampered_and_other_audience_tokens_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = TokenIssuer::load_or_create(dir.path()).unwrap();
        let now = crate::registry::meta::unix_now();
        let (expired, _) = issuer.issue(&spec(600), now - 1200).unwrap();
        assert!(issuer.verify(&expired, &[]).is_err());
        let other = TokenIssuer::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        let (foreign, _) = other.issue(&spec(600), now).unwrap();
        assert!(issuer.verify(&foreign, &[]).is_err());
        let (good, _) = issuer.issue(&spec(600), now).unwrap();
        let mut tampered = good.clone();
        tampered.insert(40, if good.as_bytes()[40] == b'A' { 'B' } else { 'A' });
        assert!(issuer.verify(&tampered, &[]).is_err());
        let mut vault = spec(600);
        vault.audiences = vec!["vault".into()];
        let (for_vault, _) = issuer.issue(&vault, now).unwrap();
        assert!(issuer.verify(&for_vault, &[]).is_err());
        assert!(issuer.verify(&for_vault, &["vault".into()]).is_ok());
        assert!(issuer.verify("garbage", &[]).is_err());
    }

    #[test]
    fn service_account_user_names() {
        assert_eq!(parse_username("system:serviceaccount:ns:sa"), Some(("ns", "sa")));
        assert_eq!(parse_username("system:serviceaccount:ns"), None);
        assert_eq!(parse_username("jane"), None);
        assert_eq!(groups("ns")[1], "system:serviceaccounts:ns");
    }
}
