//! The state one tollgate process serves from, built once from a [`Config`].

use std::sync::Arc;

use crate::auth::Authenticator;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, StoreBackend};
use crate::keymgmt::KeyService;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::proxy::forward::Upstream;
use crate::routes::RouteTable;
use crate::store::memory::MemoryStore;
use crate::store::redis::RedisStore;
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
}

impl App {
    /// Builds the process state. Does not connect to the store: a store that is
    /// down at start-up makes the process unready, not dead.
    pub fn new(config: Config) -> anyhow::Result<Arc<App>> {
        let store: SharedStore = match &config.store.backend {
            StoreBackend::Memory => Arc::new(MemoryStore::new(TimeSource::Store)),
            StoreBackend::Redis { url } => Arc::new(
                RedisStore::new(url, config.store.timeout, TimeSource::Store)
                    .map_err(|e| anyhow::anyhow!("store.url: {e}"))?,
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
            upstream: Upstream::new(&config.upstream).with_listener(&config.server),
            store,
            metrics,
            admin_token,
            clock,
            config,
        }))
    }

    /// The default limits of the config.
    pub fn defaults(&self) -> Limits {
        self.config.limits
    }
}
