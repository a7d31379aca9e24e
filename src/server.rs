//! Listeners and process lifetime: binds the public and admin listeners,
//! serves connections (HTTP/1.1 and h2c on the public side), and drains
//! in-flight requests on SIGTERM/SIGINT. The connection-level limits of
//! `[server]` (header size and count, header and first-byte timeouts, HTTP/2
//! reset and stream limits) are set here; see docs/hostile-http.md.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::App;
use crate::config::Config;
use crate::first_bytes::FirstBytes;

/// How long in-flight requests get to finish after a shutdown signal.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(25);
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

/// Runs `tollgate serve` to completion on a multi-threaded runtime.
pub fn serve_blocking(config: Config) -> anyhow::Result<()> {
    crate::telemetry::init(&config.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let server = Server::bind(config).await?;
        server.run(shutdown_signal()).await
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// A bound, not yet serving, tollgate.
pub struct Server {
    app: Arc<App>,
    public: TcpListener,
    admin: TcpListener,
}

impl Server {
    /// Builds the app and binds both listeners.
    pub async fn bind(config: Config) -> anyhow::Result<Server> {
        let public_addr = config.server.listen;
        let admin_addr = config.admin.listen;
        let app = App::new(config)?;
        let public = TcpListener::bind(public_addr)
            .await
            .with_context(|| format!("server.listen: cannot listen on {public_addr}"))?;
        let admin = TcpListener::bind(admin_addr)
            .await
            .with_context(|| format!("admin.listen: cannot listen on {admin_addr}"))?;
        Ok(Server { app, public, admin })
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
        let store = match &self.app.config.store.backend {
            crate::config::StoreBackend::Memory => "memory",
            crate::config::StoreBackend::Redis { .. } => "redis",
        };
        tracing::info!(public = %public_addr, admin = %admin_addr, store, "listening");

        let (stop_tx, stop_rx) = watch::channel(false);
        let graceful = Arc::new(GracefulShutdown::new());
        let server = &self.app.config.server;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(server.header_read_timeout)
            .max_headers(MAX_HEADERS)
            // The head must fit the read buffer: a larger one is answered 431.
            .max_buf_size(server.max_header_bytes as usize);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .max_header_list_size(server.max_header_bytes)
            // Rapid reset (CVE-2023-44487): streams the client resets before
            // they are served, and streams it makes the server reset.
            .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
            .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESET_STREAMS);
        let builder = Arc::new(builder);
        let first_bytes = server.header_read_timeout;

        let app = self.app.clone();
        let public = tokio::spawn(accept_loop(
            self.public,
            first_bytes,
            builder.clone(),
            graceful.clone(),
            stop_rx.clone(),
            move |peer| {
                let app = app.clone();
                service_fn(move |req| {
                    let app = app.clone();
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
        tracing::info!("shutting down: no new connections, draining in-flight requests");
        let _ = stop_tx.send(true);
        let _ = public.await;
        let _ = admin.await;
        let graceful = Arc::try_unwrap(graceful).unwrap_or_else(|_| GracefulShutdown::new());
        match tokio::time::timeout(DEFAULT_DRAIN_TIMEOUT, graceful.shutdown()).await {
            Ok(()) => tracing::info!("drained"),
            Err(_) => tracing::warn!("drain timeout reached; closing remaining connections"),
        }
        Ok(())
    }
}

async fn accept_loop<F, S>(
    listener: TcpListener,
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
