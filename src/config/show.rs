//! What `tollgate check` prints: [`Config::describe`] renders the validated
//! config back in the file's shape, every default filled in, secrets masked.

use std::time::Duration;

use serde::Serialize;

use super::*;

impl Config {
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
