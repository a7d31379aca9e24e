//! The TOML configuration: raw, deserialized with `deny_unknown_fields`, then
//! validated into [`Config`], whose types cannot hold a bad value.
//!
//! This module owns the file's contract (SPEC.md "Configuration (TOML)" and
//! `docs/configuration.md`): which keys exist, their defaults, what values
//! are accepted, and the wording of every error. Every error names the key
//! path (`routes[1].scope`) and, where the file gives it, the line; all
//! semantic problems are reported at once. It does no I/O beyond reading the
//! file (and the PEM files and environment variables that `[store]` names,
//! see `redis_access.rs`) and must not connect to anything: `tollgate check`
//! has to work offline.
//!
//! This file holds the validated types and the entry points ([`Config::load`],
//! [`Config::parse`]). The rest, by job:
//! - `defaults.rs`: every `DEFAULT_*` constant and accepted range (re-exported here);
//! - `raw.rs`: the file as written (serde structs with spans);
//! - `spans.rs`: TOML error positions (key path and line of a problem);
//! - `check.rs`: raw → validated, collecting every problem;
//! - `values.rs`: the checks of single values (URLs, scopes, paths, ...);
//! - `show.rs`: [`Config::describe`], what `tollgate check` prints;
//! - `redis_access.rs`: managed Redis TLS material and credentials.

mod check;
mod defaults;
mod raw;
mod redis_access;
mod show;
mod spans;
mod values;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::limits::policy::PlanLimits;
use crate::limits::Limits;
use crate::throttle::Cidr;

use check::Checker;
use raw::{RawConfig, RawStore};
use spans::{toml_problem, Problem};
use values::valid_env_name;

pub use defaults::*;
pub use redis_access::{PemFile, RedisAccess, Secret};

/// A configuration that has passed validation.
///
/// Serializes (see [`Config::describe`]) as the file it means: every key under its file
/// name and unit (`timeout_ms`), secrets masked or left out.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The file it was read from.
    #[serde(skip)]
    pub path: PathBuf,
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub upstream: UpstreamConfig,
    pub store: StoreConfig,
    pub limits: LimitsConfig,
    /// `[plans.<name>]`, by name.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub plans: std::collections::BTreeMap<String, PlanLimits>,
    pub auth: AuthConfig,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    pub headers: HeadersConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub reload: ReloadConfig,
    pub history: HistoryConfig,
    /// `[notify]`: quota threshold notifications; `None` without `url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifyConfig>,
    /// Settings accepted but without effect, formatted like problems
    /// (`line 18: store.url: ...`); `describe` shows them as comments.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Time a client has to send a request's headers (and, on a new
    /// connection, its first bytes).
    #[serde(rename = "header_read_timeout_ms", serialize_with = "show::millis")]
    pub header_read_timeout: Duration,
    /// After SIGTERM: how long in-flight requests get to finish.
    #[serde(rename = "drain_timeout_ms", serialize_with = "show::millis")]
    pub drain_timeout: Duration,
    /// Socket peers whose `X-Forwarded-For` names the client (for throttling).
    #[serde(serialize_with = "show::as_strings")]
    pub trusted_proxies: Vec<Cidr>,
    /// Longest pause while reading a request body; past it, 408.
    #[serde(rename = "body_read_timeout_ms", serialize_with = "show::millis")]
    pub body_read_timeout: Duration,
    /// Largest request body forwarded (`None`: unlimited); above it, 413.
    #[serde(serialize_with = "show::zero_if_none")]
    pub max_body_bytes: Option<u64>,
    /// Largest request head; above it, 431.
    pub max_header_bytes: u32,
    /// Forward WebSocket upgrades (`Upgrade: websocket`) and tunnel them.
    pub websocket: bool,
    /// `[server.tls]`: TLS on the public listener (restart-only; its files reload).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTls>,
}

/// `[server.tls]`: the listener's certificate chain and key files, checked
/// at load (they parse, match, and the key is not readable by others).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `upstream.protocol`: the HTTP version spoken to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
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
/// Serializes as its path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct UpstreamCa {
    pub path: PathBuf,
    /// The file's certificates, read at load.
    #[serde(skip)]
    pub certs: Vec<rustls::pki_types::CertificateDer<'static>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Name of the environment variable holding the admin token.
    pub token_env: String,
}

/// Serializes as the file's keys, `url` rebuilt from `tls`, `authority` and
/// `base_path` (the one `Serialize` written by hand, in `show.rs`).
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

///
/// Serializes as the file's `backend` key beside its own keys, URLs with
/// their password masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "backend", rename_all = "kebab-case")]
pub enum StoreBackend {
    Memory,
    Redis {
        #[serde(serialize_with = "show::redacted")]
        url: String,
    },
    /// Seed nodes of a Redis Cluster.
    RedisCluster {
        #[serde(serialize_with = "show::all_redacted")]
        urls: Vec<String>,
    },
    /// The primary Sentinel names `master_name`.
    RedisSentinel {
        #[serde(serialize_with = "show::all_redacted")]
        sentinels: Vec<String>,
        master_name: String,
    },
}

/// What the proxy does while the store cannot be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureMode {
    /// 503 `unavailable` for every request that needs the store.
    #[default]
    Closed,
    /// Keys this process has verified keep working under a local limiter
    /// (the client's limits divided by `replicas`); unknown keys get 503.
    Open,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreConfig {
    #[serde(flatten)]
    pub backend: StoreBackend,
    /// Bound on every store call, connecting included.
    #[serde(rename = "timeout_ms", serialize_with = "show::millis")]
    pub timeout: Duration,
    pub failure_mode: FailureMode,
    /// tollgate processes sharing the store; `failure_mode = "open"` divides
    /// each client's limits by it.
    pub replicas: u64,
    /// Most store calls waiting at once; beyond, 503 at once.
    pub max_in_flight: usize,
    /// Most admissions of different keys in one script call (one server,
    /// Sentinel's primary); 1: one call per admission. `None` for the
    /// backends that do not read it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_keys: Option<usize>,
    /// TLS material and credentials from the environment (managed Redis).
    #[serde(flatten)]
    pub access: RedisAccess,
}

/// `[limits]`: the defaults for clients that set none (and whose plan sets
/// none), the default shadow setting, and which outcomes are refunded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitsConfig {
    pub per_minute: u64,
    pub monthly: u64,
    /// Refusals by the limits are forwarded and counted instead (unless a
    /// route or plan says otherwise).
    pub shadow: bool,
    pub refund_on: Vec<RefundReason>,
}

impl LimitsConfig {
    /// The default limits.
    pub fn defaults(&self) -> Limits {
        Limits {
            per_minute: self.per_minute,
            monthly: self.monthly,
        }
    }

    /// Whether admitted requests with this outcome are given back.
    pub fn refunds(&self, reason: RefundReason) -> bool {
        self.refund_on.contains(&reason)
    }
}

/// `[limits] refund_on`: which outcomes of an admitted request give it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum RefundReason {
    /// tollgate answered 502/504: the upstream never answered.
    #[serde(rename = "unreachable")]
    Unreachable,
    /// The upstream answered 5xx.
    #[serde(rename = "5xx")]
    ServerError,
}

impl RefundReason {
    /// The config file's spelling (and the metric's `reason` label).
    pub fn as_str(self) -> &'static str {
        match self {
            RefundReason::Unreachable => "unreachable",
            RefundReason::ServerError => "5xx",
        }
    }

    pub fn parse(s: &str) -> Option<RefundReason> {
        match s {
            "unreachable" => Some(RefundReason::Unreachable),
            "5xx" => Some(RefundReason::ServerError),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AuthConfig {
    /// Configured scopes plus the built-in `read:api_keys` and `write:api_keys`.
    pub scopes: BTreeSet<String>,
    pub bcrypt_cost: u32,
    /// Most verified secrets remembered per process.
    pub cache_capacity: usize,
    /// Failed authentications per peer per minute before 429.
    pub max_failures_per_minute: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    /// Normalised path prefix, starting with `/`, no trailing slash (except `/` itself).
    pub path: String,
    /// `None`: any method.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "show::methods"
    )]
    pub methods: Option<Vec<http::Method>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Units one request counts against both limits (1..=10000).
    pub cost: u64,
    /// Shadow mode for this route; `None`: the plan's, else `[limits]`'.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<bool>,
}

/// `[history]`: the daily usage history (docs/billing.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HistoryConfig {
    /// Days a client-day of history is kept after it ends.
    pub days: u32,
}

/// `[notify]`: quota threshold notifications (docs/billing.md "Notifications").
/// Serializes as the file's keys; the secret read from `secret_env` is left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotifyConfig {
    /// Where each event is POSTed (http or https).
    pub url: String,
    /// Percent of the monthly quota, 1..=100, ascending, no duplicates.
    pub thresholds: Vec<u8>,
    /// The variable holding the signing secret.
    pub secret_env: String,
    /// Never serialized: [`Secret`] has no `Serialize`.
    #[serde(skip)]
    pub secret: Secret,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct HeadersConfig {
    pub ietf: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MetricsConfig {
    /// Label request counts with the client id (never a key id or secret).
    pub per_client: bool,
    /// Most distinct client labels; later clients are counted as `_other`.
    pub per_client_max: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReloadConfig {
    /// Poll the config file and reload when its content changes (SIGHUP always reloads).
    pub watch: bool,
    #[serde(rename = "interval_ms", serialize_with = "show::millis")]
    pub interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize)]
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

/// The `store.backend` value naming a backend.
pub fn backend_name(b: &StoreBackend) -> &'static str {
    match b {
        StoreBackend::Memory => "memory",
        StoreBackend::Redis { .. } => "redis",
        StoreBackend::RedisCluster { .. } => "redis-cluster",
        StoreBackend::RedisSentinel { .. } => "redis-sentinel",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
