//! The JSON bodies of the admin and organisation APIs, requests and
//! responses, as the server reads and writes them and the CLI sends and
//! decodes them. docs/api.md and openapi.yaml describe these types.
//!
//! Every request body refuses unknown fields (`deny_unknown_fields`): a
//! misspelt field is an error, never silently ignored. A response never
//! carries a secret except [`CreatedKey::key`] (once, at creation or rotation)
//! and never a hash.

use serde::{Deserialize, Serialize};

use super::fields::{
    ClientId, ClientName, ExpiresInDays, GraceSeconds, KeyName, Monthly, PerMinute, PlanName,
    Scopes,
};
use crate::clock::iso8601;
use crate::limits::policy::{self, Plans, Policy, Source};
use crate::limits::Limits;
use crate::model::{Client, ClientPatch, ClientStatus, KeyRecord};

/// `POST /admin/v1/clients`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateClient {
    pub id: ClientId,
    /// Absent: the id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<ClientName>,
    /// Absent or null: the config's `[limits]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<PerMinute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly: Option<Monthly>,
    /// Absent or null: no plan. The server refuses a plan its config does not define.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanName>,
}

impl CreateClient {
    /// The client to store, created at `now_s` (Unix seconds).
    pub fn into_client(self, now_s: i64) -> Client {
        let id = self.id.into_string();
        Client {
            name: self
                .name
                .map_or_else(|| id.clone(), ClientName::into_string),
            id,
            status: ClientStatus::Active,
            per_minute: self.per_minute.map(PerMinute::get),
            monthly: self.monthly.map(Monthly::get),
            plan: self.plan.map(PlanName::into_string),
            created_at: now_s,
        }
    }
}

/// `PATCH /admin/v1/clients/{id}`: absent or null leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchClient {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ClientStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<ClientName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<PerMinute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly: Option<Monthly>,
    /// Absent: unchanged; `null`: no plan; a name: that plan (the server
    /// refuses one its config does not define).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub plan: Option<Option<PlanName>>,
}

/// A field that may be absent (`None`), `null` (`Some(None)`) or a value.
fn present<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl PatchClient {
    /// The plan the patch names, if any (not `null`).
    pub fn plan_name(&self) -> Option<&str> {
        self.plan
            .as_ref()
            .and_then(|p| p.as_ref())
            .map(PlanName::as_str)
    }
}

impl CreateClient {
    /// The plan the client is created on, if any.
    pub fn plan_name(&self) -> Option<&str> {
        self.plan.as_ref().map(PlanName::as_str)
    }
}

impl From<PatchClient> for ClientPatch {
    fn from(p: PatchClient) -> Self {
        ClientPatch {
            name: p.name.map(ClientName::into_string),
            status: p.status,
            per_minute: p.per_minute.map(PerMinute::get),
            monthly: p.monthly.map(Monthly::get),
            plan: p.plan.map(|p| p.map(PlanName::into_string)),
        }
    }
}

/// `POST /admin/v1/clients/{id}/keys` and `POST /api/v1/org/api-keys`. The
/// organisation is never in the body: the path (admin) or the caller's key
/// (organisation API) decides it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub name: KeyName,
    pub scopes: Scopes,
    /// Absent or null: the key never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_days: Option<ExpiresInDays>,
}

/// `POST /admin/v1/keys/{id}/rotate` and `POST /api/v1/org/api-keys/{id}/rotate`;
/// an empty body is `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// Absent or null: [`super::fields::DEFAULT_GRACE_SECONDS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_seconds: Option<GraceSeconds>,
}

/// A client as the admin API shows it; limits are the effective ones, and
/// `limit_sources` says where each came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientBody {
    pub id: String,
    pub name: String,
    pub status: ClientStatus,
    pub per_minute: u64,
    pub monthly: u64,
    /// The client's plan, or null. A plan the config does not define is
    /// shown, and its limits come from `[limits]`.
    #[serde(default)]
    pub plan: Option<String>,
    #[serde(default = "LimitSources::defaults")]
    pub limit_sources: LimitSources,
    pub created_at: String,
}

/// Where each effective limit came from: `client`, `plan` or `limits`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct LimitSources {
    pub per_minute: Source,
    pub monthly: Source,
}

impl LimitSources {
    fn defaults() -> LimitSources {
        LimitSources {
            per_minute: Source::Limits,
            monthly: Source::Limits,
        }
    }
}

impl ClientBody {
    /// The client as judged under `defaults` and `plans` (the config in force).
    pub fn new(c: &Client, defaults: Limits, plans: &std::sync::Arc<Plans>) -> Self {
        let policy = Policy {
            plans: plans.clone(),
            ..Policy::default()
        };
        let r = policy::resolve(
            (c.per_minute, c.monthly),
            c.plan.as_deref(),
            defaults,
            &policy,
        );
        ClientBody {
            id: c.id.clone(),
            name: c.name.clone(),
            status: c.status,
            per_minute: r.limits.per_minute,
            monthly: r.limits.monthly,
            plan: c.plan.clone(),
            limit_sources: LimitSources {
                per_minute: r.per_minute_source,
                monthly: r.monthly_source,
            },
            created_at: iso8601(c.created_at),
        }
    }
}

/// `{"clients": [...]}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientList {
    pub clients: Vec<ClientBody>,
}

/// A key in a listing: no secret, no hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyBody {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub expires_at: Option<String>,
}

impl From<&KeyRecord> for KeyBody {
    fn from(k: &KeyRecord) -> Self {
        KeyBody {
            id: k.id.clone(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            scopes: k.scopes.clone(),
            created_at: iso8601(k.created_at),
            last_used_at: k.last_used_at.map(iso8601),
            expires_at: k.expires_at.map(iso8601),
        }
    }
}

/// `{"keys": [...], "total": N}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyList {
    pub keys: Vec<KeyBody>,
    pub total: usize,
}

/// The 201 body of key creation: the only place a secret is ever shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedKey {
    pub id: String,
    pub name: String,
    pub key: String,
    pub scopes: Vec<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
}

/// The 201 body of a rotation: the creation body (with the new secret) and
/// the instant the previous secret stops working.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotatedKey {
    #[serde(flatten)]
    pub key: CreatedKey,
    /// ISO 8601: the previous secret is refused from this instant on.
    pub previous_expires_at: String,
}

/// `{"status": "ok" | "ready" | "degraded"}` of `/healthz` and `/readyz`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    pub status: String,
}

/// `{"error": "...", "code": "..."}`: every refusal, on both listeners.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: String,
    pub code: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_refuse_unknown_fields_and_bad_values() {
        for bad in [
            json!({}),
            json!({"id": "Acme"}),
            json!({"id": "a", "per_minute": 0}),
            json!({"id": "a", "monthly": -1}),
            json!({"id": "a", "monthly": "5"}),
            json!({"id": "a", "extra": 1}),
        ] {
            assert!(
                serde_json::from_value::<CreateClient>(bad.clone()).is_err(),
                "{bad}"
            );
        }
        let c: CreateClient =
            serde_json::from_value(json!({"id": "acme", "per_minute": 7})).unwrap();
        let c = c.into_client(1_770_717_660);
        assert_eq!(
            (c.name.as_str(), c.per_minute, c.monthly),
            ("acme", Some(7), None)
        );
        let p: PatchClient =
            serde_json::from_value(json!({"status": "suspended", "name": null})).unwrap();
        assert_eq!(ClientPatch::from(p).status, Some(ClientStatus::Suspended));
        assert!(serde_json::from_value::<PatchClient>(json!({"status": "gone"})).is_err());
        assert!(serde_json::from_value::<CreateKey>(
            json!({"name": "a", "scopes": ["x"], "client_id": "b"})
        )
        .is_err());
        assert!(serde_json::from_value::<RotateKey>(json!({"grace": 1})).is_err());
    }

    /// What the CLI sends is what the server reads: absent fields stay absent.
    #[test]
    fn requests_round_trip_without_nulls() {
        let body = CreateKey {
            name: KeyName::try_from("ci".to_owned()).unwrap(),
            scopes: Scopes::try_from(vec!["read:x".to_owned()]).unwrap(),
            expires_in_days: None,
        };
        let v = serde_json::to_value(&body).unwrap();
        assert_eq!(v, json!({"name": "ci", "scopes": ["read:x"]}));
        assert_eq!(serde_json::from_value::<CreateKey>(v).unwrap(), body);
        assert_eq!(
            serde_json::to_value(RotateKey::default()).unwrap(),
            json!({})
        );
    }
}
