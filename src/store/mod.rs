//! Persistence and the atomic admission decision, behind one small trait of
//! semantic operations.
//!
//! Two backends implement [`Store`]: [`memory::MemoryStore`] (one process) and
//! [`redis::RedisStore`] (shared by any number of processes). Both pass the same
//! conformance suite (`tests/store_conformance.rs`). `admit` and `usage`
//! check the key (exists, not expired, current secret generation, or the
//! previous one within its rotation grace period) and the
//! client (exists, active) in the same atomic operation that reads or moves
//! the counters, so a revocation or suspension takes effect on the very next
//! request in every process. The store never sees a secret, only its hash.
//!
//! `admit` counts a request if and only if it returns its decision, on
//! both backends: the memory store cannot lose a reply, and the Redis store
//! settles a call whose reply was lost by its id ([`once`]) before it
//! answers or sends anything again.

pub mod group;
pub mod memory;
pub mod once;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::clock::Clock;
use crate::history::{DayCounts, Range};
use crate::limits::policy::Policy;
use crate::limits::{Decision, Limits};
use crate::model::{Client, ClientPatch, KeyRecord};

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or did not answer in time.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A client with this id exists already.
    #[error("client already exists")]
    ClientExists,
    /// The client named by the operation does not exist.
    #[error("no such client")]
    NoSuchClient,
    /// The client already has a key with this name.
    #[error("key name already taken")]
    NameTaken,
    /// The store holds data this version cannot read.
    #[error("store data corrupt: {0}")]
    Corrupt(String),
}

/// One request to be admitted: checked and, when admitted, counted.
#[derive(Debug, Clone)]
pub struct AdmitRequest<'a> {
    pub client_id: &'a str,
    pub key_id: &'a str,
    /// The secret generation the caller verified.
    pub gen: u64,
    /// The scope the route needs, if any.
    pub scope: Option<&'a str>,
    /// The config defaults for a client that sets no limits.
    pub defaults: Limits,
    /// The route's cost and shadow setting, and the plans in force.
    pub policy: Policy,
}

/// A read of a client's limit state that counts nothing. With `key`, the key
/// is checked as `admit` checks it (usage asked with an API key).
#[derive(Debug, Clone)]
pub struct UsageRequest<'a> {
    pub client_id: &'a str,
    /// `(key_id, gen)`.
    pub key: Option<(&'a str, u64)>,
    pub defaults: Limits,
    /// The plans in force (cost and route shadow are not used).
    pub policy: Policy,
}

/// An admitted request given back (`[limits] refund_on`): `units` leave both
/// counters in the window second and the month of `at_ms`, the store time of
/// its admission ([`crate::limits::LimitState::now_ms`]). A second that has
/// left the window, or a month that has ended, gives nothing back; no
/// counter goes below zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    pub client_id: String,
    pub units: u64,
    pub at_ms: i64,
}

/// Where the store's time comes from.
#[derive(Debug, Clone, Default)]
pub enum TimeSource {
    /// The store's own clock (Redis `TIME`; the system clock in memory).
    #[default]
    Store,
    /// A caller-supplied clock; for tests that move time.
    Clock(Arc<dyn Clock>),
}

#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Succeeds when the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Creates a client; [`StoreError::ClientExists`] when the id is taken.
    async fn create_client(&self, client: &Client) -> Result<(), StoreError>;
    async fn get_client(&self, id: &str) -> Result<Option<Client>, StoreError>;
    /// All clients, ordered by id.
    async fn list_clients(&self) -> Result<Vec<Client>, StoreError>;
    /// Applies a patch; `None` when there is no such client.
    async fn update_client(
        &self,
        id: &str,
        patch: &ClientPatch,
    ) -> Result<Option<Client>, StoreError>;

    /// Stores a new key; [`StoreError::NameTaken`] when its client has the name,
    /// [`StoreError::NoSuchClient`] when the client does not exist.
    async fn create_key(&self, key: &KeyRecord) -> Result<(), StoreError>;
    /// The key with this id, hash included (for verification).
    async fn get_key(&self, key_id: &str) -> Result<Option<KeyRecord>, StoreError>;
    /// A client's keys, ordered by creation time then id.
    async fn list_keys(&self, client_id: &str) -> Result<Vec<KeyRecord>, StoreError>;
    /// Deletes a key. With `owner`, only if it belongs to that client. `false`
    /// when there was no such key (or it belongs to another client).
    async fn revoke_key(&self, key_id: &str, owner: Option<&str>) -> Result<bool, StoreError>;
    /// Gives a key a new secret, atomically: its current hash and generation
    /// become the previous ones, accepted until the store's now + `grace`;
    /// `new_hash` becomes current with generation + 1. A secret rotated out
    /// earlier is dropped, whatever was left of its grace. Id, name, scopes,
    /// expiry and prefix stay. With `owner`, only a key of that client;
    /// `None` when there is no such key (or it belongs to another client).
    async fn rotate_key(
        &self,
        key_id: &str,
        owner: Option<&str>,
        new_hash: &str,
        grace: Duration,
    ) -> Result<Option<KeyRecord>, StoreError>;

    /// Checks key, client and scope, then counts the request against both
    /// limits if, and only if, both have room. Refusals count nothing.
    async fn admit(&self, req: &AdmitRequest<'_>) -> Result<Decision, StoreError>;
    /// The client's limit state; counts nothing. Verdict `Admitted` means "ok".
    async fn usage(&self, req: &UsageRequest<'_>) -> Result<Decision, StoreError>;

    /// The client's usage history for each day of `range` (local days of
    /// its `quota_tz`), zeros for days without any (or past `[history]
    /// days`, or no such client).
    async fn history(&self, client_id: &str, range: Range) -> Result<Vec<DayCounts>, StoreError>;

    /// Gives back an admitted request's units (see [`Refund`]); one atomic operation.
    async fn refund(&self, refund: &Refund) -> Result<(), StoreError>;

    /// Notifications (`[notify]`): from now on, admissions pass the
    /// notifier's thresholds to the crossing rule and hand it what they cross.
    fn set_notifier(&self, _notifier: Arc<crate::notify::Notifier>) {}

    /// Notifications, durable stores only: `None` takes (leases) every
    /// pending notification whose lease ran out; `Some(p)` renews `p`'s
    /// lease, empty when `p` is no longer pending.
    async fn claim_notifications(
        &self,
        _only: Option<&crate::notify::Pending>,
    ) -> Result<Vec<crate::notify::Pending>, StoreError> {
        Ok(Vec::new())
    }

    /// Notifications, durable stores only: `p` was delivered (or expired).
    async fn finish_notification(&self, _p: &crate::notify::Pending) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A store shared by the whole process.
pub type SharedStore = Arc<dyn Store>;
