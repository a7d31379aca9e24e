//! The state one tollgate process serves from, built once from a [`Config`].

use std::sync::Arc;

use crate::auth::Authenticator;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, FailureMode, StoreBackend};
use crate::degraded::Degraded;
use crate::keymgmt::KeyService;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::proxy::forward::Upstream;
use crate::routes::RouteTable;
use crate::store::memory::MemoryStore;
use crate::store::redis::{Bounds, RedisStore, Topology};
use crate::store::{SharedStore, TimeSource};

/// Everything a request handler needs.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub store: SharedStore,
    pub auth: Authenticator,
    pub keys: KeyService,
    pub routes: RouteTable,
    pub upstream: Upstream,
    pub metrics: Arc<Metrics>,
    /// The admin API token; `None` disables the admin API.
    pub admin_token: Option<String>,
    pub clock: Arc<dyn Clock>,
    /// `Some` with `failure_mode = "open"`: local admission while the store is down.
    pub degraded: Option<Degraded>,
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
                RedisStore::with_topology(&topology, bounds, TimeSource::Store)
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
        Ok(Arc::new(App {
            auth: Authenticator::new(store.clone(), metrics.clone(), config.auth.cache_capacity),
            keys: KeyService {
                store: store.clone(),
                bcrypt_cost: config.auth.bcrypt_cost,
                clock: clock.clone(),
            },
            routes: RouteTable::new(config.routes.clone()),
            upstream: Upstream::new(&config.upstream),
            store,
            metrics,
            admin_token,
            clock,
            degraded: (config.store.failure_mode == FailureMode::Open)
                .then(|| Degraded::new(config.store.replicas)),
            config,
        }))
    }

    /// The default limits of the config.
    pub fn defaults(&self) -> Limits {
        self.config.limits
    }
}
