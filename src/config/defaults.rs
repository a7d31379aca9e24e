//! Every default of the config file, and the accepted range of each bounded
//! key: one documented `DEFAULT_*` (or range) constant per key, re-exported
//! from [`crate::config`]. Nothing else lives here.

use std::ops::RangeInclusive;

use super::UpstreamProtocol;

/// The config file read when neither `--config` nor [`CONFIG_ENV`] names one.
pub const DEFAULT_CONFIG_PATH: &str = "tollgate.toml";
/// Environment variable naming the config file (below `--config`, above [`DEFAULT_CONFIG_PATH`]).
pub const CONFIG_ENV: &str = "TOLLGATE_CONFIG";
/// `server.listen`: the public listener, on every interface.
pub const DEFAULT_SERVER_LISTEN: &str = "0.0.0.0:8080";
/// `admin.listen`: the admin listener, loopback only unless configured.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
/// `admin.token_env`: the environment variable holding the admin token.
pub const DEFAULT_TOKEN_ENV: &str = "TOLLGATE_ADMIN_TOKEN";
/// `store.timeout_ms`: bound on every store call, connecting included.
pub const DEFAULT_STORE_TIMEOUT_MS: u64 = 1000;
/// `upstream.timeout_ms`: time to the upstream's response headers; past it, 504.
pub const DEFAULT_UPSTREAM_TIMEOUT_MS: u64 = 30_000;
/// `upstream.connect_timeout_ms`: time to open a connection to the upstream.
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// `upstream.pool_idle_timeout_ms`: how long an idle upstream connection is kept.
pub const DEFAULT_UPSTREAM_POOL_IDLE_TIMEOUT_MS: u64 = 90_000;
/// `upstream.pool_max_idle_per_host`: most idle upstream connections kept.
pub const DEFAULT_UPSTREAM_POOL_MAX_IDLE: usize = 256;
/// `server.header_read_timeout_ms`: time a client has to send a request's headers.
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
/// `server.websocket`: WebSocket upgrades are refused unless turned on.
pub const DEFAULT_WEBSOCKET: bool = false;
/// `limits.per_minute`: requests per minute for a client that sets none.
pub const DEFAULT_PER_MINUTE: u64 = 100;
/// `limits.monthly`: requests per calendar month for a client that sets none.
pub const DEFAULT_MONTHLY: u64 = 10_000;
/// `limits.shadow`: refusals by the limits are real unless shadow mode is turned on.
pub const DEFAULT_SHADOW: bool = false;
/// `routes[].cost`: units one request counts.
pub const DEFAULT_ROUTE_COST: u64 = 1;
/// `auth.bcrypt_cost`: the cost new key secrets are hashed with.
pub const DEFAULT_BCRYPT_COST: u32 = 10;
/// `auth.cache_capacity`: most verified secrets remembered per process.
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
/// `upstream.keep_credential`: the credential header is removed before forwarding.
pub const DEFAULT_KEEP_CREDENTIAL: bool = false;
/// `headers.ietf`: only `X-RateLimit-*`; the IETF draft's fields are added when turned on.
pub const DEFAULT_HEADERS_IETF: bool = false;
/// `log.level`: an `EnvFilter` directive.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Time in-flight requests get to finish after SIGTERM: below Kubernetes' 30 s grace period.
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 25_000;
/// Accepted `server.drain_timeout_ms`.
pub const DRAIN_TIMEOUT_MS: RangeInclusive<u64> = 0..=3_600_000;
/// `metrics.per_client`: request counts are not labelled with the client id.
pub const DEFAULT_METRICS_PER_CLIENT: bool = false;
/// `metrics.per_client_max`: most distinct client labels; later ones count as `_other`.
pub const DEFAULT_METRICS_PER_CLIENT_MAX: usize = 1000;
/// Accepted `metrics.per_client_max`.
pub const METRICS_PER_CLIENT_MAX: RangeInclusive<u64> = 1..=100_000;
/// `reload.watch`: the config file is polled and reloaded when it changes.
pub const DEFAULT_RELOAD_WATCH: bool = true;
/// `reload.interval_ms`: how often the config file is polled.
pub const DEFAULT_RELOAD_INTERVAL_MS: u64 = 1000;
/// Accepted `reload.interval_ms`.
pub const RELOAD_INTERVAL_MS: RangeInclusive<u64> = 100..=3_600_000;
/// `store.replicas`: tollgate processes sharing the store.
pub const DEFAULT_STORE_REPLICAS: u64 = 1;
/// Accepted `store.replicas`.
pub const STORE_REPLICAS: RangeInclusive<u64> = 1..=10_000;
/// `store.max_in_flight`: most store calls waiting at once; beyond, 503.
pub const DEFAULT_STORE_MAX_IN_FLIGHT: u64 = 1024;
/// Accepted `store.max_in_flight`.
pub const STORE_MAX_IN_FLIGHT: RangeInclusive<u64> = 1..=1_000_000;
/// Accepted `store.timeout_ms`.
pub const STORE_TIMEOUT_MS: RangeInclusive<u64> = 1..=60_000;
/// Accepted `auth.bcrypt_cost` (bcrypt's own bounds).
pub const BCRYPT_COST: RangeInclusive<u32> = 4..=31;
/// Longest scope name, in bytes.
pub const MAX_SCOPE_LEN: usize = 64;
