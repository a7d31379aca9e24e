//! The state one tollgate process serves from, built once from a [`Config`],
//! and the reloadable part of it: a [`Live`] snapshot behind an `ArcSwap`
//! that a config reload replaces whole. A request reads the snapshot once, at
//! its start, and uses that one snapshot throughout, so it never sees half of
//! an old config and half of a new one.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::auth::Authenticator;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, FailureMode, RedisAccess, StoreBackend};
use crate::degraded::Degraded;
use crate::keymgmt::KeyService;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::proxy::forward::Upstream;
use crate::routes::RouteTable;
use crate::store::memory::MemoryStore;
use crate::store::redis::{Access, Bounds, RedisStore, Topology};
use crate::store::{SharedStore, TimeSource};
use crate::throttle::{FailureThrottle, PeerResolver, DEFAULT_MAX_TRACKED_PEERS};

/// Everything a request handler needs.
#[derive(Debug)]
pub struct App {
    /// The config the process started with. Use it only for what a reload
    /// cannot change (listeners, store, admin token variable, log format,
    /// bcrypt cost, cache capacity); everything else comes from [`App::live`].
    pub config: Config,
    live: ArcSwap<Live>,
    pub store: SharedStore,
    pub auth: Authenticator,
    pub keys: KeyService,
    /// Which address a request's failed authentications are charged to.
    pub peers: PeerResolver,
    pub metrics: Arc<Metrics>,
    /// The admin API token; `None` disables the admin API.
    pub admin_token: Option<String>,
    pub clock: Arc<dyn Clock>,
    /// `Some` with `failure_mode = "open"`: local admission while the store is down.
    pub degraded: Option<Degraded>,
}

/// The reloadable state: one consistent snapshot of the config in force.
#[derive(Debug)]
pub struct Live {
    /// The config in force: the latest loaded file, with the settings that
    /// need a restart kept at their start-up values (see [`Live::effective`]).
    pub config: Config,
    pub routes: RouteTable,
    pub upstream: Upstream,
}

impl Live {
    /// The snapshot for `config`. `previous` lends its upstream client (and
    /// its pool of connections) when the upstream settings did not change.
    pub fn new(config: Config, previous: Option<&Live>) -> Live {
        let upstream = match previous {
            Some(p) if p.config.upstream == config.upstream => p.upstream.clone(),
            _ => Upstream::new(&config.upstream),
        }
        .with_listener(&config.server);
        Live {
            routes: RouteTable::new(config.routes.clone()),
            upstream,
            config,
        }
    }

    /// `loaded` with every setting that a running process cannot change
    /// taken from `boot`, the config the process started with.
    pub fn effective(mut loaded: Config, boot: &Config) -> Config {
        loaded.server.listen = boot.server.listen;
        loaded.server.header_read_timeout = boot.server.header_read_timeout;
        loaded.server.trusted_proxies = boot.server.trusted_proxies.clone();
        loaded.server.tls = boot.server.tls.clone();
        loaded.admin = boot.admin.clone();
        loaded.store = boot.store.clone();
        loaded.auth.bcrypt_cost = boot.auth.bcrypt_cost;
        loaded.auth.cache_capacity = boot.auth.cache_capacity;
        loaded.auth.max_failures_per_minute = boot.auth.max_failures_per_minute;
        loaded.log.format = boot.log.format;
        loaded
    }

    /// The default limits of the config in force.
    pub fn defaults(&self) -> Limits {
        self.config.limits
    }

    /// Whether to emit the IETF `RateLimit-Policy` / `RateLimit` fields.
    pub fn ietf(&self) -> bool {
        self.config.headers.ietf
    }
}

/// The store's view of the managed-Redis settings (TLS material, credentials).
fn store_access(a: &RedisAccess) -> Access {
    Access {
        ca: a.ca.as_ref().map(|f| f.pem.clone()),
        client_identity: a
            .client_cert
            .as_ref()
            .zip(a.client_key.as_ref())
            .map(|(c, k)| (c.pem.clone(), k.pem.clone())),
        username: a.username.clone(),
        password: a.password.as_ref().map(|p| p.expose().to_owned()),
    }
}

impl App {
    /// Builds the process state. Does not connect to the store: a store that is
    /// down at start-up makes the process unready, not dead.
    pub fn new(config: Config) -> anyhow::Result<Arc<App>> {
        let bounds = Bounds {
            timeout: config.store.timeout,
            max_in_flight: config.store.max_in_flight,
        };
        let topology = match &config.store.backend {
            StoreBackend::Memory => None,
            StoreBackend::Redis { url } => Some(Topology::Single { url: url.clone() }),
            StoreBackend::RedisCluster { urls } => Some(Topology::Cluster { urls: urls.clone() }),
            StoreBackend::RedisSentinel {
                sentinels,
                master_name,
            } => Some(Topology::Sentinel {
                sentinels: sentinels.clone(),
                master_name: master_name.clone(),
            }),
        };
        let store: SharedStore = match topology {
            None => Arc::new(MemoryStore::new(TimeSource::Store)),
            Some(topology) => Arc::new(
                RedisStore::with_access(
                    &topology,
                    &store_access(&config.store.access),
                    bounds,
                    TimeSource::Store,
                )
                .map_err(|e| anyhow::anyhow!("store: {e}"))?,
            ),
        };
        let metrics = Arc::new(Metrics::new());
        let admin_token = std::env::var(&config.admin.token_env)
            .ok()
            .filter(|t| !t.is_empty());
        if admin_token.is_none() {
            tracing::warn!(
                env = %config.admin.token_env,
                "admin token not set: the /admin/v1 API refuses every request"
            );
        }
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let throttle = FailureThrottle::new(
            config.auth.max_failures_per_minute,
            DEFAULT_MAX_TRACKED_PEERS,
        );
        Ok(Arc::new(App {
            auth: Authenticator::new(
                store.clone(),
                metrics.clone(),
                config.auth.cache_capacity,
                throttle,
                clock.clone(),
            ),
            peers: PeerResolver::new(config.server.trusted_proxies.clone()),
            keys: KeyService {
                store: store.clone(),
                bcrypt_cost: config.auth.bcrypt_cost,
                clock: clock.clone(),
            },
            live: ArcSwap::from_pointee(Live::new(config.clone(), None)),
            store,
            metrics,
            admin_token,
            clock,
            degraded: (config.store.failure_mode == FailureMode::Open)
                .then(|| Degraded::new(config.store.replicas)),
            config,
        }))
    }

    /// The config snapshot in force. Read it once per request.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Puts `live` in force for every request that starts from now on;
    /// requests already running finish with the snapshot they started with.
    pub fn replace_live(&self, live: Live) {
        self.live.store(Arc::new(live));
    }

    /// The default limits of the config in force.
    pub fn defaults(&self) -> Limits {
        self.live.load().defaults()
    }
}
