//! Authentication: from a request's credential header to a verified [`Principal`].
//!
//! The secret carries its key id, so the key is looked up directly, never by a
//! scan; its bcrypt hash is verified on a blocking thread. Once a secret has
//! verified, the process remembers SHA-256(secret) per key id in a bounded
//! cache, so later requests pay no bcrypt. The cache says only "this secret
//! verified once": whether the key is still valid (revoked, expired, rotated,
//! client suspended) is decided by the store's admission check on every
//! request. This module never logs a secret or a hash.

use std::sync::Arc;

use http::header::{HeaderMap, AUTHORIZATION};
use subtle::ConstantTimeEq;

use crate::headers::X_API_KEY;
use crate::keys::{ParseError, Secret};
use crate::metrics::{AuthRejection, CacheResult, Metrics};
use crate::store::{SharedStore, StoreError};

/// Which header carried the credential (both, when they agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialSource {
    pub api_key_header: bool,
    pub bearer: bool,
}

/// A credential taken from a request, not yet checked.
#[derive(Clone)]
pub struct Credential {
    text: String,
    pub source: CredentialSource,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Takes the credential from `X-API-Key` or `Authorization: Bearer`.
/// Two different credentials, or two `X-API-Key` headers, are refused.
pub fn extract(headers: &HeaderMap) -> Result<Credential, AuthRejection> {
    let mut api_keys = headers.get_all(&X_API_KEY).iter();
    let api_key = api_keys.next();
    if api_keys.next().is_some() {
        return Err(AuthRejection::ambiguous);
    }
    let mut bearer = None;
    for v in headers.get_all(AUTHORIZATION) {
        let Some(token) = bearer_token(v.as_bytes()) else {
            continue;
        };
        if bearer.is_some() {
            return Err(AuthRejection::ambiguous);
        }
        bearer = Some(token);
    }
    let api_key = match api_key {
        Some(v) => Some(std::str::from_utf8(v.as_bytes()).map_err(|_| AuthRejection::malformed)?),
        None => None,
    };
    let bearer = match bearer {
        Some(b) => Some(std::str::from_utf8(b).map_err(|_| AuthRejection::malformed)?),
        None => None,
    };
    let (text, source) = match (api_key, bearer) {
        (None, None) => return Err(AuthRejection::missing),
        (Some(k), None) => (
            k,
            CredentialSource {
                api_key_header: true,
                bearer: false,
            },
        ),
        (None, Some(b)) => (
            b,
            CredentialSource {
                api_key_header: false,
                bearer: true,
            },
        ),
        (Some(k), Some(b)) if k.as_bytes().ct_eq(b.as_bytes()).into() => (
            k,
            CredentialSource {
                api_key_header: true,
                bearer: true,
            },
        ),
        (Some(_), Some(_)) => return Err(AuthRejection::ambiguous),
    };
    Ok(Credential {
        text: text.trim().to_owned(),
        source,
    })
}

/// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() > SCHEME.len() && value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        Some(&value[SCHEME.len()..])
    } else {
        None
    }
}

/// A caller whose secret has verified: what the later stages need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: Arc<str>,
    pub client_id: Arc<str>,
    /// The secret generation that verified.
    pub gen: u64,
    pub scopes: Arc<[String]>,
}

impl Principal {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Why authentication failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    Rejected(AuthRejection),
    Store(StoreError),
}

#[derive(Clone)]
struct Verified {
    digest: [u8; 32],
    principal: Principal,
}

/// Verifies credentials, remembering the ones that verified.
#[derive(Clone)]
pub struct Authenticator {
    store: SharedStore,
    metrics: Arc<Metrics>,
    cache: Arc<quick_cache::sync::Cache<Arc<str>, Verified>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(store: SharedStore, metrics: Arc<Metrics>, cache_capacity: usize) -> Self {
        Authenticator {
            store,
            metrics,
            cache: Arc::new(quick_cache::sync::Cache::new(cache_capacity.max(1))),
        }
    }

    /// Verifies `cred`: shape and checksum first (no I/O), then the cache, then
    /// the store and bcrypt.
    pub async fn authenticate(&self, cred: &Credential) -> Result<Principal, AuthError> {
        let secret = match Secret::parse(&cred.text) {
            Ok(s) => s,
            Err(ParseError::Malformed) => return Err(self.reject(AuthRejection::malformed)),
            Err(ParseError::Checksum) => return Err(self.reject(AuthRejection::checksum)),
        };
        let digest = secret.digest();
        if let Some(v) = self.cache.get(secret.key_id()) {
            if bool::from(v.digest.ct_eq(&digest)) {
                self.metrics.auth_cache(CacheResult::hit);
                return Ok(v.principal);
            }
        }
        self.metrics.auth_cache(CacheResult::miss);
        let record = match self.store.get_key(secret.key_id()).await {
            Ok(Some(r)) => r,
            Ok(None) => return Err(self.reject(AuthRejection::unknown_key)),
            Err(e) => return Err(AuthError::Store(e)),
        };
        let hash = record.hash.clone();
        self.metrics.bcrypt_verified();
        let verified = tokio::task::spawn_blocking(move || crate::keys::verify(&secret, &hash))
            .await
            .unwrap_or(false);
        if !verified {
            return Err(self.reject(AuthRejection::bad_secret));
        }
        let principal = Principal {
            key_id: Arc::from(record.id.as_str()),
            client_id: Arc::from(record.client_id.as_str()),
            gen: record.gen,
            scopes: Arc::from(record.scopes.clone()),
        };
        self.cache.insert(
            principal.key_id.clone(),
            Verified {
                digest,
                principal: principal.clone(),
            },
        );
        Ok(principal)
    }

    /// Forgets a key: called when the store says it is no longer valid.
    pub fn forget(&self, key_id: &str) {
        self.cache.remove(key_id);
    }

    fn reject(&self, reason: AuthRejection) -> AuthError {
        self.metrics.auth_rejected(reason);
        AuthError::Rejected(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn credential_forms() {
        let c = extract(&headers(&[("x-api-key", "abc")])).unwrap();
        assert_eq!(c.text, "abc");
        assert!(c.source.api_key_header && !c.source.bearer);
        let c = extract(&headers(&[("authorization", "Bearer abc")])).unwrap();
        assert_eq!(c.text, "abc");
        assert!(c.source.bearer);
        let c = extract(&headers(&[
            ("authorization", "bearer abc"),
            ("x-api-key", "abc"),
        ]))
        .unwrap();
        assert!(c.source.bearer && c.source.api_key_header);
        // A Basic header for the upstream is not ours.
        let c = extract(&headers(&[
            ("authorization", "Basic dXNlcg=="),
            ("x-api-key", "k"),
        ]))
        .unwrap();
        assert_eq!(c.text, "k");
        assert!(!c.source.bearer);
    }

    #[test]
    fn refused_forms() {
        let cases: [(&[(&str, &str)], AuthRejection); 5] = [
            (&[], AuthRejection::missing),
            (
                &[("authorization", "Basic dXNlcg==")],
                AuthRejection::missing,
            ),
            (
                &[("x-api-key", "a"), ("x-api-key", "a")],
                AuthRejection::ambiguous,
            ),
            (
                &[("x-api-key", "a"), ("authorization", "Bearer b")],
                AuthRejection::ambiguous,
            ),
            (
                &[("authorization", "Bearer a"), ("authorization", "Bearer b")],
                AuthRejection::ambiguous,
            ),
        ];
        for (h, want) in cases {
            assert_eq!(extract(&headers(h)).unwrap_err(), want, "{h:?}");
        }
    }

    #[test]
    fn debug_hides_the_credential() {
        let c = extract(&headers(&[("x-api-key", "sk_live_topsecret")])).unwrap();
        assert!(!format!("{c:?}").contains("topsecret"));
    }
}
