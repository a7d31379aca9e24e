//! Connections: the topologies (one server, a cluster, a Sentinel-named
//! primary), TLS and credentials ([`Access`]), the one connection slot a
//! call takes its connection from, and which failures drop it.

use super::*;

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
    pub(super) fn certificates(&self) -> redis::TlsCertificates {
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

    pub(super) fn has_tls_material(&self) -> bool {
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
pub(super) enum Target {
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
pub(super) struct ConnSlot {
    pub(super) target: Target,
    pub(super) config: ConnectionManagerConfig,
    pub(super) current: Mutex<Option<(u64, Conn)>>,
    /// Held while opening a connection, so concurrent calls open one, not many.
    pub(super) opening: tokio::sync::Mutex<()>,
    pub(super) next_id: AtomicU64,
}

impl ConnSlot {
    /// The current connection (and its id), opening one when there is none.
    /// A single server's connection is lazy (the first command connects); a
    /// cluster's reads the slot map here, a sentinel's asks the sentinels
    /// for the primary here. The caller bounds this with the timeout.
    pub(super) async fn get(&self) -> RedisResult<(u64, Conn)> {
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

    pub(super) fn current(&self) -> Option<(u64, Conn)> {
        self.current.lock().clone()
    }

    pub(super) fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    /// Forgets connection `id` (if still current) so the next call opens a new one.
    pub(super) fn drop_conn(&self, id: u64) {
        let mut current = self.current.lock();
        if matches!(&*current, Some((cur, _)) if *cur == id) {
            *current = None;
        }
    }
}

/// Whether an error means the connection is no good and a new one is needed.
/// A reply that does not decode is a data problem, not a connection one.
pub(super) fn drops_connection(e: &RedisError) -> bool {
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
pub(super) fn hint(e: &RedisError, text: &str) -> &'static str {
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
pub(super) fn node_info(url: &str, access: &Access) -> RedisResult<redis::ConnectionInfo> {
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
pub(super) fn node_infos(
    urls: &[String],
    access: &Access,
) -> RedisResult<Vec<redis::ConnectionInfo>> {
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

pub(super) fn is_tls(info: &redis::ConnectionInfo) -> bool {
    matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. })
}

/// A sentinel client that speaks TLS to the sentinels and to the primary
/// they name, with the roots and client certificate of `access` for both
/// (the plain `SentinelClient::build` would verify the primary against the
/// system roots only). The first URL's credentials and database apply to
/// the sentinels and the primary.
pub(super) fn sentinel_over_tls(
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
