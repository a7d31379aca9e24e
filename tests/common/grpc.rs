//! A real gRPC service and client for integration tests, built on tonic's
//! codegen-free API (`tonic::server::Grpc`, `tonic::client::Grpc`) with
//! hand-derived prost messages, so that no `protoc` is needed.
//!
//! The service `test.Echo` (upstream, on a free loopback port, h2c or TLS):
//! - `Unary`: answers `echo:<text>`, and in response metadata which
//!   credential and identity headers it received;
//! - `ServerStream`: `n` messages `delay_ms` apart; `text = "fail"` ends the
//!   stream with ABORTED and trailing metadata `x-upstream-trailer`;
//!   `text = "die"` kills the server (every connection dropped) after two;
//! - `ClientStream`: counts the messages and joins their texts;
//! - `Bidi`: echoes each message as it arrives;
//! - `Big`: `n` messages of 1 MiB each, as fast as flow control lets it;
//! - `Sleep`: answers after `delay_ms`; counts calls dropped before answering
//!   (the client cancelled and the RST_STREAM reached the upstream).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use http::uri::PathAndQuery;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    #[prost(string, tag = "1")]
    pub text: String,
    #[prost(uint32, tag = "2")]
    pub n: u32,
    #[prost(uint32, tag = "3")]
    pub delay_ms: u32,
}

pub fn msg(text: &str, n: u32) -> Msg {
    Msg {
        text: text.into(),
        n,
        delay_ms: 0,
    }
}

/// A closure as a tower `Service`, which tonic's server traits accept.
struct Svc<F>(F);

impl<F, Fut, Req, Resp> tower_service::Service<Req> for Svc<F>
where
    F: FnMut(Req) -> Fut,
    Fut: Future<Output = Result<Resp, Status>>,
{
    type Response = Resp;
    type Error = Status;
    type Future = Fut;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Fut {
        (self.0)(req)
    }
}

type MsgStream = Pin<Box<dyn futures_util::Stream<Item = Result<Msg, Status>> + Send>>;

#[derive(Default)]
pub struct Counters {
    /// `Sleep` calls dropped before they answered.
    pub cancelled: AtomicUsize,
    /// Calls the service received.
    pub calls: AtomicUsize,
    /// Connections accepted.
    pub connections: AtomicUsize,
    /// `Sleep` calls whose handler has started.
    pub sleeping: AtomicUsize,
}

pub struct GrpcUpstream {
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
    kill: watch::Sender<bool>,
    goaway: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
    tls: bool,
}

impl GrpcUpstream {
    /// The service over h2c on a free port.
    pub async fn start() -> GrpcUpstream {
        Self::start_inner(None).await
    }

    /// The service over TLS (ALPN h2) with `config`.
    pub async fn start_tls(config: Arc<rustls::ServerConfig>) -> GrpcUpstream {
        Self::start_inner(Some(tokio_rustls::TlsAcceptor::from(config))).await
    }

    async fn start_inner(tls: Option<tokio_rustls::TlsAcceptor>) -> GrpcUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let counters = Arc::new(Counters::default());
        let (kill, kill_rx) = watch::channel(false);
        let (goaway, _) = watch::channel(0u64);
        let c = counters.clone();
        let is_tls = tls.is_some();
        let kill_tx = kill.clone();
        let goaway_tx = goaway.clone();
        let task = tokio::spawn(async move {
            let mut stop = kill_rx.clone();
            loop {
                let (stream, _) = tokio::select! {
                    _ = stop.changed() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                c.connections.fetch_add(1, Ordering::SeqCst);
                let (c, tls, kill_tx) = (c.clone(), tls.clone(), kill_tx.clone());
                // Subscribed now: only later signals concern this connection.
                let (conn_kill, conn_goaway) = (kill_tx.subscribe(), goaway_tx.subscribe());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        route(req, c.clone(), kill_tx.clone())
                    });
                    match tls {
                        None => serve(TokioIo::new(stream), svc, conn_kill, conn_goaway).await,
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            serve(TokioIo::new(stream), svc, conn_kill, conn_goaway).await
                        }
                    }
                });
            }
        });
        GrpcUpstream {
            addr,
            counters,
            kill,
            goaway,
            task,
            tls: is_tls,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Drops every connection at once and stops accepting.
    pub fn kill(&self) {
        let _ = self.kill.send(true);
    }

    /// Sends GOAWAY on every open connection (hyper's graceful shutdown:
    /// calls in flight finish, new ones must use a new connection); the
    /// server keeps accepting.
    pub fn goaway(&self) {
        self.goaway.send_modify(|n| *n += 1);
    }
}

impl Drop for GrpcUpstream {
    fn drop(&mut self) {
        self.kill();
        self.task.abort();
    }
}

/// One HTTP/2 connection until it ends, is killed (dropped), or is told
/// to go away (GOAWAY, then served until its calls finish).
async fn serve<I, S>(
    io: I,
    svc: S,
    mut kill: watch::Receiver<bool>,
    mut goaway: watch::Receiver<u64>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = tonic::body::Body>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = kill.changed() => return,
            changed = goaway.changed() => match changed {
                Ok(()) => conn.as_mut().graceful_shutdown(),
                Err(_) => return,
            },
        }
    }
}

async fn route(
    req: http::Request<hyper::body::Incoming>,
    counters: Arc<Counters>,
    kill: watch::Sender<bool>,
) -> Result<http::Response<tonic::body::Body>, Infallible> {
    counters.calls.fetch_add(1, Ordering::SeqCst);
    let codec = ProstCodec::<Msg, Msg>::default;
    let mut grpc = tonic::server::Grpc::new(codec());
    let resp = match req.uri().path() {
        "/test.Echo/Unary" => {
            grpc.unary(
                Svc(|r: Request<Msg>| async move {
                    let seen = |name: &str| {
                        r.metadata()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_owned()
                    };
                    let mut meta = tonic::metadata::MetadataMap::new();
                    for (name, header) in [
                        ("x-seen-api-key", "x-api-key"),
                        ("x-seen-authorization", "authorization"),
                        ("x-seen-client-id", "x-tollgate-client-id"),
                        ("x-seen-te", "te"),
                        ("x-seen-forwarded-proto", "x-forwarded-proto"),
                    ] {
                        if let Ok(v) = seen(header).parse() {
                            meta.insert(name, v);
                        }
                    }
                    let m = r.into_inner();
                    let mut resp = Response::new(Msg {
                        text: format!("echo:{}", m.text),
                        n: m.n,
                        delay_ms: 0,
                    });
                    *resp.metadata_mut() = meta;
                    Ok(resp)
                }),
                req,
            )
            .await
        }
        "/test.Echo/Sleep" => {
            let c = counters.clone();
            grpc.unary(
                Svc(move |r: Request<Msg>| {
                    let c = c.clone();
                    async move {
                        let m = r.into_inner();
                        // Dropped unanswered (the call was cancelled): counted.
                        let mut pending = CancelCount(c.clone(), true);
                        c.sleeping.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(m.delay_ms.into())).await;
                        pending.1 = false;
                        Ok(Response::new(msg("slept", m.delay_ms)))
                    }
                }),
                req,
            )
            .await
        }
        "/test.Echo/ServerStream" => {
            grpc.server_streaming(
                Svc(move |r: Request<Msg>| {
                    let kill = kill.clone();
                    async move {
                        let m = r.into_inner();
                        let s = futures_util::stream::unfold(0u32, move |i| {
                            let (m, kill) = (m.clone(), kill.clone());
                            async move {
                                if i > 0 && m.delay_ms > 0 {
                                    tokio::time::sleep(Duration::from_millis(m.delay_ms.into()))
                                        .await;
                                }
                                if m.text == "die" && i == 2 {
                                    let _ = kill.send(true);
                                    // The connection goes; this stream never ends.
                                    std::future::pending::<()>().await;
                                }
                                if i == m.n {
                                    if m.text == "fail" {
                                        let mut meta = tonic::metadata::MetadataMap::new();
                                        meta.insert("x-upstream-trailer", "kept".parse().ok()?);
                                        let st = Status::with_metadata(
                                            tonic::Code::Aborted,
                                            "upstream says: no more",
                                            meta,
                                        );
                                        return Some((Err(st), i + 1));
                                    }
                                    return None;
                                }
                                if i > m.n {
                                    return None;
                                }
                                Some((Ok(msg(&format!("part {i}"), i)), i + 1))
                            }
                        });
                        Ok(Response::new(Box::pin(s) as MsgStream))
                    }
                }),
                req,
            )
            .await
        }
        "/test.Echo/Big" => {
            grpc.server_streaming(
                Svc(|r: Request<Msg>| async move {
                    let n = r.into_inner().n;
                    let big = "x".repeat(1 << 20);
                    let s = futures_util::stream::iter(0..n).map(move |i| Ok(msg(&big, i)));
                    Ok(Response::new(Box::pin(s) as MsgStream))
                }),
                req,
            )
            .await
        }
        "/test.Echo/ClientStream" => {
            grpc.client_streaming(
                Svc(|r: Request<Streaming<Msg>>| async move {
                    let mut s = r.into_inner();
                    let (mut texts, mut count) = (Vec::new(), 0u32);
                    while let Some(m) = s.next().await {
                        let m = m?;
                        texts.push(m.text);
                        count += 1;
                    }
                    Ok(Response::new(msg(&texts.join(","), count)))
                }),
                req,
            )
            .await
        }
        "/test.Echo/Bidi" => {
            grpc.streaming(
                Svc(|r: Request<Streaming<Msg>>| async move {
                    let s = r.into_inner().map(|m| {
                        m.map(|m| Msg {
                            text: format!("echo:{}", m.text),
                            ..m
                        })
                    });
                    Ok(Response::new(Box::pin(s) as MsgStream))
                }),
                req,
            )
            .await
        }
        _ => Status::unimplemented("no such method").into_http(),
    };
    Ok(resp)
}

/// Adds one to the shared cancellation counter when dropped (forgotten on success).
struct CancelCount(Arc<Counters>, bool);

impl Drop for CancelCount {
    fn drop(&mut self) {
        if self.1 {
            self.0.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The connector test clients use: plain h2c, or TLS with a test CA.
pub type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// A gRPC client of `test.Echo` at `origin` (tollgate or the upstream).
#[derive(Clone)]
pub struct EchoClient {
    grpc: tonic::client::Grpc<Client<Connector, tonic::body::Body>>,
}

impl EchoClient {
    /// An h2c client.
    pub fn new(origin: &str) -> EchoClient {
        let tls = rustls::ClientConfig::builder_with_provider(super::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        Self::with_tls(origin, tls)
    }

    /// A client that trusts the roots of `tls` (for an https:// origin).
    pub fn with_tls(origin: &str, tls: rustls::ClientConfig) -> EchoClient {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(connector);
        EchoClient {
            grpc: tonic::client::Grpc::with_origin(client, origin.parse().expect("origin")),
        }
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("not ready: {e}")))
    }

    pub async fn unary(&mut self, req: Request<Msg>) -> Result<Response<Msg>, Status> {
        self.ready().await?;
        self.grpc
            .unary(req, path("/test.Echo/Unary"), ProstCodec::default())
            .await
    }

    /// A unary call of `Msg` to any method path.
    pub async fn unary_at(
        &mut self,
        method: &str,
        req: Request<Msg>,
    ) -> Result<Response<Msg>, Status> {
        self.ready().await?;
        let p = PathAndQuery::try_from(method.to_owned()).expect("method path");
        self.grpc.unary(req, p, ProstCodec::default()).await
    }

    pub async fn sleep(&mut self, req: Request<Msg>) -> Result<Response<Msg>, Status> {
        self.ready().await?;
        self.grpc
            .unary(req, path("/test.Echo/Sleep"), ProstCodec::default())
            .await
    }

    pub async fn server_stream(
        &mut self,
        req: Request<Msg>,
    ) -> Result<Response<Streaming<Msg>>, Status> {
        self.ready().await?;
        self.grpc
            .server_streaming(req, path("/test.Echo/ServerStream"), ProstCodec::default())
            .await
    }

    pub async fn big(&mut self, req: Request<Msg>) -> Result<Response<Streaming<Msg>>, Status> {
        self.ready().await?;
        self.grpc
            .server_streaming(req, path("/test.Echo/Big"), ProstCodec::default())
            .await
    }

    pub async fn client_stream<S>(&mut self, req: Request<S>) -> Result<Response<Msg>, Status>
    where
        S: futures_util::Stream<Item = Msg> + Send + 'static,
    {
        self.ready().await?;
        self.grpc
            .client_streaming(req, path("/test.Echo/ClientStream"), ProstCodec::default())
            .await
    }

    pub async fn bidi<S>(&mut self, req: Request<S>) -> Result<Response<Streaming<Msg>>, Status>
    where
        S: futures_util::Stream<Item = Msg> + Send + 'static,
    {
        self.ready().await?;
        self.grpc
            .streaming(req, path("/test.Echo/Bidi"), ProstCodec::default())
            .await
    }
}

fn path(p: &'static str) -> PathAndQuery {
    PathAndQuery::from_static(p)
}

/// `req` with `x-api-key: key` metadata.
pub fn with_key<T>(key: &str, body: T) -> Request<T> {
    let mut req = Request::new(body);
    req.metadata_mut()
        .insert("x-api-key", key.parse().expect("key metadata"));
    req
}

/// The routes of the gRPC tests: `test.Echo` needs `echo:call`, `test.Forbidden`
/// a scope the test keys never hold.
const ROUTES: &str = r#"[[routes]]
path = "/test.Echo"
scope = "echo:call"

[[routes]]
path = "/test.Forbidden"
scope = "other:thing""#;

/// The test config ([`super::tollgate::Parts`]) for gRPC tests, memory store:
/// `upstream` lines, the gRPC scopes and routes, then `extra`.
pub fn config(upstream: &str, extra: &str) -> String {
    let store = super::tollgate::memory_store();
    super::tollgate::Parts {
        upstream: upstream.to_owned(),
        scopes: &["echo:call", "other:thing"],
        routes: ROUTES,
        extra,
        ..super::tollgate::Parts::new("", &store)
    }
    .text()
}
