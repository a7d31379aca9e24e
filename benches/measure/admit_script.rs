//! `admit-script`: the admit script's cost per call and a busy client's
//! memory on one real `redis-server`, with the store's clock driven by hand
//! (10 requests a second for 10 minutes, then the same traffic refused);
//! then the admitted traffic again for a client on a plan (five plans in
//! the table the script searches) on a route of cost 2; the figures quoted
//! in docs/rate-limiting.md. `TG_BATCH_KEYS=1` turns the cross-key batcher
//! off (every call here is alone either way); `TG_NOTIFY=1` sets
//! `[notify]` (ARGV[24] on every admission).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate::clock::ManualClock;
use tollgate::limits::policy::{PlanLimits, Plans, Policy};
use tollgate::limits::{Decision, Limits, Verdict};
use tollgate::model::ClientPatch;
use tollgate::store::redis::RedisStore;
use tollgate::store::{AdmitRequest, SharedStore, TimeSource};

use super::common::records::{client, key};
use super::common::redis_server::RedisServer;

/// 2026-02-10T10:00:00Z.
const T0: i64 = 1_770_717_600_000;
const STORE_TIMEOUT: Duration = Duration::from_secs(2);

async fn admit(store: &SharedStore) -> Decision {
    admit_with(store, Policy::default()).await
}

async fn admit_with(store: &SharedStore, policy: Policy) -> Decision {
    let req = AdmitRequest {
        client_id: "acme",
        key_id: "key_a",
        gen: 1,
        scope: None,
        defaults: Limits {
            per_minute: 7,
            monthly: 1000,
        },
        policy,
    };
    store.admit(&req).await.unwrap()
}

pub async fn run() {
    let server = RedisServer::start();
    let clock = ManualClock::new(T0);
    // TG_BATCH_KEYS: `store.batch_keys` (1: no cross-key batching), to
    // compare a lone call's round trip with and without the batcher.
    let batch_keys = std::env::var("TG_BATCH_KEYS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(tollgate::store::redis::DEFAULT_BATCH_KEYS);
    println!("store.batch_keys = {batch_keys}");
    let store: SharedStore = Arc::new(
        RedisStore::new(
            &server.url(),
            STORE_TIMEOUT,
            TimeSource::Clock(clock.clone()),
        )
        .unwrap()
        .with_batch_keys(batch_keys),
    );
    // TG_NOTIFY=1: `[notify]` set (thresholds 80, 100: ARGV[24] sent with
    // every admission; nothing crosses here), to measure what it adds.
    if std::env::var("TG_NOTIFY").is_ok_and(|v| v == "1") {
        println!("[notify] thresholds = [80, 100]");
        store.set_notifier(tollgate::notify::Notifier::new(
            "http://127.0.0.1:9/".parse().unwrap(),
            vec![80, 100],
            tollgate::config::Secret::new("x"),
            Arc::new(tollgate::metrics::Metrics::new()),
        ));
    }
    let mut c = client("acme");
    c.per_minute = Some(1_000_000);
    c.monthly = Some(100_000_000);
    store.create_client(&c).await.unwrap();
    store
        .create_key(&key(
            "key_a",
            "acme",
            "default",
            &["read:things", "read:api_keys"],
        ))
        .await
        .unwrap();
    let raw = redis::Client::open(server.url()).unwrap();
    let mut raw = raw.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .exec_async(&mut raw)
        .await
        .unwrap();

    // 10 requests a second for 10 minutes: every admission expires one
    // bucket a second and the window always holds 61 buckets.
    let started = Instant::now();
    let calls = 6_000;
    for i in 0..calls {
        clock.set_ms(T0 + i * 100);
        assert_eq!(admit(&store).await.verdict, Verdict::Admitted);
    }
    let elapsed = started.elapsed();
    // The window is in the client hash (admit.lua's counters: `ctr`, and
    // `ctw` for the seconds before the newest).
    let (ctr, ctw): (i64, i64) = redis::pipe()
        .cmd("HSTRLEN")
        .arg("tg:{c:acme}:client")
        .arg("ctr")
        .cmd("HSTRLEN")
        .arg("tg:{c:acme}:client")
        .arg("ctw")
        .query_async(&mut raw)
        .await
        .unwrap();
    let fields: i64 = redis::cmd("HLEN")
        .arg("tg:{c:acme}:client")
        .query_async(&mut raw)
        .await
        .unwrap();
    let client_mem: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg("tg:{c:acme}:client")
        .arg("SAMPLES")
        .arg(0)
        .query_async(&mut raw)
        .await
        .unwrap();
    let key_mem: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg("tg:{c:acme}:key:key_a")
        .query_async(&mut raw)
        .await
        .unwrap();
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut raw)
        .await
        .unwrap();
    let version: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut raw)
        .await
        .unwrap();
    println!(
        "{}",
        version
            .lines()
            .find(|l| l.starts_with("redis_version"))
            .unwrap_or("")
    );
    println!("window: ctr {ctr} bytes, ctw {ctw} bytes");
    println!("client hash: {fields} fields, {client_mem} bytes; key hash: {key_mem} bytes");
    println!(
        "{calls} admits in {elapsed:?} ({:?} per call, round trip included)",
        elapsed / calls as u32
    );
    for line in stats.lines().filter(|l| l.contains("evalsha")) {
        println!("admitted path: {line}");
    }

    // The same traffic against a limit of 50 a minute: most calls are
    // refusals, which walk the buckets to find the retry instant.
    let patch = ClientPatch {
        per_minute: Some(50),
        ..ClientPatch::default()
    };
    store.update_client("acme", &patch).await.unwrap();
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .exec_async(&mut raw)
        .await
        .unwrap();
    let mut refused = 0;
    for i in calls..2 * calls {
        clock.set_ms(T0 + i * 100);
        refused += usize::from(admit(&store).await.verdict == Verdict::RateLimited);
    }
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut raw)
        .await
        .unwrap();
    for line in stats.lines().filter(|l| l.contains("evalsha")) {
        println!("{refused} of {calls} refused: {line}");
    }

    // Policies: the same admitted traffic for a client on a plan, five
    // plans in the table the script searches, a route of cost 2.
    let plans: std::collections::BTreeMap<String, PlanLimits> = (1..=5)
        .map(|i| {
            let limits = PlanLimits {
                per_minute: Some(1_000_000 * i),
                monthly: Some(100_000_000 * i),
                shadow: None,
            };
            (format!("plan{i}"), limits)
        })
        .collect();
    let policy = Policy {
        cost: 2,
        route_shadow: None,
        plans: Arc::new(Plans::new(plans, false)),
    };
    let patch = ClientPatch {
        plan: Some(Some("plan4".into())),
        ..ClientPatch::default()
    };
    store.update_client("acme", &patch).await.unwrap();
    // The client's own limits would win over its plan's: remove them (a
    // patch only sets), so the plan's apply. The window is empty again
    // 70 s after the refused traffic.
    redis::cmd("HDEL")
        .arg("tg:{c:acme}:client")
        .arg("per_minute")
        .arg("monthly")
        .exec_async(&mut raw)
        .await
        .unwrap();
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .exec_async(&mut raw)
        .await
        .unwrap();
    let mut admitted = 0;
    for i in 2 * calls + 700..3 * calls + 700 {
        clock.set_ms(T0 + i * 100);
        admitted +=
            usize::from(admit_with(&store, policy.clone()).await.verdict == Verdict::Admitted);
    }
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut raw)
        .await
        .unwrap();
    for line in stats.lines().filter(|l| l.contains("evalsha")) {
        println!("{admitted} of {calls} admitted on a plan (5 plans, cost 2): {line}");
    }
}
