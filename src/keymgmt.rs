//! Key management shared by the admin API and the organisation API: secret
//! issuance and hashing, listing, rotation and revocation. The request
//! bodies and their validation are `api`'s.
//!
//! The secret exists in memory only between generation and the 201 body;
//! only its bcrypt hash reaches the store.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::api::{CreateKey, CreatedKey, KeyBody, KeyList, RotateKey, RotatedKey};
use crate::auth::Principal;
use crate::clock::{iso8601, Clock};
use crate::error::ApiError;
use crate::keys;
use crate::model::KeyRecord;
use crate::store::SharedStore;

/// At most 64 printable characters of user input, for error messages.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// Issues, lists and revokes keys.
#[derive(Debug, Clone)]
pub struct KeyService {
    pub store: SharedStore,
    pub bcrypt_cost: u32,
    pub clock: Arc<dyn Clock>,
}

impl KeyService {
    /// Issues a key for `client_id`; every scope must be in `known`
    /// (`invalid_scope`). With `grantor` (the organisation API), the new key
    /// may hold only scopes the grantor holds.
    pub async fn create(
        &self,
        client_id: &str,
        req: CreateKey,
        known: &BTreeSet<String>,
        grantor: Option<&Principal>,
    ) -> Result<CreatedKey, ApiError> {
        if let Some(s) = req.scopes.unknown(known) {
            return Err(ApiError::InvalidScope(format!(
                "Unknown scope \"{}\".",
                printable(s)
            )));
        }
        if let Some(g) = grantor {
            if let Some(s) = req.scopes.as_slice().iter().find(|s| !g.has_scope(s)) {
                return Err(ApiError::Forbidden(format!(
                    "A key can grant only scopes it holds; this key lacks \"{s}\"."
                )));
            }
        }
        let secret = keys::generate();
        let hash = self.hash(&secret).await?;
        let now = self.clock.now_ms().div_euclid(1000);
        let record = KeyRecord {
            id: secret.key_id().to_owned(),
            client_id: client_id.to_owned(),
            name: req.name.into_string(),
            scopes: req.scopes.into(),
            hash,
            prefix: secret.prefix().to_owned(),
            gen: 1,
            created_at: now,
            expires_at: req.expires_in_days.map(|d| now + d.days() * 86_400),
            last_used_at: None,
            previous: None,
        };
        self.store.create_key(&record).await?;
        Ok(CreatedKey {
            id: record.id,
            name: record.name,
            key: secret.expose().to_owned(),
            scopes: record.scopes,
            created_at: iso8601(record.created_at),
            expires_at: record.expires_at.map(iso8601),
        })
    }

    pub async fn list(&self, client_id: &str) -> Result<KeyList, ApiError> {
        let keys: Vec<KeyBody> = self
            .store
            .list_keys(client_id)
            .await?
            .iter()
            .map(KeyBody::from)
            .collect();
        Ok(KeyList {
            total: keys.len(),
            keys,
        })
    }

    /// Gives a key a new secret (same id, name, scopes and expiry); the old
    /// one keeps working for the request's grace period. With `owner`, only one
    /// of that client's keys: a key of another client answers exactly as a
    /// missing one.
    pub async fn rotate(
        &self,
        key_id: &str,
        owner: Option<&str>,
        req: RotateKey,
    ) -> Result<RotatedKey, ApiError> {
        let grace_secs = req.grace_seconds.unwrap_or_default().secs();
        let not_found = || ApiError::NotFound("No such key.".into());
        // No lookup before the rotation itself: a key of another client must
        // cost exactly what a missing one does (no existence oracle, timing
        // included), so both are hashed and refused by the same store call.
        if !keys::valid_key_id(key_id) {
            return Err(not_found());
        }
        let secret = keys::generate_for(key_id).ok_or_else(not_found)?;
        let hash = self.hash(&secret).await?;
        let record = self
            .store
            .rotate_key(key_id, owner, &hash, Duration::from_secs(grace_secs))
            .await?
            .ok_or_else(not_found)?;
        let until_ms = record.previous.as_ref().map_or(0, |p| p.until_ms);
        Ok(RotatedKey {
            key: CreatedKey {
                id: record.id,
                name: record.name,
                key: secret.expose().to_owned(),
                scopes: record.scopes,
                created_at: iso8601(record.created_at),
                expires_at: record.expires_at.map(iso8601),
            },
            // Whole seconds, rounded up: from this instant on it is refused.
            previous_expires_at: iso8601((until_ms + 999).div_euclid(1000)),
        })
    }

    async fn hash(&self, secret: &keys::Secret) -> Result<String, ApiError> {
        let cost = self.bcrypt_cost;
        let for_hash = secret.clone();
        tokio::task::spawn_blocking(move || keys::hash(&for_hash, cost))
            .await
            .map_err(|_| ApiError::Internal("Hashing the key failed.".into()))?
            .map_err(|_| ApiError::Internal("Hashing the key failed.".into()))
    }

    /// Revokes a key; with `owner`, only one of that client's keys. A key of
    /// another client answers exactly as a missing one.
    pub async fn revoke(&self, key_id: &str, owner: Option<&str>) -> Result<(), ApiError> {
        if keys::valid_key_id(key_id) && self.store.revoke_key(key_id, owner).await? {
            Ok(())
        } else {
            Err(ApiError::NotFound("No such key.".into()))
        }
    }
}
