//! Key management shared by the admin API and the organisation API: request
//! validation, secret issuance and hashing, listing, rotation and revocation.
//!
//! The secret exists in memory only between generation and the 201 body;
//! only its bcrypt hash reaches the store.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use serde_json::Value;

use crate::auth::Principal;
use crate::clock::{iso8601, Clock};
use crate::error::ApiError;
use crate::keys;
use crate::model::{
    valid_key_name, CreatedKey, KeyList, KeyRecord, KeyView, RotatedKey, DEFAULT_GRACE_SECONDS,
    EXPIRES_IN_DAYS, GRACE_SECONDS, MAX_KEY_NAME_CHARS,
};
use crate::store::SharedStore;

/// Largest JSON body the management APIs read.
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// Reads a request body of at most [`MAX_JSON_BODY`] bytes and parses it as a JSON object.
pub async fn read_json<B>(body: B) -> Result<serde_json::Map<String, Value>, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    parse_object(&read_body(body).await?)
}

/// As [`read_json`], but an empty body reads as `{}` (every field optional).
pub async fn read_optional_json<B>(body: B) -> Result<serde_json::Map<String, Value>, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let bytes = read_body(body).await?;
    if bytes.trim_ascii().is_empty() {
        return Ok(serde_json::Map::new());
    }
    parse_object(&bytes)
}

async fn read_body<B>(body: B) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    Ok(Limited::new(body, MAX_JSON_BODY)
        .collect()
        .await
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "The body must be JSON of at most {MAX_JSON_BODY} bytes."
            ))
        })?
        .to_bytes())
}

fn parse_object(bytes: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::BadRequest(
            "The body must be a JSON object.".into(),
        )),
        Err(e) => Err(ApiError::BadRequest(format!(
            "The body is not valid JSON: {e}."
        ))),
    }
}

/// `grace_seconds` of a rotation body: absent means [`DEFAULT_GRACE_SECONDS`].
pub fn grace_from_json(body: &serde_json::Map<String, Value>) -> Result<u64, ApiError> {
    match body.get("grace_seconds") {
        None | Some(Value::Null) => Ok(DEFAULT_GRACE_SECONDS),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(g) if GRACE_SECONDS.contains(&g) => Ok(g),
            _ => Err(grace_error()),
        },
        Some(_) => Err(grace_error()),
    }
}

fn grace_error() -> ApiError {
    ApiError::BadRequest(format!(
        "\"grace_seconds\" must be an integer from {} to {}.",
        GRACE_SECONDS.start(),
        GRACE_SECONDS.end()
    ))
}

/// A validated key-creation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    pub name: String,
    pub scopes: Vec<String>,
    pub expires_in_days: Option<i64>,
}

impl NewKey {
    /// Validates `{"name", "scopes", "expires_in_days"?}` against the known scopes.
    pub fn from_json(
        body: &serde_json::Map<String, Value>,
        known_scopes: &BTreeSet<String>,
    ) -> Result<NewKey, ApiError> {
        // Other fields (e.g. a "client_id" naming another organisation) are ignored:
        // the organisation always comes from the caller.
        let name = match body.get("name") {
            Some(Value::String(s)) if valid_key_name(s) => s.clone(),
            Some(Value::String(_)) => {
                return Err(ApiError::BadRequest(format!(
                    "\"name\" must be 1 to {MAX_KEY_NAME_CHARS} characters, without control characters."
                )))
            }
            _ => return Err(ApiError::BadRequest("\"name\" is required and must be a string.".into())),
        };
        let scopes = match body.get("scopes") {
            Some(Value::Array(a)) if !a.is_empty() => {
                let mut out: Vec<String> = Vec::with_capacity(a.len());
                for v in a {
                    let Value::String(s) = v else {
                        return Err(ApiError::BadRequest(
                            "\"scopes\" must be an array of strings.".into(),
                        ));
                    };
                    if !known_scopes.contains(s) {
                        return Err(ApiError::InvalidScope(format!(
                            "Unknown scope \"{}\".",
                            printable(s)
                        )));
                    }
                    if !out.contains(s) {
                        out.push(s.clone());
                    }
                }
                out
            }
            Some(Value::Array(_)) => {
                return Err(ApiError::BadRequest("\"scopes\" must not be empty.".into()))
            }
            _ => {
                return Err(ApiError::BadRequest(
                    "\"scopes\" is required and must be an array of strings.".into(),
                ))
            }
        };
        let expires_in_days = match body.get("expires_in_days") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_i64() {
                Some(d) if EXPIRES_IN_DAYS.contains(&d) => Some(d),
                _ => return Err(expires_error()),
            },
            Some(_) => return Err(expires_error()),
        };
        Ok(NewKey {
            name,
            scopes,
            expires_in_days,
        })
    }
}

fn expires_error() -> ApiError {
    ApiError::BadRequest(format!(
        "\"expires_in_days\" must be an integer from {} to {}.",
        EXPIRES_IN_DAYS.start(),
        EXPIRES_IN_DAYS.end()
    ))
}

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
    /// Issues a key for `client_id`. With `grantor` (the organisation API), the
    /// new key may hold only scopes the grantor holds.
    pub async fn create(
        &self,
        client_id: &str,
        req: NewKey,
        grantor: Option<&Principal>,
    ) -> Result<CreatedKey, ApiError> {
        if let Some(g) = grantor {
            if let Some(s) = req.scopes.iter().find(|s| !g.has_scope(s)) {
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
            name: req.name,
            scopes: req.scopes,
            hash,
            prefix: secret.prefix().to_owned(),
            gen: 1,
            created_at: now,
            expires_at: req.expires_in_days.map(|d| now + d * 86_400),
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
        let keys: Vec<KeyView> = self
            .store
            .list_keys(client_id)
            .await?
            .iter()
            .map(KeyView::from)
            .collect();
        Ok(KeyList {
            total: keys.len(),
            keys,
        })
    }

    /// Gives a key a new secret (same id, name, scopes and expiry); the old
    /// one keeps working for `grace_secs`. With `owner`, only one of that
    /// client's keys: a key of another client answers exactly as a missing one.
    pub async fn rotate(
        &self,
        key_id: &str,
        owner: Option<&str>,
        grace_secs: u64,
    ) -> Result<RotatedKey, ApiError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> BTreeSet<String> {
        ["read:x", "write:x", "read:api_keys"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn parse(v: Value) -> Result<NewKey, ApiError> {
        let Value::Object(m) = v else { unreachable!() };
        NewKey::from_json(&m, &known())
    }

    #[test]
    fn validation_table() {
        use serde_json::json;
        let long = "x".repeat(129);
        let cases: Vec<(Value, &str)> = vec![
            (json!({"scopes": ["read:x"]}), "bad_request"),
            (json!({"name": "", "scopes": ["read:x"]}), "bad_request"),
            (json!({"name": long, "scopes": ["read:x"]}), "bad_request"),
            (json!({"name": "a", "scopes": []}), "bad_request"),
            (json!({"name": "a"}), "bad_request"),
            (json!({"name": "a", "scopes": "read:x"}), "bad_request"),
            (json!({"name": "a", "scopes": ["nope"]}), "invalid_scope"),
            (
                json!({"name": "a", "scopes": ["read:x"], "expires_in_days": 0}),
                "bad_request",
            ),
            (
                json!({"name": "a", "scopes": ["read:x"], "expires_in_days": 3651}),
                "bad_request",
            ),
            (
                json!({"name": "a", "scopes": ["read:x"], "expires_in_days": 1.5}),
                "bad_request",
            ),
            (
                json!({"name": "a", "scopes": ["read:x"], "expires_in_days": "5"}),
                "bad_request",
            ),
        ];
        for (body, code) in cases {
            let got = parse(body.clone()).unwrap_err();
            assert_eq!(got.code(), code, "{body}");
        }
        let ok = parse(json!({"name": "ci", "scopes": ["read:x", "read:x", "write:x"], "expires_in_days": 3650})).unwrap();
        assert_eq!(ok.scopes, ["read:x", "write:x"]);
        assert_eq!(ok.expires_in_days, Some(3650));
        let ignored =
            parse(json!({"name": "a", "scopes": ["read:x"], "client_id": "other"})).unwrap();
        assert_eq!(ignored.name, "a");
    }

    #[test]
    fn grace_table() {
        use serde_json::json;
        let grace = |v: Value| {
            let Value::Object(m) = v else { unreachable!() };
            grace_from_json(&m)
        };
        assert_eq!(grace(json!({})), Ok(DEFAULT_GRACE_SECONDS));
        assert_eq!(grace(json!({"grace_seconds": null})), Ok(86_400));
        assert_eq!(grace(json!({"grace_seconds": 0})), Ok(0));
        assert_eq!(grace(json!({"grace_seconds": 2_592_000})), Ok(2_592_000));
        for bad in [
            json!({"grace_seconds": -1}),
            json!({"grace_seconds": 2_592_001}),
            json!({"grace_seconds": 1.5}),
            json!({"grace_seconds": "60"}),
        ] {
            assert_eq!(
                grace(bad.clone()).unwrap_err().code(),
                "bad_request",
                "{bad}"
            );
        }
    }
}
