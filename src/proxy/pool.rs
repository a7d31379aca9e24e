//! The connections to the upstream, on hyper's `client::conn`: a list of
//! idle HTTP/1.1 connections and one shared, multiplexed HTTP/2 connection.
//!
//! HTTP/1.1: a request takes the most recently used idle connection (or
//! opens one) and puts it back when the response body has been read to its
//! end ([`Checkin`]); nothing is spawned per request (hyper-util's pooled
//! client spawned a task per request to wait for the connection to become
//! idle, and went through a keyed pool with waiters). Connections idle longer
//! than `upstream.pool_idle_timeout_ms` are closed; at most
//! `upstream.pool_max_idle_per_host` are kept. A request hyper never wrote
//! (the connection closed under it) is sent once more on a new connection.
//!
//! HTTP/2: every request shares one connection; a closed one (after GOAWAY,
//! or an error) is replaced on the next request, and one no request has
//! started on for `upstream.pool_idle_timeout_ms` is let go (closed once
//! its streams in flight end). A stream the upstream
//! refused unprocessed is sent once more on a new connection, its body
//! replayed from [`Replay`]'s buffer (docs/protocols.md).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use parking_lot::Mutex;
use tower_service::Service;

use crate::body::BoxError;
use crate::proxy::limits::LimitedBody;
use crate::proxy::replay::{unprocessed, Replay, ReplayBody};

/// The largest read buffer of an HTTP/1.1 upstream connection: a response
/// head is refused (the request fails, 502) once this much of it has been
/// read without its end (hyper checks between reads), and one read hands on
/// at most this much of a response body. Both sides write
/// flattened (each message copied into the connection's one write buffer,
/// then one `write(2)`: 3 % less CPU per small request than `writev(2)` of
/// hyper's queued buffers, bench/results/2026-11-28-round7-experiments.md),
/// so this also bounds what a client connection's write buffer grows to
/// when it relays a large body (hyper's default read buffer goes up to
/// 400 KiB, which a flattening writer would then keep for its lifetime).
pub const UPSTREAM_READ_BUFFER: usize = 64 * 1024;

pub type Connector = HttpsConnector<HttpConnector>;
type H1Sender = http1::SendRequest<LimitedBody<Incoming>>;
type H2Sender = http2::SendRequest<ReplayBody>;

/// Why a request got no response from the upstream.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection could be opened (refused, timed out, TLS refused).
    Connect(BoxError),
    /// The connection failed the request (or the request's body failed).
    Send(hyper::Error),
}

impl UpstreamError {
    pub fn is_connect(&self) -> bool {
        matches!(self, UpstreamError::Connect(_))
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Connect(_) => f.write_str("cannot connect to the upstream"),
            UpstreamError::Send(_) => f.write_str("upstream request failed"),
        }
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpstreamError::Connect(e) => Some(&**e),
            UpstreamError::Send(e) => Some(e),
        }
    }
}

/// Opens a connection to the upstream.
async fn connect(
    connector: &Connector,
    target: &Uri,
) -> Result<
    hyper_rustls::MaybeHttpsStream<hyper_util::rt::TokioIo<tokio::net::TcpStream>>,
    UpstreamError,
> {
    connector
        .clone()
        .call(target.clone())
        .await
        .map_err(UpstreamError::Connect)
}

/// The idle HTTP/1.1 connections to one upstream.
#[derive(Clone, Debug)]
pub struct Http1Pool {
    inner: Arc<H1Inner>,
}

#[derive(Debug)]
struct H1Inner {
    connector: Connector,
    /// `scheme://authority/` of the upstream: what the connector dials.
    target: Uri,
    /// Oldest at the front; requests take from the back.
    idle: Mutex<VecDeque<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
    reaper: AtomicBool,
}

#[derive(Debug)]
struct Idle {
    tx: H1Sender,
    since: Instant,
}

/// A connection lent to one request, given back once its response is read.
#[derive(Debug)]
pub struct Checkin {
    tx: H1Sender,
    pool: Arc<H1Inner>,
}

impl Checkin {
    /// The response was read to its end: the connection may serve another.
    pub fn done(self) {
        self.pool.checkin(self.tx);
    }
}

impl Http1Pool {
    pub fn new(connector: Connector, target: Uri, max_idle: usize, idle_timeout: Duration) -> Self {
        Http1Pool {
            inner: Arc::new(H1Inner {
                connector,
                target,
                idle: Mutex::new(VecDeque::new()),
                max_idle,
                idle_timeout,
                reaper: AtomicBool::new(false),
            }),
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) on an idle or a new
    /// connection; the [`Checkin`] gives the connection back.
    pub async fn send(
        &self,
        req: Request<LimitedBody<Incoming>>,
    ) -> Result<(Response<Incoming>, Checkin), UpstreamError> {
        let mut tx = self.checkout().await?;
        let req = match tx.try_send_request(req).await {
            Ok(resp) => return Ok((resp, self.lend(tx))),
            Err(mut e) => match e.take_message() {
                // Never written: the connection closed before it could be.
                Some(req) => req,
                None => return Err(UpstreamError::Send(e.into_error())),
            },
        };
        let mut tx = Box::pin(self.open()).await?;
        match tx.try_send_request(req).await {
            Ok(resp) => Ok((resp, self.lend(tx))),
            Err(e) => Err(UpstreamError::Send(e.into_error())),
        }
    }

    fn lend(&self, tx: H1Sender) -> Checkin {
        Checkin {
            tx,
            pool: self.inner.clone(),
        }
    }

    /// The most recently used live idle connection, or a new one.
    async fn checkout(&self) -> Result<H1Sender, UpstreamError> {
        loop {
            let idle = self.inner.idle.lock().pop_back();
            let Some(Idle { mut tx, since }) = idle else {
                // Boxed: opening (a connect, maybe a TLS handshake) is a
                // large future, and every request's future would carry its
                // size even though most never open a connection.
                return Box::pin(self.open()).await;
            };
            if tx.is_closed() || since.elapsed() > self.inner.idle_timeout {
                continue;
            }
            // Ready at once unless the previous exchange is still finishing.
            if tx.ready().await.is_ok() {
                return Ok(tx);
            }
        }
    }

    async fn open(&self) -> Result<H1Sender, UpstreamError> {
        let io = connect(&self.inner.connector, &self.inner.target).await?;
        let (tx, conn) = http1::Builder::new()
            .writev(false)
            .max_buf_size(UPSTREAM_READ_BUFFER)
            .handshake(io)
            .await
            .map_err(UpstreamError::Send)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        self.start_reaper();
        Ok(tx)
    }

    /// Closes connections idle past the timeout even when no request comes
    /// to notice them; ends with the pool.
    fn start_reaper(&self) {
        if self.inner.max_idle == 0 || self.inner.reaper.swap(true, Ordering::Relaxed) {
            return;
        }
        reap_every(&self.inner, self.inner.idle_timeout, |pool| {
            pool.expire(Instant::now())
        });
    }
}

/// Calls `reap` on `pool` every half `idle_timeout` (at least every 100 ms)
/// from a task of its own, which ends with the pool.
fn reap_every<P: Send + Sync + 'static>(
    pool: &Arc<P>,
    idle_timeout: Duration,
    mut reap: impl FnMut(&P) + Send + 'static,
) {
    let pool: Weak<P> = Arc::downgrade(pool);
    let every = (idle_timeout / 2).max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(pool) = pool.upgrade() else { return };
            reap(&pool);
        }
    });
}

impl H1Inner {
    fn checkin(&self, tx: H1Sender) {
        if self.max_idle == 0 || tx.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock();
        if idle.len() >= self.max_idle {
            idle.pop_front();
        }
        idle.push_back(Idle { tx, since: now });
    }

    fn expire(&self, now: Instant) {
        let mut idle = self.idle.lock();
        while idle
            .front()
            .is_some_and(|i| now.duration_since(i.since) > self.idle_timeout || i.tx.is_closed())
        {
            idle.pop_front();
        }
    }
}

/// The one HTTP/2 connection to the upstream, shared by every request.
#[derive(Clone, Debug)]
pub struct Http2Pool {
    inner: Arc<H2Inner>,
}

#[derive(Debug)]
struct H2Inner {
    connector: Connector,
    target: Uri,
    /// The connection in use and its number.
    current: Mutex<Option<(u64, H2Sender)>>,
    /// Held while a connection is being opened: one at a time.
    opening: tokio::sync::Mutex<()>,
    opened: AtomicU64,
    /// Requests started so far (the reaper's sign of use: one relaxed
    /// increment per request, no clock read).
    started: AtomicU64,
    idle_timeout: Duration,
    reaper: AtomicBool,
}

impl Http2Pool {
    pub fn new(connector: Connector, target: Uri, idle_timeout: Duration) -> Self {
        Http2Pool {
            inner: Arc::new(H2Inner {
                connector,
                target,
                current: Mutex::new(None),
                opening: tokio::sync::Mutex::new(()),
                opened: AtomicU64::new(0),
                started: AtomicU64::new(0),
                idle_timeout,
                reaper: AtomicBool::new(false),
            }),
        }
    }

    /// Sends `req` (absolute URI) on the shared connection. A stream the
    /// upstream refused without processing it, or a request never sent,
    /// is sent once more on a new connection, its body replayed if it fit
    /// the buffer.
    pub async fn send(
        &self,
        req: Request<LimitedBody<Incoming>>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let (parts, body) = req.into_parts();
        let replay = Replay::new(body);
        // The head again, for a second attempt (hyper keeps neither).
        let head = (
            parts.method.clone(),
            parts.uri.clone(),
            parts.version,
            parts.headers.clone(),
        );
        let (id, mut tx) = self.sender().await?;
        let mut err = match tx
            .try_send_request(Request::from_parts(parts, replay.first()))
            .await
        {
            Ok(resp) => {
                replay.release();
                return Ok(resp);
            }
            Err(e) => e,
        };
        let again = match err.take_message() {
            Some(req) => req,
            None if unprocessed(err.error()) => match replay.again() {
                Some(body) => {
                    let (method, uri, version, headers) = head;
                    let mut req = Request::new(body);
                    *req.method_mut() = method;
                    *req.uri_mut() = uri;
                    *req.version_mut() = version;
                    *req.headers_mut() = headers;
                    req
                }
                None => {
                    tracing::info!(
                        error = %err.error(),
                        "upstream refused the stream unprocessed; its body outgrew the replay \
                         buffer, so it is not retried"
                    );
                    return Err(UpstreamError::Send(err.into_error()));
                }
            },
            None => return Err(UpstreamError::Send(err.into_error())),
        };
        tracing::info!(
            error = %err.error(),
            "upstream did not process the request; sending it once more on a new connection"
        );
        self.retire(id);
        let (_, mut tx) = self.sender().await?;
        let result = tx.try_send_request(again).await;
        replay.release();
        result.map_err(|e| UpstreamError::Send(e.into_error()))
    }

    /// The shared connection, opened if there is none or it closed.
    async fn sender(&self) -> Result<(u64, H2Sender), UpstreamError> {
        self.inner.started.fetch_add(1, Ordering::Relaxed);
        if let Some(live) = self.live() {
            return Ok(live);
        }
        // Boxed, as HTTP/1.1's `open`: the rare path's large future stays
        // out of every request's.
        Box::pin(self.open()).await
    }

    /// Opens the shared connection (one opener at a time) unless another
    /// request just did.
    async fn open(&self) -> Result<(u64, H2Sender), UpstreamError> {
        let _one = self.inner.opening.lock().await;
        if let Some(live) = self.live() {
            return Ok(live);
        }
        let io = connect(&self.inner.connector, &self.inner.target).await?;
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(UpstreamError::Send)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
            }
        });
        let id = self.inner.opened.fetch_add(1, Ordering::Relaxed);
        *self.inner.current.lock() = Some((id, tx.clone()));
        self.start_reaper();
        Ok((id, tx))
    }

    /// Lets the connection go once no request has started on it for the
    /// idle timeout (noticed within half of it more): hyper closes it when
    /// its last sender is dropped and its streams in flight have ended.
    /// Ends with the pool.
    fn start_reaper(&self) {
        if self.inner.reaper.swap(true, Ordering::Relaxed) {
            return;
        }
        let (mut seen, mut quiet_since) = (u64::MAX, Instant::now());
        reap_every(&self.inner, self.inner.idle_timeout, move |pool| {
            let started = pool.started.load(Ordering::Relaxed);
            if started != seen {
                (seen, quiet_since) = (started, Instant::now());
            } else if quiet_since.elapsed() >= pool.idle_timeout {
                pool.current.lock().take();
            }
        });
    }

    fn live(&self) -> Option<(u64, H2Sender)> {
        let current = self.inner.current.lock();
        match current.as_ref() {
            Some((id, tx)) if !tx.is_closed() => Some((*id, tx.clone())),
            _ => None,
        }
    }

    /// Stops handing out connection `id` (it is going away); its streams
    /// in flight finish.
    fn retire(&self, id: u64) {
        let mut current = self.inner.current.lock();
        if current.as_ref().is_some_and(|(i, _)| *i == id) {
            *current = None;
        }
    }
}

/// An HTTP/1.1 response body that gives its connection back to the pool
/// once read to its end; dropped early, the connection is not reused.
pub struct Returning {
    inner: Incoming,
    checkin: Option<Checkin>,
}

impl Returning {
    pub fn new(inner: Incoming, checkin: Checkin) -> Self {
        let mut body = Returning {
            inner,
            checkin: Some(checkin),
        };
        if http_body::Body::is_end_stream(&body.inner) {
            body.give_back();
        }
        body
    }

    fn give_back(&mut self) {
        if let Some(c) = self.checkin.take() {
            c.done();
        }
    }
}

impl http_body::Body for Returning {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, BoxError>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match polled {
            std::task::Poll::Ready(None) => {
                self.give_back();
                std::task::Poll::Ready(None)
            }
            std::task::Poll::Ready(Some(Err(e))) => {
                self.checkin = None;
                std::task::Poll::Ready(Some(Err(e.into())))
            }
            std::task::Poll::Ready(Some(Ok(frame))) => {
                let last = self.inner.is_end_stream();
                if last {
                    self.give_back();
                }
                std::task::Poll::Ready(Some(Ok(frame)))
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
