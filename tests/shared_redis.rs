//! Several tollgate processes sharing one real `redis-server`: exact counting
//! under concurrency, revocation seen by every process, store faults.

mod common;

use std::time::{Duration, Instant};

use common::admin::{create_client, create_key, revoke};
use common::http::Http;
use common::redis_server::RedisServer;
use common::tollgate::{config, redis_store, Tollgate};
use common::two::{exact_limit, start_two};
use common::upstream::Upstream;
use serde_json::json;

const CP: &str = "/api/v1/charge_points";

async fn two_processes(timeout_ms: u64) -> (Upstream, RedisServer, Tollgate, Tollgate) {
    let upstream = Upstream::start().await;
    let redis = RedisServer::start();
    let cfg = config(&upstream.url(), &redis_store(&redis.url(), timeout_ms), "");
    let (a, b) = start_two(&cfg);
    (upstream, redis, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eighty_concurrent_requests_across_two_processes_admit_exactly_the_limit() {
    let (upstream, _redis, a, b) = two_processes(1000).await;
    let http = Http::default();
    exact_limit(&http, &a, &b, &upstream, "acme").await;
    assert_eq!(upstream.count(), 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_revocations_are_shared() {
    let (upstream, _redis, a, b) = two_processes(1000).await;
    let http = Http::default();
    create_client(&http, &a, "acme", json!({})).await;
    let (key_id, secret) = create_key(&http, &a, "acme", &["read:charge_points"]).await;
    assert_eq!(http.get_key(&b.url(CP), &secret).await.status, 200);
    assert_eq!(http.get_key(&a.url(CP), &secret).await.status, 200);
    revoke(&http, &a, &key_id).await;
    assert_eq!(http.get_key(&b.url(CP), &secret).await.status, 401);
    assert_eq!(http.get_key(&a.url(CP), &secret).await.status, 401);
    assert_eq!(upstream.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_store_answers_503_fast_and_recovers() {
    let (upstream, redis, a, _b) = two_processes(300).await;
    let http = Http::default();
    create_client(&http, &a, "acme", json!({})).await;
    let (_, secret) = create_key(&http, &a, "acme", &["read:charge_points"]).await;
    assert_eq!(http.get_key(&a.url(CP), &secret).await.status, 200);

    redis.pause();
    let started = Instant::now();
    let r = http.get_key(&a.url(CP), &secret).await;
    let took = started.elapsed();
    assert_eq!(r.status, 503);
    assert_eq!(r.code(), "unavailable");
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    let ready = http.get(&a.admin_url("/readyz"), &[]).await;
    assert_eq!(ready.status, 503);

    redis.resume();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = http.get_key(&a.url(CP), &secret).await;
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "did not recover: {}", r.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(http.get(&a.admin_url("/readyz"), &[]).await.status, 200);
    assert_eq!(upstream.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honest() {
    let (upstream, _redis, a, b) = two_processes(1000).await;
    let http = Http::default();
    create_client(&http, &a, "acme", json!({"per_minute": 2})).await;
    let (_, secret) = create_key(&http, &a, "acme", &["read:charge_points"]).await;
    assert_eq!(http.get_key(&a.url(CP), &secret).await.status, 200);
    assert_eq!(http.get_key(&b.url(CP), &secret).await.status, 200);
    let r = http.get_key(&a.url(CP), &secret).await;
    assert_eq!(r.status, 429);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((59..=61).contains(&retry), "{retry}");
    // Two seconds early is still refused; on time is admitted. (Two, not one:
    // Retry-After is rounded up, so one second early may already be past it.)
    tokio::time::sleep(Duration::from_secs(retry - 2)).await;
    let early = http.get_key(&b.url(CP), &secret).await;
    assert_eq!(early.status, 429, "admitted early");
    let wait: u64 = early.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(http.get_key(&b.url(CP), &secret).await.status, 200);
    assert_eq!(upstream.count(), 3);
}
