//! A bounded soak (ignored by default; `docs/soak.md` has the figures):
//! two tollgate processes on one real redis-server, 40 clients at mixed
//! limits sending for a few minutes on loopback. Checks afterwards that every
//! admitted request reached the upstream once and nothing else did, that
//! quota-bound clients got exactly min(offered, quota), that no client got
//! more than its limit in any 59 s span (1 s slack for client-side clocks),
//! that clients offered more than their limit got at least it per 61 s, and
//! that both processes' RSS stayed flat.
//!
//! Run: `SOAK_SECS=180 cargo test --release --test soak -- --ignored --nocapture`

#[macro_use]
mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::admin::{create_client, create_key};
use common::http::Http;
use common::redis_server::RedisServer;
use common::tollgate::{config, redis_store, Tollgate};
use common::upstream::Upstream;
use serde_json::json;

const CP: &str = "/api/v1/charge_points";

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("proc status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

struct Plan {
    id: String,
    per_minute: u64,
    monthly: u64,
    /// Pause between two requests.
    every: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: minutes long; run by hand, see the file's doc comment"]
async fn two_processes_many_clients_mixed_limits() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    let upstream = Upstream::start().await;
    let redis = RedisServer::start();
    let cfg = config(&upstream.url(), &redis_store(&redis.url(), 1000), "");
    let a = Tollgate::start(&cfg);
    let b = Tollgate::start(&cfg);
    let http = Http::default();

    // Mixed limits: tight per-minute, loose, quota-bound, never limited.
    let mut plans = Vec::new();
    for i in 0..40u64 {
        let (per_minute, monthly) = match i % 4 {
            0 => (10, 1_000_000),
            1 => (45, 1_000_000),
            2 => (1_000, 25 + i),
            _ => (100_000, 1_000_000),
        };
        plans.push(Plan {
            id: format!("soak{i}"),
            per_minute,
            monthly,
            every: Duration::from_millis(60 + (i % 7) * 40),
        });
    }
    let mut secrets = HashMap::new();
    for p in &plans {
        create_client(
            &http,
            &a,
            &p.id,
            json!({"per_minute": p.per_minute, "monthly": p.monthly}),
        )
        .await;
        let (_, s) = create_key(&http, &a, &p.id, &["read:charge_points"]).await;
        secrets.insert(p.id.clone(), s);
    }
    let rss_start = (rss_kb(a.pid()), rss_kb(b.pid()));

    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for (n, p) in plans.iter().enumerate() {
        let urls = [a.url(CP), b.url(CP)];
        let (http, secret, every) = (http.clone(), secrets[&p.id].clone(), p.every);
        tasks.push(tokio::spawn(async move {
            // (midpoint seconds since start, status) of every request.
            let mut seen: Vec<(f64, u16)> = Vec::new();
            let mut i = n;
            while Instant::now() < deadline {
                let sent = started.elapsed().as_secs_f64();
                let r = http.get_key(&urls[i % 2], &secret).await;
                let done = started.elapsed().as_secs_f64();
                seen.push(((sent + done) / 2.0, r.status.as_u16()));
                i += 1;
                tokio::time::sleep(every).await;
            }
            seen
        }));
    }
    let mut rss_mid = (0, 0);
    tokio::time::sleep(Duration::from_secs(secs / 4)).await;
    rss_mid = (
        rss_mid.0.max(rss_kb(a.pid())),
        rss_mid.1.max(rss_kb(b.pid())),
    );
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("client task"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rss_end = (rss_kb(a.pid()), rss_kb(b.pid()));

    let mut upstream_per_client: HashMap<String, u64> = HashMap::new();
    for r in upstream.requests() {
        if let Some(c) = r.header("x-tollgate-client-id") {
            *upstream_per_client.entry(c).or_default() += 1;
        }
    }
    let (mut offered_total, mut admitted_total) = (0u64, 0u64);
    for (p, seen) in plans.iter().zip(&results) {
        let offered = seen.len() as u64;
        let admitted: Vec<f64> = seen
            .iter()
            .filter(|(_, s)| *s == 200)
            .map(|(t, _)| *t)
            .collect();
        let others: Vec<u16> = seen
            .iter()
            .map(|(_, s)| *s)
            .filter(|s| *s != 200 && *s != 429)
            .collect();
        assert!(
            others.is_empty(),
            "{}: unexpected statuses {others:?}",
            p.id
        );
        let n = admitted.len() as u64;
        offered_total += offered;
        admitted_total += n;
        assert_eq!(
            upstream_per_client.get(&p.id).copied().unwrap_or(0),
            n,
            "{}: upstream saw a different count than the client was admitted",
            p.id
        );
        if p.monthly < 1_000 {
            assert_eq!(n, offered.min(p.monthly), "{}: quota", p.id);
        }
        // Never more than the limit in any 59 s span (midpoints; 1 s slack).
        let mut max_span = 0;
        for (i, &t) in admitted.iter().enumerate() {
            let within = admitted[i..].iter().take_while(|&&u| u < t + 59.0).count();
            max_span = max_span.max(within);
        }
        assert!(
            max_span as u64 <= p.per_minute,
            "{}: {max_span} in 59 s, limit {}",
            p.id,
            p.per_minute
        );
        // Offered above the limit for the whole soak: at least the limit per 61 s.
        let offered_rate = 60.0 / p.every.as_secs_f64();
        if p.monthly >= 1_000 && offered_rate > 1.5 * p.per_minute as f64 {
            let floor = p.per_minute * (elapsed / 61.0).floor() as u64;
            assert!(
                n >= floor,
                "{}: admitted {n}, expected at least {floor}",
                p.id
            );
        }
        eprintln!(
            "{:>7}: per_minute {:>6} monthly {:>7} offered {:>5} admitted {:>5} max in 59 s {:>4}",
            p.id, p.per_minute, p.monthly, offered, n, max_span
        );
    }
    eprintln!(
        "soak: {elapsed:.0} s, 2 processes, {} clients, {offered_total} offered, {admitted_total} admitted ({:.0} req/s offered); \
         RSS a {} -> {} -> {} kB, b {} -> {} -> {} kB",
        plans.len(),
        offered_total as f64 / elapsed,
        rss_start.0, rss_mid.0, rss_end.0, rss_start.1, rss_mid.1, rss_end.1
    );
    assert_eq!(upstream.count() as u64, admitted_total, "upstream total");
    for (mid, end) in [(rss_mid.0, rss_end.0), (rss_mid.1, rss_end.1)] {
        assert!(
            end < mid + 8 * 1024,
            "RSS grew from {mid} kB to {end} kB after the first quarter"
        );
    }
}
