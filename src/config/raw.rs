//! The file as written: the `deny_unknown_fields` serde structs the TOML
//! reader fills. Every key is optional here, so that validation (not the
//! TOML reader) decides what is required and can report all problems at
//! once; every value is `Spanned` so that a problem names its line.
//! Integers are read as `i64` so that 0 and negative numbers get our message.
//! Owns no checks: [`super::check`] turns these into the validated types.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

pub(super) type Opt<T> = Option<Spanned<T>>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) server: Opt<RawServer>,
    pub(super) admin: Opt<RawAdmin>,
    pub(super) upstream: Opt<RawUpstream>,
    pub(super) store: Opt<RawStore>,
    pub(super) limits: Opt<RawLimits>,
    pub(super) plans: Opt<std::collections::BTreeMap<String, Spanned<RawPlan>>>,
    pub(super) auth: Opt<RawAuth>,
    pub(super) routes: Option<Vec<Spanned<RawRoute>>>,
    pub(super) headers: Opt<RawHeaders>,
    pub(super) log: Opt<RawLog>,
    pub(super) metrics: Opt<RawMetrics>,
    pub(super) reload: Opt<RawReload>,
    pub(super) history: Opt<RawHistory>,
    pub(super) notify: Opt<RawNotify>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Opt<String>,
    pub(super) header_read_timeout_ms: Opt<i64>,
    pub(super) drain_timeout_ms: Opt<i64>,
    pub(super) trusted_proxies: Opt<Vec<Spanned<String>>>,
    pub(super) body_read_timeout_ms: Opt<i64>,
    pub(super) max_body_bytes: Opt<i64>,
    pub(super) max_header_bytes: Opt<i64>,
    pub(super) websocket: Opt<bool>,
    pub(super) tls: Opt<RawServerTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServerTls {
    pub(super) cert: Opt<String>,
    pub(super) key: Opt<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) listen: Opt<String>,
    pub(super) token_env: Opt<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) url: Opt<String>,
    pub(super) timeout_ms: Opt<i64>,
    pub(super) connect_timeout_ms: Opt<i64>,
    pub(super) pool_idle_timeout_ms: Opt<i64>,
    pub(super) pool_max_idle_per_host: Opt<i64>,
    pub(super) keep_credential: Opt<bool>,
    pub(super) protocol: Opt<String>,
    pub(super) ca: Opt<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) backend: Opt<String>,
    pub(super) url: Opt<String>,
    pub(super) timeout_ms: Opt<i64>,
    pub(super) urls: Opt<Vec<Spanned<String>>>,
    pub(super) sentinels: Opt<Vec<Spanned<String>>>,
    pub(super) master_name: Opt<String>,
    pub(super) failure_mode: Opt<String>,
    pub(super) replicas: Opt<i64>,
    pub(super) max_in_flight: Opt<i64>,
    pub(super) batch_keys: Opt<i64>,
    pub(super) ca: Opt<String>,
    pub(super) client_cert: Opt<String>,
    pub(super) client_key: Opt<String>,
    pub(super) username_env: Opt<String>,
    pub(super) password_env: Opt<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) per_minute: Opt<i64>,
    pub(super) monthly: Opt<i64>,
    pub(super) shadow: Opt<bool>,
    pub(super) refund_on: Opt<Vec<Spanned<String>>>,
}

/// `[plans.<name>]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlan {
    pub(super) per_minute: Opt<i64>,
    pub(super) monthly: Opt<i64>,
    pub(super) shadow: Opt<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub(super) scopes: Opt<Vec<Spanned<String>>>,
    pub(super) bcrypt_cost: Opt<i64>,
    pub(super) cache_capacity: Opt<i64>,
    pub(super) max_failures_per_minute: Opt<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) path: Opt<String>,
    pub(super) methods: Opt<Vec<Spanned<String>>>,
    pub(super) scope: Opt<String>,
    pub(super) cost: Opt<i64>,
    pub(super) shadow: Opt<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeaders {
    pub(super) ietf: Opt<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: Opt<String>,
    pub(super) level: Opt<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) per_client: Opt<bool>,
    pub(super) per_client_max: Opt<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHistory {
    pub(super) days: Opt<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    pub(super) url: Opt<String>,
    pub(super) thresholds: Opt<Vec<Spanned<i64>>>,
    pub(super) secret_env: Opt<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReload {
    pub(super) watch: Opt<bool>,
    pub(super) interval_ms: Opt<i64>,
}

/// A section's span (for "missing key" messages) and its contents.
pub(super) fn section<T: Default>(raw: Opt<T>) -> (Option<Range<usize>>, T) {
    match raw {
        Some(s) => (Some(s.span()), s.into_inner()),
        None => (None, T::default()),
    }
}
