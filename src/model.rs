//! The entities of SPEC.md (clients and API keys) and their JSON views.
//!
//! Records here are what the store keeps; what the admin and organisation
//! APIs read and return is `api`'s.

use serde::{Deserialize, Serialize};

/// Built-in scopes every key may hold, besides the configured ones.
pub const SCOPE_READ_KEYS: &str = "read:api_keys";
pub const SCOPE_WRITE_KEYS: &str = "write:api_keys";
pub const BUILTIN_SCOPES: [&str; 2] = [SCOPE_READ_KEYS, SCOPE_WRITE_KEYS];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientStatus {
    Active,
    Suspended,
}

impl ClientStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientStatus::Active => "active",
            ClientStatus::Suspended => "suspended",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(ClientStatus::Active),
            "suspended" => Some(ClientStatus::Suspended),
            _ => None,
        }
    }
}

/// A client (organisation). Limits of `None` follow the config defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub id: String,
    pub name: String,
    pub status: ClientStatus,
    pub per_minute: Option<u64>,
    pub monthly: Option<u64>,
    /// The plan (`[plans.<name>]`) whose limits apply where the client sets none.
    pub plan: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// A change to a client; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientPatch {
    pub name: Option<String>,
    pub status: Option<ClientStatus>,
    pub per_minute: Option<u64>,
    pub monthly: Option<u64>,
    /// `Some(Some(p))`: put the client on plan `p`; `Some(None)`: take it off its plan.
    pub plan: Option<Option<String>>,
}

/// An API key as stored: only the bcrypt hash of its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: String,
    pub client_id: String,
    pub name: String,
    pub scopes: Vec<String>,
    /// bcrypt hash of the secret. Never leaves the process except to the store.
    pub hash: String,
    /// First 12 characters of the secret, for listings.
    pub prefix: String,
    /// Secret generation: bumped when the secret is rotated.
    pub gen: u64,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    /// The secret this key had before its last rotation, while (and after)
    /// its grace period; only [`PreviousSecret::valid_at`] makes it usable.
    pub previous: Option<PreviousSecret>,
}

/// A rotated-out secret: accepted until `until_ms`, then refused.
#[derive(Clone, PartialEq, Eq)]
pub struct PreviousSecret {
    /// bcrypt hash of the old secret.
    pub hash: String,
    /// The generation the old secret verified as.
    pub gen: u64,
    /// Unix milliseconds, store time: the old secret works strictly before this.
    pub until_ms: i64,
}

impl PreviousSecret {
    /// Whether the old secret is still accepted at `now_ms`.
    pub fn valid_at(&self, now_ms: i64) -> bool {
        now_ms < self.until_ms
    }
}

impl std::fmt::Debug for PreviousSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreviousSecret")
            .field("hash", &"<redacted>")
            .field("gen", &self.gen)
            .field("until_ms", &self.until_ms)
            .finish()
    }
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("id", &self.id)
            .field("client_id", &self.client_id)
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("hash", &"<redacted>")
            .field("prefix", &self.prefix)
            .field("gen", &self.gen)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("last_used_at", &self.last_used_at)
            .field("previous", &self.previous)
            .finish()
    }
}

impl KeyRecord {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Whether a caller that verified generation `gen` may use the key at
    /// `now_ms`: not expired, and `gen` is the current generation or the
    /// previous one within its grace period. The stores decide with this.
    pub fn accepts(&self, gen: u64, now_ms: i64) -> bool {
        let now_s = now_ms.div_euclid(1000);
        self.expires_at.is_none_or(|at| at > now_s)
            && (gen == self.gen
                || self
                    .previous
                    .as_ref()
                    .is_some_and(|p| p.gen == gen && p.valid_at(now_ms)))
    }
}

/// Is `id` a valid client id: `[a-z0-9][a-z0-9_-]{0,63}`.
pub fn valid_client_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids() {
        for ok in ["a", "acme", "0", "acme-corp_2", &"a".repeat(64)] {
            assert!(valid_client_id(ok), "{ok}");
        }
        for bad in ["", "-a", "_a", "Acme", "a b", "a.b", &"a".repeat(65), "é"] {
            assert!(!valid_client_id(bad), "{bad}");
        }
    }

    #[test]
    fn key_record_debug_hides_hash() {
        let k = KeyRecord {
            id: "key_x".into(),
            client_id: "c".into(),
            name: "n".into(),
            scopes: vec![],
            hash: "$2b$04$secret".into(),
            prefix: "sk_live_abcd".into(),
            gen: 1,
            created_at: 0,
            expires_at: None,
            last_used_at: None,
            previous: Some(PreviousSecret {
                hash: "$2b$04$oldsecret".into(),
                gen: 1,
                until_ms: 0,
            }),
        };
        assert!(!format!("{k:?}").contains("$2b$"));
    }

    #[test]
    fn generations_and_grace() {
        let mut k = KeyRecord {
            id: "key_x".into(),
            client_id: "c".into(),
            name: "n".into(),
            scopes: vec![],
            hash: String::new(),
            prefix: String::new(),
            gen: 2,
            created_at: 0,
            expires_at: Some(100),
            last_used_at: None,
            previous: Some(PreviousSecret {
                hash: String::new(),
                gen: 1,
                until_ms: 50_000,
            }),
        };
        assert!(k.accepts(2, 0));
        assert!(k.accepts(1, 49_999));
        assert!(!k.accepts(1, 50_000));
        assert!(!k.accepts(3, 0));
        assert!(!k.accepts(2, 100_000), "expired");
        k.previous = None;
        assert!(!k.accepts(1, 0));
    }
}
