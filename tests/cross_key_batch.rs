//! Admissions of many keys in one script call (src/store/redis/batch.rs,
//! docs/rate-limiting.md "Admissions of many keys in one call") on a real
//! `redis-server`: exact counts across two stores sharing the server, a
//! batch whose reply is lost settled admission by admission, one corrupt
//! client failing only its own admission, and a paused or killed server
//! answered within the timeout with nothing counted.
//!
//! Whether admissions of different keys really shared calls is read from
//! `INFO commandstats`: a call carries the admissions of one key (group
//! commit) or of several (this batching), so fewer script calls than
//! (key, store) pairs can only come from the latter.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fault_proxy::{eventually, FaultProxy};
use common::records::{client, key};
use common::redis_cluster::cli;
use common::redis_server::RedisServer;
use futures_util::StreamExt;
use tollgate::limits::policy::Policy;
use tollgate::limits::{Decision, Limits, Verdict};
use tollgate::store::redis::RedisStore;
use tollgate::store::{AdmitRequest, SharedStore, StoreError, TimeSource};

const STORE_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULTS: Limits = Limits {
    per_minute: 1_000_000,
    monthly: 1_000_000,
};

fn open(url: &str, timeout: Duration) -> SharedStore {
    Arc::new(RedisStore::new(url, timeout, TimeSource::Store).expect("store"))
}

/// A store that sends each admission in a call of its own (`batch_keys = 1`).
fn open_one_call_each(url: &str) -> SharedStore {
    Arc::new(
        RedisStore::new(url, STORE_TIMEOUT, TimeSource::Store)
            .expect("store")
            .with_batch_keys(1),
    )
}

/// Clients `c0..c{n}`, each with `per_minute` and key `k<i>`.
async fn clients(store: &SharedStore, n: usize, per_minute: u64) {
    futures_util::stream::iter(0..n)
        .map(|i| async move {
            let mut c = client(&format!("c{i}"));
            c.per_minute = Some(per_minute);
            store.create_client(&c).await.expect("client");
            let k = key(&format!("k{i}"), &format!("c{i}"), "default", &["read:x"]);
            store.create_key(&k).await.expect("key");
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
}

/// One admission of client `i`'s key, timed.
async fn admit(store: SharedStore, i: usize) -> (usize, Result<Decision, StoreError>, Duration) {
    let (client_id, key_id) = (format!("c{i}"), format!("k{i}"));
    let req = AdmitRequest {
        client_id: &client_id,
        key_id: &key_id,
        gen: 1,
        scope: None,
        defaults: DEFAULTS,
        policy: Policy::default(),
    };
    let started = Instant::now();
    let d = store.admit(&req).await;
    (i, d, started.elapsed())
}

/// `per_client` admissions of each of `n` clients at once, alternating
/// over `stores`.
async fn flood(
    stores: &[SharedStore],
    n: usize,
    per_client: usize,
) -> Vec<(usize, Result<Decision, StoreError>, Duration)> {
    let tasks: Vec<_> = (0..n * per_client)
        .map(|j| tokio::spawn(admit(stores[j % stores.len()].clone(), j % n)))
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("admission task"));
    }
    out
}

/// Script calls the server has run (EVALSHA and EVAL).
fn script_calls(port: u16) -> u64 {
    let stats = cli(port, &["INFO", "commandstats"]).expect("INFO");
    common::redis_server::script_calls_in(&stats)
}

/// How many admissions an `EVALSHA` carried: a batch call's ARGV[1] (the
/// count `admit_batch.lua`'s header starts with), 1 for a lone `admit.lua`
/// call (whose ARGV[1] is its mode).
fn admissions_in(cmd: &[String]) -> usize {
    let keys: usize = cmd.get(2).and_then(|k| k.parse().ok()).expect("numkeys");
    cmd.get(3 + keys).and_then(|n| n.parse().ok()).unwrap_or(1)
}

/// Each of the first `n` clients' monthly `used` as Redis holds it.
async fn used(server: &RedisServer, n: usize) -> Vec<u64> {
    let raw = redis::Client::open(server.url()).expect("url");
    let mut raw = raw
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("HGET")
            .arg(format!("tg:{{c:c{i}}}:client"))
            .arg("ctr");
    }
    let ctr: Vec<Option<Vec<u8>>> = pipe.query_async(&mut raw).await.expect("ctr");
    ctr.iter()
        .map(|c| common::redis_server::counter(c.as_deref(), 5))
        .collect()
}

/// Every admission of `results` admitted or rate limited (nothing else),
/// and each of the first `n` clients admitted and counted exactly `limit`.
async fn each_admitted_and_counted_exactly(
    results: &[(usize, Result<Decision, StoreError>, Duration)],
    server: &RedisServer,
    n: usize,
    limit: u64,
) {
    let mut admitted = vec![0u64; n];
    for (i, d, _) in results {
        match d.as_ref().map(|d| d.verdict) {
            Ok(Verdict::Admitted) => admitted[*i] += 1,
            Ok(Verdict::RateLimited) => {}
            other => panic!("client {i}: {other:?}"),
        }
    }
    let counted = used(server, n).await;
    for (i, a) in admitted.iter().enumerate() {
        assert_eq!(*a, limit, "client {i} admitted");
        assert_eq!(counted[i], limit, "client {i} counted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_keys_over_two_stores_admit_exactly_the_limit_in_shared_calls() {
    const CLIENTS: usize = 200;
    const LIMIT: u64 = 5;
    let server = RedisServer::start();
    let (a, b) = (
        open(&server.url(), STORE_TIMEOUT),
        open(&server.url(), STORE_TIMEOUT),
    );
    clients(&a, CLIENTS, LIMIT).await;
    let before = script_calls(server.port());

    let results = flood(&[a, b], CLIENTS, 8).await;
    let calls = script_calls(server.port()) - before;
    each_admitted_and_counted_exactly(&results, &server, CLIENTS, LIMIT).await;
    eprintln!(
        "{} admissions of {CLIENTS} keys over two stores in {calls} script calls",
        results.len()
    );
    // Each (key, store) pair needs one call of its own without batching.
    assert!(
        calls < CLIENTS as u64,
        "{calls} script calls for {CLIENTS} keys × 2 stores: no cross-key batching"
    );
}

/// Admissions whose arguments differ where they are usually alike (the
/// route's cost, the scope, the default limits) share calls, and each is
/// admitted and counted under its own: a batch call sends an argument once
/// only where every admission in it has the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admissions_differing_in_cost_scope_and_defaults_share_calls_each_under_its_own() {
    // (800 admissions at once: within the store's queue bound.)
    const CLIENTS: usize = 100;
    const PER_MINUTE: u64 = 6;
    let server = RedisServer::start();
    let store = open(&server.url(), STORE_TIMEOUT);
    clients(&store, CLIENTS, PER_MINUTE).await;
    let before = script_calls(server.port());

    // Client i: its requests cost 1 + i % 3 units; even clients' route needs
    // the key's scope, odd ones' none; each sends its own default quota.
    let tasks: Vec<_> = (0..CLIENTS * 8)
        .map(|j| {
            let (store, i) = (store.clone(), j % CLIENTS);
            tokio::spawn(async move {
                let (client_id, key_id) = (format!("c{i}"), format!("k{i}"));
                let req = AdmitRequest {
                    client_id: &client_id,
                    key_id: &key_id,
                    gen: 1,
                    scope: (i % 2 == 0).then_some("read:x"),
                    defaults: Limits {
                        per_minute: 1_000_000,
                        monthly: 1_000_000 + i as u64,
                    },
                    policy: Policy {
                        cost: 1 + (i % 3) as u64,
                        ..Policy::default()
                    },
                };
                (i, store.admit(&req).await)
            })
        })
        .collect();
    let mut admitted = vec![0u64; CLIENTS];
    for t in tasks {
        let (i, d) = t.await.expect("admission task");
        let d = d.unwrap_or_else(|e| panic!("client {i}: {e}"));
        match d.verdict {
            Verdict::Admitted => {
                admitted[i] += 1;
                let monthly = d.state.as_ref().map(|s| s.monthly);
                assert_eq!(monthly, Some(1_000_000 + i as u64), "client {i}'s default");
            }
            Verdict::RateLimited => {}
            other => panic!("client {i}: {other:?}"),
        }
    }
    let calls = script_calls(server.port()) - before;
    let counted = used(&server, CLIENTS).await;
    for i in 0..CLIENTS {
        let cost = 1 + (i % 3) as u64;
        assert_eq!(
            admitted[i],
            PER_MINUTE / cost,
            "client {i} admitted at cost {cost}"
        );
        assert_eq!(counted[i], PER_MINUTE, "client {i} counted in units");
    }
    assert!(
        calls < CLIENTS as u64,
        "{calls} script calls for {CLIENTS} keys: no cross-key batching"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_batch_reply_is_settled_per_admission_and_counts_once() {
    const CLIENTS: usize = 200;
    const LIMIT: u64 = 5;
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr());
    let direct = open(&server.url(), STORE_TIMEOUT);
    clients(&direct, CLIENTS, LIMIT).await;
    let through = open(&proxy.url(), STORE_TIMEOUT);
    // The third admission call through the proxy loses its reply: by then
    // the first two are in flight and everything else is queued behind them.
    proxy.drop_reply(2);

    let results = flood(&[through, direct], CLIENTS, 8).await;
    assert_eq!(proxy.dropped(), 1, "a reply was lost");
    let lost = proxy.dropped_commands().pop().expect("the lost call");
    let in_lost = admissions_in(&lost);
    eprintln!("the lost call carried {in_lost} admissions");
    assert!(in_lost > 1, "the lost call was a batch: {in_lost}");
    // Counted exactly once, and the lost call's requests still answered.
    each_admitted_and_counted_exactly(&results, &server, CLIENTS, LIMIT).await;
    let slowest = results.iter().map(|r| r.2).max().unwrap_or_default();
    assert!(
        slowest < STORE_TIMEOUT + Duration::from_secs(2),
        "{slowest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_client_fails_only_its_own_admission_in_a_batch() {
    const CLIENTS: usize = 10;
    let server = RedisServer::start();
    let store = open(&server.url(), STORE_TIMEOUT);
    clients(&store, CLIENTS, 100).await;
    let field = ["HSET", "tg:{c:c3}:client", "per_minute", "lots-of-secret"];
    assert_eq!(cli(server.port(), &field).as_deref(), Some("0"));
    let before = script_calls(server.port());

    // Scripts wait while writes are paused: the first admission is sent and
    // held, the other nine queue behind it and go in the next call.
    assert_eq!(
        cli(server.port(), &["CLIENT", "PAUSE", "1000", "WRITE"]).as_deref(),
        Some("OK")
    );
    let first = tokio::spawn(admit(store.clone(), 0));
    let blocked = || {
        cli(server.port(), &["INFO", "clients"])
            .and_then(|t| {
                let line = t.lines().find(|l| l.starts_with("blocked_clients:"))?;
                line.split(':').nth(1)?.trim().parse::<u64>().ok()
            })
            .is_some_and(|n| n >= 1)
    };
    assert!(
        eventually(Duration::from_secs(5), blocked).await,
        "the first call is held"
    );
    let rest: Vec<_> = (1..CLIENTS)
        .map(|i| tokio::spawn(admit(store.clone(), i)))
        .collect();
    let mut results = vec![first.await.expect("task")];
    for t in rest {
        results.push(t.await.expect("task"));
    }
    let calls = script_calls(server.port()) - before;
    let counted = used(&server, CLIENTS).await;
    for (i, d, _) in results {
        if i == 3 {
            let err = d.expect_err("client 3 is corrupt");
            assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
            assert!(!err.to_string().contains("lots-of-secret"), "{err}");
        } else {
            assert_eq!(
                d.expect("admitted").verdict,
                Verdict::Admitted,
                "client {i}"
            );
            assert_eq!(counted[i], 1, "client {i}");
        }
    }
    eprintln!("{CLIENTS} admissions in {calls} script calls");
    assert!(calls < CLIENTS as u64, "{calls} calls: none shared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_server_with_2000_requests_over_1000_keys_answers_all_in_time_counting_nothing() {
    const CLIENTS: usize = 1000;
    const TIMEOUT: Duration = Duration::from_millis(500);
    let server = RedisServer::start();
    clients(&open(&server.url(), STORE_TIMEOUT), CLIENTS, 100).await;
    let store = open(&server.url(), TIMEOUT);
    // Connected, and the scripts loaded.
    assert!(admit(store.clone(), 0).await.1.is_ok());

    server.pause();
    let started = Instant::now();
    let results = flood(std::slice::from_ref(&store), CLIENTS, 2).await;
    let all = started.elapsed();
    server.resume();
    let mut slowest = Duration::ZERO;
    for (i, d, took) in &results {
        assert!(
            matches!(d, Err(StoreError::Unavailable(_))),
            "client {i}: {d:?}"
        );
        slowest = slowest.max(*took);
    }
    eprintln!("2000 admissions on a paused server: all answered in {all:?}, slowest {slowest:?}");
    // The timeout, and slack for a loaded 2-core machine.
    assert!(
        slowest < TIMEOUT + Duration::from_millis(1500),
        "{slowest:?}"
    );

    // Calls that reached the paused server ran when it resumed; each was
    // given back (voided) by its id, so none counts.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let counted = used(&server, CLIENTS).await;
        // Client 0's one admission before the pause stays.
        let late = counted.iter().sum::<u64>().saturating_sub(1);
        if late == 0 {
            assert_eq!(counted[0], 1);
            break;
        }
        assert!(Instant::now() < deadline, "{late} admissions still counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And the store serves again.
    let (_, d, _) = admit(store.clone(), 1).await;
    assert_eq!(d.expect("served").verdict, Verdict::Admitted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_batch_fails_every_admission_fast_then_serves_again() {
    const CLIENTS: usize = 200;
    let mut server = RedisServer::start();
    clients(&open(&server.url(), STORE_TIMEOUT), CLIENTS, 1000).await;
    let store = open(&server.url(), Duration::from_millis(500));
    assert!(admit(store.clone(), 0).await.1.is_ok());
    let before = script_calls(server.port());

    let tasks: Vec<_> = (0..CLIENTS * 10)
        .map(|j| tokio::spawn(admit(store.clone(), j % CLIENTS)))
        .collect();
    // Kill it once batches are running.
    let port = server.port();
    assert!(eventually(Duration::from_secs(10), || script_calls(port) > before + 1).await);
    server.kill();
    let (mut ok, mut failed) = (0, 0);
    let mut slowest = Duration::ZERO;
    for t in tasks {
        let (i, d, took) = t.await.expect("task");
        slowest = slowest.max(took);
        match d {
            Ok(d) => {
                assert_eq!(d.verdict, Verdict::Admitted, "client {i}");
                ok += 1;
            }
            Err(StoreError::Unavailable(_)) => failed += 1,
            Err(e) => panic!("client {i}: {e:?}"),
        }
    }
    eprintln!("killed mid-batch: {ok} admitted before, {failed} failed, slowest {slowest:?}");
    assert!(failed > 0, "the kill came after every admission");
    assert!(slowest < Duration::from_secs(3), "{slowest:?}");

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.ping().await.is_err() {
        assert!(Instant::now() < deadline, "no recovery");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_keys_1_sends_one_call_per_admission() {
    const CLIENTS: usize = 50;
    let server = RedisServer::start();
    let store = open(&server.url(), STORE_TIMEOUT);
    clients(&store, CLIENTS, 1000).await;
    let one_each = open_one_call_each(&server.url());
    // The script loaded (a first call answered NOSCRIPT counts as a call).
    assert!(admit(one_each.clone(), 0).await.1.is_ok());
    let before = script_calls(server.port());
    let results = flood(&[one_each], CLIENTS, 1).await;
    let calls = script_calls(server.port()) - before;
    assert!(results.iter().all(|(_, d, _)| d.is_ok()));
    // One key per call: as many calls as keys (group commit merges one key only).
    assert_eq!(calls, CLIENTS as u64);
}

/// Two tollgate processes on one Redis, 40 clients with a limit of 5 a
/// minute, 10 concurrent requests of each client split over the two: every
/// client gets exactly 5 forwarded and 5 refused, and the upstream sees 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_many_keys_admit_exactly_the_limit() {
    use common::admin::{create_client, create_key};
    use common::tollgate::redis_store;
    use common::two::two_on;
    use serde_json::json;

    const CLIENTS: usize = 40;
    let server = RedisServer::start();
    let (upstream, a, b, http) = two_on(&redis_store(&server.url(), 2000)).await;
    let mut secrets = Vec::new();
    for i in 0..CLIENTS {
        let id = format!("c{i}");
        create_client(&http, &a, &id, json!({"per_minute": 5})).await;
        let (_, secret) = create_key(&http, &a, &id, &["read:charge_points"]).await;
        // First sight in both processes (spends nothing).
        for tg in [&a, &b] {
            let r = http.get_key(&tg.url("/api/v1/client/usage"), &secret).await;
            assert_eq!(r.status, 200);
        }
        secrets.push(secret);
    }
    let before = script_calls(server.port());
    let tasks: Vec<_> = (0..CLIENTS * 10)
        .map(|j| {
            let tg = if j % 2 == 0 { &a } else { &b };
            let (http, url, secret) = (
                http.clone(),
                tg.url("/api/v1/charge_points"),
                secrets[j % CLIENTS].clone(),
            );
            tokio::spawn(async move { (j % CLIENTS, http.get_key(&url, &secret).await.status) })
        })
        .collect();
    let mut got = vec![(0u32, 0u32); CLIENTS];
    for t in tasks {
        let (i, status) = t.await.expect("request task");
        match status.as_u16() {
            200 => got[i].0 += 1,
            429 => got[i].1 += 1,
            other => panic!("client {i}: status {other}"),
        }
    }
    let calls = script_calls(server.port()) - before;
    eprintln!(
        "{} requests of {CLIENTS} clients in {calls} script calls",
        CLIENTS * 10
    );
    for (i, g) in got.iter().enumerate() {
        assert_eq!(*g, (5, 5), "client {i}: (forwarded, refused)");
    }
    assert_eq!(upstream.count(), CLIENTS * 5);
}

/// A server that lost its scripts (`SCRIPT FLUSH`, as after a restart or a
/// failover to a replica that never loaded them) answers the next calls
/// `NOSCRIPT`: each such call, batched or alone, loads its script and goes
/// once more, so every admission is decided and counted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_scripts_are_loaded_again_and_count_once() {
    const CLIENTS: usize = 200;
    let server = RedisServer::start();
    let store = open(&server.url(), STORE_TIMEOUT);
    clients(&store, CLIENTS, 3).await;
    let one_each = open_one_call_each(&server.url());
    let mut results = Vec::new();
    for stores in [
        vec![store.clone()],
        vec![one_each.clone()],
        vec![store, one_each],
    ] {
        assert_eq!(
            cli(server.port(), &["SCRIPT", "FLUSH"])
                .as_deref()
                .map(str::trim),
            Some("OK")
        );
        results.extend(flood(&stores, CLIENTS, 1).await);
    }
    // Three rounds of one admission each, a limit of 3: all admitted, 3 counted.
    each_admitted_and_counted_exactly(&results, &server, CLIENTS, 3).await;
}
