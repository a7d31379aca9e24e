//! Store records written directly through the `Store` trait (no admin
//! API), for the store conformance cases and the store measurements.

use tollgate::model::{Client, ClientStatus, KeyRecord};

/// An active client `id` named "`id` Ltd", on the default limits.
pub fn client(id: &str) -> Client {
    Client {
        id: id.into(),
        name: format!("{id} Ltd"),
        status: ClientStatus::Active,
        per_minute: None,
        monthly: None,
        plan: None,
        created_at: 1_770_000_000,
    }
}

/// A key record of generation 1 (its hash is never checked: the store is
/// called directly).
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
