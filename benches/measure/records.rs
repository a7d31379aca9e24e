//! The store records the measurements write directly (no admin API).

use tollgate::model::{Client, ClientStatus, KeyRecord};

/// An active client with its own limits.
pub fn client(id: &str, per_minute: u64, monthly: u64) -> Client {
    Client {
        id: id.into(),
        name: id.into(),
        status: ClientStatus::Active,
        per_minute: Some(per_minute),
        monthly: Some(monthly),
        created_at: 1_770_000_000,
    }
}

/// A key record (its hash is never checked: the measurements call the store).
pub fn key(id: &str, client_id: &str, name: &str, scopes: &[&str]) -> KeyRecord {
    KeyRecord {
        id: id.into(),
        client_id: client_id.into(),
        name: name.into(),
        scopes: scopes.iter().map(|s| (*s).into()).collect(),
        hash: "$2b$04$abcdefghijklmnopqrstuv0123456789012345678901234567890".into(),
        prefix: "sk_live_abcd".into(),
        gen: 1,
        created_at: 1_770_000_100,
        expires_at: None,
        last_used_at: None,
        previous: None,
    }
}
