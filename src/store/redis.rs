//! The Redis store: state shared by any number of tollgate processes.
//!
//! Owns the Redis key layout ([`layout`]), the connection to Redis, and the
//! mapping of Redis failures to [`StoreError`]. The admission decision is one
//! Lua script (`admit.lua`) per request over keys that share the client's
//! hash tag, so it is atomic and runs unchanged on Redis Cluster. Time comes
//! from the script's `TIME` unless a test supplies a clock.
//!
//! Connection ([`Topology`]): one server, a Redis Cluster, or the primary
//! Sentinel names, all behind one [`Conn`] so the scripts and operations are
//! shared. For one server (and the sentinel's primary), one multiplexed
//! connection (requests from all tasks are pipelined on it) held by a
//! [`ConnectionManager`]; for a cluster, a cluster connection that routes
//! each command by its first key. Connections are opened by the first call
//! that needs one, so [`RedisStore::new`] never touches the network and
//! tollgate starts (and reports not-ready) while Redis is down; a sentinel
//! set-up is asked for the primary on every (re)connect, so a failover is
//! followed. Every call, connecting included, is bounded by the configured
//! timeout, and at most `max_in_flight` calls wait at once, and as many
//! admissions in the queues of the group commit (more fail at once with
//! `Unavailable`, so a hung Redis cannot pile up tasks). A
//! timeout or connection error drops the connection; the next call opens a
//! fresh one, so a hung (half-open or paused) server cannot wedge the store
//! and a restarted one is picked up without rebuilding anything.
//!
//! Admissions are exactly-once (docs/rate-limiting.md): every admission call
//! carries a [`CallId`] (its session and a sequence number) under which
//! `admit.lua` records its result, so the same call repeated (the cluster
//! connection retries a command up to [`CLUSTER_RETRIES`] times) counts
//! once. A call whose reply is lost is never blindly re-sent: `settle.lua`
//! asks by id whether it was applied (and fences it when it was not)
//! before a new call, with a new number, is made; a call still unsettled at
//! the deadline is voided (what it counted given back) once Redis answers
//! again, before its session sends anything else.
//!
//! TLS (`rediss://`, [`Access`]): the same topologies over rustls, with
//! the roots of `ca` (else the system's) and an optional client certificate;
//! for a sentinel set-up, the sentinels and the primary alike. Certificates
//! are always verified, hostname included. Credentials from the environment
//! replace the URL's. A TLS failure is a connection error like any other: the
//! call fails `Unavailable`, never falls back to plain TCP.
//!
//! Errors never carry the URL, the password or any stored value.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, RedisResult, Script, ServerErrorKind};

use super::group::{AdmitMany, Batch, GroupCommit, GroupKey};
use super::once::{CallId, Session, VOID_WINDOW};
use super::{AdmitRequest, Store, StoreError, TimeSource, UsageRequest};
use crate::clock::Clock;
use crate::limits::{Decision, LimitState, Verdict};
use crate::model::{Client, ClientPatch, ClientStatus, KeyRecord, PreviousSecret};

/// Every Redis key and hash field tollgate uses, defined once.
///
/// All keys of one client carry the hash tag `{c:<client_id>}` and so live
/// in one cluster slot; multi-key scripts touch only those. The two global
/// keys (`tg:clients`, `tg:keyidx:<key_id>`) are written by separate
/// commands.
pub mod layout {
    /// Set of all client ids.
    pub const CLIENTS: &str = "tg:clients";

    /// Hash: the client's fields and its monthly counter.
    pub fn client(client_id: &str) -> String {
        format!("tg:{{c:{client_id}}}:client")
    }
    /// Hash: one API key.
    pub fn key(client_id: &str, key_id: &str) -> String {
        format!("tg:{{c:{client_id}}}:key:{key_id}")
    }
    /// Sorted set: the client's key ids, scored by `created_at`.
    pub fn keys(client_id: &str) -> String {
        format!("tg:{{c:{client_id}}}:keys")
    }
    /// Hash: key name → key id, for per-client name uniqueness.
    pub fn names(client_id: &str) -> String {
        format!("tg:{{c:{client_id}}}:names")
    }
    /// Hash: the per-minute window (see `admit.lua`).
    pub fn window(client_id: &str) -> String {
        format!("tg:{{c:{client_id}}}:win")
    }
    /// String: key id → client id, to find a key from its id alone.
    pub fn key_index(key_id: &str) -> String {
        format!("tg:keyidx:{key_id}")
    }

    /// Fields of the client hash.
    pub mod client_field {
        pub const NAME: &str = "name";
        pub const STATUS: &str = "status";
        pub const PER_MINUTE: &str = "per_minute";
        pub const MONTHLY: &str = "monthly";
        pub const CREATED_AT: &str = "created_at";
        /// `YYYYMM` of the month `USED` counts (written by `admit.lua`).
        pub const MONTH: &str = "mon";
        pub const USED: &str = "used";
        /// Prefixes of an admission session's two fields (`s:<session>`,
        /// `r:<session>`, written by `admit.lua` and `settle.lua`; see
        /// `store::once`). The `r:` field is binary.
        pub const SESSION_PREFIXES: [&str; 2] = ["s:", "r:"];
    }

    /// Fields of a key hash.
    pub mod key_field {
        pub const CLIENT_ID: &str = "client_id";
        pub const NAME: &str = "name";
        /// Space-separated.
        pub const SCOPES: &str = "scopes";
        pub const HASH: &str = "hash";
        pub const PREFIX: &str = "prefix";
        pub const GEN: &str = "gen";
        pub const CREATED_AT: &str = "created_at";
        /// Empty or absent: never.
        pub const EXPIRES_AT: &str = "expires_at";
        /// Written by `admit.lua`.
        pub const LAST_USED_AT: &str = "last_used_at";
        /// The rotated-out secret (written by the rotate script, read by
        /// `admit.lua`): its hash, its generation, and the Unix millisecond
        /// from which it is refused.
        pub const PREV_HASH: &str = "prev_hash";
        pub const PREV_GEN: &str = "prev_gen";
        pub const PREV_UNTIL_MS: &str = "prev_until_ms";
    }
}

use layout::{client_field as cf, key_field as kf};

/// Check and count (or only read) one request. See the header of the file.
const ADMIT_LUA: &str = include_str!("admit.lua");

/// Was an admission call whose reply was lost applied? See the header of the file.
const SETTLE_LUA: &str = include_str!("settle.lua");

/// Creates the client hash unless it exists. KEYS: client. ARGV: field/value pairs.
const CREATE_CLIENT_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
";

/// Patches the client hash if it exists; returns it (nil when absent).
/// KEYS: client. ARGV: field/value pairs, possibly none.
const UPDATE_CLIENT_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if #ARGV > 0 then redis.call('HSET', KEYS[1], unpack(ARGV)) end
return redis.call('HGETALL', KEYS[1])
";

/// Stores a key. KEYS: client, key, keys, names. ARGV: key id, name,
/// created_at, then the key hash's field/value pairs.
/// Returns 1, or -1 no such client, -2 name taken, -3 key id in use.
const CREATE_KEY_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('EXISTS', KEYS[2]) == 1 then return -3 end
if redis.call('HSETNX', KEYS[4], ARGV[2], ARGV[1]) == 0 then return -2 end
redis.call('HSET', KEYS[2], unpack(ARGV, 4))
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
return 1
";

/// Deletes a key of a client. KEYS: key, keys, names. ARGV: key id, client id.
/// Returns 1 when deleted, 0 when there was no such key.
const REVOKE_KEY_LUA: &str = r"
local k = redis.call('HMGET', KEYS[1], 'client_id', 'name')
if not k[1] or k[1] ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if k[2] and redis.call('HGET', KEYS[3], k[2]) == ARGV[1] then
  redis.call('HDEL', KEYS[3], k[2])
end
return 1
";

/// Rotates a key's secret. KEYS: key. ARGV: client id, new hash, grace in
/// milliseconds, now in Unix milliseconds ("" to read `TIME`). Moves the
/// current hash and generation to the `prev_*` fields, valid until now +
/// grace, and stores the new hash with generation + 1. Returns the key hash
/// (HGETALL), or nil when the key does not exist in that client.
const ROTATE_KEY_LUA: &str = r"
local k = redis.call('HMGET', KEYS[1], 'client_id', 'hash', 'gen')
if not k[1] or k[1] ~= ARGV[1] then return false end
local gen = tonumber(k[3])
if not k[2] or gen == nil or gen < 1 or gen ~= math.floor(gen) then
  error({ err = 'TGCORRUPT key gen' })
end
local now_ms
if ARGV[4] ~= '' then
  now_ms = tonumber(ARGV[4])
else
  local t = redis.call('TIME')
  now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
redis.call('HSET', KEYS[1],
  'prev_hash', k[2],
  'prev_gen', string.format('%d', gen),
  'prev_until_ms', string.format('%d', now_ms + tonumber(ARGV[3])),
  'hash', ARGV[2],
  'gen', string.format('%d', gen + 1))
return redis.call('HGETALL', KEYS[1])
";

/// Verdict codes of `admit.lua`.
const VERDICTS: [Verdict; 7] = [
    Verdict::Admitted,
    Verdict::KeyInvalid,
    Verdict::ClientMissing,
    Verdict::ClientSuspended,
    Verdict::ScopeDenied,
    Verdict::RateLimited,
    Verdict::QuotaExhausted,
];

/// The error code `admit.lua` raises for data it cannot read.
const CORRUPT_CODE: &str = "TGCORRUPT";

/// The store over one Redis server. Clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnSlot,
    timeout: Duration,
    /// Permits for calls waiting on Redis; see [`Bounds::max_in_flight`].
    in_flight: Arc<tokio::sync::Semaphore>,
    /// `Some` only in tests: the script is given this clock's time instead of `TIME`.
    clock: Option<Arc<dyn Clock>>,
    /// `host:port`, for `Debug`; never the password.
    addr: String,
    /// Scrubbed from every error message, should a library ever echo it.
    password: Option<String>,
    admit: Script,
    settle: Script,
    /// Sessions whose last call's outcome is unknown (its requests got
    /// 503): that call's sequence number. Voided before the session sends
    /// another call.
    unsettled: Mutex<HashMap<String, u64>>,
    /// Names this store's admission sessions apart from every other store's.
    session_prefix: u64,
    /// Voids running in the background; at most `max_in_flight`.
    voids: Arc<tokio::sync::Semaphore>,
    create_client: Script,
    update_client: Script,
    create_key: Script,
    revoke_key: Script,
    rotate_key: Script,
    /// Concurrent admissions of one key, sent together (`super::group`).
    /// Holds the store weakly: its calls must not keep the store alive.
    group: GroupCommit<WeakStore>,
}

/// The handle [`GroupCommit`] runs admissions through.
#[derive(Clone)]
struct WeakStore(Weak<Inner>);

#[async_trait]
impl AdmitMany for WeakStore {
    async fn admit_many(
        &self,
        group: &GroupKey,
        n: u64,
        since: Instant,
    ) -> Result<Batch, StoreError> {
        let Some(inner) = self.0.upgrade() else {
            return Err(StoreError::Unavailable("the store was shut down".into()));
        };
        let deadline = since + inner.timeout;
        RedisStore { inner }
            .admit_exactly_once(group, n, deadline)
            .await
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("addr", &self.inner.addr)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// Where the Redis data lives: one server, a cluster, or a primary that
/// Sentinel names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// One server (`redis://host:port/db`).
    Single { url: String },
    /// A Redis Cluster, found from any of these seed nodes.
    Cluster { urls: Vec<String> },
    /// The primary of `master_name`, asked of these sentinels on every
    /// (re)connect. The first sentinel URL's username, password and
    /// database also apply to the primary.
    Sentinel {
        sentinels: Vec<String>,
        master_name: String,
    },
}

/// TLS material and credentials for the connections; all `None` for plain
/// `redis://` with the URL's own credentials. `Debug` shows none of it.
#[derive(Clone, Default)]
pub struct Access {
    /// PEM roots that verify the servers; `None`: the system's roots.
    pub ca: Option<Vec<u8>>,
    /// PEM certificate chain and private key: mutual TLS.
    pub client_identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The ACL user, replacing the URL's.
    pub username: Option<String>,
    /// The password, replacing the URL's.
    pub password: Option<String>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("ca", &self.ca.is_some())
            .field("client_identity", &self.client_identity.is_some())
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Access {
    fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self
                .client_identity
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.ca.clone(),
        }
    }

    fn has_tls_material(&self) -> bool {
        self.ca.is_some() || self.client_identity.is_some()
    }
}

/// Bounds on the store's calls.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Every call, connecting included, gives up after this.
    pub timeout: Duration,
    /// Most calls waiting on Redis at once, and most admissions queued
    /// behind them for the next batch; more fail at once with
    /// [`StoreError::Unavailable`].
    pub max_in_flight: usize,
}

/// Default bound on calls in flight.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

/// How a connection is made.
enum Target {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
    Sentinel(tokio::sync::Mutex<redis::sentinel::SentinelClient>),
}

/// One connection of any topology; commands, pipelines and scripts run on
/// it unchanged. A cluster connection routes each command (scripts by their
/// first key) to the slot's primary and follows `MOVED`.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The current connection, or none until the next call opens one.
struct ConnSlot {
    target: Target,
    config: ConnectionManagerConfig,
    current: Mutex<Option<(u64, Conn)>>,
    /// Held while opening a connection, so concurrent calls open one, not many.
    opening: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
}

impl ConnSlot {
    /// The current connection (and its id), opening one when there is none.
    /// A single server's connection is lazy (the first command connects); a
    /// cluster's reads the slot map here, a sentinel's asks the sentinels
    /// for the primary here. The caller bounds this with the timeout.
    async fn get(&self) -> RedisResult<(u64, Conn)> {
        if let Some(cur) = self.current() {
            return Ok(cur);
        }
        let _opening = self.opening.lock().await;
        if let Some(cur) = self.current() {
            return Ok(cur);
        }
        let conn = match &self.target {
            Target::Single(client) => Conn::Single(ConnectionManager::new_lazy_with_config(
                client.clone(),
                self.config.clone(),
            )?),
            Target::Cluster(client) => Conn::Cluster(client.get_async_connection().await?),
            Target::Sentinel(sentinel) => {
                let client = sentinel.lock().await.async_get_client().await?;
                Conn::Single(ConnectionManager::new_lazy_with_config(
                    client,
                    self.config.clone(),
                )?)
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        *self.current.lock() = Some((id, conn.clone()));
        Ok((id, conn))
    }

    fn current(&self) -> Option<(u64, Conn)> {
        self.current.lock().clone()
    }

    fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    /// Forgets connection `id` (if still current) so the next call opens a new one.
    fn drop_conn(&self, id: u64) {
        let mut current = self.current.lock();
        if matches!(&*current, Some((cur, _)) if *cur == id) {
            *current = None;
        }
    }
}

/// Attempts a cluster connection makes at one command: enough to follow a
/// `MOVED`/`ASK` redirect after a failover or resharding. An admission
/// retried this way after an I/O error repeats its call id, which
/// `admit.lua` answers from its record without counting again.
const CLUSTER_RETRIES: u32 = 2;

/// Concurrent reads when listing clients on a cluster.
const CLUSTER_LIST_CONCURRENCY: usize = 16;

impl RedisStore {
    /// Parses `url`; does not connect. Every later call, connecting
    /// included, gives up after `timeout` with [`StoreError::Unavailable`].
    pub fn new(url: &str, timeout: Duration, time: TimeSource) -> Result<RedisStore, StoreError> {
        RedisStore::with_topology(
            &Topology::Single {
                url: url.to_owned(),
            },
            Bounds {
                timeout,
                max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            },
            time,
        )
    }

    /// Parses the URLs of `topology`; does not connect.
    pub fn with_topology(
        topology: &Topology,
        bounds: Bounds,
        time: TimeSource,
    ) -> Result<RedisStore, StoreError> {
        RedisStore::with_access(topology, &Access::default(), bounds, time)
    }

    /// Parses the URLs of `topology` and prepares TLS and credentials from
    /// `access`; does not connect. TLS material with a `redis://` URL is refused.
    pub fn with_access(
        topology: &Topology,
        access: &Access,
        bounds: Bounds,
        time: TimeSource,
    ) -> Result<RedisStore, StoreError> {
        let invalid = |e: RedisError| {
            // The description names what is wrong (a PEM that does not
            // parse, ...); the redis crate's descriptions never hold the URL,
            // and the password is scrubbed should one ever.
            let text = e.to_string();
            let mut what = text.split(" - ").next().unwrap_or_default().to_owned();
            if let Some(p) = access.password.as_deref().filter(|p| !p.is_empty()) {
                what = what.replace(p, "***");
            }
            StoreError::Unavailable(format!("invalid redis settings: {what}"))
        };
        let timeout = bounds.timeout;
        let (target, info) = match topology {
            Topology::Single { url } => {
                let info = node_info(url, access).map_err(invalid)?;
                let client = redis::Client::open(info.clone()).map_err(invalid)?;
                (Target::Single(client), info)
            }
            Topology::Cluster { urls } => {
                let infos = node_infos(urls, access).map_err(invalid)?;
                let info = infos[0].clone();
                let mut builder = redis::cluster::ClusterClientBuilder::new(infos)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(CLUSTER_RETRIES);
                if let Some(p) = info.redis_settings().password() {
                    builder = builder.password(p);
                }
                if let Some(u) = info.redis_settings().username() {
                    builder = builder.username(u);
                }
                if is_tls(&info) {
                    // Also for the nodes the cluster names (CLUSTER SLOTS).
                    builder = builder.certs(access.certificates());
                }
                (Target::Cluster(builder.build().map_err(invalid)?), info)
            }
            Topology::Sentinel {
                sentinels,
                master_name,
            } => {
                let infos = node_infos(sentinels, access).map_err(invalid)?;
                let info = infos[0].clone();
                let client = if is_tls(&info) {
                    sentinel_over_tls(&infos, master_name, access)
                } else {
                    let node = redis::sentinel::SentinelNodeConnectionInfo::default()
                        .set_redis_connection_info(info.redis_settings().clone());
                    redis::sentinel::SentinelClient::build(
                        infos,
                        master_name.clone(),
                        Some(node),
                        redis::sentinel::SentinelServerType::Master,
                    )
                }
                .map_err(invalid)?;
                (Target::Sentinel(tokio::sync::Mutex::new(client)), info)
            }
        };
        let addr = info.addr().to_string();
        // The URL's password, or the one from the environment that replaced it.
        let password = info
            .redis_settings()
            .password()
            .filter(|p| !p.is_empty())
            .map(str::to_owned);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // One attempt per call: the slot opens a new connection on the next call.
            .set_number_of_retries(0);
        let clock = match time {
            TimeSource::Store => None,
            TimeSource::Clock(c) => Some(c),
        };
        Ok(RedisStore {
            inner: Arc::new_cyclic(|weak| Inner {
                conn: ConnSlot {
                    target,
                    config,
                    current: Mutex::new(None),
                    opening: tokio::sync::Mutex::new(()),
                    next_id: AtomicU64::new(0),
                },
                timeout,
                in_flight: Arc::new(tokio::sync::Semaphore::new(bounds.max_in_flight.max(1))),
                clock,
                addr,
                password,
                admit: Script::new(ADMIT_LUA),
                settle: Script::new(SETTLE_LUA),
                unsettled: Mutex::default(),
                session_prefix: Session::new_prefix(),
                voids: Arc::new(tokio::sync::Semaphore::new(bounds.max_in_flight.max(1))),
                create_client: Script::new(CREATE_CLIENT_LUA),
                update_client: Script::new(UPDATE_CLIENT_LUA),
                create_key: Script::new(CREATE_KEY_LUA),
                revoke_key: Script::new(REVOKE_KEY_LUA),
                rotate_key: Script::new(ROTATE_KEY_LUA),
                group: GroupCommit::new(WeakStore(weak.clone()), bounds.max_in_flight.max(1)),
            }),
        })
    }

    /// Runs one exchange with Redis, bounded by the timeout, mapping errors.
    async fn call<'a, T, F, Fut>(&'a self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>> + 'a,
    {
        let deadline = Instant::now() + self.inner.timeout;
        self.call_until(deadline, f).await.map_err(|e| e.error)
    }

    /// Runs one exchange with Redis, given up at `deadline`; a failure says
    /// whether the command may have reached Redis.
    async fn call_until<'a, T, F, Fut>(&'a self, deadline: Instant, f: F) -> Result<T, CallError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>> + 'a,
    {
        let inner = &self.inner;
        if Instant::now() >= deadline {
            return Err(CallError::unsent(StoreError::Unavailable(format!(
                "redis did not answer within {} ms",
                inner.timeout.as_millis()
            ))));
        }
        // Full: Redis is slow or hung and calls pile up; refuse, do not queue.
        let Ok(_permit) = inner.in_flight.try_acquire() else {
            return Err(CallError::unsent(StoreError::Unavailable(
                "too many store calls in flight".into(),
            )));
        };
        // The connection this call used, so a timeout drops that one only.
        let used = AtomicU64::new(u64::MAX);
        let exchange = async {
            let (id, conn) = inner.conn.get().await.map_err(|e| (None, e))?;
            used.store(id, Ordering::Relaxed);
            f(conn).await.map_err(|e| (Some(id), e))
        };
        match tokio::time::timeout_at(deadline.into(), exchange).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err((id, e))) => {
                if let Some(id) = id.filter(|_| drops_connection(&e)) {
                    inner.conn.drop_conn(id);
                }
                Err(CallError {
                    error: self.map_err(&e),
                    maybe_applied: id.is_some() && maybe_applied(&e),
                })
            }
            Err(_elapsed) => {
                let id = used.load(Ordering::Relaxed);
                if id != u64::MAX {
                    inner.conn.drop_conn(id);
                }
                Err(CallError {
                    error: StoreError::Unavailable(format!(
                        "redis did not answer within {} ms",
                        inner.timeout.as_millis()
                    )),
                    maybe_applied: id != u64::MAX,
                })
            }
        }
    }

    fn map_err(&self, e: &RedisError) -> StoreError {
        match e.kind() {
            ErrorKind::Parse | ErrorKind::UnexpectedReturnType => {
                StoreError::Corrupt("unexpected reply from redis".into())
            }
            _ if e.code() == Some("WRONGTYPE") => {
                StoreError::Corrupt("a tollgate key holds the wrong type".into())
            }
            _ if e.code() == Some(CORRUPT_CODE) => {
                // "<field> script: <sha>, on @user_script:<line>." → "<field>"
                let field = e
                    .detail()
                    .unwrap_or("")
                    .split(" script:")
                    .next()
                    .unwrap_or("");
                StoreError::Corrupt(format!("unreadable {}", self.scrub(field.trim())))
            }
            _ => self.unavailable(e),
        }
    }

    fn unavailable(&self, e: &RedisError) -> StoreError {
        let text = e.to_string();
        StoreError::Unavailable(format!("redis: {}{}", self.scrub(&text), hint(e, &text)))
    }

    /// Removes the password from a message, should it ever contain it.
    fn scrub(&self, msg: &str) -> String {
        match &self.inner.password {
            Some(p) => msg.replace(p.as_str(), "***"),
            None => msg.to_owned(),
        }
    }

    /// A client hash's text fields (its admission sessions left out).
    async fn hgetall_client(&self, key: String) -> Result<HashMap<String, String>, StoreError> {
        let raw: RawHash = self
            .call(|mut c| async move { redis::cmd("HGETALL").arg(key).query_async(&mut c).await })
            .await?;
        client_text_fields(raw)
    }

    /// The client a key belongs to, through the global key index; `None`
    /// when there is no such key, or when `owner` is given and differs.
    async fn owner_of(
        &self,
        key_id: &str,
        owner: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        let index = layout::key_index(key_id);
        let client_id: Option<String> = self
            .call(|mut c| async move { redis::cmd("GET").arg(index).query_async(&mut c).await })
            .await?;
        Ok(client_id.filter(|c| owner.is_none_or(|o| o == c)))
    }

    /// `""` for `TIME`, else the test clock's milliseconds.
    fn now_arg(&self) -> String {
        self.inner
            .clock
            .as_ref()
            .map(|c| c.now_ms().to_string())
            .unwrap_or_default()
    }

    /// Runs `admit.lua` in `mode` for `n` requests (admit; usage reads
    /// with `n` = 1) and decodes its reply. With `call`, the admission is
    /// recorded under that id (and refused if the id was settled).
    #[allow(clippy::too_many_arguments)]
    async fn run_admit(
        &self,
        mode: &str,
        client_id: &str,
        key: Option<(&str, u64)>,
        scope: Option<&str>,
        defaults: crate::limits::Limits,
        n: u64,
        call: Option<&CallId>,
        deadline: Instant,
    ) -> Result<Batch, CallError> {
        let (key_id, gen) = key.unwrap_or(("", 0));
        let mut inv = self.inner.admit.prepare_invoke();
        inv.key(layout::client(client_id))
            .key(layout::key(client_id, key_id))
            .key(layout::window(client_id));
        inv.arg(mode)
            .arg(client_id)
            .arg(key_id)
            .arg(gen.to_string())
            .arg(scope.map(|s| format!("+{s}")).unwrap_or_default())
            .arg(defaults.per_minute.to_string())
            .arg(defaults.monthly.to_string())
            .arg(self.now_arg())
            .arg(n.to_string());
        if let Some(call) = call {
            inv.arg(&call.session.state)
                .arg(call.seq.to_string())
                .arg(&call.session.record);
        }
        let reply: Vec<i64> = self
            .call_until(
                deadline,
                |mut c| async move { inv.invoke_async(&mut c).await },
            )
            .await?;
        if reply.first() == Some(&SETTLED) {
            // Only a repeat of a call tollgate has given up on gets this.
            return Err(CallError::unsent(StoreError::Unavailable(
                "admission call was settled before it ran".into(),
            )));
        }
        decode_batch(&reply).map_err(CallError::unsent)
    }

    /// Admits a batch exactly once: counted if and only if its requests get
    /// the decision. A call whose reply is lost is settled by id before
    /// anything is sent again; see the module documentation.
    async fn admit_exactly_once(
        &self,
        group: &GroupKey,
        n: u64,
        deadline: Instant,
    ) -> Result<Batch, StoreError> {
        let key = Some((group.key_id.as_str(), group.gen));
        let scope = group.scope.as_deref();
        let session = Session::of(self.inner.session_prefix, group);
        let pending = self.inner.unsettled.lock().get(session.as_str()).copied();
        if let Some(seq) = pending {
            // The session's last call may have counted requests answered
            // 503: give that back first, or send nothing.
            let call = CallId {
                session: session.clone(),
                seq,
            };
            let settled = self
                .settle(&group.client_id, &call, "void", deadline)
                .await?;
            self.settled(&group.client_id, &call, &settled);
        }
        loop {
            let call = CallId::next(&session);
            let sent_at = Instant::now();
            let lost = match self
                .run_admit(
                    "admit",
                    &group.client_id,
                    key,
                    scope,
                    group.defaults,
                    n,
                    Some(&call),
                    deadline,
                )
                .await
            {
                Ok(batch) => return Ok(batch),
                Err(e) if !e.maybe_applied => return Err(e.error),
                Err(e) => e.error,
            };
            match self.settle_until(&group.client_id, &call, deadline).await {
                Some(Settled::Applied(batch)) => return Ok(batch),
                // Fenced (or voided: given back): it counts nothing. Send
                // again, with a new id, while there is time.
                Some(Settled::NotApplied | Settled::Voided) if Instant::now() < deadline => {
                    continue
                }
                Some(Settled::NotApplied | Settled::Voided) => return Err(lost),
                None => {
                    // No answer in time: the requests get 503, so whatever
                    // the call counted must be given back once Redis answers.
                    self.inner
                        .unsettled
                        .lock()
                        .insert(session.as_str().to_owned(), call.seq);
                    self.void_later(group.client_id.clone(), call, sent_at);
                    return Err(lost);
                }
            }
        }
    }

    /// Asks (until `deadline`, on a new connection when the old one is
    /// gone) whether the call was applied, fencing it when it was not;
    /// `None` when no answer came in time.
    async fn settle_until(
        &self,
        client_id: &str,
        call: &CallId,
        deadline: Instant,
    ) -> Option<Settled> {
        let mut pause = SETTLE_BACKOFF_MIN;
        loop {
            match self.settle(client_id, call, "check", deadline).await {
                Ok(settled) => return Some(settled),
                Err(e) => {
                    tracing::debug!(error = %e, "checking a lost admission call");
                }
            }
            let now = Instant::now();
            if now + pause >= deadline {
                return None;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(SETTLE_BACKOFF_MAX);
        }
    }

    /// One `settle.lua` call in `mode` ("check" or "void").
    async fn settle(
        &self,
        client_id: &str,
        call: &CallId,
        mode: &str,
        deadline: Instant,
    ) -> Result<Settled, StoreError> {
        let mut inv = self.inner.settle.prepare_invoke();
        inv.key(layout::client(client_id))
            .key(layout::window(client_id))
            .arg(mode)
            .arg(&call.session.state)
            .arg(call.seq.to_string())
            .arg(&call.session.record)
            .arg(self.now_arg());
        let reply: Vec<i64> = self
            .call_until(
                deadline,
                |mut c| async move { inv.invoke_async(&mut c).await },
            )
            .await
            .map_err(|e| e.error)?;
        match reply.as_slice() {
            [] => Ok(Settled::NotApplied),
            [SETTLED] => Ok(Settled::Voided),
            reply => decode_batch(reply).map(Settled::Applied),
        }
    }

    /// Voids a call in the background (its requests were answered 503):
    /// retried until Redis answers or [`VOID_WINDOW`] has passed (after
    /// that, the session's next call still voids it before anything else).
    fn void_later(&self, client_id: String, call: CallId, sent_at: Instant) {
        let Ok(permit) = self.inner.voids.clone().try_acquire_owned() else {
            tracing::warn!(
                client_id = %client_id,
                call = %call,
                "too many admissions to settle; one whose reply was lost is left to the next call of its session"
            );
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        let give_up = sent_at + VOID_WINDOW;
        tokio::spawn(async move {
            let _permit = permit;
            let mut pause = SETTLE_BACKOFF_MIN;
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let store = RedisStore { inner };
                let deadline = Instant::now() + store.inner.timeout;
                match store.settle(&client_id, &call, "void", deadline).await {
                    Ok(settled) => {
                        store.settled(&client_id, &call, &settled);
                        return;
                    }
                    Err(e) if Instant::now() + pause >= give_up => {
                        // The session stays unsettled: its next call voids
                        // this one first, whenever that is.
                        tracing::warn!(
                            client_id = %client_id,
                            call = %call,
                            error = %e,
                            "an admission whose reply was lost could not be settled yet; it may have counted"
                        );
                        return;
                    }
                    Err(_) => {}
                }
                drop(store);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(SETTLE_BACKOFF_MAX);
            }
        });
    }

    /// Notes that `call` was voided (or found not applied): its session may
    /// send again.
    fn settled(&self, client_id: &str, call: &CallId, settled: &Settled) {
        if let Settled::Applied(batch) = settled {
            tracing::warn!(
                client_id = %client_id,
                call = %call,
                admissions = batch.admitted,
                "an admission whose reply was lost was voided"
            );
        }
        self.forget_unsettled(call);
    }

    fn forget_unsettled(&self, call: &CallId) {
        let mut unsettled = self.inner.unsettled.lock();
        if unsettled.get(call.session.as_str()) == Some(&call.seq) {
            unsettled.remove(call.session.as_str());
        }
    }
}

/// A failed exchange, and whether its command may have run.
#[derive(Debug)]
struct CallError {
    error: StoreError,
    /// `false` when the command certainly did not run: it was never sent,
    /// or Redis answered it with an error.
    maybe_applied: bool,
}

impl CallError {
    fn unsent(error: StoreError) -> CallError {
        CallError {
            error,
            maybe_applied: false,
        }
    }
}

/// What `settle.lua` found.
#[derive(Debug)]
enum Settled {
    /// The call ran; its recorded reply.
    Applied(Batch),
    /// The call did not run, and is fenced so that it never will.
    NotApplied,
    /// The call ran and was voided before.
    Voided,
}

/// `admit.lua` / `settle.lua`: the call id was settled (fenced or voided).
const SETTLED: i64 = -1;

/// Pauses between attempts at settling a call while Redis does not answer.
const SETTLE_BACKOFF_MIN: Duration = Duration::from_millis(5);
const SETTLE_BACKOFF_MAX: Duration = Duration::from_millis(200);

/// Whether a failed command may have run: not when Redis answered it with
/// an error, or the connection was refused or could not be made.
fn maybe_applied(e: &RedisError) -> bool {
    !(e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::Server(_)
                | ErrorKind::Extension
                | ErrorKind::Parse
                | ErrorKind::UnexpectedReturnType
                | ErrorKind::AuthenticationFailed
                | ErrorKind::InvalidClientConfig
                | ErrorKind::ClusterConnectionNotFound
        ))
}

/// Whether an error means the connection is no good and a new one is needed.
/// A reply that does not decode is a data problem, not a connection one.
fn drops_connection(e: &RedisError) -> bool {
    if matches!(e.kind(), ErrorKind::Parse | ErrorKind::UnexpectedReturnType) {
        return false;
    }
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
}

/// What to check, for the errors a wrong setting causes (TLS, credentials).
fn hint(e: &RedisError, text: &str) -> &'static str {
    if text.contains("invalid peer certificate") {
        "; the server's certificate must chain to store.ca (or a system root), \
         be valid now, and name the host of the URL"
    } else if e.kind() == ErrorKind::AuthenticationFailed {
        "; check the user and password (store.username_env, store.password_env or the URL)"
    } else {
        ""
    }
}

/// The connection info of `url` with the credentials of `access`, and for
/// `rediss://` its TLS material (else the system's roots).
fn node_info(url: &str, access: &Access) -> RedisResult<redis::ConnectionInfo> {
    use redis::IntoConnectionInfo;
    let info = url.into_connection_info()?;
    let mut settings = info.redis_settings().clone();
    if let Some(user) = &access.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = &access.password {
        settings = settings.set_password(password);
    }
    let info = info.set_redis_settings(settings);
    if is_tls(&info) {
        // Library users (tests) may not have installed it as main does.
        crate::tls::install_default_provider();
        let client = redis::Client::build_with_tls(info, access.certificates())?;
        Ok(client.get_connection_info().clone())
    } else if access.has_tls_material() {
        // Never a silent plaintext connection when TLS was asked for.
        Err(RedisError::from((
            ErrorKind::InvalidClientConfig,
            "TLS certificates given for a redis:// URL; use rediss://",
        )))
    } else {
        Ok(info)
    }
}

/// [`node_info`] of every URL; the first one's credentials and database
/// apply to all. At least one URL; all `rediss://` or none.
fn node_infos(urls: &[String], access: &Access) -> RedisResult<Vec<redis::ConnectionInfo>> {
    let infos = urls
        .iter()
        .map(|u| node_info(u, access))
        .collect::<RedisResult<Vec<_>>>()?;
    let Some(first) = infos.first() else {
        return Err(RedisError::from((
            ErrorKind::InvalidClientConfig,
            "no redis url",
        )));
    };
    if infos.iter().any(|i| is_tls(i) != is_tls(first)) {
        return Err(RedisError::from((
            ErrorKind::InvalidClientConfig,
            "redis:// and rediss:// URLs mixed",
        )));
    }
    Ok(infos)
}

fn is_tls(info: &redis::ConnectionInfo) -> bool {
    matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. })
}

/// A sentinel client that speaks TLS to the sentinels and to the primary
/// they name, with the roots and client certificate of `access` for both
/// (the plain `SentinelClient::build` would verify the primary against the
/// system roots only). The first URL's credentials and database apply to
/// the sentinels and the primary.
fn sentinel_over_tls(
    infos: &[redis::ConnectionInfo],
    master_name: &str,
    access: &Access,
) -> RedisResult<redis::sentinel::SentinelClient> {
    use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
    let settings = infos[0].redis_settings();
    let mut builder = SentinelClientBuilder::new(
        infos.iter().map(|i| i.addr().clone()),
        master_name,
        SentinelServerType::Master,
    )?
    .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure)
    .set_client_to_sentinel_certificates(access.certificates())
    .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
    .set_client_to_redis_certificates(access.certificates())
    .set_client_to_redis_db(settings.db());
    if let Some(user) = settings.username() {
        builder = builder
            .set_client_to_sentinel_username(user)
            .set_client_to_redis_username(user);
    }
    if let Some(password) = settings.password() {
        builder = builder
            .set_client_to_sentinel_password(password)
            .set_client_to_redis_password(password);
    }
    builder.build()
}

fn decode_batch(reply: &[i64]) -> Result<Batch, StoreError> {
    let bad = || StoreError::Corrupt("unexpected admit reply".into());
    let code = *reply.first().ok_or_else(bad)?;
    let verdict = *usize::try_from(code)
        .ok()
        .and_then(|i| VERDICTS.get(i))
        .ok_or_else(bad)?;
    let u = |n: i64| u64::try_from(n).map_err(|_| bad());
    match (verdict, reply) {
        (Verdict::KeyInvalid | Verdict::ClientMissing, [_]) => Ok(Batch {
            admitted: 0,
            last: Decision {
                verdict,
                state: None,
            },
        }),
        (
            _,
            &[_, now_ms, per_minute, remaining, reset_at, monthly, monthly_used, retry_at_ms, admitted],
        ) => Ok(Batch {
            admitted: u(admitted)?,
            last: Decision {
                verdict,
                state: Some(LimitState {
                    now_ms,
                    per_minute: u(per_minute)?,
                    remaining: u(remaining)?,
                    reset_at,
                    monthly: u(monthly)?,
                    monthly_used: u(monthly_used)?,
                    window_retry_at_ms: (retry_at_ms >= 0).then_some(retry_at_ms),
                }),
            },
        }),
        _ => Err(bad()),
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("unreadable {what}"))
}

fn required<'a>(
    h: &'a HashMap<String, String>,
    field: &str,
    what: &str,
) -> Result<&'a str, StoreError> {
    h.get(field)
        .map(String::as_str)
        .ok_or_else(|| corrupt(&format!("{what} {field}")))
}

fn parse_num<T: std::str::FromStr>(s: &str, field: &str, what: &str) -> Result<T, StoreError> {
    s.parse().map_err(|_| corrupt(&format!("{what} {field}")))
}

/// An optional number: absent or empty is `None`.
fn optional_num<T: std::str::FromStr>(
    h: &HashMap<String, String>,
    field: &str,
    what: &str,
) -> Result<Option<T>, StoreError> {
    match h.get(field).map(String::as_str) {
        None | Some("") => Ok(None),
        Some(s) => parse_num(s, field, what).map(Some),
    }
}

/// A hash as Redis returns it, values not yet decoded.
type RawHash = HashMap<String, redis::Value>;

/// The text fields of a client hash: its admission sessions (binary
/// records, `cf::SESSION_PREFIXES`) left out.
fn client_text_fields(raw: RawHash) -> Result<HashMap<String, String>, StoreError> {
    raw.into_iter()
        .filter(|(field, _)| !cf::SESSION_PREFIXES.iter().any(|p| field.starts_with(p)))
        .map(
            |(field, value)| match redis::from_redis_value::<String>(value) {
                Ok(v) => Ok((field, v)),
                Err(_) => Err(corrupt(&format!("client {field}"))),
            },
        )
        .collect()
}

fn client_from_hash(id: &str, h: &HashMap<String, String>) -> Result<Client, StoreError> {
    const WHAT: &str = "client";
    let status = required(h, cf::STATUS, WHAT)?;
    Ok(Client {
        id: id.to_owned(),
        name: h.get(cf::NAME).cloned().unwrap_or_default(),
        status: ClientStatus::parse(status).ok_or_else(|| corrupt("client status"))?,
        per_minute: optional_num(h, cf::PER_MINUTE, WHAT)?,
        monthly: optional_num(h, cf::MONTHLY, WHAT)?,
        created_at: parse_num(required(h, cf::CREATED_AT, WHAT)?, cf::CREATED_AT, WHAT)?,
    })
}

fn client_fields(c: &Client) -> Vec<(&'static str, String)> {
    let mut f = vec![
        (cf::NAME, c.name.clone()),
        (cf::STATUS, c.status.as_str().to_owned()),
        (cf::CREATED_AT, c.created_at.to_string()),
    ];
    if let Some(n) = c.per_minute {
        f.push((cf::PER_MINUTE, n.to_string()));
    }
    if let Some(n) = c.monthly {
        f.push((cf::MONTHLY, n.to_string()));
    }
    f
}

fn patch_fields(p: &ClientPatch) -> Vec<(&'static str, String)> {
    let mut f = Vec::new();
    if let Some(name) = &p.name {
        f.push((cf::NAME, name.clone()));
    }
    if let Some(status) = p.status {
        f.push((cf::STATUS, status.as_str().to_owned()));
    }
    if let Some(n) = p.per_minute {
        f.push((cf::PER_MINUTE, n.to_string()));
    }
    if let Some(n) = p.monthly {
        f.push((cf::MONTHLY, n.to_string()));
    }
    f
}

fn key_from_hash(id: &str, h: &HashMap<String, String>) -> Result<KeyRecord, StoreError> {
    const WHAT: &str = "key";
    let text = |field| required(h, field, WHAT).map(str::to_owned);
    Ok(KeyRecord {
        id: id.to_owned(),
        client_id: text(kf::CLIENT_ID)?,
        name: text(kf::NAME)?,
        scopes: required(h, kf::SCOPES, WHAT)?
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        hash: text(kf::HASH)?,
        prefix: text(kf::PREFIX)?,
        gen: parse_num(required(h, kf::GEN, WHAT)?, kf::GEN, WHAT)?,
        created_at: parse_num(required(h, kf::CREATED_AT, WHAT)?, kf::CREATED_AT, WHAT)?,
        expires_at: optional_num(h, kf::EXPIRES_AT, WHAT)?,
        last_used_at: optional_num(h, kf::LAST_USED_AT, WHAT)?,
        previous: match h.get(kf::PREV_HASH) {
            None => None,
            Some(hash) => Some(PreviousSecret {
                hash: hash.clone(),
                gen: parse_num(required(h, kf::PREV_GEN, WHAT)?, kf::PREV_GEN, WHAT)?,
                until_ms: parse_num(
                    required(h, kf::PREV_UNTIL_MS, WHAT)?,
                    kf::PREV_UNTIL_MS,
                    WHAT,
                )?,
            }),
        },
    })
}

fn key_fields(k: &KeyRecord) -> Vec<(&'static str, String)> {
    let mut f = vec![
        (kf::CLIENT_ID, k.client_id.clone()),
        (kf::NAME, k.name.clone()),
        (kf::SCOPES, k.scopes.join(" ")),
        (kf::HASH, k.hash.clone()),
        (kf::PREFIX, k.prefix.clone()),
        (kf::GEN, k.gen.to_string()),
        (kf::CREATED_AT, k.created_at.to_string()),
    ];
    if let Some(t) = k.expires_at {
        f.push((kf::EXPIRES_AT, t.to_string()));
    }
    if let Some(t) = k.last_used_at {
        f.push((kf::LAST_USED_AT, t.to_string()));
    }
    if let Some(p) = &k.previous {
        f.push((kf::PREV_HASH, p.hash.clone()));
        f.push((kf::PREV_GEN, p.gen.to_string()));
        f.push((kf::PREV_UNTIL_MS, p.until_ms.to_string()));
    }
    f
}

#[async_trait]
impl Store for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self
            .call(|mut c| async move { redis::cmd("PING").query_async(&mut c).await })
            .await?;
        Ok(())
    }

    /// Adds the id to `tg:clients` first, then creates the hash atomically.
    /// A failure in between leaves an id without a hash, which listings skip
    /// and a retried create completes; the other order could leave a client
    /// that exists but is never listed.
    async fn create_client(&self, client: &Client) -> Result<(), StoreError> {
        let id = client.id.clone();
        let _: i64 = self
            .call(|mut c| async move {
                redis::cmd("SADD")
                    .arg(layout::CLIENTS)
                    .arg(id)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let mut inv = self.inner.create_client.prepare_invoke();
        inv.key(layout::client(&client.id));
        for (field, value) in client_fields(client) {
            inv.arg(field).arg(value);
        }
        let created: i64 = self
            .call(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        if created == 1 {
            Ok(())
        } else {
            Err(StoreError::ClientExists)
        }
    }

    async fn get_client(&self, id: &str) -> Result<Option<Client>, StoreError> {
        let h = self.hgetall_client(layout::client(id)).await?;
        if h.is_empty() {
            return Ok(None);
        }
        client_from_hash(id, &h).map(Some)
    }

    async fn list_clients(&self) -> Result<Vec<Client>, StoreError> {
        let mut ids: Vec<String> = self
            .call(|mut c| async move {
                redis::cmd("SMEMBERS")
                    .arg(layout::CLIENTS)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        ids.sort();
        let hashes: Vec<HashMap<String, String>> = if self.inner.conn.is_cluster() {
            // The hashes live in different slots: one command each, a few at a time.
            use futures_util::{StreamExt, TryStreamExt};
            let reads: Vec<_> = ids
                .iter()
                .map(|id| self.hgetall_client(layout::client(id)))
                .collect();
            futures_util::stream::iter(reads)
                .buffered(CLUSTER_LIST_CONCURRENCY)
                .try_collect()
                .await?
        } else {
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("HGETALL").arg(layout::client(id));
            }
            let raw: Vec<RawHash> = self
                .call(|mut c| async move { pipe.query_async(&mut c).await })
                .await?;
            raw.into_iter()
                .map(client_text_fields)
                .collect::<Result<_, _>>()?
        };
        ids.iter()
            .zip(&hashes)
            // An id whose hash is missing is a create that did not finish.
            .filter(|(_, h)| !h.is_empty())
            .map(|(id, h)| client_from_hash(id, h))
            .collect()
    }

    async fn update_client(
        &self,
        id: &str,
        patch: &ClientPatch,
    ) -> Result<Option<Client>, StoreError> {
        let mut inv = self.inner.update_client.prepare_invoke();
        inv.key(layout::client(id));
        for (field, value) in patch_fields(patch) {
            inv.arg(field).arg(value);
        }
        let h: Option<RawHash> = self
            .call(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        match h {
            Some(h) => client_from_hash(id, &client_text_fields(h)?).map(Some),
            None => Ok(None),
        }
    }

    /// Writes the global index `tg:keyidx:<id>` FIRST, then the key in the
    /// client's slot. The index may thus point at a key that does not exist
    /// (a create that failed half-way), which every reader treats as "no
    /// such key"; the other order could leave a key that is listed and holds
    /// its name but that `get_key` and `revoke_key` cannot find.
    async fn create_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        let index = layout::key_index(&key.id);
        let (index2, cid) = (index.clone(), key.client_id.clone());
        let indexed: Option<String> = self
            .call(|mut c| async move {
                redis::cmd("SET")
                    .arg(index2)
                    .arg(cid)
                    .arg("NX")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if indexed.is_none() {
            return Err(StoreError::Corrupt("key id already in use".into()));
        }

        let cid = key.client_id.as_str();
        let mut inv = self.inner.create_key.prepare_invoke();
        inv.key(layout::client(cid))
            .key(layout::key(cid, &key.id))
            .key(layout::keys(cid))
            .key(layout::names(cid))
            .arg(&key.id)
            .arg(&key.name)
            .arg(key.created_at.to_string());
        for (field, value) in key_fields(key) {
            inv.arg(field).arg(value);
        }
        let outcome: i64 = self
            .call(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        let refused = match outcome {
            1 => return Ok(()),
            -1 => StoreError::NoSuchClient,
            -2 => StoreError::NameTaken,
            -3 => StoreError::Corrupt("key id already in use".into()),
            _ => StoreError::Corrupt("unexpected create_key reply".into()),
        };
        // The key was not written: withdraw the index (harmless if this fails).
        let cleanup: Result<i64, StoreError> = self
            .call(|mut c| async move { redis::cmd("DEL").arg(index).query_async(&mut c).await })
            .await;
        if let Err(e) = cleanup {
            tracing::warn!(error = %e, "could not remove the index of a key that was not created");
        }
        Err(refused)
    }

    async fn get_key(&self, key_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let Some(client_id) = self.owner_of(key_id, None).await? else {
            return Ok(None);
        };
        let key = layout::key(&client_id, key_id);
        let h: HashMap<String, String> = self
            .call(|mut c| async move { redis::cmd("HGETALL").arg(key).query_async(&mut c).await })
            .await?;
        if h.is_empty() {
            // An index left by a create that failed half-way or a revoke in progress.
            return Ok(None);
        }
        let record = key_from_hash(key_id, &h)?;
        if record.client_id != client_id {
            return Err(corrupt("key client_id"));
        }
        Ok(Some(record))
    }

    async fn list_keys(&self, client_id: &str) -> Result<Vec<KeyRecord>, StoreError> {
        let set = layout::keys(client_id);
        let ids: Vec<String> = self
            .call(|mut c| async move {
                redis::cmd("ZRANGE")
                    .arg(set)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGETALL").arg(layout::key(client_id, id));
        }
        let hashes: Vec<HashMap<String, String>> = self
            .call(|mut c| async move { pipe.query_async(&mut c).await })
            .await?;
        ids.iter()
            .zip(&hashes)
            // Revoked between the two reads.
            .filter(|(_, h)| !h.is_empty())
            .map(|(id, h)| key_from_hash(id, h))
            .collect()
    }

    /// Deletes the key in its client's slot first, then the global index, so
    /// a half-done revoke leaves only an index that points at nothing.
    async fn revoke_key(&self, key_id: &str, owner: Option<&str>) -> Result<bool, StoreError> {
        let Some(client_id) = self.owner_of(key_id, owner).await? else {
            return Ok(false);
        };
        let index = layout::key_index(key_id);
        let mut inv = self.inner.revoke_key.prepare_invoke();
        inv.key(layout::key(&client_id, key_id))
            .key(layout::keys(&client_id))
            .key(layout::names(&client_id))
            .arg(key_id)
            .arg(&client_id);
        let deleted: i64 = self
            .call(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        // The key is gone (or never was): the index must go too. Should this
        // fail, the index points at nothing, which readers treat as no key.
        let cleanup: Result<i64, StoreError> = self
            .call(|mut c| async move { redis::cmd("DEL").arg(index).query_async(&mut c).await })
            .await;
        if let Err(e) = cleanup {
            tracing::warn!(error = %e, "could not remove the index of a revoked key");
        }
        Ok(deleted == 1)
    }

    /// Finds the key's client through the index, then rotates atomically in
    /// the client's slot.
    async fn rotate_key(
        &self,
        key_id: &str,
        owner: Option<&str>,
        new_hash: &str,
        grace: Duration,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let Some(client_id) = self.owner_of(key_id, owner).await? else {
            return Ok(None);
        };
        let mut inv = self.inner.rotate_key.prepare_invoke();
        inv.key(layout::key(&client_id, key_id))
            .arg(&client_id)
            .arg(new_hash)
            .arg(grace.as_millis().to_string())
            .arg(self.now_arg());
        let h: Option<HashMap<String, String>> = self
            .call(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        match h {
            Some(h) => key_from_hash(key_id, &h).map(Some),
            None => Ok(None),
        }
    }

    async fn admit(&self, req: &AdmitRequest<'_>) -> Result<Decision, StoreError> {
        if req.key_id.is_empty() {
            // The script reads an empty key id as "no key check" (usage only).
            return Ok(Decision {
                verdict: Verdict::KeyInvalid,
                state: None,
            });
        }
        self.inner.group.admit(req).await
    }

    async fn usage(&self, req: &UsageRequest<'_>) -> Result<Decision, StoreError> {
        let deadline = Instant::now() + self.inner.timeout;
        let batch = self
            .run_admit(
                "usage",
                req.client_id,
                req.key,
                None,
                req.defaults,
                1,
                None,
                deadline,
            )
            .await
            .map_err(|e| e.error)?;
        Ok(batch.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(url: &str, access: &Access) -> RedisStore {
        let bounds = Bounds {
            timeout: Duration::from_millis(200),
            max_in_flight: 8,
        };
        RedisStore::with_access(
            &Topology::Single { url: url.into() },
            access,
            bounds,
            TimeSource::Store,
        )
        .unwrap()
    }

    #[test]
    fn the_password_from_the_environment_is_scrubbed_too() {
        let access = Access {
            password: Some("env-s3cret-42".into()),
            ..Access::default()
        };
        let s = store("redis://127.0.0.1:1/0", &access);
        assert_eq!(
            s.scrub("AUTH env-s3cret-42 failed"),
            "AUTH *** failed".to_owned()
        );
        assert!(!format!("{s:?} {access:?}").contains("env-s3cret-42"));
        // The URL's own password still is, when no variable replaces it.
        let s = store("redis://:url-s3cret@127.0.0.1:1/0", &Access::default());
        assert_eq!(s.scrub("x url-s3cret y"), "x *** y");
    }

    #[test]
    fn tls_material_with_a_plain_url_is_refused() {
        let access = Access {
            ca: Some(b"-----BEGIN CERTIFICATE-----".to_vec()),
            ..Access::default()
        };
        let bounds = Bounds {
            timeout: Duration::from_millis(200),
            max_in_flight: 8,
        };
        let err = RedisStore::with_access(
            &Topology::Single {
                url: "redis://127.0.0.1:1/0".into(),
            },
            &access,
            bounds,
            TimeSource::Store,
        )
        .unwrap_err();
        assert!(err.to_string().contains("use rediss://"), "{err}");
    }
}
