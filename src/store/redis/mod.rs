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
//! On one server (and a Sentinel's primary), admission calls of different
//! keys that meet go to Redis together, one script call carrying several
//! admissions, each with its own id and reply ([`batch`]); a cluster sends
//! one script call per admission.
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
use super::{AdmitRequest, Refund, Store, StoreError, TimeSource, UsageRequest};
use crate::clock::Clock;
use crate::limits::policy::{Policy, PolicyOutcome};
use crate::limits::{Decision, LimitState, Verdict};
use crate::model::{
    Client, ClientPatch, ClientStatus, KeyRecord, PreviousSecret, DEFAULT_QUOTA_DAY,
    DEFAULT_QUOTA_TZ,
};

mod batch;
mod billing;
mod conn;
mod decode;
pub mod layout;
mod notify;
mod ops;
mod scripts;
mod settle;

pub use batch::DEFAULT_BATCH_KEYS;
use batch::{Admission, Args, Batcher};
use billing::*;
use conn::*;
pub use conn::{Access, Bounds, Conn, Topology, DEFAULT_MAX_IN_FLIGHT};
use decode::*;
use layout::{client_field as cf, key_field as kf};
use scripts::*;
use settle::*;

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
    /// `admit.lua` run once per admission of a cross-key batch (`batch`).
    admit_batch: Script,
    /// Admission calls of any key queued while one is in flight, sent
    /// together; `None` on a cluster (see `batch`).
    batch: Option<Batcher>,
    settle: Script,
    /// Notifications: `[notify]`, once set, and the script that leases them.
    notifier: std::sync::OnceLock<Arc<crate::notify::Notifier>>,
    notify_claim: Script,
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
    /// Each client's billing cycle as last seen (`billing`).
    cycles: Cycles,
    /// `[history] days`.
    history_days: std::sync::atomic::AtomicU32,
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
        let batch = match topology {
            Topology::Cluster { .. } => None,
            Topology::Single { .. } | Topology::Sentinel { .. } => {
                Some(Batcher::new(bounds.max_in_flight))
            }
        };
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
                admit_batch: batch::batch_script(ADMIT_LIB_LUA, ADMIT_ONE_LUA, ADMIT_BATCH_LUA),
                batch,
                settle: Script::new(SETTLE_LUA),
                notifier: std::sync::OnceLock::new(),
                notify_claim: Script::new(NOTIFY_CLAIM_LUA),
                unsettled: Mutex::default(),
                session_prefix: Session::new_prefix(),
                voids: Arc::new(tokio::sync::Semaphore::new(bounds.max_in_flight.max(1))),
                create_client: Script::new(CREATE_CLIENT_LUA),
                update_client: Script::new(UPDATE_CLIENT_LUA),
                create_key: Script::new(CREATE_KEY_LUA),
                revoke_key: Script::new(REVOKE_KEY_LUA),
                rotate_key: Script::new(ROTATE_KEY_LUA),
                cycles: Cycles::default(),
                history_days: std::sync::atomic::AtomicU32::new(crate::history::DEFAULT_DAYS),
                group: GroupCommit::new(WeakStore(weak.clone()), bounds.max_in_flight.max(1)),
            }),
        })
    }

    /// Sets the most admissions of different keys sent in one script call
    /// (`store.batch_keys`; 1: one call per admission). No effect on a cluster.
    pub fn with_batch_keys(self, n: usize) -> RedisStore {
        if let Some(b) = &self.inner.batch {
            b.set_per_call(n);
        }
        self
    }

    /// Notifications: hands the notifier the thresholds an `admit.lua`
    /// reply says were crossed (slot 13), as the script recorded them.
    fn hand_over(&self, client_id: &str, reply: &[i64], cycle: &crate::limits::cycle::Cycle) {
        let Some(n) = self.inner.notifier.get() else {
            return;
        };
        let (Some(&now_ms), Some(&limit), Some(&used), Some(&crossed)) =
            (reply.get(1), reply.get(5), reply.get(6), reply.get(12))
        else {
            return;
        };
        let (Ok(limit), Ok(used), Ok(crossed)) = (
            u64::try_from(limit),
            u64::try_from(used),
            u64::try_from(crossed),
        ) else {
            return;
        };
        if crossed == 0 {
            return;
        }
        let period = cycle.period_at(now_ms);
        for p in crate::notify::Pending::crossed(
            n.thresholds(),
            crossed,
            client_id,
            used,
            limit,
            (period.start_ms, period.end_ms),
            now_ms,
        ) {
            n.submit(p, true);
        }
    }

    /// Keeps `days` days of usage history (`[history] days`).
    pub fn set_history_days(&self, days: u32) {
        self.inner.history_days.store(days, Ordering::Relaxed);
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

    /// The error an admission raised inside a batch call (`admit_batch.lua`
    /// returns its message), mapped as [`RedisStore::map_err`] maps a
    /// script's own error.
    fn script_error(&self, msg: &str) -> StoreError {
        let (code, detail) = msg.split_once(' ').unwrap_or((msg, ""));
        match code {
            CORRUPT_CODE => StoreError::Corrupt(format!(
                "unreadable {}",
                self.scrub(detail.split(" script:").next().unwrap_or("").trim())
            )),
            "WRONGTYPE" => StoreError::Corrupt("a tollgate key holds the wrong type".into()),
            _ => StoreError::Unavailable(format!("redis: {}", self.scrub(msg))),
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
        policy: &Policy,
        n: u64,
        call: Option<&CallId>,
        deadline: Instant,
    ) -> Result<Batch, CallError> {
        let (key_id, gen) = key.unwrap_or(("", 0));
        let days = self.inner.history_days.load(Ordering::Relaxed);
        let route_shadow = match policy.route_shadow {
            Some(true) => "1",
            Some(false) => "0",
            None => "",
        };
        // Billing: the period of the cycle this process believes the client
        // has; the script answers RECOMPUTE (having done nothing) when the
        // cycle or Redis TIME says otherwise, and the call goes again.
        let mut guess = Guess::new(self.inner.cycles.get(client_id), self.guess_now_ms());
        for _ in 0..PERIOD_ATTEMPTS {
            // ARGV[1..=24]: some twenty short ones, and the plans.
            let mut args = Args::with_capacity(24, 320 + policy.plans.encoded().len());
            args.push(mode).push(client_id).push(key_id).push(gen);
            match scope {
                Some(s) => args.push_fmt(format_args!("+{s}")),
                None => args.push(""),
            };
            args.push(defaults.per_minute).push(defaults.monthly);
            match self.inner.clock.as_ref() {
                Some(c) => args.push(c.now_ms()),
                None => args.push(""),
            };
            args.push(n);
            match call {
                Some(call) => args
                    .push(call.session.state.as_str())
                    .push(call.seq)
                    .push(call.session.record.as_str()),
                None => args.push("").push("").push(""),
            };
            // Policies: ARGV[13] cost, ARGV[14] the route's shadow, ARGV[15] the plans.
            args.push(policy.cost)
                .push(route_shadow)
                .push(policy.plans.encoded());
            let mut keys = Vec::with_capacity(4);
            keys.extend([
                layout::client(client_id),
                layout::key(client_id, key_id),
                layout::window(client_id),
            ]);
            guess.add_to(&mut keys, &mut args, client_id, days);
            // Notifications: ARGV[24], only when [notify] is set.
            if let Some(n) = self.inner.notifier.get() {
                args.push(n.encoded());
            }
            let admission = Admission { keys, args };
            let reply: redis::Value = match (&self.inner.batch, call) {
                // Admissions (with an id) go with other keys' when a call is in flight.
                (Some(batcher), Some(_)) if batcher.enabled() => {
                    batcher.submit(self, admission, deadline).await?
                }
                _ => batch::send_alone(self, &admission, deadline).await?,
            };
            if let Some(store_says) = recompute(&reply) {
                let (now_ms, cycle) = store_says.map_err(CallError::unsent)?;
                self.inner.cycles.learn(client_id, cycle.clone());
                guess = Guess::new(cycle, now_ms);
                continue;
            }
            let reply = admit_slots(reply).map_err(CallError::unsent)?;
            if reply.first() == Some(&SETTLED) {
                // Only a repeat of a call tollgate has given up on gets this.
                return Err(CallError::unsent(StoreError::Unavailable(
                    "admission call was settled before it ran".into(),
                )));
            }
            self.hand_over(client_id, &reply, &guess.cycle);
            return decode_batch(&reply, &guess.cycle).map_err(CallError::unsent);
        }
        Err(CallError::unsent(StoreError::Unavailable(
            "the quota period kept moving under the admission call".into(),
        )))
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
                    &group.policy,
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
            reply => {
                let cycle = self.inner.cycles.get(client_id);
                self.hand_over(client_id, reply, &cycle);
                decode_batch(reply, &cycle).map(Settled::Applied)
            }
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
