//! `bench-tool gate-floor`: the least an API gateway on hyper 1.x and tokio
//! does per request, written as directly as it can be, for
//! `bench/ab-cpu.sh gate`: where `hyper-proxy` is the floor of forwarding
//! alone, this is the floor of forwarding plus what tollgate's contract
//! makes every admitted request cost, so that tollgate's own overhead can be
//! told from the work itself.
//!
//! Per request, as tollgate does it on the memory store with a cached key:
//! - the `X-API-Key` value hashed (SHA-256) and looked up in a map of known
//!   keys (a key is known from its first request: no bcrypt, as tollgate's
//!   cache after first sight);
//! - one count in the client's per-minute window (61 one-second buckets and
//!   a running total, under a mutex) and its monthly total;
//! - the request's hop-by-hop headers looked for (one pass), the key header
//!   removed, `X-Forwarded-For`/`-Proto`/`-Host` and the three
//!   `X-Tollgate-*` identity headers set;
//! - the upstream call bounded by a timeout, and hyper's header read
//!   timeout on the client connection (a timer each);
//! - the response's hop-by-hop headers removed and the three
//!   `X-RateLimit-*` headers set;
//! - the access line in tollgate's text format, queued to a writer thread
//!   that writes what has queued every 10 ms, and a latency histogram.
//!
//! Left out, so that this stays a floor: routing, the config snapshot, the
//! upstream pool (each client connection has an upstream connection of its
//! own, as in `hyper-proxy`), path normalisation, failure handling, metrics
//! per client, billing days and the reply's JSON errors.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::header::{CONNECTION, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};

static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_TOLLGATE_CLIENT_ID: HeaderName = HeaderName::from_static("x-tollgate-client-id");
static X_TOLLGATE_KEY_ID: HeaderName = HeaderName::from_static("x-tollgate-key-id");
static X_TOLLGATE_SCOPES: HeaderName = HeaderName::from_static("x-tollgate-scopes");
static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
static HOP_BY_HOP: [HeaderName; 7] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];

const PER_MINUTE: u64 = 100_000_000;
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const LOG_EVERY: Duration = Duration::from_millis(10);

/// A known key: its identity, as the headers carry it.
struct Identity {
    client_id: Arc<str>,
    key_id: Arc<str>,
    client: HeaderValue,
    key: HeaderValue,
    scopes: HeaderValue,
}

/// A client's per-minute window (one-second buckets) and monthly count.
struct Counters {
    buckets: [u64; 61],
    newest: u64,
    total: u64,
    month: u64,
}

impl Counters {
    /// Counts one request at `sec`; the window's room left after it.
    fn count(&mut self, sec: u64) -> u64 {
        if sec > self.newest {
            // Seconds that left the window since the last count.
            for s in (self.newest + 1).max(sec.saturating_sub(60))..=sec {
                let b = &mut self.buckets[(s % 61) as usize];
                self.total -= *b;
                *b = 0;
            }
            self.newest = sec;
        }
        self.buckets[(sec % 61) as usize] += 1;
        self.total += 1;
        self.month += 1;
        PER_MINUTE.saturating_sub(self.total)
    }
}

struct Gate {
    keys: Mutex<HashMap<[u8; 32], Arc<Identity>>>,
    counters: Mutex<HashMap<Arc<str>, Counters>>,
    log: Mutex<Vec<u8>>,
    /// The access line's date and time to the second, and that second.
    stamp: Mutex<(u64, String)>,
    /// Upstream latency, in buckets of powers of two microseconds.
    histogram: [AtomicU64; 24],
}

impl Gate {
    fn identity(&self, key: &[u8]) -> Arc<Identity> {
        let digest: [u8; 32] = Sha256::digest(key).into();
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.entry(digest)
            .or_insert_with(|| {
                let id = format!("c{:02x}{:02x}{:02x}", digest[0], digest[1], digest[2]);
                let key_id = format!("k{id}");
                Arc::new(Identity {
                    client: HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("c")),
                    key: HeaderValue::from_str(&key_id).unwrap_or(HeaderValue::from_static("k")),
                    scopes: HeaderValue::from_static("read:charge_points"),
                    key_id: Arc::from(key_id),
                    client_id: Arc::from(id),
                })
            })
            .clone()
    }

    fn count(&self, client: &Arc<str>, sec: u64) -> u64 {
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        counters
            .entry(client.clone())
            .or_insert_with(|| Counters {
                buckets: [0; 61],
                newest: sec,
                total: 0,
                month: 0,
            })
            .count(sec)
    }
}

/// Removes hop-by-hop headers, after one pass that finds whether any is there.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    if !h.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    for name in &HOP_BY_HOP {
        h.remove(name);
    }
}

/// The last `X-RateLimit-Reset` value made, and the second it names.
struct ResetValue(Mutex<(u64, HeaderValue)>);

impl ResetValue {
    fn at(&self, sec: u64) -> HeaderValue {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if last.0 != sec {
            let text = jiff::Timestamp::from_second(sec as i64)
                .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_default();
            *last = (
                sec,
                HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("-")),
            );
        }
        last.1.clone()
    }
}

/// Serves on 127.0.0.1:PORT, forwarding to UPSTREAM (HOST:PORT).
pub async fn run(port: u16, upstream: &str) -> anyhow::Result<()> {
    let gate = Arc::new(Gate {
        keys: Mutex::new(HashMap::new()),
        counters: Mutex::new(HashMap::new()),
        log: Mutex::new(Vec::with_capacity(64 * 1024)),
        stamp: Mutex::new((u64::MAX, String::new())),
        histogram: std::array::from_fn(|_| AtomicU64::new(0)),
    });
    let reset = Arc::new(ResetValue(Mutex::new((0, HeaderValue::from_static("-")))));
    let limit = HeaderValue::from(PER_MINUTE);
    let writer = gate.clone();
    std::thread::spawn(move || {
        let mut out = std::io::stderr().lock();
        let mut spare = Vec::with_capacity(64 * 1024);
        loop {
            std::thread::sleep(LOG_EVERY);
            std::mem::swap(
                &mut *writer.log.lock().unwrap_or_else(|e| e.into_inner()),
                &mut spare,
            );
            if !spare.is_empty() {
                let _ = out.write_all(&spare);
                spare.clear();
            }
        }
    });
    crate::serve_pairs(port, upstream, Some(HEADER_READ_TIMEOUT), |sender, peer| {
        let forwarded_for = HeaderValue::from_str(&peer.ip().to_string())?;
        let (gate, reset, limit) = (gate.clone(), reset.clone(), limit.clone());
        Ok(hyper::service::service_fn(move |req: Request<Incoming>| {
            let (sender, gate, reset) = (sender.clone(), gate.clone(), reset.clone());
            let (forwarded_for, limit) = (forwarded_for.clone(), limit.clone());
            async move { serve(req, &sender, &gate, &reset, forwarded_for, limit).await }
        }))
    })
    .await
}

/// One request: the key, the count, the headers both ways, the upstream
/// call under its timeout, the latency histogram and the access line.
async fn serve(
    mut req: Request<Incoming>,
    sender: &crate::UpstreamSender,
    gate: &Gate,
    reset: &ResetValue,
    forwarded_for: HeaderValue,
    limit: HeaderValue,
) -> anyhow::Result<Response<Incoming>> {
    let started = Instant::now();
    let id = match req.headers().get(&X_API_KEY) {
        Some(key) => gate.identity(key.as_bytes()),
        None => anyhow::bail!("no key"),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let remaining = gate.count(&id.client_id, now.as_secs());
    let method = req.method().clone();
    let uri = req.uri().clone();

    let h = req.headers_mut();
    strip_hop_by_hop(h);
    h.remove(&X_API_KEY);
    h.insert(X_FORWARDED_FOR.clone(), forwarded_for);
    h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    if let Some(host) = h.get(HOST).cloned() {
        h.insert(X_FORWARDED_HOST.clone(), host);
    }
    h.insert(X_TOLLGATE_CLIENT_ID.clone(), id.client.clone());
    h.insert(X_TOLLGATE_KEY_ID.clone(), id.key.clone());
    h.insert(X_TOLLGATE_SCOPES.clone(), id.scopes.clone());

    let sent = async {
        let mut sender = sender.lock().await;
        sender.ready().await?;
        sender.send_request(req).await
    };
    let mut resp = tokio::time::timeout(UPSTREAM_TIMEOUT, sent).await??;
    let upstream = started.elapsed();
    let bucket = (64 - (upstream.as_micros() as u64).leading_zeros()).min(23) as usize;
    gate.histogram[bucket].fetch_add(1, Ordering::Relaxed);

    let h = resp.headers_mut();
    strip_hop_by_hop(h);
    h.insert(X_RATELIMIT_LIMIT.clone(), limit);
    h.insert(X_RATELIMIT_REMAINING.clone(), HeaderValue::from(remaining));
    h.insert(X_RATELIMIT_RESET.clone(), reset.at(now.as_secs() + 60));

    // The access line, in tollgate's text format (the date and time to the
    // second made once a second, as tollgate does).
    let mut line = String::with_capacity(256);
    {
        let mut stamp = gate.stamp.lock().unwrap_or_else(|e| e.into_inner());
        if stamp.0 != now.as_secs() {
            let text = jiff::Timestamp::from_second(now.as_secs() as i64)
                .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S").to_string())
                .unwrap_or_default();
            *stamp = (now.as_secs(), text);
        }
        let _ = writeln!(
            line,
            "{}.{:06}Z  INFO tollgate::access: request method={} path={} status={} \
             client_id={} key_id={} upstream_status={} decision=forwarded duration_ms={:.3}",
            stamp.1,
            now.subsec_micros(),
            method,
            uri.path(),
            resp.status().as_u16(),
            id.client_id,
            id.key_id,
            resp.status().as_u16(),
            started.elapsed().as_secs_f64() * 1e3,
        );
    }
    gate.log
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend_from_slice(line.as_bytes());
    Ok(resp)
}
