//! `bench-tool`: the helpers `bench/run.sh` needs besides `wrk`.
//!
//! - `free-port`: prints a free loopback TCP port.
//! - `mint`: creates clients and keys through the admin API, with bounded
//!   concurrency, and writes the secrets to a file, one a line.
//! - `touch`: sends one request per key of a file (each key's first sight:
//!   its one bcrypt verification) and checks every answer was 200.
//! - `rate`: the fixed-rate latency pass. An open-loop load at a constant
//!   rate over a fixed set of keep-alive connections, in the manner of `wrk2`:
//!   a pacing thread releases request `i` at `start + i / rate`, and each
//!   latency is measured from that intended instant, not from when a
//!   connection became free, so queueing behind a slow response is counted
//!   (no coordinated omission). Prints percentiles as `key=value` pairs.
//! - `grpc-upstream`: the gRPC rows' upstream, an h2c (HTTP/2 prior
//!   knowledge) server answering every POST with one small message and
//!   `grpc-status: 0` in trailers, and `GET /calls` with how many calls it
//!   answered (so the bench can check every call reached it).
//! - `grpc-check`: sends unary calls over h2c and checks each whole answer:
//!   200, `application/grpc`, the upstream's message, `grpc-status: 0` in
//!   trailers (h2load counts only HTTP statuses, and a gRPC refusal is a 200).
//!
//! - `hyper-proxy`: the floor of any proxy built on hyper 1.x and tokio, for
//!   `bench/ab-cpu.sh hyper`: an HTTP/1.1 pass-through on one current-thread
//!   runtime, each client connection with one upstream connection of its own
//!   (no pool), every request and response forwarded as they are: no
//!   authentication, limits, header rewriting or log line.
//!
//! - `gate-floor`: `hyper-proxy` plus the least work tollgate's contract
//!   makes each admitted request cost (bench/gate_floor.rs), for
//!   `bench/ab-cpu.sh gate`.
//!
//! Only for benchmarking on loopback: every run is bounded in count and time.

#[path = "gate_floor.rs"]
mod gate_floor;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

#[derive(Parser)]
#[command(about = "Load helpers for bench/run.sh (loopback only)")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print a free TCP port on 127.0.0.1.
    FreePort,
    /// Create clients and keys through the admin API; write the secrets to --out.
    Mint {
        /// Admin base URL, e.g. http://127.0.0.1:9090
        #[arg(long)]
        admin: String,
        #[arg(long, env = "TOLLGATE_ADMIN_TOKEN", hide_env_values = true)]
        token: String,
        /// Client id prefix; clients are PREFIX00000, PREFIX00001, ...
        #[arg(long)]
        prefix: String,
        #[arg(long, default_value_t = 1)]
        clients: usize,
        #[arg(long, default_value_t = 1)]
        keys_per_client: usize,
        #[arg(long, default_value = "read:charge_points")]
        scope: String,
        #[arg(long, default_value_t = 100_000_000)]
        per_minute: u64,
        #[arg(long, default_value_t = 1_000_000_000)]
        monthly: u64,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// Send one GET per key of --keys to --url; every answer must be 200.
    Touch {
        #[arg(long)]
        url: String,
        #[arg(long)]
        keys: PathBuf,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Open-loop constant-rate load; latency from each request's intended send time.
    Rate {
        #[arg(long)]
        url: String,
        /// Requests per second.
        #[arg(long)]
        rate: u64,
        /// Seconds of measured load.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Seconds of unmeasured load first, at the same rate.
        #[arg(long, default_value_t = 2)]
        warmup: u64,
        /// Keep-alive connections (the most requests in flight at once).
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Keys to rotate through (one a line); without it no key is sent.
        #[arg(long)]
        keys: Option<PathBuf>,
    },
    /// An h2c gRPC upstream on 127.0.0.1:PORT answering every call with one message and grpc-status 0.
    GrpcUpstream {
        #[arg(long)]
        port: u16,
    },
    /// hyper-proxy plus a gateway's least work per request (bench/gate_floor.rs).
    GateFloor {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        upstream: String,
    },
    /// An HTTP/1.1 pass-through proxy on 127.0.0.1:PORT to --upstream (HOST:PORT), nothing else.
    HyperProxy {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        upstream: String,
    },
    /// Send --calls unary gRPC calls over h2c to --url; each must end with the upstream's message and grpc-status 0.
    GrpcCheck {
        /// Full URL of the method, e.g. http://127.0.0.1:8080/bench.Bench/Unary
        #[arg(long)]
        url: String,
        /// Sent as x-api-key when given.
        #[arg(long)]
        key: Option<String>,
        #[arg(long, default_value_t = 100)]
        calls: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Cmd::FreePort = cli.command {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        println!("{}", l.local_addr()?.port());
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Cmd::FreePort => Ok(()),
            Cmd::Mint {
                admin,
                token,
                prefix,
                clients,
                keys_per_client,
                scope,
                per_minute,
                monthly,
                concurrency,
                out,
            } => {
                let m = Minter {
                    http: Client::builder(TokioExecutor::new()).build_http(),
                    admin,
                    token,
                };
                mint(
                    &m,
                    &prefix,
                    clients,
                    keys_per_client,
                    &scope,
                    (per_minute, monthly),
                    concurrency,
                    &out,
                )
                .await
            }
            Cmd::Touch {
                url,
                keys,
                concurrency,
            } => touch(&url, &read_keys(&keys)?, concurrency).await,
            Cmd::Rate {
                url,
                rate,
                duration,
                warmup,
                connections,
                keys,
            } => {
                let keys = match keys {
                    Some(p) => read_keys(&p)?,
                    None => Vec::new(),
                };
                rate_pass(&url, rate, duration, warmup, connections, keys).await
            }
            Cmd::GrpcUpstream { port } => grpc_upstream(port).await,
            Cmd::HyperProxy { port, upstream } => hyper_proxy(port, &upstream).await,
            Cmd::GateFloor { port, upstream } => gate_floor::run(port, &upstream).await,
            Cmd::GrpcCheck { url, key, calls } => grpc_check(&url, key.as_deref(), calls).await,
        }
    })
}

fn read_keys(path: &PathBuf) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if keys.is_empty() {
        bail!("{}: no keys", path.display());
    }
    Ok(keys)
}

struct Minter {
    http: Client<HttpConnector, Full<Bytes>>,
    admin: String,
    token: String,
}

impl Minter {
    async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let req = Request::post(format!("{}{path}", self.admin))
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))?;
        let resp = tokio::time::timeout(Duration::from_secs(30), self.http.request(req))
            .await
            .map_err(|_| anyhow!("admin API timed out"))??;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

#[allow(clippy::too_many_arguments)]
async fn mint(
    m: &Minter,
    prefix: &str,
    clients: usize,
    keys_per_client: usize,
    scope: &str,
    (per_minute, monthly): (u64, u64),
    concurrency: usize,
    out: &PathBuf,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let ids: Vec<String> = (0..clients).map(|i| format!("{prefix}{i:05}")).collect();
    let created = futures_util::stream::iter(ids.iter().map(|id| async move {
        let body = serde_json::json!({"id": id, "per_minute": per_minute, "monthly": monthly});
        let (status, text) = m.post("/admin/v1/clients", body).await?;
        if status != StatusCode::CREATED {
            bail!(
                "creating client {id}: {status} {}",
                String::from_utf8_lossy(&text)
            );
        }
        Ok(())
    }))
    .buffer_unordered(concurrency.max(1))
    .collect::<Vec<anyhow::Result<()>>>()
    .await;
    created.into_iter().collect::<anyhow::Result<Vec<()>>>()?;

    let jobs = ids
        .iter()
        .flat_map(|id| (0..keys_per_client).map(move |j| (id, j)));
    let secrets = futures_util::stream::iter(jobs.map(|(id, j)| async move {
        let body = serde_json::json!({"name": format!("k{j}"), "scopes": [scope]});
        let (status, text) = m
            .post(&format!("/admin/v1/clients/{id}/keys"), body)
            .await?;
        if status != StatusCode::CREATED {
            bail!(
                "creating a key of {id}: {status} {}",
                String::from_utf8_lossy(&text)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&text)?;
        v["key"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no key in the creation response"))
    }))
    .buffer_unordered(concurrency.max(1))
    .collect::<Vec<anyhow::Result<String>>>()
    .await
    .into_iter()
    .collect::<anyhow::Result<Vec<String>>>()?;
    let mut text = secrets.join("\n");
    text.push('\n');
    std::fs::write(out, text)?;
    eprintln!(
        "minted {clients} clients, {} keys in {:.1} s",
        secrets.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn touch(url: &str, keys: &[String], concurrency: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let http: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let uri: Uri = url.parse()?;
    let send = |k: &String| {
        let http = &http;
        let uri = uri.clone();
        let k = k.clone();
        async move {
            let req = Request::get(uri)
                .header("x-api-key", k.as_str())
                .body(Empty::new())?;
            let resp = tokio::time::timeout(Duration::from_secs(30), http.request(req))
                .await
                .map_err(|_| anyhow!("request timed out"))??;
            let status = resp.status();
            resp.into_body().collect().await?;
            Ok::<_, anyhow::Error>((k, status))
        }
    };
    let results = futures_util::stream::iter(keys.iter().map(send))
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    let mut failed = Vec::new();
    for r in results {
        let (k, status) = r?;
        if status != StatusCode::OK {
            failed.push(k);
        }
    }
    // A loaded machine can make a store call time out (503): one retry, one
    // at a time, and say so.
    let mut still_failed = 0;
    for k in &failed {
        if send(k).await?.1 != StatusCode::OK {
            still_failed += 1;
        }
    }
    eprintln!(
        "touched {} keys in {:.1} s, {} not 200 at first, {still_failed} not 200 after one retry",
        keys.len(),
        started.elapsed().as_secs_f64(),
        failed.len()
    );
    if still_failed > 0 {
        bail!("{still_failed} of {} requests were not 200", keys.len());
    }
    Ok(())
}

/// What one connection's task recorded.
#[derive(Default)]
struct Recorded {
    /// Latencies of measured requests, microseconds.
    latencies_us: Vec<u64>,
    non_2xx: u64,
    errors: u64,
}

async fn rate_pass(
    url: &str,
    rate: u64,
    duration: u64,
    warmup: u64,
    connections: usize,
    keys: Vec<String>,
) -> anyhow::Result<()> {
    if rate == 0 || duration == 0 || connections == 0 {
        bail!("rate, duration and connections must be positive");
    }
    let uri: Uri = url.parse()?;
    let addr = format!(
        "{}:{}",
        uri.host().ok_or_else(|| anyhow!("no host in URL"))?,
        uri.port_u16().unwrap_or(80)
    );
    let host = HeaderValue::from_str(uri.authority().map_or("", |a| a.as_str()))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let keys: Arc<[HeaderValue]> = keys
        .iter()
        .map(|k| HeaderValue::from_str(k))
        .collect::<Result<Vec<_>, _>>()?
        .into();

    // Pacing: a thread wakes at each intended instant and hands the request's
    // index over; tokio's timer (1 ms granularity) would release requests in bursts.
    let interval_ns = 1_000_000_000 / rate;
    let total = rate * (warmup + duration);
    let measured_from = rate * warmup;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let start = Instant::now() + Duration::from_millis(50);
    let pacer = std::thread::spawn(move || {
        for i in 0..total {
            let at = start + Duration::from_nanos(i * interval_ns);
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if tx.send((i, at)).is_err() {
                break;
            }
        }
    });

    let next_key = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let stream = TcpStream::connect(&addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let rx = rx.clone();
        let keys = keys.clone();
        let next_key = next_key.clone();
        let host = host.clone();
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            let mut rec = Recorded::default();
            loop {
                let Some((i, at)) = rx.lock().await.recv().await else {
                    break;
                };
                let mut req = Request::builder()
                    .method(Method::GET)
                    .uri(path.as_str())
                    .header(http::header::HOST, host.clone());
                if !keys.is_empty() {
                    let k = next_key.fetch_add(1, Ordering::Relaxed) as usize % keys.len();
                    req = req.header("x-api-key", keys[k].clone());
                }
                let Ok(req) = req.body(Empty::<Bytes>::new()) else {
                    rec.errors += 1;
                    continue;
                };
                let ok = async {
                    sender.ready().await?;
                    let resp = sender.send_request(req).await?;
                    let status = resp.status();
                    resp.into_body().collect().await?;
                    Ok::<_, hyper::Error>(status)
                }
                .await;
                let elapsed = at.elapsed();
                if i < measured_from {
                    continue;
                }
                match ok {
                    Ok(s) if s.is_success() => rec.latencies_us.push(elapsed.as_micros() as u64),
                    Ok(_) => rec.non_2xx += 1,
                    Err(_) => {
                        // The connection is gone; count the rest as errors quickly.
                        rec.errors += 1;
                        if sender.is_closed() {
                            break;
                        }
                    }
                }
            }
            rec
        }));
    }
    let mut all = Recorded::default();
    for t in tasks {
        let r = t.await?;
        all.latencies_us.extend(r.latencies_us);
        all.non_2xx += r.non_2xx;
        all.errors += r.errors;
    }
    let _ = pacer.join();
    let ended = Instant::now();
    let measured_secs = ended
        .duration_since(start + Duration::from_nanos(measured_from * interval_ns))
        .as_secs_f64();

    let lat = &mut all.latencies_us;
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let idx = ((p / 100.0) * lat.len() as f64).ceil() as usize;
        lat[idx.clamp(1, lat.len()) - 1] as f64 / 1000.0
    };
    println!(
        "target_rps={rate} ok={} non2xx={} errors={} achieved_rps={:.0} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3}",
        lat.len(),
        all.non_2xx,
        all.errors,
        (lat.len() as u64 + all.non_2xx) as f64 / measured_secs,
        pct(50.0),
        pct(90.0),
        pct(99.0),
        pct(99.9),
        pct(100.0),
    );
    Ok(())
}

/// The gRPC upstream's answer to every call: one length-prefixed message
/// (not compressed, 4 bytes: protobuf field 1, the string "ok").
const GRPC_REPLY: &[u8] = &[0, 0, 0, 0, 4, 0x0a, 0x02, b'o', b'k'];

type FrameStream =
    futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>>;

fn frames(frames: Vec<Frame<Bytes>>) -> StreamBody<FrameStream> {
    StreamBody::new(futures_util::stream::iter(
        frames.into_iter().map(Ok).collect::<Vec<_>>(),
    ))
}

async fn grpc_upstream(port: u16) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("bind 127.0.0.1:{port}"))?;
    let calls = Arc::new(AtomicU64::new(0));
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let calls = calls.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let calls = calls.clone();
            async move {
                if req.method() != Method::POST {
                    let n = calls.load(Ordering::Relaxed);
                    let body = frames(vec![Frame::data(Bytes::from(format!("{n}\n")))]);
                    return Ok::<_, std::convert::Infallible>(Response::new(body));
                }
                // Read the request message(s) to the end, as a server does.
                let read = req.into_body().collect().await;
                let mut trailers = HeaderMap::new();
                let body = if read.is_ok() {
                    calls.fetch_add(1, Ordering::Relaxed);
                    trailers.insert("grpc-status", HeaderValue::from_static("0"));
                    vec![
                        Frame::data(Bytes::from_static(GRPC_REPLY)),
                        Frame::trailers(trailers),
                    ]
                } else {
                    trailers.insert("grpc-status", HeaderValue::from_static("13"));
                    vec![Frame::trailers(trailers)]
                };
                let mut resp = Response::new(frames(body));
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/grpc"),
                );
                Ok(resp)
            }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .max_concurrent_streams(1024)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The upstream side of one client connection of `hyper-proxy` or
/// `gate-floor`. One request at a time on an HTTP/1 connection: the lock is
/// never contended, and it is held until the answer's head is in.
type UpstreamSender = Arc<tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<Incoming>>>;

/// The accept loop of `hyper-proxy` and `gate-floor`: HTTP/1.1 connections
/// on 127.0.0.1:PORT, each given an upstream connection of its own to
/// UPSTREAM (HOST:PORT) and served by the service `make` returns for it,
/// with hyper's HTTP/1 server and client connections and tollgate's
/// settings for them (one `write(2)` per message; with
/// `header_read_timeout`, a timer per request as tollgate's listener has).
async fn serve_pairs<F, S>(
    port: u16,
    upstream: &str,
    header_read_timeout: Option<Duration>,
    mut make: F,
) -> anyhow::Result<()>
where
    F: FnMut(UpstreamSender, std::net::SocketAddr) -> anyhow::Result<S>,
    S: hyper::service::Service<Request<Incoming>, Response = Response<Incoming>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("bind 127.0.0.1:{port}"))?;
    loop {
        let (stream, peer) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let up = TcpStream::connect(upstream)
            .await
            .with_context(|| format!("connect {upstream}"))?;
        up.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(up))
            .await?;
        tokio::spawn(conn);
        let service = make(Arc::new(tokio::sync::Mutex::new(sender)), peer)?;
        tokio::spawn(async move {
            let mut server = hyper::server::conn::http1::Builder::new();
            server.writev(false);
            if let Some(timeout) = header_read_timeout {
                server
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(timeout);
            }
            let _ = server.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// `hyper-proxy`: forwards each client connection's requests over an
/// upstream connection of its own; the upstream's answer is the answer.
async fn hyper_proxy(port: u16, upstream: &str) -> anyhow::Result<()> {
    serve_pairs(port, upstream, None, |sender, _| {
        Ok(hyper::service::service_fn(move |req: Request<Incoming>| {
            let sender = sender.clone();
            async move {
                let mut sender = sender.lock().await;
                sender.ready().await?;
                sender.send_request(req).await
            }
        }))
    })
    .await
}

async fn grpc_check(url: &str, key: Option<&str>, calls: u64) -> anyhow::Result<()> {
    let uri: Uri = url.parse()?;
    let addr = format!(
        "{}:{}",
        uri.host().ok_or_else(|| anyhow!("no host in URL"))?,
        uri.port_u16().unwrap_or(80)
    );
    let stream = TcpStream::connect(&addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    for i in 0..calls {
        let mut req = Request::post(uri.clone())
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers");
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        // One empty message: not compressed, length 0.
        let req = req.body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))?;
        sender.ready().await?;
        let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
            .await
            .map_err(|_| anyhow!("call {i} timed out"))??;
        let status = resp.status();
        let ctype = resp.headers().get(http::header::CONTENT_TYPE).cloned();
        let got = resp.into_body().collect().await?;
        let trailers = got.trailers().cloned().unwrap_or_default();
        let body = got.to_bytes();
        let grpc_status = trailers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        if status != StatusCode::OK
            || ctype.as_ref().and_then(|v| v.to_str().ok()) != Some("application/grpc")
            || body.as_ref() != GRPC_REPLY
            || grpc_status != "0"
        {
            bail!(
                "call {i}: status {status}, content-type {ctype:?}, body {body:?}, grpc-status {grpc_status}, grpc-message {:?}",
                trailers.get("grpc-message")
            );
        }
    }
    println!("grpc-check ok: {calls} calls, each 200 application/grpc with the upstream's message and grpc-status 0 in trailers");
    Ok(())
}
