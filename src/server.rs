//! Listeners and process lifetime: binds the public and admin listeners,
//! serves connections (HTTP/1.1 and h2c on the public side, or, with
//! `[server.tls]`, TLS with ALPN `h2` / `http/1.1`), starts the config
//! [`Reloader`] and the TLS certificate watcher, and drains in-flight
//! requests on SIGTERM/SIGINT.
//!
//! A TLS handshake must finish within `server.header_read_timeout_ms`, and
//! the first request bytes within what is left of it: a stalled handshake, a
//! flood of them, or plain HTTP sent to the TLS port holds a connection no
//! longer than a slow plain-HTTP client would.
//!
//! Shutdown: the signal closes both listeners at once (new connections are
//! refused), idle keep-alive connections are closed, requests in flight get
//! up to `[server] drain_timeout_ms` to finish (their response bodies
//! included), then the process exits 0 — as soon as the last one is done,
//! not at the timeout.
//!
//! The connection-level limits of `[server]` (header size and count, header
//! and first-byte timeouts, HTTP/2 reset and stream limits) are set here; see
//! docs/hostile-http.md.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::app::App;
use crate::config::{Config, ServerTls};
use crate::reload::Reloader;
use crate::tls::CertStore;

/// How long blocking work (a bcrypt hash) may hold up the exit after the drain.
const RUNTIME_SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
use crate::first_bytes::FirstBytes;

/// Header fields in one HTTP/1.1 request; more is answered 431.
pub const MAX_HEADERS: usize = 100;
/// Streams one HTTP/2 connection may have open at once.
pub const MAX_CONCURRENT_STREAMS: u32 = 256;
/// HTTP/2 streams a client may reset before they are accepted before the
/// connection is closed with GOAWAY `ENHANCE_YOUR_CALM` (hyper's default, set
/// here so that it cannot silently change).
pub const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// HTTP/2 streams the server may reset because of client errors before it
/// closes the connection (hyper's default, pinned likewise).
pub const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// Runs `tollgate serve` to completion: on tokio's multi-threaded runtime,
/// or, when `TOKIO_WORKER_THREADS=1` asks for a single worker, on the
/// current-thread runtime, which serves the same tasks on one thread
/// without the work-stealing scheduler's cross-thread bookkeeping
/// (docs/operations.md, "One core").
pub fn serve_blocking(config: Config) -> anyhow::Result<()> {
    // Held until the process exits: dropping it writes out the queued log lines.
    let _log = crate::telemetry::init(&config.log);
    crate::tls::install_default_provider();
    let mut builder = match single_worker() {
        true => tokio::runtime::Builder::new_current_thread(),
        false => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        // Handlers first: from the "listening" line on, SIGTERM drains, never kills.
        let shutdown = shutdown_signal()?;
        let server = Server::bind(config).await?;
        server.run(shutdown).await
    });
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_GRACE);
    // `_log` is dropped here, after the runtime: every line queued until now,
    // the drain's included, is written before `main` returns.
    result
}

/// Whether `TOKIO_WORKER_THREADS` (tokio's own setting, read by its
/// multi-threaded runtime) asks for exactly one worker.
fn single_worker() -> bool {
    std::env::var("TOKIO_WORKER_THREADS").is_ok_and(|v| v.trim() == "1")
}

/// Tries the store once at start-up and logs why it cannot be reached (a
/// wrong CA, a wrong password, ...), so a bad setting is seen at once rather
/// than at the first request; `/readyz` answers 503 meanwhile.
async fn startup_store_check(app: Arc<App>) {
    if let Err(e) = app.store.ping().await {
        let backend = crate::config::backend_name(&app.boot.store.backend);
        tracing::error!(error = %e, backend, "store: cannot connect at start-up");
    }
}

/// Registers the SIGTERM and SIGINT handlers now; the future resolves on either.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        Ok(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(signal = name, "shutdown signal received");
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// A bound, not yet serving, tollgate.
pub struct Server {
    app: Arc<App>,
    public: TcpListener,
    admin: TcpListener,
    /// `[server.tls]`: the public listener's TLS.
    tls: Option<PublicTls>,
}

/// The public listener's TLS: the acceptor, and the certificate it presents
/// (swapped by [`crate::tls::watch_files`]).
struct PublicTls {
    acceptor: TlsAcceptor,
    certs: Arc<CertStore>,
    files: ServerTls,
}

impl PublicTls {
    fn new(files: &ServerTls) -> anyhow::Result<PublicTls> {
        let key = crate::tls::load_certified_key(&files.cert, &files.key)
            .map_err(|e| anyhow::anyhow!("server.tls: {e}"))?;
        let certs = Arc::new(CertStore::new(key));
        let config = crate::tls::server_config(certs.clone())
            .context("server.tls: cannot build the TLS configuration")?;
        Ok(PublicTls {
            acceptor: TlsAcceptor::from(config),
            certs,
            files: files.clone(),
        })
    }
}

impl Server {
    /// Builds the app and binds both listeners.
    pub async fn bind(config: Config) -> anyhow::Result<Server> {
        let tls = config.server.tls.as_ref().map(PublicTls::new).transpose()?;
        let app = App::new(&config)?;
        let (public_addr, admin_addr) = (app.boot.listen, app.boot.admin_listen);
        let public = TcpListener::bind(public_addr)
            .await
            .with_context(|| format!("server.listen: cannot listen on {public_addr}"))?;
        let admin = TcpListener::bind(admin_addr)
            .await
            .with_context(|| format!("admin.listen: cannot listen on {admin_addr}"))?;
        Ok(Server {
            app,
            public,
            admin,
            tls,
        })
    }

    pub fn public_addr(&self) -> std::io::Result<SocketAddr> {
        self.public.local_addr()
    }

    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// Serves until `shutdown` resolves, then drains.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let public_addr = self.public_addr()?;
        let admin_addr = self.admin_addr()?;
        let store = crate::config::backend_name(&self.app.boot.store.backend);
        let (stop_tx, stop_rx) = watch::channel(false);
        let reloader = tokio::spawn(Reloader::new(self.app.clone()).run(stop_rx.clone()));
        let cert_watcher = self.tls.as_ref().map(|t| {
            tokio::spawn(crate::tls::watch_files(
                t.certs.clone(),
                t.files.cert.clone(),
                t.files.key.clone(),
                self.app.live().config.reload.interval,
                stop_rx.clone(),
            ))
        });
        let tls = self.tls.is_some();
        tracing::info!(public = %public_addr, admin = %admin_addr, store, tls, "listening");
        tokio::spawn(startup_store_check(self.app.clone()));

        let graceful = Arc::new(GracefulShutdown::new());
        // Fixed at bind: these come from the boot settings, never from a reload.
        let boot = &self.app.boot;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            // One write(2) per response, of one buffer (see
            // proxy::pool::UPSTREAM_READ_BUFFER, which bounds its growth).
            .writev(false)
            .timer(TokioTimer::new())
            .header_read_timeout(boot.header_read_timeout)
            .max_headers(MAX_HEADERS)
            // The head must fit the read buffer: a larger one is answered 431.
            .max_buf_size(boot.max_header_bytes as usize);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .max_header_list_size(boot.max_header_bytes)
            // Rapid reset (CVE-2023-44487): streams the client resets before
            // they are served, and streams it makes the server reset.
            .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
            .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESET_STREAMS);
        let builder = Arc::new(builder);
        let first_bytes = boot.header_read_timeout;

        let app = self.app.clone();
        let public = tokio::spawn(accept_loop(
            self.public,
            self.tls.map(|t| t.acceptor),
            first_bytes,
            builder.clone(),
            graceful.clone(),
            stop_rx.clone(),
            move |peer| {
                let app = app.clone();
                let peer = match tls {
                    true => crate::proxy::forward::Peer::new(peer).over_tls(),
                    false => crate::proxy::forward::Peer::new(peer),
                };
                service_fn(move |req| {
                    let (app, peer) = (app.clone(), peer.clone());
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            crate::proxy::handle(app, req, peer).await,
                        )
                    }
                })
            },
        ));
        let app = self.app.clone();
        let admin = tokio::spawn(accept_loop(
            self.admin,
            None,
            first_bytes,
            builder,
            graceful.clone(),
            stop_rx,
            move |_peer| {
                let app = app.clone();
                service_fn(move |req| {
                    let app = app.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(crate::admin::handle(app, req).await)
                    }
                })
            },
        ));

        shutdown.await;
        let started = Instant::now();
        let drain_timeout = self.app.live().config.server.drain_timeout;
        // The accept loops end and drop their listeners: new connections are refused.
        let _ = stop_tx.send(true);
        let _ = public.await;
        let _ = admin.await;
        let _ = reloader.await;
        if let Some(w) = cert_watcher {
            let _ = w.await;
        }
        let graceful = match Arc::try_unwrap(graceful) {
            Ok(g) => g,
            Err(_) => anyhow::bail!("internal error: a listener still holds the connection set"),
        };
        let connections = graceful.count();
        tracing::info!(
            connections,
            in_flight_requests = self.app.metrics.in_flight_now(),
            drain_timeout_ms = drain_timeout.as_millis() as u64,
            "shutting down: listeners closed, idle connections closing, draining in-flight requests"
        );
        match tokio::time::timeout(drain_timeout, graceful.shutdown()).await {
            Ok(()) => tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "drained: every connection finished"
            ),
            Err(_) => tracing::warn!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "drain timeout reached; closing the remaining connections"
            ),
        }
        // Refunds of the last requests: what is left of the drain, but at
        // least one store timeout.
        let budget = drain_timeout
            .saturating_sub(started.elapsed())
            .max(self.app.boot.store.timeout);
        self.app.refunds.flush(budget).await;
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop<F, S>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    first_bytes: Duration,
    builder: Arc<auto::Builder<TokioExecutor>>,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
    make_service: F,
) where
    F: Fn(SocketAddr) -> S,
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<crate::body::ProxyBody>,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        if let Some(acceptor) = &tls {
            tokio::spawn(serve_tls(
                acceptor.clone(),
                stream,
                peer,
                first_bytes,
                builder.clone(),
                make_service(peer),
                graceful.watcher(),
            ));
            continue;
        }
        let io = TokioIo::new(FirstBytes::new(stream, first_bytes));
        // Upgrades happen only where the handler asks for one (a WebSocket
        // tunnel with `server.websocket`); every other upgrade is refused first.
        let conn = builder.serve_connection_with_upgrades(io, make_service(peer));
        let watched = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!(error = %e, peer = %peer, "connection ended with an error");
            }
        });
    }
}

/// One TLS connection: the handshake within `first_bytes`, then the
/// connection served as a plain one is, watched for the drain by `watcher`
/// (taken at accept, so that a handshake finishing during the drain still
/// sees the shutdown).
async fn serve_tls<S>(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    first_bytes: Duration,
    builder: Arc<auto::Builder<TokioExecutor>>,
    service: S,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<crate::body::ProxyBody>,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let started = tokio::time::Instant::now();
    let stream = match tokio::time::timeout(first_bytes, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, peer = %peer, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %peer, "TLS handshake timed out");
            return;
        }
    };
    // What is left of the deadline covers the first request bytes.
    let left = first_bytes.saturating_sub(started.elapsed());
    let io = TokioIo::new(FirstBytes::new(stream, left));
    let conn = builder.serve_connection_with_upgrades(io, service);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(error = %e, peer = %peer, "connection ended with an error");
    }
}
