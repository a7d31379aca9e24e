//! Every default of the config file, and the accepted range of each bounded
//! key: one documented `DEFAULT_*` (or range) constant per key, re-exported
//! from [`crate::config`]. Nothing else lives here.

use std::ops::RangeInclusive;

use super::UpstreamProtocol;

pub const DEFAULT_CONFIG_PATH: &str = "tollgate.toml";
pub const CONFIG_ENV: &str = "TOLLGATE_CONFIG";
pub const DEFAULT_SERVER_LISTEN: &str = "0.0.0.0:8080";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
pub const DEFAULT_TOKEN_ENV: &str = "TOLLGATE_ADMIN_TOKEN";
pub const DEFAULT_STORE_TIMEOUT_MS: u64 = 1000;
pub const DEFAULT_UPSTREAM_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_UPSTREAM_POOL_IDLE_TIMEOUT_MS: u64 = 90_000;
pub const DEFAULT_UPSTREAM_POOL_MAX_IDLE: usize = 256;
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// Longest pause while a client sends a request body (nginx's
/// `client_body_timeout` is 60 s; a body that stalls this long is an attack
/// or a dead client).
pub const DEFAULT_BODY_READ_TIMEOUT_MS: u64 = 30_000;
/// Largest request body forwarded; 0 is unlimited. Unlimited by default, as
/// in Kong and Envoy: bodies stream and are never held, and a sidecar in front
/// of an unchanged API must not start refusing its uploads.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 0;
/// Request line plus headers, HTTP/1.1; the header list, HTTP/2. Envoy's
/// default is 60 KiB, nginx's 4 × 8 KiB.
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 64 * 1024;
/// Accepted `server.max_header_bytes` (hyper's read buffer cannot be smaller than 8 KiB).
pub const MAX_HEADER_BYTES: RangeInclusive<u64> = 8 * 1024..=1024 * 1024;
pub const DEFAULT_WEBSOCKET: bool = false;
pub const DEFAULT_PER_MINUTE: u64 = 100;
pub const DEFAULT_MONTHLY: u64 = 10_000;
pub const DEFAULT_BCRYPT_COST: u32 = 10;
pub const DEFAULT_CACHE_CAPACITY: usize = 100_000;
/// Failed (store-and-bcrypt) authentications one peer may make per minute.
pub const DEFAULT_MAX_FAILURES_PER_MINUTE: u32 = 20;
/// Accepted `auth.max_failures_per_minute`.
pub const MAX_FAILURES_PER_MINUTE: RangeInclusive<u32> = 1..=60_000;
/// Port of an upstream URL that names none.
pub const DEFAULT_UPSTREAM_PORT: u16 = 80;
/// Port of an `https://` upstream URL that names none.
pub const DEFAULT_UPSTREAM_TLS_PORT: u16 = 443;
/// `upstream.protocol`: HTTP/1.1 to the upstream whatever the client spoke.
pub const DEFAULT_UPSTREAM_PROTOCOL: UpstreamProtocol = UpstreamProtocol::Http1;
pub const DEFAULT_KEEP_CREDENTIAL: bool = false;
pub const DEFAULT_HEADERS_IETF: bool = false;
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Time in-flight requests get to finish after SIGTERM: below Kubernetes' 30 s grace period.
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 25_000;
/// Accepted `server.drain_timeout_ms`.
pub const DRAIN_TIMEOUT_MS: RangeInclusive<u64> = 0..=3_600_000;
pub const DEFAULT_METRICS_PER_CLIENT: bool = false;
pub const DEFAULT_METRICS_PER_CLIENT_MAX: usize = 1000;
/// Accepted `metrics.per_client_max`.
pub const METRICS_PER_CLIENT_MAX: RangeInclusive<u64> = 1..=100_000;
pub const DEFAULT_RELOAD_WATCH: bool = true;
pub const DEFAULT_RELOAD_INTERVAL_MS: u64 = 1000;
/// Accepted `reload.interval_ms`.
pub const RELOAD_INTERVAL_MS: RangeInclusive<u64> = 100..=3_600_000;
pub const DEFAULT_STORE_REPLICAS: u64 = 1;
/// Accepted `store.replicas`.
pub const STORE_REPLICAS: RangeInclusive<u64> = 1..=10_000;
pub const DEFAULT_STORE_MAX_IN_FLIGHT: u64 = 1024;
/// Accepted `store.max_in_flight`.
pub const STORE_MAX_IN_FLIGHT: RangeInclusive<u64> = 1..=1_000_000;
/// Accepted `store.timeout_ms`.
pub const STORE_TIMEOUT_MS: RangeInclusive<u64> = 1..=60_000;
/// Accepted `auth.bcrypt_cost` (bcrypt's own bounds).
pub const BCRYPT_COST: RangeInclusive<u32> = 4..=31;
/// Longest scope name, in bytes.
pub const MAX_SCOPE_LEN: usize = 64;
