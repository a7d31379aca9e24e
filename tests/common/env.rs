//! The end-to-end fixture most integration tests start from: a real
//! upstream, (for the Redis backend) a real `redis-server`, the real
//! tollgate binary on a config built from [`super::tollgate::config`], and an
//! HTTP client. Also: a client with a key in one call, a second tollgate
//! process on the same store, and reading one counter from `/metrics`.

use super::admin::{create_client, create_key};
use super::http::{Http, Reply};
use super::redis_server::RedisServer;
use super::tollgate::{config, memory_store, redis_store, tune, Tollgate};
use super::upstream::Upstream;
use super::Backend;

pub struct Env {
    pub upstream: Upstream,
    pub redis: Option<RedisServer>,
    pub tg: Tollgate,
    pub http: Http,
    /// The config `tg` runs on (the upstream filled in).
    pub config_text: String,
    store: String,
}

/// How an [`Env`] is configured; [`Env::setup`] gives the defaults.
pub struct Setup {
    backend: Backend,
    redis_timeout_ms: u64,
    extra: String,
    auth: String,
    server: String,
    text: Option<String>,
}

impl Env {
    /// The default setup on `backend`, started.
    pub async fn new(backend: Backend) -> Env {
        Env::setup(backend).start().await
    }

    /// Defaults: the test config, a Redis timeout of 1000 ms, nothing added.
    pub fn setup(backend: Backend) -> Setup {
        Setup {
            backend,
            redis_timeout_ms: 1000,
            extra: String::new(),
            auth: String::new(),
            server: String::new(),
            text: None,
        }
    }

    /// The `[store]` section `tg` runs on (for more processes on the same store).
    pub fn store(&self) -> &str {
        &self.store
    }

    /// A second tollgate process on the same config (so, on Redis, the same store).
    pub fn second_process(&self) -> Tollgate {
        Tollgate::start(&self.config_text)
    }

    /// A client with the given limits and one key holding `scopes`: `(key_id, secret)`.
    pub async fn client(
        &self,
        id: &str,
        limits: serde_json::Value,
        scopes: &[&str],
    ) -> (String, String) {
        create_client(&self.http, &self.tg, id, limits).await;
        create_key(&self.http, &self.tg, id, scopes).await
    }

    /// `GET path` on the public listener with `key` as `X-API-Key`.
    pub async fn get(&self, path: &str, key: &str) -> Reply {
        self.http.get_key(&self.tg.url(path), key).await
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let r = self.http.get(&self.tg.admin_url("/metrics"), &[]).await;
        String::from_utf8_lossy(&r.body).into_owned()
    }

    /// The value of one series of `/metrics` (0 when absent).
    pub async fn counter(&self, series: &str) -> u64 {
        counter(&self.metrics().await, series)
    }
}

impl Setup {
    /// The Redis store's `timeout_ms`.
    pub fn redis_timeout_ms(mut self, ms: u64) -> Setup {
        self.redis_timeout_ms = ms;
        self
    }

    /// Appended to the test config verbatim (routes, sections).
    pub fn extra(mut self, extra: &str) -> Setup {
        self.extra = extra.to_owned();
        self
    }

    /// Replace the test config's [`super::tollgate::AUTH_TUNING`] lines.
    pub fn auth(mut self, auth: &str) -> Setup {
        self.auth = auth.to_owned();
        self
    }

    /// Added to the test config's `[server]` section.
    pub fn server(mut self, server: &str) -> Setup {
        self.server = server.to_owned();
        self
    }

    /// A whole config instead of the test config: `{upstream}` is replaced
    /// by the upstream's URL and `{store}` by the `[store]` section.
    pub fn text(mut self, text: &str) -> Setup {
        self.text = Some(text.to_owned());
        self
    }

    pub async fn start(self) -> Env {
        let upstream = Upstream::start().await;
        let redis = match self.backend {
            Backend::Memory => None,
            Backend::Redis => Some(RedisServer::start()),
        };
        let store = match &redis {
            None => memory_store(),
            Some(r) => redis_store(&r.url(), self.redis_timeout_ms),
        };
        let config_text = match &self.text {
            Some(t) => t
                .replace("{upstream}", &upstream.url())
                .replace("{store}", &store),
            None => tune(
                &config(&upstream.url(), &store, &self.extra),
                &self.auth,
                &self.server,
            ),
        };
        let tg = Tollgate::start(&config_text);
        Env {
            upstream,
            redis,
            tg,
            http: Http::default(),
            config_text,
            store,
        }
    }
}

/// The value of one series in a Prometheus exposition (0 when absent).
pub fn counter(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap_or(0.0) as u64)
}
