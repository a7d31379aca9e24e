//! Exactly-once admission when a store reply is lost (docs/rate-limiting.md,
//! "Exactly-once admission"): a request counts if and only if it is
//! forwarded, also when Redis ran the admission and its reply never reached
//! tollgate.
//!
//! The fault is real: a TCP proxy (`common::fault_proxy`) between tollgate
//! and Redis (for the cluster, in front of one primary that announces the
//! proxy's port; for Sentinel, the proxy is the address the sentinels
//! monitor) lets Redis run an admission call, then closes tollgate's
//! connection instead of forwarding the reply. After every fault the
//! client's monthly `used` must equal the requests the upstream received,
//! and no request may wait much past the store timeout.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::admin::{call, create_client, create_key};
use common::fault_proxy::{eventually, FaultProxy};
use common::http::Http;
use common::redis_cluster::{cli, wait_for, RedisCluster, RedisSentinel};
use common::redis_server::RedisServer;
use common::tollgate::{cluster_store, config, redis_store, sentinel_store, Tollgate};
use common::upstream::Upstream;
use serde_json::json;

const CP: &str = "/api/v1/charge_points";
/// The store timeout of these tests (generous: the machine is shared).
const TIMEOUT_MS: u64 = 2000;
/// What a request may take beyond the store timeout (HTTP, scheduling).
const SLACK: Duration = Duration::from_millis(1500);
/// How long Redis is paused (`CLIENT PAUSE`) so that a batch forms behind
/// the first call.
const PAUSE_MS: u64 = 400;

fn local(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// The client `acme` with room for everything, and one of its keys.
async fn acme(http: &Http, tg: &Tollgate) -> String {
    create_client(
        http,
        tg,
        "acme",
        json!({"per_minute": 1_000_000, "monthly": 10_000_000}),
    )
    .await;
    let (_, secret) = create_key(http, tg, "acme", &["read:charge_points"]).await;
    // First sight (verification) before any fault.
    assert_eq!(http.get_key(&tg.url(CP), &secret).await.status, 200);
    secret
}

/// The client's monthly `used`, as the store holds it.
async fn used(http: &Http, tg: &Tollgate) -> u64 {
    let r = call(
        http,
        tg,
        http::Method::GET,
        "/admin/v1/clients/acme/usage",
        None,
    )
    .await;
    assert_eq!(r.status, 200, "usage: {:?}", r.body);
    r.json()["monthly_quota"]["used"].as_u64().expect("used")
}

/// The `n` (admissions asked for) of an admission call's arguments.
fn batch_size(cmd: &[String]) -> u64 {
    let at = cmd
        .iter()
        .position(|a| a == "admit")
        .expect("mode argument");
    cmd[at + 8].parse().expect("n")
}

/// `n` concurrent requests of one key; their statuses and the slowest.
async fn burst(http: &Http, url: &str, secret: &str, n: usize) -> (Vec<u16>, Duration) {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (http, url, secret) = (http.clone(), url.to_owned(), secret.to_owned());
            tokio::spawn(async move {
                let t = Instant::now();
                let r = http.get_key(&url, &secret).await;
                (r.status.as_u16(), t.elapsed())
            })
        })
        .collect();
    let mut statuses = Vec::new();
    let mut slowest = Duration::ZERO;
    for t in tasks {
        let (s, e) = t.await.expect("request task");
        statuses.push(s);
        slowest = slowest.max(e);
    }
    (statuses, slowest)
}

/// Pauses the Redis behind `port` for [`PAUSE_MS`] (writes, scripts) so
/// that requests arriving meanwhile form one batch behind the first call.
fn pause_writes(port: u16) {
    let ms = PAUSE_MS.to_string();
    assert_eq!(
        cli(port, &["CLIENT", "PAUSE", &ms, "WRITE"]).as_deref(),
        Some("OK")
    );
}

/// Single admissions and batches of 100, each with its admission reply
/// lost, through `tg` and `proxy` (`pause_port`: where to pause Redis).
async fn lost_replies(tg: &Tollgate, proxy: &FaultProxy, upstream: &Upstream, pause_port: u16) {
    let http = Http::default();
    let secret = acme(&http, tg).await;
    let bound = Duration::from_millis(TIMEOUT_MS) + SLACK;

    // Single admissions: every one loses its reply once.
    for i in 1..=10 {
        proxy.drop_reply(0);
        let t = Instant::now();
        let r = http.get_key(&tg.url(CP), &secret).await;
        let took = t.elapsed();
        assert_eq!(r.status, 200, "request {i}: {:?}", r.body);
        assert!(took < bound, "request {i} took {took:?}");
        assert_eq!(proxy.dropped(), i, "the reply of request {i} was lost");
        assert_eq!(used(&http, tg).await, upstream.count() as u64);
    }

    // Batches: 100 concurrent requests; the call after the first one (the
    // batch that queued while Redis was paused) loses its reply.
    for round in 1..=3 {
        let dropped = proxy.dropped();
        pause_writes(pause_port);
        proxy.drop_reply(1);
        let (statuses, slowest) = burst(&http, &tg.url(CP), &secret, 100).await;
        assert!(
            statuses.iter().all(|&s| s == 200),
            "round {round}: {statuses:?}"
        );
        assert!(slowest < bound, "round {round}: slowest {slowest:?}");
        assert_eq!(
            proxy.dropped(),
            dropped + 1,
            "round {round}: a reply was lost"
        );
        let cmd = proxy.dropped_commands().pop().expect("the lost call");
        let n = batch_size(&cmd);
        eprintln!("round {round}: the lost call was a batch of {n}, slowest {slowest:?}");
        assert!(n > 1, "round {round}: the lost call was a batch, n = {n}");
        assert_eq!(
            used(&http, tg).await,
            upstream.count() as u64,
            "round {round}"
        );
    }
    eprintln!(
        "lost replies: {} (forwarded {}, counted {})",
        proxy.dropped(),
        upstream.count(),
        used(&http, tg).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_server_lost_replies_count_exactly_once() {
    let upstream = Upstream::start().await;
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.addr());
    let tg = Tollgate::start(&config(
        &upstream.url(),
        &redis_store(&proxy.url(), TIMEOUT_MS),
        "",
    ));
    lost_replies(&tg, &proxy, &upstream, redis.port()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_lost_replies_count_exactly_once() {
    let upstream = Upstream::start().await;
    let (cluster, proxy, primary) = tokio::task::spawn_blocking(|| {
        let cluster = RedisCluster::start();
        let (proxy, primary) = proxy_in_front_of_owner(&cluster, "tg:{c:acme}:client");
        (cluster, proxy, primary)
    })
    .await
    .expect("cluster set-up");
    let tg = Tollgate::start(&config(
        &upstream.url(),
        &cluster_store(&cluster.seed_urls(), TIMEOUT_MS),
        "",
    ));
    lost_replies(&tg, &proxy, &upstream, primary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_lost_replies_count_exactly_once() {
    let upstream = Upstream::start().await;
    let (sentinel, proxy) = tokio::task::spawn_blocking(|| {
        let mut proxy = None;
        let sentinel = RedisSentinel::start_monitoring(|primary| {
            let p = FaultProxy::start(local(primary));
            let port = p.port();
            proxy = Some(p);
            port
        });
        (sentinel, proxy.expect("the proxy"))
    })
    .await
    .expect("sentinel set-up");
    assert_eq!(sentinel.primary_port(), proxy.port());
    let tg = Tollgate::start(&config(
        &upstream.url(),
        &sentinel_store(&sentinel.sentinel_urls(), TIMEOUT_MS),
        "",
    ));
    lost_replies(&tg, &proxy, &upstream, proxy.port()).await;
}

/// A proxy in front of the primary that holds `key`, which announces the
/// proxy's port to the cluster; returns it and the primary's own port.
fn proxy_in_front_of_owner(cluster: &RedisCluster, key: &str) -> (FaultProxy, u16) {
    let (primary, _replica) = cluster.owner_of(key);
    let proxy = FaultProxy::start(local(primary));
    let (port, bus) = (proxy.port().to_string(), (primary + 10_000).to_string());
    for (name, value) in [
        ("cluster-announce-ip", "127.0.0.1"),
        ("cluster-announce-bus-port", bus.as_str()),
        ("cluster-announce-port", port.as_str()),
    ] {
        assert_eq!(
            cli(primary, &["CONFIG", "SET", name, value]).as_deref(),
            Some("OK")
        );
    }
    let nodes: Vec<u16> = cluster
        .seed_urls()
        .iter()
        .filter_map(|u| u.trim_end_matches('/').rsplit(':').next()?.parse().ok())
        .collect();
    let seen = format!("127.0.0.1:{port}@");
    wait_for("every node names the proxy for the primary", || {
        nodes
            .iter()
            .all(|&n| cli(n, &["CLUSTER", "NODES"]).is_some_and(|t| t.contains(&seen)))
    });
    cluster.wait_healthy();
    (proxy, primary)
}

/// The store stays down after the lost reply: every request gets 503
/// within the timeout, and once the store is back nothing is counted (the
/// applied call is voided).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_down_after_a_lost_reply_counts_nothing() {
    let upstream = Upstream::start().await;
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.addr());
    let tg = Tollgate::start(&config(
        &upstream.url(),
        &redis_store(&proxy.url(), TIMEOUT_MS),
        "",
    ));
    let http = Http::default();
    let secret = acme(&http, &tg).await;
    let bound = Duration::from_millis(TIMEOUT_MS) + SLACK;

    // One request.
    proxy.stay_down_after_drop();
    proxy.drop_reply(0);
    let t = Instant::now();
    let r = http.get_key(&tg.url(CP), &secret).await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert!(t.elapsed() < bound, "took {:?}", t.elapsed());
    assert_eq!(proxy.dropped(), 1);
    assert!(proxy.is_down());
    proxy.come_back();
    let forwarded = upstream.count() as u64;
    assert!(
        eventually(Duration::from_secs(10), || tg
            .log_text()
            .contains("was voided"))
        .await,
        "the lost call was voided:\n{}",
        tg.log_text()
    );
    assert_eq!(used(&http, &tg).await, forwarded);

    // A batch of 100 (the call after the first, queued while Redis paused).
    let before = tg.log_text().matches("was voided").count();
    proxy.stay_down_after_drop();
    pause_writes(redis.port());
    proxy.drop_reply(1);
    let (statuses, slowest) = burst(&http, &tg.url(CP), &secret, 100).await;
    assert!(slowest < bound, "slowest {slowest:?}");
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 503),
        "{statuses:?}"
    );
    let n = batch_size(&proxy.dropped_commands().pop().expect("the lost call"));
    eprintln!("store down: {ok} served, the lost batch had {n}, slowest {slowest:?}");
    assert!(n > 1, "the lost call was a batch, n = {n}");
    assert!(ok < 100);
    proxy.come_back();
    assert!(
        eventually(Duration::from_secs(10), || {
            tg.log_text().matches("was voided").count() > before
        })
        .await,
        "the lost batch was voided"
    );
    assert_eq!(used(&http, &tg).await, upstream.count() as u64);
}

/// The scripts themselves, on a real Redis: the same call counts once, a
/// fenced or passed call never counts, a voided call gives back what it
/// counted.
#[test]
fn a_repeated_call_counts_once_and_a_settled_one_never() {
    let server = RedisServer::start();
    let client = redis::Client::open(server.url()).expect("url");
    let mut c = client.get_connection().expect("connection");
    let admit = redis::Script::new(concat!(
        include_str!("../src/store/admit_lib.lua"),
        include_str!("../src/store/admit.lua")
    ));
    let settle = redis::Script::new(include_str!("../src/store/settle.lua"));
    let (ck, kk, wk) = (
        "tg:{c:acme}:client",
        "tg:{c:acme}:key:k1",
        "tg:{c:acme}:win",
    );
    let _: () = redis::cmd("HSET")
        .arg(ck)
        .arg(&["status", "active", "created_at", "0"])
        .query(&mut c)
        .expect("client");
    let _: () = redis::cmd("HSET")
        .arg(kk)
        .arg(&["client_id", "acme", "gen", "1", "scopes", "read"])
        .query(&mut c)
        .expect("key");
    const SESSION: &str = "s:00000000000000010000000000000002";
    const RECORD: &str = "r:00000000000000010000000000000002";
    let now_ms = "1764300000500";
    let run = |c: &mut redis::Connection, seq: u64, n: u64| -> Vec<i64> {
        admit
            .key(ck)
            .key(kk)
            .key(wk)
            .arg("admit")
            .arg("acme")
            .arg("k1")
            .arg("1")
            .arg("")
            .arg("100")
            .arg("1000")
            .arg(now_ms)
            .arg(n)
            .arg(SESSION)
            .arg(seq)
            .arg(RECORD)
            .invoke::<redis::Value>(c)
            .map(common::redis_server::admit_slots)
            .expect("admit")
    };
    // admit.lua's counters (its header): little-endian doubles, the
    // window's total first, `used` last.
    let counter = |c: &mut redis::Connection, i: usize| -> u64 {
        let ctr: Option<Vec<u8>> = redis::cmd("HGET").arg(ck).arg("ctr").query(c).expect("ctr");
        common::redis_server::counter(ctr.as_deref(), i)
    };
    let used = |c: &mut redis::Connection| -> u64 { counter(c, 5) };
    let settle_call = |c: &mut redis::Connection, seq: u64, mode: &str| -> Vec<i64> {
        settle
            .key(ck)
            .arg(mode)
            .arg(SESSION)
            .arg(seq)
            .arg(RECORD)
            .arg(now_ms)
            .invoke(c)
            .expect("settle")
    };

    // The same call three times: counted once, the same reply each time.
    let first = run(&mut c, 10, 3);
    assert_eq!(first[0], 0, "admitted: {first:?}");
    assert_eq!(first[8], 3, "three admitted: {first:?}");
    assert_eq!(used(&mut c), 3);
    for _ in 0..2 {
        assert_eq!(run(&mut c, 10, 3), first);
    }
    assert_eq!(used(&mut c), 3);

    // Checking an applied call answers its reply; an earlier one is passed.
    assert_eq!(settle_call(&mut c, 10, "check"), first);
    assert_eq!(run(&mut c, 9, 1), vec![-1]);
    assert_eq!(used(&mut c), 3);

    // Checking a call that never ran fences it: it never counts afterwards.
    assert_eq!(settle_call(&mut c, 11, "check"), Vec::<i64>::new());
    assert_eq!(run(&mut c, 11, 5), vec![-1]);
    assert_eq!(used(&mut c), 3);
    assert_eq!(settle_call(&mut c, 11, "check"), Vec::<i64>::new());

    // The next call counts; voiding it gives it back, in the month and in
    // the window, once only, and it never counts again.
    let second = run(&mut c, 12, 2);
    assert_eq!(second[8], 2);
    assert_eq!(used(&mut c), 5);
    assert_eq!(settle_call(&mut c, 12, "void"), second);
    assert_eq!(used(&mut c), 3);
    assert_eq!(counter(&mut c, 0), 3, "the window's total");
    assert_eq!(settle_call(&mut c, 12, "void"), vec![-1]);
    assert_eq!(run(&mut c, 12, 2), vec![-1]);
    assert_eq!(used(&mut c), 3);

    // A later call of the session counts as usual.
    let third = run(&mut c, 13, 1);
    assert_eq!((third[0], third[8]), (0, 1));
    assert_eq!(used(&mut c), 4);

    // A session idle for over 10 minutes is pruned by a later admission of
    // the client that starts a new second (at a multiple of 16 s).
    // So is one whose record was written before 2026-11-28 (cmsgpack, the
    // period at index 20).
    let legacy: Vec<u8> = redis::cmd("EVAL")
        .arg("return cmsgpack.pack({0, tonumber(ARGV[1]), 100, 99, 0, 1000, 1, -1, 1, [20] = 202511})")
        .arg(0)
        .arg(now_ms)
        .query(&mut c)
        .expect("cmsgpack");
    let _: () = redis::cmd("HSET")
        .arg(ck)
        .arg("s:00000000000000050000000000000006")
        .arg("9")
        .arg("r:00000000000000050000000000000006")
        .arg(legacy)
        .query(&mut c)
        .expect("legacy record");
    let later_ms = ((1_764_300_000u64 + 700) / 16 * 16 * 1000).to_string();
    let other = admit
        .key(ck)
        .key(kk)
        .key(wk)
        .arg(&[
            "admit", "acme", "k1", "1", "", "100", "1000", &later_ms, "1",
        ])
        .arg("s:00000000000000030000000000000004")
        .arg(1)
        .arg("r:00000000000000030000000000000004")
        .invoke::<redis::Value>(&mut c)
        .map(common::redis_server::admit_slots)
        .expect("admit");
    assert_eq!(other[0], 0);
    let fields: Vec<String> = redis::cmd("HKEYS").arg(ck).query(&mut c).expect("hkeys");
    assert!(!fields.contains(&SESSION.to_owned()), "{fields:?}");
    assert!(!fields.contains(&RECORD.to_owned()), "{fields:?}");
    assert!(
        !fields
            .iter()
            .any(|f| f.ends_with("00000000000000050000000000000006")),
        "{fields:?}"
    );
    assert!(fields.contains(&"s:00000000000000030000000000000004".to_owned()));
}
