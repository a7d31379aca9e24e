//! Every Redis key and hash field tollgate uses, defined once.
//!
//! All keys of one client carry the hash tag `{c:<client_id>}` and so live
//! in one cluster slot; multi-key scripts touch only those. The two global
//! keys (`tg:clients`, `tg:keyidx:<key_id>`) are written by separate
//! commands.

/// `tg:{c:<client_id>}:` and then `rest`: built by copying, not by the
/// formatting machinery (each admission names three or four keys).
fn tagged(client_id: &str, rest: &[&str]) -> String {
    const OPEN: &str = "tg:{c:";
    const CLOSE: &str = "}:";
    let len = OPEN.len() + client_id.len() + CLOSE.len();
    let mut s = String::with_capacity(len + rest.iter().map(|p| p.len()).sum::<usize>());
    s.push_str(OPEN);
    s.push_str(client_id);
    s.push_str(CLOSE);
    for part in rest {
        s.push_str(part);
    }
    s
}

/// Set of all client ids.
pub const CLIENTS: &str = "tg:clients";

/// Hash: the client's fields and its monthly counter.
pub fn client(client_id: &str) -> String {
    tagged(client_id, &["client"])
}
/// Hash: one API key.
pub fn key(client_id: &str, key_id: &str) -> String {
    tagged(client_id, &["key:", key_id])
}
/// Sorted set: the client's key ids, scored by `created_at`.
pub fn keys(client_id: &str) -> String {
    tagged(client_id, &["keys"])
}
/// Hash: key name → key id, for per-client name uniqueness.
pub fn names(client_id: &str) -> String {
    tagged(client_id, &["names"])
}
/// Hash: the per-minute window as tollgate kept it until 2026-11; `admit.lua`
/// now keeps the window in the client hash and moves this one there (and
/// deletes it) at the client's first call after an upgrade.
pub fn window(client_id: &str) -> String {
    tagged(client_id, &["win"])
}
/// Hash: one local day of the client's usage history (`history.rs`):
/// fields `f`, `r`, `q`, `x` (forwarded, rate_limited, quota_exceeded,
/// refunded); expires `[history] days` after the day ends.
pub fn history_day(client_id: &str, date: &str) -> String {
    tagged(client_id, &["h:", date])
}
/// Hash: the client's pending quota notifications (`admit.lua` writes
/// them, `notify_claim.lua` leases them; removed once delivered):
/// `<period start ms>:<threshold>` → `<used>,<limit>,<period end ms>,<at ms>,<lease ms>`.
pub fn notify(client_id: &str) -> String {
    tagged(client_id, &["notify"])
}
/// String: key id → client id, to find a key from its id alone.
pub fn key_index(key_id: &str) -> String {
    ["tg:keyidx:", key_id].concat()
}

/// Fields of the client hash.
pub mod client_field {
    pub const NAME: &str = "name";
    pub const STATUS: &str = "status";
    pub const PER_MINUTE: &str = "per_minute";
    pub const MONTHLY: &str = "monthly";
    /// The client's plan name; absent or empty: none.
    pub const PLAN: &str = "plan";
    pub const CREATED_AT: &str = "created_at";
    /// The billing cycle (SPEC.md "Billing cycles"); absent: 1 and "UTC".
    pub const QUOTA_DAY: &str = "quota_day";
    pub const QUOTA_TZ: &str = "quota_tz";
    /// The id of the quota period `USED` counts and the count, as text:
    /// written by tollgate before 2026-11-28 (`admit.lua` moves them into
    /// `COUNTERS`).
    pub const MONTH: &str = "mon";
    pub const USED: &str = "used";
    /// The end (Unix ms) of the period `USED` counts and the cycle tag it
    /// was counted under (`admit.lua`: a cycle change carries `used` to the
    /// end of the period it was counted in, docs/billing.md).
    pub const PERIOD_END: &str = "mend";
    pub const PERIOD_TAG: &str = "mtag";
    /// The current day of the usage history (its day key's name) and its
    /// counts, `hf`, `hr`, `hq` (`admit.lua`; earlier days are in their keys).
    pub const HISTORY_DAY: &str = "hday";
    /// Prefixes of an admission session's two fields (`s:<session>`,
    /// `r:<session>`, written by `admit.lua` and `settle.lua`; see
    /// `store::once`). The `r:` field is binary.
    pub const SESSION_PREFIXES: [&str; 2] = ["s:", "r:"];
    /// The counters, binary: the per-minute window, the quota period and
    /// its count, and the window's older seconds (`admit.lua`'s header;
    /// they replace `MONTH` and `USED`).
    pub const COUNTERS: [&str; 2] = ["ctr", "ctw"];
}

/// Fields of a key hash.
pub mod key_field {
    pub const CLIENT_ID: &str = "client_id";
    pub const NAME: &str = "name";
    /// Space-separated.
    pub const SCOPES: &str = "scopes";
    pub const HASH: &str = "hash";
    pub const PREFIX: &str = "prefix";
    pub const GEN: &str = "gen";
    pub const CREATED_AT: &str = "created_at";
    /// Empty or absent: never.
    pub const EXPIRES_AT: &str = "expires_at";
    /// Written by `admit.lua`.
    pub const LAST_USED_AT: &str = "last_used_at";
    /// The rotated-out secret (written by the rotate script, read by
    /// `admit.lua`): its hash, its generation, and the Unix millisecond
    /// from which it is refused.
    pub const PREV_HASH: &str = "prev_hash";
    pub const PREV_GEN: &str = "prev_gen";
    pub const PREV_UNTIL_MS: &str = "prev_until_ms";
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_carry_the_clients_hash_tag() {
        assert_eq!(super::client("acme"), "tg:{c:acme}:client");
        assert_eq!(super::key("acme", "k1"), "tg:{c:acme}:key:k1");
        assert_eq!(
            super::history_day("a", "2026-11-28"),
            "tg:{c:a}:h:2026-11-28"
        );
        assert_eq!(super::key_index("k1"), "tg:keyidx:k1");
    }
}
