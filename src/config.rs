//! The TOML configuration: raw, deserialized with `deny_unknown_fields`, then
//! validated into [`Config`], whose types cannot hold a bad value.
//!
//! This module owns the file's contract (SPEC.md "Configuration (TOML)" and
//! `docs/configuration.md`): which keys exist, their defaults (every one a
//! `DEFAULT_*` constant here), what values are accepted, and the wording of
//! every error. Every error names the key path (`routes[1].scope`) and, where
//! the file gives it, the line; all semantic problems are reported at once.
//! [`Config::describe`] renders the understood config back as TOML, secrets
//! masked. It does no I/O beyond reading the file (and the PEM files and
//! environment variables that `[store]` names, see [`redis_access`]) and must
//! not connect to anything: `tollgate check` has to work offline.

mod redis_access;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::Authority;
use redis::IntoConnectionInfo;
use serde::{Deserialize, Serialize};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::limits::Limits;
use crate::model::BUILTIN_SCOPES;
use crate::throttle::Cidr;

pub use redis_access::{PemFile, RedisAccess, Secret};

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

/// A configuration that has passed validation.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub upstream: UpstreamConfig,
    pub store: StoreConfig,
    pub limits: Limits,
    pub auth: AuthConfig,
    pub routes: Vec<Route>,
    pub headers: HeadersConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub reload: ReloadConfig,
    /// Settings accepted but without effect, formatted like problems
    /// (`line 18: store.url: ...`); `describe` shows them as comments.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Time a client has to send a request's headers (and, on a new
    /// connection, its first bytes).
    pub header_read_timeout: Duration,
    /// After SIGTERM: how long in-flight requests get to finish.
    pub drain_timeout: Duration,
    /// Socket peers whose `X-Forwarded-For` names the client (for throttling).
    pub trusted_proxies: Vec<Cidr>,
    /// Longest pause while reading a request body; past it, 408.
    pub body_read_timeout: Duration,
    /// Largest request body forwarded (`None`: unlimited); above it, 413.
    pub max_body_bytes: Option<u64>,
    /// Largest request head; above it, 431.
    pub max_header_bytes: u32,
    /// Forward WebSocket upgrades (`Upgrade: websocket`) and tunnel them.
    pub websocket: bool,
    /// `[server.tls]`: TLS on the public listener (restart-only; its files reload).
    pub tls: Option<ServerTls>,
}

/// `[server.tls]`: the listener's certificate chain and key files, checked
/// at load (they parse, match, and the key is not readable by others).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `upstream.protocol`: the HTTP version spoken to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (the default).
    Http1,
    /// HTTP/2: prior knowledge (h2c) on `http://`, ALPN `h2` on `https://`.
    Http2,
    /// Each request in the version the client used.
    Auto,
}

impl UpstreamProtocol {
    /// The config file's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::Http2 => "http2",
            UpstreamProtocol::Auto => "auto",
        }
    }
}

/// `upstream.ca`: the roots that verify an `https://` upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamCa {
    pub path: PathBuf,
    /// The file's certificates, read at load.
    pub certs: Vec<rustls::pki_types::CertificateDer<'static>>,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Name of the environment variable holding the admin token.
    pub token_env: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// `https://` (TLS to the upstream) rather than `http://`.
    pub tls: bool,
    /// `http://host:port` plus an optional base path (no trailing slash, may be empty).
    /// As written in the URL (with a port only if the URL names one; see [`UpstreamConfig::port`]).
    pub authority: http::uri::Authority,
    pub base_path: String,
    /// Time to the upstream's response headers; past it, 504.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// Forward the credential header instead of removing it.
    pub keep_credential: bool,
    pub protocol: UpstreamProtocol,
    /// Roots for an `https://` upstream; `None`: the system's.
    pub ca: Option<UpstreamCa>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreBackend {
    Memory,
    Redis {
        url: String,
    },
    /// Seed nodes of a Redis Cluster.
    RedisCluster {
        urls: Vec<String>,
    },
    /// The primary Sentinel names `master_name`.
    RedisSentinel {
        sentinels: Vec<String>,
        master_name: String,
    },
}

/// What the proxy does while the store cannot be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FailureMode {
    /// 503 `unavailable` for every request that needs the store.
    #[default]
    Closed,
    /// Keys this process has verified keep working under a local limiter
    /// (the client's limits divided by `replicas`); unknown keys get 503.
    Open,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    /// Bound on every store call, connecting included.
    pub timeout: Duration,
    pub failure_mode: FailureMode,
    /// tollgate processes sharing the store; `failure_mode = "open"` divides
    /// each client's limits by it.
    pub replicas: u64,
    /// Most store calls waiting at once; beyond, 503 at once.
    pub max_in_flight: usize,
    /// TLS material and credentials from the environment (managed Redis).
    pub access: RedisAccess,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Configured scopes plus the built-in `read:api_keys` and `write:api_keys`.
    pub scopes: BTreeSet<String>,
    pub bcrypt_cost: u32,
    /// Most verified secrets remembered per process.
    pub cache_capacity: usize,
    /// Failed authentications per peer per minute before 429.
    pub max_failures_per_minute: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Normalised path prefix, starting with `/`, no trailing slash (except `/` itself).
    pub path: String,
    /// `None`: any method.
    pub methods: Option<Vec<http::Method>>,
    pub scope: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct HeadersConfig {
    pub ietf: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Label request counts with the client id (never a key id or secret).
    pub per_client: bool,
    /// Most distinct client labels; later clients are counted as `_other`.
    pub per_client_max: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadConfig {
    /// Poll the config file and reload when its content changes (SIGHUP always reloads).
    pub watch: bool,
    pub interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    /// An `EnvFilter` directive, checked at load.
    pub level: String,
}

/// Everything wrong with a config file, one line per problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<String>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {p}", self.path.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            problems: vec![format!("cannot read config file: {e}")],
        })?;
        Config::parse(&text, path)
    }

    /// Validates TOML text; `path` is only for messages.
    ///
    /// A syntax or type error stops at the first one (that is all the TOML
    /// reader reports); past that, every semantic problem is collected.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let fail = |problems: Vec<Problem>| ConfigError {
            path: path.to_owned(),
            problems: problems.iter().map(Problem::to_string).collect(),
        };
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| fail(vec![toml_problem(text, &e)]))?;
        let mut check = Checker {
            text,
            problems: Vec::new(),
            warnings: Vec::new(),
        };
        let mut config = check.config(raw, path);
        if check.problems.is_empty() {
            check.warnings.sort_by_key(|p| p.line.unwrap_or(0));
            config.warnings = check.warnings.iter().map(Problem::to_string).collect();
            Ok(config)
        } else {
            // File order; problems without a line (a missing section) first.
            check.problems.sort_by_key(|p| p.line.unwrap_or(0));
            Err(fail(check.problems))
        }
    }

    /// The config as understood, defaults filled in, secrets masked: what `check` prints.
    ///
    /// The output is itself a valid config file (bar the masked password).
    pub fn describe(&self) -> String {
        let effective = Effective::from(self);
        let mut header = format!(
            "# Effective configuration from {}: every default filled in, secrets masked.\n",
            one_line(&self.path.display().to_string())
        );
        for warning in &self.warnings {
            header.push_str(&format!("# warning: {}\n", one_line(warning)));
        }
        match toml::to_string(&effective) {
            Ok(body) => header + &body,
            Err(e) => format!("{header}# cannot render the configuration as TOML: {e}\n"),
        }
    }
}

/// `text` fit for a TOML comment.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

impl LogFormat {
    /// The config file's spelling: `"text"` or `"json"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl UpstreamConfig {
    /// The upstream as a URL: scheme + authority + base path.
    pub fn url(&self) -> String {
        format!("{}://{}{}", self.scheme(), self.authority, self.base_path)
    }

    /// `"https"` or `"http"`.
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    /// The port to connect to: the URL's, else 80 or 443.
    pub fn port(&self) -> u16 {
        let default = if self.tls {
            DEFAULT_UPSTREAM_TLS_PORT
        } else {
            DEFAULT_UPSTREAM_PORT
        };
        self.authority.port_u16().unwrap_or(default)
    }
}

/// `url` with its password, if any, replaced by `***`: for logs and `check`.
pub fn redact_url(url: &str) -> String {
    if let Some(mut parsed) = redis::parse_redis_url(url) {
        if parsed.password().is_none() {
            return url.to_owned();
        }
        if parsed.set_password(Some("***")).is_ok() {
            return parsed.to_string();
        }
    }
    // Not a URL the redis crate understands: mask all user information.
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

// ---------------------------------------------------------------------------
// The file as written: every key optional here, so that validation (not the
// TOML reader) decides what is required and can report all problems at once.
// Integers are read as `i64` so that 0 and negative numbers get our message.
// ---------------------------------------------------------------------------

type Opt<T> = Option<Spanned<T>>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: Opt<RawServer>,
    admin: Opt<RawAdmin>,
    upstream: Opt<RawUpstream>,
    store: Opt<RawStore>,
    limits: Opt<RawLimits>,
    auth: Opt<RawAuth>,
    routes: Option<Vec<Spanned<RawRoute>>>,
    headers: Opt<RawHeaders>,
    log: Opt<RawLog>,
    metrics: Opt<RawMetrics>,
    reload: Opt<RawReload>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Opt<String>,
    header_read_timeout_ms: Opt<i64>,
    drain_timeout_ms: Opt<i64>,
    trusted_proxies: Opt<Vec<Spanned<String>>>,
    body_read_timeout_ms: Opt<i64>,
    max_body_bytes: Opt<i64>,
    max_header_bytes: Opt<i64>,
    websocket: Opt<bool>,
    tls: Opt<RawServerTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServerTls {
    cert: Opt<String>,
    key: Opt<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Opt<String>,
    token_env: Opt<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    url: Opt<String>,
    timeout_ms: Opt<i64>,
    connect_timeout_ms: Opt<i64>,
    pool_idle_timeout_ms: Opt<i64>,
    pool_max_idle_per_host: Opt<i64>,
    keep_credential: Opt<bool>,
    protocol: Opt<String>,
    ca: Opt<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    backend: Opt<String>,
    url: Opt<String>,
    timeout_ms: Opt<i64>,
    urls: Opt<Vec<Spanned<String>>>,
    sentinels: Opt<Vec<Spanned<String>>>,
    master_name: Opt<String>,
    failure_mode: Opt<String>,
    replicas: Opt<i64>,
    max_in_flight: Opt<i64>,
    ca: Opt<String>,
    client_cert: Opt<String>,
    client_key: Opt<String>,
    username_env: Opt<String>,
    password_env: Opt<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    per_minute: Opt<i64>,
    monthly: Opt<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    scopes: Opt<Vec<Spanned<String>>>,
    bcrypt_cost: Opt<i64>,
    cache_capacity: Opt<i64>,
    max_failures_per_minute: Opt<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    path: Opt<String>,
    methods: Opt<Vec<Spanned<String>>>,
    scope: Opt<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaders {
    ietf: Opt<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Opt<String>,
    level: Opt<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    per_client: Opt<bool>,
    per_client_max: Opt<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReload {
    watch: Opt<bool>,
    interval_ms: Opt<i64>,
}

/// A section's span (for "missing key" messages) and its contents.
fn section<T: Default>(raw: Opt<T>) -> (Option<Range<usize>>, T) {
    match raw {
        Some(s) => (Some(s.span()), s.into_inner()),
        None => (None, T::default()),
    }
}

// ---------------------------------------------------------------------------
// Problems and where they are.
// ---------------------------------------------------------------------------

/// One thing wrong with the file: `line 14: routes[1].scope: unknown scope ...`.
#[derive(Debug)]
struct Problem {
    line: Option<usize>,
    key: String,
    message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// 1-based line of the byte at `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A syntax, type or unknown-key error from the TOML reader, with the key
/// path recovered from its span.
fn toml_problem(text: &str, err: &toml::de::Error) -> Problem {
    let mut message = humanize(err.message());
    let Some(span) = err.span() else {
        return Problem {
            line: None,
            key: String::new(),
            message,
        };
    };
    let mut key = key_at(text, &span);
    if err.message() == "duplicate key" {
        // The second definition is not in the parsed tree: name it from the text.
        let name = text.get(span.clone()).map(str::trim).unwrap_or_default();
        if !name.is_empty() {
            message = format!("duplicate key `{name}`");
            if key.is_empty() {
                key = match table_before(text, span.start) {
                    Some(table) => format!("{table}.{name}"),
                    None => name.to_owned(),
                };
            }
        }
    }
    Problem {
        line: Some(line_of(text, span.start)),
        key,
        message,
    }
}

/// The path of the table whose header is the last one before `offset`.
fn table_before(text: &str, offset: usize) -> Option<String> {
    fn visit(
        value: &Spanned<DeValue<'_>>,
        path: &str,
        offset: usize,
        best: &mut Option<(usize, String)>,
    ) {
        match value.get_ref() {
            DeValue::Table(table) => {
                let start = value.span().start;
                if start <= offset && best.as_ref().is_none_or(|(b, _)| start >= *b) {
                    *best = Some((start, path.to_owned()));
                }
                for (k, v) in table {
                    visit(
                        v,
                        &format!("{path}.{}", key_segment(k.get_ref())),
                        offset,
                        best,
                    );
                }
            }
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    visit(item, &format!("{path}[{i}]"), offset, best);
                }
            }
            _ => {}
        }
    }
    let (doc, _) = DeTable::parse_recoverable(text);
    let mut best = None;
    for (k, v) in doc.get_ref() {
        visit(v, &key_segment(k.get_ref()), offset, &mut best);
    }
    best.map(|(_, path)| path)
}

/// The path (`routes[1].scope`) of the innermost key or value whose span
/// contains `target`; empty if there is none (a syntax error between keys).
fn key_at(text: &str, target: &Range<usize>) -> String {
    let (doc, _) = DeTable::parse_recoverable(text);
    let mut best: Option<(usize, String)> = None;
    walk_table(doc.get_ref(), "", target, &mut best);
    best.map(|(_, path)| path).unwrap_or_default()
}

fn walk_table(
    table: &DeTable<'_>,
    prefix: &str,
    target: &Range<usize>,
    best: &mut Option<(usize, String)>,
) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key_segment(key.get_ref())
        } else {
            format!("{prefix}.{}", key_segment(key.get_ref()))
        };
        consider(&key.span(), &path, target, best);
        walk_value(value, &path, target, best);
    }
}

fn walk_value(
    value: &Spanned<DeValue<'_>>,
    path: &str,
    target: &Range<usize>,
    best: &mut Option<(usize, String)>,
) {
    consider(&value.span(), path, target, best);
    match value.get_ref() {
        DeValue::Table(table) => walk_table(table, path, target, best),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_value(item, &format!("{path}[{i}]"), target, best);
            }
        }
        _ => {}
    }
}

/// Keeps the narrowest span containing `target`; on a tie, the deeper path
/// (visited later).
fn consider(
    span: &Range<usize>,
    path: &str,
    target: &Range<usize>,
    best: &mut Option<(usize, String)>,
) {
    if span.start <= target.start && target.end <= span.end {
        let width = span.end - span.start;
        if best.as_ref().is_none_or(|(w, _)| width <= *w) {
            *best = Some((width, path.to_owned()));
        }
    }
}

/// A key as written in a path: bare if TOML allows it, else quoted.
fn key_segment(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

/// serde's wording, in TOML's terms.
fn humanize(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("invalid type: integer `") {
        if let Some((number, tail)) = rest.split_once('`') {
            if tail.starts_with(" as i128") {
                return format!("integer {number} is too large");
            }
        }
    }
    let mut m = message
        .replace("unknown field", "unknown key")
        .replace("missing field", "missing key")
        .replace("invalid type: map", "invalid type: table")
        .replace("invalid type: sequence", "invalid type: array")
        .replace("expected a sequence", "expected an array")
        .replace("expected i64", "expected an integer")
        .replace(" as i128", "");
    if let Some(at) = m.find("expected struct ") {
        m.truncate(at);
        m.push_str("expected a table");
    }
    m
}

// ---------------------------------------------------------------------------
// Validation: raw → validated, collecting every problem.
// ---------------------------------------------------------------------------

struct Checker<'t> {
    text: &'t str,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Checker<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        line_of(self.text, span.start)
    }

    fn report(&mut self, span: Option<&Range<usize>>, key: &str, message: impl Into<String>) {
        let problem = self.problem(span, key, message);
        self.problems.push(problem);
    }

    /// A setting that is accepted but does nothing.
    fn warn(&mut self, span: Option<&Range<usize>>, key: &str, message: impl Into<String>) {
        let problem = self.problem(span, key, message);
        self.warnings.push(problem);
    }

    fn problem(
        &self,
        span: Option<&Range<usize>>,
        key: &str,
        message: impl Into<String>,
    ) -> Problem {
        Problem {
            line: span.map(|s| self.line(s)),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// An integer in `min..=max`, or `default` when absent.
    fn int(&mut self, key: &str, value: &Opt<i64>, default: u64, min: u64, max: u64) -> u64 {
        let Some(v) = value else { return default };
        match u64::try_from(*v.get_ref()) {
            Ok(n) if (min..=max).contains(&n) => n,
            _ => {
                let bounds = if max == u64::MAX {
                    format!("must be at least {min}")
                } else {
                    format!("must be between {min} and {max}")
                };
                self.report(
                    Some(&v.span()),
                    key,
                    format!("{bounds}, got {}", v.get_ref()),
                );
                default
            }
        }
    }

    fn millis(&mut self, key: &str, value: &Opt<i64>, default: u64) -> Duration {
        Duration::from_millis(self.int(key, value, default, 1, u64::MAX))
    }

    fn socket_addr(&mut self, key: &str, value: &Opt<String>, default: &str) -> SocketAddr {
        let (text, span) = match value {
            Some(v) => (v.get_ref().as_str(), Some(v.span())),
            None => (default, None),
        };
        text.parse().unwrap_or_else(|_| {
            self.report(
                span.as_ref(),
                key,
                format!("{text:?} is not an IP address and port, like \"0.0.0.0:8080\" or \"[::1]:8080\""),
            );
            SocketAddr::from(([0, 0, 0, 0], 0))
        })
    }

    fn config(&mut self, raw: RawConfig, path: &Path) -> Config {
        let server = self.server(raw.server);
        let admin = self.admin(raw.admin, &server);
        let upstream = self.upstream(raw.upstream);
        let store = self.store(raw.store);
        let limits = self.limits(raw.limits);
        let (auth, declared) = self.auth(raw.auth);
        let routes = self.routes(raw.routes.unwrap_or_default(), &auth, &declared);
        let headers = self.headers(raw.headers);
        let log = self.log(raw.log);
        let metrics = self.metrics(raw.metrics);
        let reload = self.reload(raw.reload);
        Config {
            path: path.to_owned(),
            server,
            admin,
            upstream,
            store,
            limits,
            auth,
            routes,
            headers,
            log,
            metrics,
            reload,
            warnings: Vec::new(),
        }
    }

    fn server(&mut self, raw: Opt<RawServer>) -> ServerConfig {
        let (_, raw) = section(raw);
        let mut trusted_proxies = Vec::new();
        for (i, net) in raw
            .trusted_proxies
            .iter()
            .flat_map(|s| s.get_ref().iter())
            .enumerate()
        {
            match Cidr::parse(net.get_ref()) {
                Ok(c) => trusted_proxies.push(c),
                Err(message) => self.report(
                    Some(&net.span()),
                    &format!("server.trusted_proxies[{i}]"),
                    message,
                ),
            }
        }
        ServerConfig {
            listen: self.socket_addr("server.listen", &raw.listen, DEFAULT_SERVER_LISTEN),
            header_read_timeout: self.millis(
                "server.header_read_timeout_ms",
                &raw.header_read_timeout_ms,
                DEFAULT_HEADER_READ_TIMEOUT_MS,
            ),
            drain_timeout: Duration::from_millis(self.int(
                "server.drain_timeout_ms",
                &raw.drain_timeout_ms,
                DEFAULT_DRAIN_TIMEOUT_MS,
                *DRAIN_TIMEOUT_MS.start(),
                *DRAIN_TIMEOUT_MS.end(),
            )),
            trusted_proxies,
            body_read_timeout: self.millis(
                "server.body_read_timeout_ms",
                &raw.body_read_timeout_ms,
                DEFAULT_BODY_READ_TIMEOUT_MS,
            ),
            max_body_bytes: Some(self.int(
                "server.max_body_bytes",
                &raw.max_body_bytes,
                DEFAULT_MAX_BODY_BYTES,
                0,
                u64::MAX,
            ))
            .filter(|&n| n > 0),
            max_header_bytes: u32::try_from(self.int(
                "server.max_header_bytes",
                &raw.max_header_bytes,
                DEFAULT_MAX_HEADER_BYTES,
                *MAX_HEADER_BYTES.start(),
                *MAX_HEADER_BYTES.end(),
            ))
            .unwrap_or(u32::MAX),
            websocket: raw.websocket.map_or(DEFAULT_WEBSOCKET, Spanned::into_inner),
            tls: self.server_tls(raw.tls),
        }
    }

    /// `[server.tls]`: both files named, readable, matching, the key private.
    fn server_tls(&mut self, raw: Opt<RawServerTls>) -> Option<ServerTls> {
        let span = raw.as_ref().map(Spanned::span);
        let raw = raw?.into_inner();
        let mut file = |key: &str, value: &Opt<String>| match value {
            Some(v) if !v.get_ref().is_empty() => Some((PathBuf::from(v.get_ref()), v.span())),
            _ => {
                self.report(
                    span.as_ref(),
                    key,
                    "required with [server.tls]: a PEM file path",
                );
                None
            }
        };
        let cert = file("server.tls.cert", &raw.cert);
        let key = file("server.tls.key", &raw.key);
        let ((cert, cert_span), (key, key_span)) = (cert?, key?);
        if let Err(e) = crate::tls::load_certified_key(&cert, &key) {
            let (name, span) = if e.is_key {
                ("server.tls.key", key_span)
            } else {
                ("server.tls.cert", cert_span)
            };
            self.report(Some(&span), name, e.to_string());
            return None;
        }
        Some(ServerTls { cert, key })
    }

    fn admin(&mut self, raw: Opt<RawAdmin>, server: &ServerConfig) -> AdminConfig {
        let (_, raw) = section(raw);
        let listen = self.socket_addr("admin.listen", &raw.listen, DEFAULT_ADMIN_LISTEN);
        if listeners_clash(listen, server.listen) {
            let span = raw.listen.as_ref().map(Spanned::span);
            self.report(
                span.as_ref(),
                "admin.listen",
                format!(
                    "{listen} clashes with server.listen {}: the admin listener needs its own port",
                    server.listen
                ),
            );
        }
        let token_env = match &raw.token_env {
            None => DEFAULT_TOKEN_ENV.to_owned(),
            Some(v) => {
                let name = v.get_ref();
                if !valid_env_name(name) {
                    self.report(
                        Some(&v.span()),
                        "admin.token_env",
                        format!(
                            "{name:?} is not an environment variable name \
                             (letters, digits and _, not starting with a digit)"
                        ),
                    );
                }
                name.clone()
            }
        };
        AdminConfig { listen, token_env }
    }

    fn upstream(&mut self, raw: Opt<RawUpstream>) -> UpstreamConfig {
        let (span, raw) = section(raw);
        let (tls, authority, base_path) = match &raw.url {
            None => {
                let message = "required: the API to forward to, e.g. \
                               [upstream] url = \"http://127.0.0.1:3000\"";
                self.report(span.as_ref(), "upstream.url", message);
                (false, Authority::from_static("invalid"), String::new())
            }
            Some(url) => match parse_upstream_url(url.get_ref()) {
                Ok(parts) => parts,
                Err(message) => {
                    self.report(Some(&url.span()), "upstream.url", message);
                    (false, Authority::from_static("invalid"), String::new())
                }
            },
        };
        let protocol = match &raw.protocol {
            None => DEFAULT_UPSTREAM_PROTOCOL,
            Some(p) => match p.get_ref().as_str() {
                "http1" => UpstreamProtocol::Http1,
                "http2" => UpstreamProtocol::Http2,
                "auto" => UpstreamProtocol::Auto,
                other => {
                    self.report(
                        Some(&p.span()),
                        "upstream.protocol",
                        format!("must be \"http1\", \"http2\" or \"auto\", not {other:?}"),
                    );
                    DEFAULT_UPSTREAM_PROTOCOL
                }
            },
        };
        let ca = match &raw.ca {
            None => None,
            Some(v) if !tls => {
                self.report(
                    Some(&v.span()),
                    "upstream.ca",
                    "applies only to an https:// upstream.url",
                );
                None
            }
            Some(v) => {
                let path = PathBuf::from(v.get_ref());
                match crate::tls::load_ca(&path) {
                    Ok(certs) => Some(UpstreamCa { path, certs }),
                    Err(e) => {
                        self.report(Some(&v.span()), "upstream.ca", e.to_string());
                        None
                    }
                }
            }
        };
        let pool_max_idle = self.int(
            "upstream.pool_max_idle_per_host",
            &raw.pool_max_idle_per_host,
            DEFAULT_UPSTREAM_POOL_MAX_IDLE as u64,
            0,
            u64::MAX,
        );
        UpstreamConfig {
            tls,
            authority,
            base_path,
            timeout: self.millis(
                "upstream.timeout_ms",
                &raw.timeout_ms,
                DEFAULT_UPSTREAM_TIMEOUT_MS,
            ),
            connect_timeout: self.millis(
                "upstream.connect_timeout_ms",
                &raw.connect_timeout_ms,
                DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS,
            ),
            pool_idle_timeout: self.millis(
                "upstream.pool_idle_timeout_ms",
                &raw.pool_idle_timeout_ms,
                DEFAULT_UPSTREAM_POOL_IDLE_TIMEOUT_MS,
            ),
            pool_max_idle_per_host: usize::try_from(pool_max_idle).unwrap_or(usize::MAX),
            keep_credential: raw
                .keep_credential
                .map_or(DEFAULT_KEEP_CREDENTIAL, Spanned::into_inner),
            protocol,
            ca,
        }
    }

    fn store(&mut self, raw: Opt<RawStore>) -> StoreConfig {
        let (span, raw) = section(raw);
        let backend = raw
            .backend
            .as_ref()
            .map_or("memory", |b| b.get_ref().as_str());
        let backend_span = raw.backend.as_ref().map(Spanned::span);
        let backend = match backend {
            "memory" => {
                // SPEC.md's own example sets url beside backend = "memory" and
                // calls itself a complete working config: a warning, not an error.
                if let Some(url) = &raw.url {
                    self.warn(
                        Some(&url.span()),
                        "store.url",
                        "ignored because store.backend is \"memory\"; \
                         set backend = \"redis\" to use it, or remove it",
                    );
                }
                StoreBackend::Memory
            }
            "redis" => match &raw.url {
                None => {
                    let at = backend_span.or(span);
                    self.report(
                        at.as_ref(),
                        "store.url",
                        "required when store.backend is \"redis\", \
                         e.g. url = \"redis://127.0.0.1:6379/0\"",
                    );
                    StoreBackend::Memory
                }
                Some(url) => {
                    if let Err(message) = check_redis_url(url.get_ref()) {
                        self.report(Some(&url.span()), "store.url", message);
                    }
                    StoreBackend::Redis {
                        url: url.get_ref().clone(),
                    }
                }
            },
            "redis-cluster" => {
                let urls = self.redis_urls("store.urls", &raw.urls, backend_span.or(span.clone()));
                StoreBackend::RedisCluster { urls }
            }
            "redis-sentinel" => {
                let at = backend_span.or(span.clone());
                let sentinels = self.redis_urls("store.sentinels", &raw.sentinels, at.clone());
                let master_name = match &raw.master_name {
                    Some(m) if !m.get_ref().trim().is_empty() => m.get_ref().clone(),
                    Some(m) => {
                        self.report(Some(&m.span()), "store.master_name", "is empty");
                        String::new()
                    }
                    None => {
                        self.report(
                            at.as_ref(),
                            "store.master_name",
                            "required when store.backend is \"redis-sentinel\", \
                             e.g. master_name = \"mymaster\"",
                        );
                        String::new()
                    }
                };
                StoreBackend::RedisSentinel {
                    sentinels,
                    master_name,
                }
            }
            other => {
                self.report(
                    backend_span.as_ref(),
                    "store.backend",
                    format!(
                        "unknown backend {other:?} (known: \"memory\", \"redis\", \
                         \"redis-cluster\", \"redis-sentinel\")"
                    ),
                );
                StoreBackend::Memory
            }
        };
        let timeout_ms = self.int(
            "store.timeout_ms",
            &raw.timeout_ms,
            DEFAULT_STORE_TIMEOUT_MS,
            *STORE_TIMEOUT_MS.start(),
            *STORE_TIMEOUT_MS.end(),
        );
        // Keys that only one backend reads.
        let unused = [
            (
                "store.url",
                raw.url.as_ref().map(Spanned::span),
                matches!(backend, StoreBackend::Redis { .. } | StoreBackend::Memory),
            ),
            (
                "store.urls",
                raw.urls.as_ref().map(Spanned::span),
                matches!(backend, StoreBackend::RedisCluster { .. }),
            ),
            (
                "store.sentinels",
                raw.sentinels.as_ref().map(Spanned::span),
                matches!(backend, StoreBackend::RedisSentinel { .. }),
            ),
            (
                "store.master_name",
                raw.master_name.as_ref().map(Spanned::span),
                matches!(backend, StoreBackend::RedisSentinel { .. }),
            ),
        ];
        for (key, at, used) in unused {
            if let (Some(at), false) = (at, used) {
                self.report(
                    Some(&at),
                    key,
                    format!(
                        "is not read by store.backend = {:?}",
                        backend_name(&backend)
                    ),
                );
            }
        }
        let failure_mode = match &raw.failure_mode {
            None => FailureMode::default(),
            Some(f) => match f.get_ref().as_str() {
                "closed" => FailureMode::Closed,
                "open" => FailureMode::Open,
                other => {
                    self.report(
                        Some(&f.span()),
                        "store.failure_mode",
                        format!("unknown mode {other:?} (known: \"closed\", \"open\")"),
                    );
                    FailureMode::default()
                }
            },
        };
        let replicas = self.int(
            "store.replicas",
            &raw.replicas,
            DEFAULT_STORE_REPLICAS,
            1,
            *STORE_REPLICAS.end(),
        );
        let max_in_flight = self.int(
            "store.max_in_flight",
            &raw.max_in_flight,
            DEFAULT_STORE_MAX_IN_FLIGHT,
            1,
            *STORE_MAX_IN_FLIGHT.end(),
        );
        let access = self.redis_access(&raw, &backend);
        StoreConfig {
            backend,
            timeout: Duration::from_millis(timeout_ms),
            failure_mode,
            replicas,
            max_in_flight: usize::try_from(max_in_flight).unwrap_or(usize::MAX),
            access,
        }
    }

    /// A non-empty list of redis:// URLs (seed nodes or sentinels).
    fn redis_urls(
        &mut self,
        key: &str,
        raw: &Opt<Vec<Spanned<String>>>,
        missing_at: Option<Range<usize>>,
    ) -> Vec<String> {
        let Some(list) = raw else {
            self.report(
                missing_at.as_ref(),
                key,
                "required by this store.backend, e.g. [\"redis://127.0.0.1:7000\"]",
            );
            return Vec::new();
        };
        if list.get_ref().is_empty() {
            self.report(
                Some(&list.span()),
                key,
                "is empty; list at least one redis:// URL",
            );
        }
        for url in list.get_ref() {
            if let Err(message) = check_redis_url(url.get_ref()) {
                self.report(Some(&url.span()), key, message);
            }
        }
        list.get_ref().iter().map(|u| u.get_ref().clone()).collect()
    }

    fn limits(&mut self, raw: Opt<RawLimits>) -> Limits {
        let (_, raw) = section(raw);
        Limits {
            per_minute: self.int(
                "limits.per_minute",
                &raw.per_minute,
                DEFAULT_PER_MINUTE,
                1,
                u64::MAX,
            ),
            monthly: self.int("limits.monthly", &raw.monthly, DEFAULT_MONTHLY, 1, u64::MAX),
        }
    }

    /// The validated section, and the scopes as listed (configured ones in
    /// file order, then the built-ins) for "known: ..." messages.
    fn auth(&mut self, raw: Opt<RawAuth>) -> (AuthConfig, Vec<String>) {
        let (_, raw) = section(raw);
        let mut declared: Vec<String> = Vec::new();
        for (i, scope) in raw
            .scopes
            .iter()
            .flat_map(|s| s.get_ref().iter())
            .enumerate()
        {
            let key = format!("auth.scopes[{i}]");
            let name = scope.get_ref();
            if let Err(message) = check_scope(name) {
                self.report(Some(&scope.span()), &key, message);
            } else if declared.contains(name) {
                self.report(
                    Some(&scope.span()),
                    &key,
                    format!("scope {name:?} is listed twice"),
                );
            } else {
                declared.push(name.clone());
            }
        }
        for builtin in BUILTIN_SCOPES {
            if !declared.iter().any(|s| s == builtin) {
                declared.push(builtin.to_owned());
            }
        }
        let bcrypt_cost = self.int(
            "auth.bcrypt_cost",
            &raw.bcrypt_cost,
            u64::from(DEFAULT_BCRYPT_COST),
            u64::from(*BCRYPT_COST.start()),
            u64::from(*BCRYPT_COST.end()),
        );
        let cache_capacity = self.int(
            "auth.cache_capacity",
            &raw.cache_capacity,
            DEFAULT_CACHE_CAPACITY as u64,
            1,
            u64::MAX,
        );
        let max_failures = self.int(
            "auth.max_failures_per_minute",
            &raw.max_failures_per_minute,
            u64::from(DEFAULT_MAX_FAILURES_PER_MINUTE),
            u64::from(*MAX_FAILURES_PER_MINUTE.start()),
            u64::from(*MAX_FAILURES_PER_MINUTE.end()),
        );
        let auth = AuthConfig {
            scopes: declared.iter().cloned().collect(),
            bcrypt_cost: u32::try_from(bcrypt_cost).unwrap_or(DEFAULT_BCRYPT_COST),
            cache_capacity: usize::try_from(cache_capacity).unwrap_or(usize::MAX),
            max_failures_per_minute: u32::try_from(max_failures)
                .unwrap_or(DEFAULT_MAX_FAILURES_PER_MINUTE),
        };
        (auth, declared)
    }

    fn routes(
        &mut self,
        raw: Vec<Spanned<RawRoute>>,
        auth: &AuthConfig,
        declared: &[String],
    ) -> Vec<Route> {
        // (route, span of its table) for the routes without problems.
        let mut valid: Vec<(usize, Route, Range<usize>)> = Vec::new();
        for (i, spanned) in raw.into_iter().enumerate() {
            let span = spanned.span();
            let raw = spanned.into_inner();
            let before = self.problems.len();

            let path = match &raw.path {
                None => {
                    self.report(
                        Some(&span),
                        &format!("routes[{i}].path"),
                        "required: the path prefix this route matches, e.g. path = \"/api/v1\"",
                    );
                    String::new()
                }
                Some(p) => normalize_route_path(p.get_ref()).unwrap_or_else(|message| {
                    self.report(Some(&p.span()), &format!("routes[{i}].path"), message);
                    String::new()
                }),
            };

            let methods = raw.methods.as_ref().map(|list| {
                if list.get_ref().is_empty() {
                    self.report(
                        Some(&list.span()),
                        &format!("routes[{i}].methods"),
                        "is empty, so the route could never match; remove the key to match any method",
                    );
                }
                let mut methods: Vec<http::Method> = Vec::new();
                for (j, m) in list.get_ref().iter().enumerate() {
                    let key = format!("routes[{i}].methods[{j}]");
                    match parse_method(m.get_ref()) {
                        Err(message) => self.report(Some(&m.span()), &key, message),
                        Ok(method) if methods.contains(&method) => {
                            self.report(Some(&m.span()), &key, format!("method {method} is listed twice"));
                        }
                        Ok(method) => methods.push(method),
                    }
                }
                methods
            });

            let scope = raw.scope.as_ref().map(|s| {
                let name = s.get_ref();
                if !auth.scopes.contains(name) {
                    self.report(
                        Some(&s.span()),
                        &format!("routes[{i}].scope"),
                        format!("unknown scope {name:?} (known: {})", declared.join(", ")),
                    );
                }
                name.clone()
            });

            if self.problems.len() == before {
                valid.push((
                    i,
                    Route {
                        path,
                        methods,
                        scope,
                    },
                    span,
                ));
            }
        }
        self.unreachable_routes(&valid);
        valid.into_iter().map(|(_, route, _)| route).collect()
    }

    /// First match wins, so a route that an earlier one fully covers never matches.
    fn unreachable_routes(&mut self, routes: &[(usize, Route, Range<usize>)]) {
        for (n, (j, later, span)) in routes.iter().enumerate() {
            let cover = routes[..n]
                .iter()
                .find(|(_, earlier, _)| covers(earlier, later));
            if let Some((i, earlier, earlier_span)) = cover {
                let message = format!(
                    "unreachable: routes[{i}] (line {}, path {:?}, {}) matches every request \
                     this route would (first match wins); move this route above it or remove it",
                    self.line(earlier_span),
                    earlier.path,
                    describe_methods(&earlier.methods),
                );
                self.report(Some(span), &format!("routes[{j}]"), message);
            }
        }
    }

    fn headers(&mut self, raw: Opt<RawHeaders>) -> HeadersConfig {
        let (_, raw) = section(raw);
        HeadersConfig {
            ietf: raw.ietf.map_or(DEFAULT_HEADERS_IETF, Spanned::into_inner),
        }
    }

    fn log(&mut self, raw: Opt<RawLog>) -> LogConfig {
        let (_, raw) = section(raw);
        let format = match &raw.format {
            None => LogFormat::default(),
            Some(f) => match f.get_ref().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    self.report(
                        Some(&f.span()),
                        "log.format",
                        format!("unknown format {other:?} (known: \"text\", \"json\")"),
                    );
                    LogFormat::default()
                }
            },
        };
        let level = match &raw.level {
            None => DEFAULT_LOG_LEVEL.to_owned(),
            Some(l) => {
                let text = l.get_ref();
                if text.trim().is_empty() {
                    self.report(
                        Some(&l.span()),
                        "log.level",
                        "is empty; use a level like \"info\" or a filter like \"tollgate=debug,info\"",
                    );
                } else if let Err(e) = tracing_subscriber::EnvFilter::try_new(text) {
                    self.report(
                        Some(&l.span()),
                        "log.level",
                        format!("{text:?} is not a level or filter directive: {e}"),
                    );
                }
                text.clone()
            }
        };
        LogConfig { format, level }
    }

    fn metrics(&mut self, raw: Opt<RawMetrics>) -> MetricsConfig {
        let (_, raw) = section(raw);
        let max = self.int(
            "metrics.per_client_max",
            &raw.per_client_max,
            DEFAULT_METRICS_PER_CLIENT_MAX as u64,
            *METRICS_PER_CLIENT_MAX.start(),
            *METRICS_PER_CLIENT_MAX.end(),
        );
        MetricsConfig {
            per_client: raw
                .per_client
                .map_or(DEFAULT_METRICS_PER_CLIENT, Spanned::into_inner),
            per_client_max: usize::try_from(max).unwrap_or(DEFAULT_METRICS_PER_CLIENT_MAX),
        }
    }

    fn reload(&mut self, raw: Opt<RawReload>) -> ReloadConfig {
        let (_, raw) = section(raw);
        let interval_ms = self.int(
            "reload.interval_ms",
            &raw.interval_ms,
            DEFAULT_RELOAD_INTERVAL_MS,
            *RELOAD_INTERVAL_MS.start(),
            *RELOAD_INTERVAL_MS.end(),
        );
        ReloadConfig {
            watch: raw.watch.map_or(DEFAULT_RELOAD_WATCH, Spanned::into_inner),
            interval: Duration::from_millis(interval_ms),
        }
    }
}

// ---------------------------------------------------------------------------
// Value checks, each returning the message for a bad value.
// ---------------------------------------------------------------------------

/// Two listeners that cannot both bind: same non-zero port, and the same
/// address or either one a wildcard.
fn listeners_clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `http[s]://host[:port][/base]` → TLS or not, authority, base path without a trailing slash.
fn parse_upstream_url(url: &str) -> Result<(bool, Authority, String), String> {
    if url.contains('#') {
        return Err(format!("{url:?} has a fragment (\"#...\"); remove it"));
    }
    let uri: http::Uri = url.parse().map_err(|e| {
        format!("{url:?} is not a valid URL ({e}); expected e.g. \"http://127.0.0.1:3000\"")
    })?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some(other) => {
            return Err(format!(
                "scheme must be \"http\" or \"https\", not {other:?}"
            ))
        }
        None => {
            return Err(format!(
                "{url:?} is not an absolute URL; expected e.g. \"http://127.0.0.1:3000\""
            ))
        }
    };
    let Some(authority) = uri.authority().cloned() else {
        return Err(format!("{url:?} has no host"));
    };
    if authority.as_str().contains('@') {
        return Err("must not contain credentials (user:password@)".to_owned());
    }
    let host = authority.host();
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    // `Authority::port_u16` cannot tell "no port" from "port 99999".
    let port = authority
        .as_str()
        .strip_prefix(host)
        .and_then(|rest| rest.strip_prefix(':'));
    if let Some(port) = port {
        if !port.parse::<u16>().is_ok_and(|n| n != 0) {
            return Err(format!("port {port:?} is not a port number (1-65535)"));
        }
    }
    if uri.query().is_some() {
        return Err(format!("{url:?} has a query (\"?...\"); remove it"));
    }
    let base_path = uri.path().trim_end_matches('/').to_owned();
    Ok((tls, authority, base_path))
}

/// The `store.backend` value naming a backend.
pub fn backend_name(b: &StoreBackend) -> &'static str {
    match b {
        StoreBackend::Memory => "memory",
        StoreBackend::Redis { .. } => "redis",
        StoreBackend::RedisCluster { .. } => "redis-cluster",
        StoreBackend::RedisSentinel { .. } => "redis-sentinel",
    }
}

/// A `redis://` or `rediss://` URL the redis client accepts. Messages never
/// repeat the URL: it may hold a password.
fn check_redis_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(
            "must be a redis:// or rediss:// URL, e.g. \"redis://127.0.0.1:6379/0\"".to_owned(),
        );
    }
    let Some(parsed) = redis::parse_redis_url(url) else {
        return Err("is not a valid URL; expected e.g. \"redis://127.0.0.1:6379/0\"".to_owned());
    };
    if parsed.fragment().is_some() {
        // The redis crate reads `#insecure` as "skip certificate verification".
        return Err(
            "has a fragment (\"#...\"); remove it: there is no \"#insecure\", \
                    certificates are always verified"
                .to_owned(),
        );
    }
    parsed.into_connection_info().map(drop).map_err(|e| {
        let text = e.to_string();
        // RedisError's Display appends " - <kind>"; the description is enough.
        let description = text.split(" - ").next().unwrap_or_default();
        format!("cannot be used: {description}")
    })
}

/// `^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.*-]+)*$`, at most [`MAX_SCOPE_LEN`] bytes.
fn check_scope(scope: &str) -> Result<(), String> {
    let shape = "a scope is letters, digits, _ . - and : separators \
                 (* allowed after the first :), like \"read:charge_points\"";
    if scope.is_empty() {
        return Err(format!("empty scope; {shape}"));
    }
    if scope.len() > MAX_SCOPE_LEN {
        return Err(format!(
            "scope {scope:?} is longer than {MAX_SCOPE_LEN} characters"
        ));
    }
    let mut parts = scope.split(':');
    let head_ok = parts.next().is_some_and(|head| {
        !head.is_empty()
            && head
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    });
    let tail_ok = parts.all(|part| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'*'))
    });
    if head_ok && tail_ok {
        Ok(())
    } else {
        Err(format!("invalid scope {scope:?}: {shape}"))
    }
}

/// The methods a route may name.
const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
];

fn parse_method(method: &str) -> Result<http::Method, String> {
    let upper = method.to_ascii_uppercase();
    if !KNOWN_METHODS.contains(&upper.as_str()) {
        return Err(format!(
            "unknown HTTP method {method:?} (known: {})",
            KNOWN_METHODS.join(", ")
        ));
    }
    http::Method::from_bytes(upper.as_bytes()).map_err(|e| format!("{method:?}: {e}"))
}

/// Collapses duplicate slashes and strips a trailing one; refuses what a
/// request path could not literally contain, or would be normalised away.
fn normalize_route_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} must start with \"/\""));
    }
    for c in path.chars() {
        let why = match c {
            '%' => "percent-encoding (\"%\") is not supported; write the decoded character",
            '?' => "a route matches the path only; remove the query (\"?...\")",
            '#' => "a route matches the path only; remove the fragment (\"#...\")",
            c if c.is_whitespace() || c.is_control() => {
                "whitespace and control characters are not allowed"
            }
            c if c.is_ascii_alphanumeric() || "/-._~!$&'()*+,;=:@".contains(c) => continue,
            _ => "only letters, digits and -._~!$&'()*+,;=:@ may appear in a path",
        };
        return Err(format!("{path:?}: {why}"));
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return Err(format!(
            "{path:?}: \".\" and \"..\" segments are not allowed"
        ));
    }
    Ok(format!("/{}", segments.join("/")))
}

/// Does `earlier` match every request `later` would?
fn covers(earlier: &Route, later: &Route) -> bool {
    let prefix = earlier.path == "/"
        || later.path == earlier.path
        || later
            .path
            .strip_prefix(earlier.path.as_str())
            .is_some_and(|rest| rest.starts_with('/'));
    let methods = match (&earlier.methods, &later.methods) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(e), Some(l)) => l.iter().all(|m| e.contains(m)),
    };
    prefix && methods
}

fn describe_methods(methods: &Option<Vec<http::Method>>) -> String {
    match methods {
        None => "any method".to_owned(),
        Some(list) => list
            .iter()
            .map(http::Method::as_str)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

// ---------------------------------------------------------------------------
// `describe`: the validated config back in the file's shape.
// ---------------------------------------------------------------------------

#[derive(Serialize)]
struct Effective {
    server: EffServer,
    admin: EffAdmin,
    upstream: EffUpstream,
    store: EffStore,
    limits: EffLimits,
    auth: EffAuth,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<EffRoute>,
    headers: EffHeaders,
    log: EffLog,
    metrics: EffMetrics,
    reload: EffReload,
}

#[derive(Serialize)]
struct EffServer {
    listen: String,
    header_read_timeout_ms: u64,
    drain_timeout_ms: u64,
    trusted_proxies: Vec<String>,
    body_read_timeout_ms: u64,
    max_body_bytes: u64,
    max_header_bytes: u32,
    websocket: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<EffServerTls>,
}

#[derive(Serialize)]
struct EffServerTls {
    cert: String,
    key: String,
}

#[derive(Serialize)]
struct EffAdmin {
    listen: String,
    token_env: String,
}

#[derive(Serialize)]
struct EffUpstream {
    url: String,
    timeout_ms: u64,
    connect_timeout_ms: u64,
    pool_idle_timeout_ms: u64,
    pool_max_idle_per_host: u64,
    keep_credential: bool,
    protocol: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ca: Option<String>,
}

#[derive(Serialize)]
struct EffStore {
    backend: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    urls: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sentinels: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    master_name: Option<String>,
    timeout_ms: u64,
    failure_mode: &'static str,
    replicas: u64,
    max_in_flight: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ca: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_cert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password_env: Option<String>,
}

#[derive(Serialize)]
struct EffLimits {
    per_minute: u64,
    monthly: u64,
}

#[derive(Serialize)]
struct EffAuth {
    scopes: Vec<String>,
    bcrypt_cost: u32,
    cache_capacity: u64,
    max_failures_per_minute: u32,
}

#[derive(Serialize)]
struct EffRoute {
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    methods: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
}

#[derive(Serialize)]
struct EffHeaders {
    ietf: bool,
}

#[derive(Serialize)]
struct EffLog {
    format: &'static str,
    level: String,
}

#[derive(Serialize)]
struct EffMetrics {
    per_client: bool,
    per_client_max: u64,
}

#[derive(Serialize)]
struct EffReload {
    watch: bool,
    interval_ms: u64,
}

/// The path of a PEM file, for `describe`.
fn path_of(file: &Option<PemFile>) -> Option<String> {
    file.as_ref().map(|f| f.path.display().to_string())
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<&Config> for Effective {
    fn from(c: &Config) -> Self {
        let redact_all = |urls: &[String]| Some(urls.iter().map(|u| redact_url(u)).collect());
        let (url, urls, sentinels, master_name) = match &c.store.backend {
            StoreBackend::Memory => (None, None, None, None),
            StoreBackend::Redis { url } => (Some(redact_url(url)), None, None, None),
            StoreBackend::RedisCluster { urls } => (None, redact_all(urls), None, None),
            StoreBackend::RedisSentinel {
                sentinels,
                master_name,
            } => (None, None, redact_all(sentinels), Some(master_name.clone())),
        };
        Effective {
            server: EffServer {
                listen: c.server.listen.to_string(),
                header_read_timeout_ms: ms(c.server.header_read_timeout),
                drain_timeout_ms: ms(c.server.drain_timeout),
                trusted_proxies: c
                    .server
                    .trusted_proxies
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                body_read_timeout_ms: ms(c.server.body_read_timeout),
                max_body_bytes: c.server.max_body_bytes.unwrap_or(0),
                max_header_bytes: c.server.max_header_bytes,
                websocket: c.server.websocket,
                tls: c.server.tls.as_ref().map(|t| EffServerTls {
                    cert: t.cert.display().to_string(),
                    key: t.key.display().to_string(),
                }),
            },
            admin: EffAdmin {
                listen: c.admin.listen.to_string(),
                token_env: c.admin.token_env.clone(),
            },
            upstream: EffUpstream {
                url: c.upstream.url(),
                timeout_ms: ms(c.upstream.timeout),
                connect_timeout_ms: ms(c.upstream.connect_timeout),
                pool_idle_timeout_ms: ms(c.upstream.pool_idle_timeout),
                pool_max_idle_per_host: c.upstream.pool_max_idle_per_host as u64,
                keep_credential: c.upstream.keep_credential,
                protocol: c.upstream.protocol.as_str(),
                ca: c
                    .upstream
                    .ca
                    .as_ref()
                    .map(|ca| ca.path.display().to_string()),
            },
            store: EffStore {
                backend: backend_name(&c.store.backend),
                url,
                urls,
                sentinels,
                master_name,
                timeout_ms: ms(c.store.timeout),
                failure_mode: match c.store.failure_mode {
                    FailureMode::Closed => "closed",
                    FailureMode::Open => "open",
                },
                replicas: c.store.replicas,
                max_in_flight: c.store.max_in_flight as u64,
                ca: path_of(&c.store.access.ca),
                client_cert: path_of(&c.store.access.client_cert),
                client_key: path_of(&c.store.access.client_key),
                username_env: c.store.access.username_env.clone(),
                password_env: c.store.access.password_env.clone(),
            },
            limits: EffLimits {
                per_minute: c.limits.per_minute,
                monthly: c.limits.monthly,
            },
            auth: EffAuth {
                scopes: c.auth.scopes.iter().cloned().collect(),
                bcrypt_cost: c.auth.bcrypt_cost,
                cache_capacity: c.auth.cache_capacity as u64,
                max_failures_per_minute: c.auth.max_failures_per_minute,
            },
            routes: c
                .routes
                .iter()
                .map(|r| EffRoute {
                    path: r.path.clone(),
                    methods: r
                        .methods
                        .as_ref()
                        .map(|ms| ms.iter().map(|m| m.as_str().to_owned()).collect()),
                    scope: r.scope.clone(),
                })
                .collect(),
            headers: EffHeaders {
                ietf: c.headers.ietf,
            },
            log: EffLog {
                format: c.log.format.as_str(),
                level: c.log.level.clone(),
            },
            metrics: EffMetrics {
                per_client: c.metrics.per_client,
                per_client_max: c.metrics.per_client_max as u64,
            },
            reload: EffReload {
                watch: c.reload.watch,
                interval_ms: ms(c.reload.interval),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_paths_are_normalised() {
        for (given, want) in [
            ("/", "/"),
            ("//", "/"),
            ("/api/", "/api"),
            ("/api//v1///x/", "/api/v1/x"),
            ("/a:b@c/~d/e.f", "/a:b@c/~d/e.f"),
        ] {
            assert_eq!(normalize_route_path(given).as_deref(), Ok(want), "{given}");
        }
    }

    #[test]
    fn bad_route_paths_are_refused() {
        for bad in [
            "", "api", "/a/../b", "/a/./b", "/..", "/a%20b", "/a?b", "/a#b", "/a b", "/a\tb", "/é",
            "/a\"b", "/a\\b",
        ] {
            assert!(normalize_route_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scopes() {
        for ok in [
            "read",
            "read:charge_points",
            "a.b-c_d:e*:f",
            &"a".repeat(64),
        ] {
            assert_eq!(check_scope(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ":a",
            "a:",
            "a::b",
            "*:a",
            "a b",
            "a\n",
            "é",
            &"a".repeat(65),
        ] {
            assert!(check_scope(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn env_names() {
        for ok in ["A", "_", "TOLLGATE_ADMIN_TOKEN", "a1"] {
            assert!(valid_env_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "A=B"] {
            assert!(!valid_env_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn upstream_urls() {
        let ok = |url: &str| parse_upstream_url(url).map(|(_, a, p)| (a.to_string(), p));
        assert_eq!(ok("http://h"), Ok(("h".into(), "".into())));
        assert_eq!(ok("https://h:8443/b"), Ok(("h:8443".into(), "/b".into())));
        assert!(matches!(parse_upstream_url("https://h"), Ok((true, _, _))));
        assert!(matches!(parse_upstream_url("http://h"), Ok((false, _, _))));
        assert_eq!(ok("http://h:3000/"), Ok(("h:3000".into(), "".into())));
        assert_eq!(ok("http://h/base//"), Ok(("h".into(), "/base".into())));
        assert_eq!(ok("http://[::1]:8/b"), Ok(("[::1]:8".into(), "/b".into())));
        for bad in [
            "ftp://h",
            "h:3000",
            "/x",
            "http://h:0",
            "http://h:65536",
            "http://u:p@h",
            "http://h/?q",
            "http://h/#f",
            "http://h b",
        ] {
            assert!(parse_upstream_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redis_urls() {
        assert_eq!(check_redis_url("redis://127.0.0.1:6379/0"), Ok(()));
        assert_eq!(check_redis_url("redis://:pw@redis"), Ok(()));
        for bad in [
            "http://h",
            "127.0.0.1:6379",
            "redis://h/notadb",
            "redis://0.0.0.0",
            "unix:///tmp/r.sock",
        ] {
            assert!(check_redis_url(bad).is_err(), "{bad}");
        }
        // Messages never repeat the URL, which may hold a password.
        let err = check_redis_url("redis://:hunter2@h/x").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://user:hunter2@h:6380/2"),
            "redis://user:***@h:6380/2"
        );
        assert_eq!(redact_url("redis://:hunter2@h"), "redis://:***@h");
        assert_eq!(redact_url("redis://h:6379/0"), "redis://h:6379/0");
        assert_eq!(redact_url("weird://u:hunter2@h"), "weird://***@h");
    }

    #[test]
    fn listener_clashes() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(listeners_clash(a("0.0.0.0:80"), a("0.0.0.0:80")));
        assert!(listeners_clash(a("0.0.0.0:80"), a("127.0.0.1:80")));
        assert!(listeners_clash(a("[::1]:80"), a("[::]:80")));
        assert!(!listeners_clash(a("127.0.0.1:80"), a("127.0.0.2:80")));
        assert!(!listeners_clash(a("0.0.0.0:80"), a("0.0.0.0:81")));
        assert!(!listeners_clash(a("0.0.0.0:0"), a("0.0.0.0:0")));
    }

    #[test]
    fn route_coverage() {
        let r = |path: &str, methods: Option<&[&str]>| Route {
            path: path.into(),
            methods: methods.map(|ms| ms.iter().map(|m| parse_method(m).unwrap()).collect()),
            scope: None,
        };
        assert!(covers(&r("/", None), &r("/a", Some(&["GET"]))));
        assert!(covers(&r("/a", None), &r("/a/b", None)));
        assert!(covers(
            &r("/a", Some(&["GET", "POST"])),
            &r("/a", Some(&["POST"]))
        ));
        assert!(!covers(&r("/a", None), &r("/ab", None)));
        assert!(!covers(&r("/a/b", None), &r("/a", None)));
        assert!(!covers(&r("/a", Some(&["GET"])), &r("/a", None)));
        assert!(!covers(
            &r("/a", Some(&["GET"])),
            &r("/a", Some(&["GET", "PUT"]))
        ));
    }

    #[test]
    fn toml_errors_get_their_key_path_and_line() {
        let text = "[upstream]\nurl = \"http://h\"\n\n[server]\nlisten = 5\n";
        let err = match toml::from_str::<RawConfig>(text) {
            Err(e) => e,
            Ok(_) => panic!("accepted"),
        };
        let p = toml_problem(text, &err).to_string();
        assert!(p.starts_with("line 5: server.listen: invalid type"), "{p}");

        let text = "[[routes]]\npath = \"/\"\n[[routes]]\npath = \"/x\"\nbogus = 1\n";
        let err = match toml::from_str::<RawConfig>(text) {
            Err(e) => e,
            Ok(_) => panic!("accepted"),
        };
        let p = toml_problem(text, &err).to_string();
        assert!(
            p.starts_with("line 5: routes[1].bogus: unknown key `bogus`"),
            "{p}"
        );
    }

    #[test]
    fn serde_wording_is_translated() {
        assert_eq!(
            humanize("invalid type: integer `3`, expected struct RawServer"),
            "invalid type: integer `3`, expected a table"
        );
        assert_eq!(
            humanize("invalid type: map, expected a sequence"),
            "invalid type: table, expected an array"
        );
        assert_eq!(
            humanize("invalid type: integer `99999999999999999999` as i128, expected i64"),
            "integer 99999999999999999999 is too large"
        );
    }

    #[test]
    fn lines_are_one_based() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 99), 3);
    }
}
