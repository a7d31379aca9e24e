//! The state one tollgate process serves from: what was built once from the
//! start-up config (the store, the authenticator, [`Boot`]'s restart-only
//! values), and the reloadable part, a [`Live`] snapshot behind an `ArcSwap`
//! that a config reload replaces whole. A request reads the snapshot once, at
//! its start, and uses that one snapshot throughout, so it never sees half of
//! an old config and half of a new one. `App` holds no whole [`Config`]: a
//! reloadable setting can only be read from the snapshot (see [`crate::settings`]).

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::auth::Authenticator;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, FailureMode, RedisAccess, StoreBackend};
use crate::degraded::Degraded;
use crate::keymgmt::KeyService;
use crate::limits::policy::{Plans, Policy};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::proxy::forward::Upstream;
use crate::refunds::{Refunds, REFUND_QUEUE_CAPACITY};
use crate::routes::RouteTable;
use crate::settings::{Boot, LiveConfig};
use crate::store::memory::MemoryStore;
use crate::store::redis::{Access, Bounds, RedisStore, Topology};
use crate::store::{SharedStore, TimeSource};
use crate::throttle::{FailureThrottle, PeerResolver, DEFAULT_MAX_TRACKED_PEERS};

/// Everything a request handler needs.
#[derive(Debug)]
pub struct App {
    /// The restart-only settings the process started with; everything a
    /// reload may change comes from [`App::live`].
    pub boot: Boot,
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
    /// Policies: refunds waiting for their store call (`[limits] refund_on`).
    pub refunds: Refunds,
}

/// The reloadable state: one consistent snapshot of the config in force.
#[derive(Debug)]
pub struct Live {
    /// The reloadable settings in force: those of the latest loaded file.
    pub config: LiveConfig,
    pub routes: RouteTable,
    pub upstream: Upstream,
    /// The plans and `[limits] shadow`, as admission takes them.
    pub plans: Arc<Plans>,
    /// Clients naming a plan the config does not define, already logged
    /// under this snapshot (so once per reload).
    pub unknown_plans: parking_lot::Mutex<std::collections::HashSet<String>>,
}

impl Live {
    /// The snapshot for `config`. `previous` lends its upstream client (and
    /// its pool of connections) when the upstream settings did not change.
    pub fn new(config: LiveConfig, previous: Option<&Live>) -> Live {
        let upstream = match previous {
            Some(p) if p.config.upstream == config.upstream => p.upstream.clone(),
            _ => Upstream::new(&config.upstream),
        }
        .with_listener(&config.server);
        Live {
            routes: RouteTable::new(config.routes.clone()),
            upstream,
            plans: Arc::new(Plans::new(config.plans.clone(), config.limits.shadow)),
            unknown_plans: Default::default(),
            config,
        }
    }

    /// The default limits of the config in force.
    pub fn defaults(&self) -> Limits {
        self.config.limits.defaults()
    }

    /// The policy of a request matching route `route` (`None`: no route):
    /// its cost and shadow setting, and the plans in force.
    pub fn policy(&self, route: Option<usize>) -> Policy {
        let r = route.and_then(|i| self.config.routes.get(i));
        Policy {
            cost: r.map_or(1, |r| r.cost),
            route_shadow: r.and_then(|r| r.shadow),
            plans: self.plans.clone(),
        }
    }

    /// Logs, once per client under this snapshot (so once per reload), that
    /// the client names a plan the config does not define; `true` the first time.
    pub fn note_unknown_plan(&self, client_id: &str) -> bool {
        let first = self.unknown_plans.lock().insert(client_id.to_owned());
        if first {
            let defined: Vec<&str> = self.plans.names().collect();
            tracing::warn!(
                client_id = %client_id,
                plans = ?defined,
                "the client names a plan the config does not define; it is served with [limits]"
            );
        }
        first
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
    pub fn new(config: &Config) -> anyhow::Result<Arc<App>> {
        let boot = Boot::new(config);
        let bounds = Bounds {
            timeout: boot.store.timeout,
            max_in_flight: boot.store.max_in_flight,
        };
        let topology = match &boot.store.backend {
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
        let topology_is_durable = topology.is_some();
        let store: SharedStore = match topology {
            None => {
                let s = MemoryStore::new(TimeSource::Store);
                s.set_history_days(boot.history_days);
                Arc::new(s)
            }
            Some(topology) => {
                let s = RedisStore::with_access(
                    &topology,
                    &store_access(&config.store.access),
                    bounds,
                    TimeSource::Store,
                )
                .map_err(|e| anyhow::anyhow!("store: {e}"))?
                .with_batch_keys(
                    boot.store
                        .batch_keys
                        .unwrap_or(crate::store::redis::DEFAULT_BATCH_KEYS),
                );
                s.set_history_days(boot.history_days);
                Arc::new(s)
            }
        };
        let metrics = Arc::new(Metrics::new());
        if let Some(n) = &boot.notify {
            let url = n
                .url
                .parse::<http::Uri>()
                .map_err(|_| anyhow::anyhow!("notify.url: not a URL"))?;
            let notifier =
                Notifier::new(url, n.thresholds.clone(), n.secret.clone(), metrics.clone());
            store.set_notifier(notifier.clone());
            // Started on the runtime serving requests (the app is built on it).
            notifier.start(store.clone(), topology_is_durable);
        }
        let admin_token = std::env::var(&boot.admin_token_env)
            .ok()
            .filter(|t| !t.is_empty());
        if admin_token.is_none() {
            tracing::warn!(
                env = %boot.admin_token_env,
                "admin token not set: the /admin/v1 API refuses every request"
            );
        }
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let throttle =
            FailureThrottle::new(boot.max_failures_per_minute, DEFAULT_MAX_TRACKED_PEERS);
        Ok(Arc::new(App {
            auth: Authenticator::new(
                store.clone(),
                metrics.clone(),
                boot.cache_capacity,
                throttle,
                clock.clone(),
            ),
            peers: PeerResolver::new(boot.trusted_proxies.clone()),
            keys: KeyService {
                store: store.clone(),
                bcrypt_cost: boot.bcrypt_cost,
                clock: clock.clone(),
            },
            live: ArcSwap::from_pointee(Live::new(LiveConfig::new(config), None)),
            refunds: Refunds::new(store.clone(), metrics.clone(), REFUND_QUEUE_CAPACITY),
            store,
            metrics,
            admin_token,
            clock,
            degraded: (boot.store.failure_mode == FailureMode::Open)
                .then(|| Degraded::new(boot.store.replicas)),
            boot,
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
