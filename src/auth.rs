//! Authentication: from a request's credential header to a verified [`Principal`].
//!
//! The secret carries its key id, so the key is looked up directly, never by a
//! scan; its bcrypt hash is verified on a blocking thread. Once a secret has
//! verified, the process remembers SHA-256(secret) per key id in a bounded
//! cache, so later requests pay no bcrypt. The cache says only "this secret
//! verified once": whether the key is still valid (revoked, expired, rotated,
//! client suspended) is decided by the store's admission check on every
//! request. During a rotation's grace period both the new and the previous
//! secret verify; each carries the generation it verified as, which the
//! admission check accepts only while the grace lasts.
//!
//! Verification that needs the store and bcrypt is guarded: a per-peer
//! budget of failed attempts ([`crate::throttle`]), a process-wide bound on
//! concurrent bcrypt runs (one per core but one), and one verification at a
//! time per distinct secret. This module never logs a secret or a hash.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use parking_lot::Mutex;
use subtle::ConstantTimeEq;

use crate::clock::Clock;
use crate::headers::X_API_KEY;
use crate::keys::{ParseError, Secret};
use crate::metrics::{AuthRejection, CacheResult, Metrics};
use crate::store::{SharedStore, StoreError};
use crate::throttle::FailureThrottle;

/// Which header carried the credential (both, when they agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialSource {
    pub api_key_header: bool,
    pub bearer: bool,
}

/// A credential taken from a request, not yet checked; borrowed from the
/// request's headers.
#[derive(Clone, Copy)]
pub struct Credential<'a> {
    text: &'a str,
    pub source: CredentialSource,
}

impl std::fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Takes the credential from `X-API-Key` or `Authorization: Bearer`.
/// Two different credentials, or two `X-API-Key` headers, are refused.
pub fn extract(headers: &HeaderMap) -> Result<Credential<'_>, AuthRejection> {
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
        // The same key in both headers is one credential, whatever the spacing.
        (Some(k), Some(b)) if k.trim().as_bytes().ct_eq(b.trim().as_bytes()).into() => (
            k,
            CredentialSource {
                api_key_header: true,
                bearer: true,
            },
        ),
        (Some(_), Some(_)) => return Err(AuthRejection::ambiguous),
    };
    Ok(Credential {
        text: text.trim(),
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
    /// The identity as forwarded upstream, made once per verification
    /// (the cache hands out clones), not once per request; also where the
    /// key's scopes are kept (no list of its own: the verification cache
    /// holds one principal per key).
    identity: Identity,
}

/// The values of the `X-Tollgate-*` headers that tell the upstream who
/// called; `None` for a value that cannot be a header value (never sent).
#[derive(Debug, PartialEq, Eq)]
pub struct IdentityHeaders {
    pub client_id: Option<HeaderValue>,
    pub key_id: Option<HeaderValue>,
    /// The scopes, separated by single spaces.
    pub scopes: Option<HeaderValue>,
}

/// The client id, key id and space-separated scopes, back to back in one
/// buffer: one allocation per cached key, from which each request's header
/// values are slices (a reference count, no copy). Kept this small because
/// the verification cache holds one per key (100,000 by default).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    buf: Bytes,
    key_at: usize,
    scopes_at: usize,
}

impl Identity {
    fn new(client_id: &str, key_id: &str, scopes: &[String]) -> Self {
        let scopes_len = scopes
            .iter()
            .map(|s| s.len() + 1)
            .sum::<usize>()
            .saturating_sub(1);
        let mut buf = Vec::with_capacity(client_id.len() + key_id.len() + scopes_len);
        buf.extend_from_slice(client_id.as_bytes());
        let key_at = buf.len();
        buf.extend_from_slice(key_id.as_bytes());
        let scopes_at = buf.len();
        for (i, scope) in scopes.iter().enumerate() {
            if i > 0 {
                buf.push(b' ');
            }
            buf.extend_from_slice(scope.as_bytes());
        }
        Identity {
            buf: Bytes::from(buf),
            key_at,
            scopes_at,
        }
    }

    fn value(&self, range: std::ops::Range<usize>) -> Option<HeaderValue> {
        HeaderValue::from_maybe_shared(self.buf.slice(range)).ok()
    }

    /// The scopes (none contains a space: see `config::values::check_scope`).
    fn scopes(&self) -> impl Iterator<Item = &[u8]> {
        self.buf[self.scopes_at..]
            .split(|&b| b == b' ')
            .filter(|s| !s.is_empty())
    }
}

impl Principal {
    pub fn new(key_id: Arc<str>, client_id: Arc<str>, gen: u64, scopes: &[String]) -> Self {
        let identity = Identity::new(&client_id, &key_id, scopes);
        Principal {
            key_id,
            client_id,
            gen,
            identity,
        }
    }

    /// The `X-Tollgate-*` header values of this identity (slices of one
    /// shared buffer: no allocation).
    pub fn identity(&self) -> IdentityHeaders {
        let id = &self.identity;
        IdentityHeaders {
            client_id: id.value(0..id.key_at),
            key_id: id.value(id.key_at..id.scopes_at),
            scopes: id.value(id.scopes_at..id.buf.len()),
        }
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.identity.scopes().any(|s| s == scope.as_bytes())
    }
}

/// Why authentication failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    Rejected(AuthRejection),
    /// The peer has used up its budget of failed attempts; retry after this many seconds.
    Throttled {
        retry_after: u64,
    },
    Store(StoreError),
}

/// The secrets of one key that verified: at most one per generation, and at
/// most two generations (the current one and, during a rotation's grace
/// period, the previous one), newest first. Shared, as the cache hands out
/// a clone on every lookup.
#[derive(Clone)]
struct Verified {
    entries: Arc<[([u8; 32], Principal)]>,
}

/// Most generations of one key remembered at once.
const CACHED_GENERATIONS: usize = 2;

/// The outcome of one store-and-bcrypt verification, shared by every
/// request that presented the same secret while it ran.
type Shared = Arc<tokio::sync::OnceCell<Result<Principal, AuthError>>>;

/// Takes a verification off the in-progress table when its last waiter
/// leaves, done or cancelled, so abandoned requests leave nothing behind.
struct Leave<'a> {
    map: &'a Mutex<HashMap<[u8; 32], Shared>>,
    digest: [u8; 32],
    cell: Shared,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let mut map = self.map.lock();
        // Under the lock no one can join: the table's reference and ours
        // are the last two when no one else waits.
        let last = Arc::strong_count(&self.cell) <= 2;
        if (self.cell.initialized() || last)
            && map
                .get(&self.digest)
                .is_some_and(|c| Arc::ptr_eq(c, &self.cell))
        {
            map.remove(&self.digest);
        }
    }
}

/// Verifies credentials, remembering the ones that verified.
#[derive(Clone)]
pub struct Authenticator {
    store: SharedStore,
    metrics: Arc<Metrics>,
    cache: Arc<quick_cache::sync::Cache<Arc<str>, Verified>>,
    throttle: Arc<FailureThrottle>,
    /// Bounds the bcrypt verifications running at once, process-wide.
    bcrypt_slots: Arc<tokio::sync::Semaphore>,
    /// Verifications in progress, by SHA-256 of the secret.
    in_progress: Arc<Mutex<HashMap<[u8; 32], Shared>>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("cached", &self.cache.len())
            .field("throttled_peers", &self.throttle.tracked())
            .finish_non_exhaustive()
    }
}

/// Concurrent bcrypt verifications: one per core but one, so that requests
/// whose secret is cached always have a core, whatever arrives uncached.
pub fn default_bcrypt_slots() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

impl Authenticator {
    pub fn new(
        store: SharedStore,
        metrics: Arc<Metrics>,
        cache_capacity: usize,
        throttle: FailureThrottle,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Authenticator {
            store,
            metrics,
            cache: Arc::new(quick_cache::sync::Cache::new(cache_capacity.max(1))),
            throttle: Arc::new(throttle),
            bcrypt_slots: Arc::new(tokio::sync::Semaphore::new(default_bcrypt_slots())),
            in_progress: Arc::default(),
            clock,
        }
    }

    /// Verifies `cred` presented by `peer`, cheapest check first:
    /// 1. shape and checksum (no I/O): a mistyped or made-up key ends here;
    /// 2. the cache of secrets that verified: a known client ends here;
    /// 3. the peer's failure budget: a peer that failed too often gets 429
    ///    before the store or bcrypt are touched (charged only to the
    ///    request that starts a verification, not to those that wait for it);
    /// 4. the store and bcrypt, one verification per distinct secret at a
    ///    time, and at most [`default_bcrypt_slots`] at once.
    pub async fn authenticate(
        &self,
        cred: &Credential<'_>,
        peer: IpAddr,
    ) -> Result<Principal, AuthError> {
        let secret = match Secret::parse(cred.text) {
            Ok(s) => s,
            Err(ParseError::Malformed) => return Err(self.reject(AuthRejection::malformed)),
            Err(ParseError::Checksum) => return Err(self.reject(AuthRejection::checksum)),
        };
        let digest = secret.digest();
        if let Some(p) = self.cached(secret.key_id(), &digest) {
            self.metrics.auth_cache(CacheResult::hit);
            return Ok(p);
        }
        self.metrics.auth_cache(CacheResult::miss);

        // One verification per distinct secret at a time: a request that
        // finds one under way waits for its result. Only the request that
        // starts it is charged to the peer's failure budget, so a client
        // whose new key arrives on many connections at once is not
        // throttled for it, and the waiters cost nothing more.
        let (cell, joined) = {
            let mut map = self.in_progress.lock();
            match map.get(&digest) {
                Some(cell) => (cell.clone(), true),
                None => {
                    let cell = Shared::default();
                    map.insert(digest, cell.clone());
                    (cell, false)
                }
            }
        };
        // The only reference besides the table's, so that dropping it tells.
        let leave = Leave {
            map: &self.in_progress,
            digest,
            cell,
        };
        if !joined {
            if let Err(retry_after) = self.throttle.charge(peer, self.clock.now_ms()) {
                self.metrics.auth_rejected(AuthRejection::throttled);
                let refusal = AuthError::Throttled { retry_after };
                // Whoever joined meanwhile gets the same answer, not a free verification.
                let _ = leave.cell.set(Err(refusal.clone()));
                return Err(refusal);
            }
        }
        let result = leave
            .cell
            .get_or_init(|| self.verify_uncached(secret, digest))
            .await
            .clone();
        match &result {
            Ok(_) | Err(AuthError::Store(_)) if !joined => {
                self.throttle.refund(peer, self.clock.now_ms())
            }
            _ => {}
        }
        match &result {
            Err(AuthError::Rejected(reason)) => self.metrics.auth_rejected(*reason),
            Err(AuthError::Throttled { .. }) => {
                self.metrics.auth_rejected(AuthRejection::throttled)
            }
            _ => {}
        }
        result
    }

    /// The principal a secret with this digest verified as, if remembered.
    fn cached(&self, key_id: &str, digest: &[u8; 32]) -> Option<Principal> {
        let v = self.cache.get(key_id)?;
        v.entries
            .iter()
            .find(|(d, _)| bool::from(d.ct_eq(digest)))
            .map(|(_, p)| p.clone())
    }

    async fn verify_uncached(
        &self,
        secret: Secret,
        digest: [u8; 32],
    ) -> Result<Principal, AuthError> {
        // A verification that finished between this request's cache miss and
        // its turn in the in-progress table has already remembered the secret.
        if let Some(p) = self.cached(secret.key_id(), &digest) {
            return Ok(p);
        }
        let record = match self.store.get_key(secret.key_id()).await {
            Ok(Some(r)) => r,
            Ok(None) => return Err(AuthError::Rejected(AuthRejection::unknown_key)),
            Err(e) => return Err(AuthError::Store(e)),
        };
        let now_ms = self.clock.now_ms();
        if record
            .expires_at
            .is_some_and(|at| at <= now_ms.div_euclid(1000))
        {
            // Expired keys never reach bcrypt (admission refuses them too).
            return Err(AuthError::Rejected(AuthRejection::invalid_key));
        }
        let current = (record.hash.clone(), record.gen);
        let previous = record
            .previous
            .as_ref()
            .filter(|p| p.valid_at(now_ms))
            .map(|p| (p.hash.clone(), p.gen));
        // The slot moves into the blocking task: it is held until bcrypt is
        // done, even if the request that asked for it is gone.
        let Ok(slot) = self.bcrypt_slots.clone().acquire_owned().await else {
            return Err(AuthError::Rejected(AuthRejection::bad_secret));
        };
        let metrics = self.metrics.clone();
        let verified = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            metrics.bcrypt_verified();
            if crate::keys::verify(&secret, &current.0) {
                return Some(current.1);
            }
            let (hash, gen) = previous?;
            metrics.bcrypt_verified();
            crate::keys::verify(&secret, &hash).then_some(gen)
        })
        .await
        .unwrap_or(None);
        let Some(gen) = verified else {
            return Err(AuthError::Rejected(AuthRejection::bad_secret));
        };
        let principal = Principal::new(
            Arc::from(record.id.as_str()),
            Arc::from(record.client_id.as_str()),
            gen,
            &record.scopes,
        );
        self.remember(digest, &principal);
        Ok(principal)
    }

    fn remember(&self, digest: [u8; 32], principal: &Principal) {
        let mut entries = vec![(digest, principal.clone())];
        if let Some(old) = self.cache.get(&principal.key_id) {
            entries.extend(
                old.entries
                    .iter()
                    .filter(|(_, p)| p.gen != principal.gen)
                    .cloned(),
            );
        }
        entries.sort_by_key(|e| std::cmp::Reverse(e.1.gen));
        entries.truncate(CACHED_GENERATIONS);
        self.cache.insert(
            principal.key_id.clone(),
            Verified {
                entries: entries.into(),
            },
        );
    }

    /// Forgets every secret of a key (revoked).
    pub fn forget(&self, key_id: &str) {
        self.cache.remove(key_id);
    }

    /// Forgets one generation of a key: the store no longer accepts it
    /// (revoked, expired, rotated out). Charges the peer one failed attempt,
    /// so a refused key cannot make tollgate run bcrypt for free.
    pub fn forget_generation(&self, key_id: &str, gen: u64, peer: IpAddr) {
        if let Some(v) = self.cache.get(key_id) {
            let entries: Arc<[_]> = v
                .entries
                .iter()
                .filter(|(_, p)| p.gen != gen)
                .cloned()
                .collect();
            if entries.is_empty() {
                self.cache.remove(key_id);
            } else {
                self.cache.insert(Arc::from(key_id), Verified { entries });
            }
        }
        let _ = self.throttle.charge(peer, self.clock.now_ms());
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

    #[test]
    fn identity_headers_are_slices_of_one_buffer() {
        let scopes = ["read:x".to_string(), "write:x".into()];
        let p = Principal::new(Arc::from("key_1"), Arc::from("acme"), 1, &scopes);
        let id = p.identity();
        assert_eq!(id.client_id.unwrap(), "acme");
        assert_eq!(id.key_id.unwrap(), "key_1");
        assert_eq!(id.scopes.unwrap(), "read:x write:x");
        assert!(p.has_scope("read:x") && p.has_scope("write:x"));
        assert!(!p.has_scope("read") && !p.has_scope("x") && !p.has_scope(""));
        let none = Principal::new(Arc::from("k"), Arc::from("c"), 1, &[]);
        assert!(!none.has_scope("") && !none.has_scope("read:x"));
        assert_eq!(none.identity().scopes.unwrap(), "");
        assert_eq!(none.identity().key_id.unwrap(), "k");
    }

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
        type Headers<'a> = &'a [(&'a str, &'a str)];
        // (headers, credential, from X-API-Key, from Bearer)
        let cases: [(Headers, &str, bool, bool); 6] = [
            (&[("x-api-key", "abc")], "abc", true, false),
            (&[("x-api-key", " abc ")], "abc", true, false),
            (&[("authorization", "Bearer abc")], "abc", false, true),
            (
                &[("authorization", "bearer abc"), ("x-api-key", "abc")],
                "abc",
                true,
                true,
            ),
            // The same key in both headers, the bearer padded: one credential.
            (
                &[("x-api-key", "k"), ("authorization", "Bearer  k ")],
                "k",
                true,
                true,
            ),
            // A Basic header for the upstream is not ours.
            (
                &[("authorization", "Basic dXNlcg=="), ("x-api-key", "k")],
                "k",
                true,
                false,
            ),
        ];
        for (h, text, api_key_header, bearer) in cases {
            let h = headers(h);
            let c = extract(&h).unwrap();
            assert_eq!(c.text, text, "{h:?}");
            assert_eq!(
                c.source,
                CredentialSource {
                    api_key_header,
                    bearer
                },
                "{h:?}"
            );
        }
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

    mod verification {
        use super::super::*;
        use crate::clock::SystemClock;
        use crate::model::{Client, ClientStatus, KeyRecord};
        use crate::store::memory::MemoryStore;
        use crate::store::{Store, TimeSource};

        /// A store with client `acme` and one key; the key's secret.
        async fn setup() -> (Authenticator, Arc<Metrics>, Secret) {
            let store = Arc::new(MemoryStore::new(TimeSource::Store));
            store
                .create_client(&Client {
                    id: "acme".into(),
                    name: "acme".into(),
                    status: ClientStatus::Active,
                    per_minute: None,
                    monthly: None,
                    plan: None,
                    created_at: 0,
                    quota_day: 1,
                    quota_tz: "UTC".into(),
                })
                .await
                .unwrap();
            let secret = crate::keys::generate();
            store
                .create_key(&KeyRecord {
                    id: secret.key_id().into(),
                    client_id: "acme".into(),
                    name: "k".into(),
                    scopes: vec![],
                    hash: crate::keys::hash(&secret, 4).unwrap(),
                    prefix: secret.prefix().into(),
                    gen: 1,
                    created_at: 0,
                    expires_at: None,
                    last_used_at: None,
                    previous: None,
                })
                .await
                .unwrap();
            let metrics = Arc::new(Metrics::new());
            let auth = Authenticator::new(
                store,
                metrics.clone(),
                100,
                FailureThrottle::new(1000, 100),
                Arc::new(SystemClock),
            );
            (auth, metrics, secret)
        }

        fn bcrypt_runs(m: &Metrics) -> String {
            m.encode()
                .lines()
                .find(|l| l.starts_with("tollgate_bcrypt_verifications_total "))
                .unwrap_or_default()
                .to_owned()
        }

        fn cred(s: &str) -> Credential<'_> {
            Credential {
                text: s,
                source: CredentialSource {
                    api_key_header: true,
                    bearer: false,
                },
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_first_verifications_share_one_bcrypt_run() {
            let (auth, metrics, secret) = setup().await;
            let peer: IpAddr = [127, 0, 0, 1].into();
            let mut tasks = Vec::new();
            for _ in 0..16 {
                let (auth, text) = (auth.clone(), secret.expose().to_owned());
                tasks.push(tokio::spawn(async move {
                    auth.authenticate(&cred(&text), peer).await
                }));
            }
            for t in tasks {
                assert!(t.await.unwrap().is_ok());
            }
            // Some may have found it cached already; none ran bcrypt twice.
            assert_eq!(
                bcrypt_runs(&metrics),
                "tollgate_bcrypt_verifications_total 1"
            );
            assert!(auth.in_progress.lock().is_empty());
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn abandoned_verifications_leave_nothing_behind() {
            let (auth, _, secret) = setup().await;
            let peer: IpAddr = [127, 0, 0, 1].into();
            for _ in 0..20 {
                let wrong = crate::keys::generate_for(secret.key_id()).unwrap();
                let c = cred(wrong.expose());
                let _ = tokio::time::timeout(
                    std::time::Duration::from_micros(1),
                    auth.authenticate(&c, peer),
                )
                .await;
            }
            assert!(auth.in_progress.lock().is_empty());
        }
    }

    #[test]
    fn debug_hides_the_credential() {
        let h = headers(&[("x-api-key", "sk_live_topsecret")]);
        let c = extract(&h).unwrap();
        assert!(!format!("{c:?}").contains("topsecret"));
    }
}
