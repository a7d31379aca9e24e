//! Two tollgate processes on a real Redis Cluster (six nodes) and on a real
//! Sentinel set-up: exact counting under concurrency, and serving through a
//! failover with the count drift measured and bounded.
//!
//! Drift = (the client's monthly count in the store) − (requests forwarded).
//! A request whose script ran but whose reply was lost (connection cut by the
//! failover) is counted but answered 503, so drift ≤ the 503s seen; a write
//! acknowledged by an old primary and not yet replicated is lost, so drift
//! can go below zero, by at most the requests admitted in the failover window.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::admin::{call, create_client, create_key};
use common::http::Http;
use common::redis_cluster::{RedisCluster, RedisSentinel, MASTER_NAME};
use common::tollgate::{config, Tollgate};
use common::two::{alternate, exact_limit, start_two};
use common::upstream::Upstream;
use serde_json::json;

const CP: &str = "/api/v1/charge_points";

fn cluster_store(urls: &[String]) -> String {
    let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "[store]\nbackend = \"redis-cluster\"\nurls = [{}]\ntimeout_ms = 500",
        urls.join(", ")
    )
}

fn sentinel_store(sentinels: &[String]) -> String {
    let urls: Vec<String> = sentinels.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "[store]\nbackend = \"redis-sentinel\"\nsentinels = [{}]\nmaster_name = \"{MASTER_NAME}\"\ntimeout_ms = 500",
        urls.join(", ")
    )
}

/// What a load run through a failover saw.
#[derive(Debug, Default)]
struct Outcome {
    ok: u64,
    unavailable: u64,
    /// Longest stretch without a 200 while the failover ran.
    longest_gap: Duration,
    /// The store's monthly count minus the requests forwarded.
    drift: i64,
}

/// Four workers send requests of client `beta` alternately to `a` and `b`
/// while `failover` runs (on a blocking thread), then until both processes
/// serve again; returns what they saw.
async fn load_through(
    http: &Http,
    a: &Tollgate,
    b: &Tollgate,
    upstream: &Upstream,
    failover: impl FnOnce() + Send + 'static,
) -> Outcome {
    create_client(
        http,
        a,
        "beta",
        json!({"per_minute": 1_000_000, "monthly": 10_000_000}),
    )
    .await;
    let (_, secret) = create_key(http, a, "beta", &["read:charge_points"]).await;
    for tg in [a, b] {
        assert_eq!(http.get_key(&tg.url(CP), &secret).await.status, 200);
    }
    let before = upstream.count() as i64 - 2;
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (http, secret, stop) = (http.clone(), secret.clone(), stop.clone());
        let urls = [a.url(CP), b.url(CP)];
        workers.push(tokio::spawn(async move {
            let mut out = Outcome::default();
            let mut last_ok = Instant::now();
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let r = http.get_key(&urls[i % 2], &secret).await;
                i += 1;
                match r.status.as_u16() {
                    200 => {
                        out.ok += 1;
                        out.longest_gap = out.longest_gap.max(last_ok.elapsed());
                        last_ok = Instant::now();
                    }
                    503 => out.unavailable += 1,
                    other => panic!("unexpected status {other}"),
                }
            }
            out
        }));
    }
    tokio::task::spawn_blocking(failover).await.unwrap();
    // Both processes serve again (a few requests after the failover).
    for tg in [a, b] {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut ok_in_a_row = 0;
        while ok_in_a_row < 5 {
            let r = http.get_key(&tg.url(CP), &secret).await;
            ok_in_a_row = if r.status == 200 { ok_in_a_row + 1 } else { 0 };
            assert!(Instant::now() < deadline, "no recovery: {}", r.status);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = Outcome::default();
    for w in workers {
        let o = w.await.unwrap();
        total.ok += o.ok;
        total.unavailable += o.unavailable;
        total.longest_gap = total.longest_gap.max(o.longest_gap);
    }
    let forwarded = upstream.count() as i64 - before;
    let usage = call(
        http,
        a,
        http::Method::GET,
        "/admin/v1/clients/beta/usage",
        None,
    )
    .await;
    assert_eq!(usage.status, 200);
    let used = usage.json()["monthly_quota"]["used"].as_i64().unwrap();
    total.drift = used - forwarded;
    eprintln!("failover outcome: {total:?} (forwarded {forwarded}, counted {used})");
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_exact_limit_and_manual_failover() {
    let upstream = Upstream::start().await;
    let cluster = RedisCluster::start();
    let cfg = config(&upstream.url(), &cluster_store(&cluster.seed_urls()), "");
    let (a, b) = start_two(&cfg);
    let http = Http::default();
    exact_limit(&http, &a, &b, &upstream, "acme").await;

    let cluster = Arc::new(cluster);
    let c = cluster.clone();
    let out = load_through(&http, &a, &b, &upstream, move || {
        c.failover_slot_of("tg:{c:beta}:win");
    })
    .await;
    assert!(out.ok > 0);
    // CLUSTER FAILOVER waits for the replica to catch up: nothing acknowledged
    // is lost; only replies cut by the switch may be counted but not served.
    assert!(
        out.drift >= 0 && out.drift <= out.unavailable as i64,
        "{out:?}"
    );
    // Counting is exact again after the failover.
    exact_limit_again(&http, &a, &b, &upstream, "acme2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_primary_killed() {
    let upstream = Upstream::start().await;
    let cluster = RedisCluster::start();
    let cfg = config(&upstream.url(), &cluster_store(&cluster.seed_urls()), "");
    let (a, b) = start_two(&cfg);
    let http = Http::default();

    let cluster = Arc::new(std::sync::Mutex::new(cluster));
    let c = cluster.clone();
    let out = load_through(&http, &a, &b, &upstream, move || {
        c.lock().unwrap().kill_primary_of("tg:{c:beta}:win");
    })
    .await;
    assert!(out.ok > 0);
    // Asynchronous replication: writes acknowledged by the killed primary
    // and not yet copied are lost (drift < 0); bounded by what was admitted.
    assert!(
        out.drift.unsigned_abs() <= out.ok + out.unavailable,
        "{out:?}"
    );
    exact_limit_again(&http, &a, &b, &upstream, "acme3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_exact_limit_and_failover() {
    let upstream = Upstream::start().await;
    let sentinel = RedisSentinel::start();
    let cfg = config(
        &upstream.url(),
        &sentinel_store(&sentinel.sentinel_urls()),
        "",
    );
    let (a, b) = start_two(&cfg);
    let http = Http::default();
    exact_limit(&http, &a, &b, &upstream, "acme").await;

    let sentinel = Arc::new(sentinel);
    let s = sentinel.clone();
    let out = load_through(&http, &a, &b, &upstream, move || {
        let (old, new) = s.failover();
        assert_ne!(old, new);
    })
    .await;
    assert!(out.ok > 0);
    assert!(
        out.drift.unsigned_abs() <= out.ok + out.unavailable,
        "{out:?}"
    );
    exact_limit_again(&http, &a, &b, &upstream, "acme2").await;
}

/// [`exact_limit`] for a fresh client `id`, after a failover.
async fn exact_limit_again(http: &Http, a: &Tollgate, b: &Tollgate, upstream: &Upstream, id: &str) {
    create_client(http, a, id, json!({"per_minute": 10})).await;
    let (_, secret) = create_key(http, a, id, &["read:charge_points"]).await;
    let before = upstream.count();
    let counts = alternate(http, a, b, CP, &secret, 30).await;
    counts.assert_only(&[200, 429]);
    let ok = counts.of(200);
    assert_eq!(ok, 10);
    assert_eq!(upstream.count() - before, 10);
}

// ---------------------------------------------------------------- measurement

/// Throughput of the admission script on one Redis and on the three
/// primaries of a cluster, driven by `redis-benchmark` (EVALSHA of
/// `admit.lua`, 32 connections per benchmark, each benchmark on one client).
/// Numbers for docs/scaling.md:
/// `cargo test --release --test cluster measure_admit_throughput -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check; see docs/scaling.md"]
async fn measure_admit_throughput() {
    use common::redis_cluster::cli;
    use common::redis_server::RedisServer;
    use tollgate::model::{Client, ClientStatus, KeyRecord};
    use tollgate::store::redis::{Bounds, RedisStore, Topology};
    use tollgate::store::{Store, TimeSource};

    const N: &str = "200000";
    let script = include_str!("../src/store/admit.lua");
    async fn setup(store: &RedisStore, id: &str) {
        let client = Client {
            id: id.into(),
            name: id.into(),
            status: ClientStatus::Active,
            per_minute: Some(1_000_000_000),
            monthly: Some(1_000_000_000_000),
            created_at: 1_770_000_000,
        };
        store.create_client(&client).await.unwrap();
        let key = KeyRecord {
            id: format!("k{id}"),
            client_id: id.into(),
            name: "bench".into(),
            scopes: vec!["read:charge_points".into()],
            hash: "$2b$04$abcdefghijklmnopqrstuv0123456789012345678901234567890".into(),
            prefix: "sk_live_abcd".into(),
            gen: 1,
            created_at: 1_770_000_100,
            expires_at: None,
            last_used_at: None,
            previous: None,
        };
        store.create_key(&key).await.unwrap();
    }
    fn bench(port: u16, sha: &str, id: &str) -> std::process::Child {
        let (c, k, w) = (
            format!("tg:{{c:{id}}}:client"),
            format!("tg:{{c:{id}}}:key:k{id}"),
            format!("tg:{{c:{id}}}:win"),
        );
        std::process::Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-n", N, "-c", "32", "-q"])
            .args(["EVALSHA", sha, "3", &c, &k, &w])
            .args(["admit", id, &format!("k{id}"), "1", "", "1000000000"])
            .args(["1000000000000", ""])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("redis-benchmark")
    }
    fn rps(child: std::process::Child) -> f64 {
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // "EVALSHA ...: 51234.57 requests per second, p50=0.311 msec"
        let line = text
            .split(['\r', '\n'])
            .rfind(|l| l.contains("requests per second"))
            .unwrap_or_else(|| panic!("no result in {text:?}"))
            .to_owned();
        let before = line.split(" requests per second").next().unwrap();
        eprintln!("  {}", line.trim());
        before.rsplit(' ').next().unwrap().parse().unwrap()
    }
    let bounds = Bounds {
        timeout: Duration::from_secs(2),
        max_in_flight: 1024,
    };

    // One server.
    let server = RedisServer::start();
    let one = RedisStore::new(&server.url(), Duration::from_secs(2), TimeSource::Store).unwrap();
    setup(&one, "b0").await;
    let sha = cli(server.port(), &["SCRIPT", "LOAD", script]).unwrap();
    eprintln!("one redis-server, one client:");
    let single = rps(bench(server.port(), &sha, "b0"));
    // Every call admitted and counted.
    let used = cli(server.port(), &["HGET", "tg:{c:b0}:client", "used"]);
    assert_eq!(used.as_deref(), Some(N));

    // A cluster: three clients whose slots are on three different primaries.
    let cluster = RedisCluster::start();
    let topo = Topology::Cluster {
        urls: cluster.seed_urls(),
    };
    let store = RedisStore::with_topology(&topo, bounds, TimeSource::Store).unwrap();
    let mut chosen: Vec<(u16, String)> = Vec::new();
    for i in 0..100 {
        let id = format!("b{i}");
        let (primary, _) = cluster.owner_of(&format!("tg:{{c:{id}}}:win"));
        if chosen.iter().all(|(p, _)| *p != primary) {
            setup(&store, &id).await;
            chosen.push((primary, id));
        }
        if chosen.len() == 3 {
            break;
        }
    }
    let mut shas = Vec::new();
    for (p, _) in &chosen {
        shas.push(cli(*p, &["SCRIPT", "LOAD", script]).unwrap());
    }
    eprintln!("cluster, one primary, one client:");
    let one_primary = rps(bench(chosen[0].0, &shas[0], &chosen[0].1));
    eprintln!("cluster, three primaries at once, one client each:");
    let children: Vec<_> = chosen
        .iter()
        .zip(&shas)
        .map(|((p, id), sha)| bench(*p, sha, id))
        .collect();
    let total: f64 = children.into_iter().map(rps).sum();
    for (p, id) in &chosen {
        let used = cli(*p, &["HGET", &format!("tg:{{c:{id}}}:client"), "used"]);
        let expected = if id == &chosen[0].1 { 400_000 } else { 200_000 };
        assert_eq!(used.and_then(|u| u.parse().ok()), Some(expected));
    }
    eprintln!(
        "admit/s: one server {single:.0}; cluster one primary {one_primary:.0}; \
         cluster three primaries together {total:.0}"
    );
}
