//! End-to-end tests of the public request path: the real binary, a real
//! upstream and, for the Redis backend, a real `redis-server`, all on free
//! loopback ports. Each case runs against both stores.

#[macro_use]
mod common;

use common::Backend;

use std::time::{Duration, Instant};

use common::admin::{create_client, create_key, revoke, set_status};
use common::env::Env;
use common::tollgate::{config, Tollgate};
use http::Method;
use serde_json::json;

const READ: &str = "read:charge_points";
const WRITE: &str = "write:charge_points";
const CP: &str = "/api/v1/charge_points";

both_stores!(
    both_credential_forms_are_forwarded_with_identity,
    bad_credentials_are_401_and_not_forwarded,
    suspended_client_is_403_with_headers,
    missing_scope_is_403_and_not_forwarded,
    remaining_counts_down_then_429,
    quota_exhaustion_waits_for_the_first,
    usage_document_is_exact_and_counts_nothing,
    revocation_is_immediate,
    upstream_down_is_502_and_slow_is_504,
    hop_by_hop_and_credentials_are_stripped,
    admin_api_needs_the_token_and_is_not_public,
);

async fn both_credential_forms_are_forwarded_with_identity(b: Backend) {
    let env = Env::setup(b).redis_timeout_ms(500).start().await;
    let (key_id, secret) = env.client("acme", json!({}), &[READ]).await;
    let r = env.get(&format!("{CP}?page=2"), &secret).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("x-upstream"), Some("yes"));
    let bearer = format!("Bearer {secret}");
    let r = env
        .http
        .get(&env.tg.url(CP), &[("authorization", &bearer)])
        .await;
    assert_eq!(r.status, 200);
    let reqs = env.upstream.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].target, "/api/v1/charge_points?page=2");
    for rec in &reqs {
        assert_eq!(rec.header("x-tollgate-client-id").as_deref(), Some("acme"));
        assert_eq!(
            rec.header("x-tollgate-key-id").as_deref(),
            Some(key_id.as_str())
        );
        assert_eq!(rec.header("x-tollgate-scopes").as_deref(), Some(READ));
        assert_eq!(rec.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
        assert_eq!(rec.header("x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(
            rec.header("x-forwarded-host"),
            Some(env.tg.public.to_string())
        );
        assert!(rec.header("x-api-key").is_none());
        assert!(rec.header("authorization").is_none());
    }
}

async fn bad_credentials_are_401_and_not_forwarded(b: Backend) {
    let env = Env::setup(b).redis_timeout_ms(500).start().await;
    let (_, secret) = env.client("acme", json!({}), &[READ]).await;
    // The right shape and checksum, but never issued.
    let unknown = tollgate::keys::generate().expose().to_owned();
    let mut flipped = secret.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![("x-api-key", "")],
        vec![("x-api-key", "nonsense")],
        vec![("x-api-key", &flipped)],
        vec![("x-api-key", &unknown)],
        vec![("authorization", "Basic dXNlcjpwYXNz")],
        vec![
            ("x-api-key", &secret),
            ("authorization", "Bearer sk_live_other"),
        ],
        vec![("x-api-key", &secret), ("x-api-key", &secret)],
    ];
    for headers in cases {
        let r = env.http.get(&env.tg.url(CP), &headers).await;
        assert_eq!(r.status, 401, "{headers:?}");
        assert_eq!(r.code(), "unauthorized");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(r.header("x-ratelimit-limit").is_none());
    }
    assert_eq!(env.upstream.count(), 0);
}

async fn suspended_client_is_403_with_headers(b: Backend) {
    let env = Env::setup(b).redis_timeout_ms(500).start().await;
    let (_, secret) = env.client("acme", json!({"per_minute": 5}), &[READ]).await;
    assert_eq!(env.get(CP, &secret).await.status, 200);
    set_status(&env.http, &env.tg, "acme", "suspended").await;
    let r = env.get(CP, &secret).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.code(), "forbidden");
    assert_eq!(r.header("x-ratelimit-limit"), Some("5"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("4"));
    set_status(&env.http, &env.tg, "acme", "active").await;
    let r = env.get(CP, &secret).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("3"));
    assert_eq!(env.upstream.count(), 2);
}

async fn missing_scope_is_403_and_not_forwarded(b: Backend) {
    let env = Env::setup(b).redis_timeout_ms(500).start().await;
    let (_, secret) = env.client("acme", json!({"per_minute": 5}), &[READ]).await;
    let r = env
        .http
        .send(
            Method::POST,
            &env.tg.url(CP),
            &[("x-api-key", &secret)],
            "{}",
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.code(), "forbidden");
    assert_eq!(r.header("x-ratelimit-remaining"), Some("5"));
    // A method override cannot turn the GET scope into a write, and HEAD needs GET's.
    let r = env
        .http
        .get(
            &env.tg.url(CP),
            &[("x-api-key", &secret), ("x-http-method-override", "DELETE")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(env
        .upstream
        .last()
        .header("x-http-method-override")
        .is_none());
    // Unrouted paths need only a valid key.
    assert_eq!(env.get("/other", &secret).await.status, 200);
    assert_eq!(env.upstream.count(), 2);
    let (_, writer) = create_key(&env.http, &env.tg, "acme", &[WRITE]).await;
    let r = env
        .http
        .send(Method::HEAD, &env.tg.url(CP), &[("x-api-key", &writer)], "")
        .await;
    assert_eq!(r.status, 403);
}

async fn remaining_counts_down_then_429(b: Backend) {
    let env = Env::setup(b).redis_timeout_ms(500).start().await;
    let (_, secret) = env.client("acme", json!({"per_minute": 7}), &[READ]).await;
    let mut remaining = Vec::new();
    for _ in 0..7 {
        let r = env.get(CP, &secret).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-ratelimit-limit"), Some("7"));
        assert!(r
            .header("x-ratelimit-reset")
            .is_some_and(|v| v.ends_with('Z') && v.len() == 20));
        remaining.push(r.header("x-ratelimit-remaining").unwrap().to_owned());
    }
    assert_eq!(remaining, ["6", "5", "4", "3", "2", "1", "0"]);
    for _ in 0..3 {
        let r = env.get(CP, &secret).await;
        assert_eq!(r.status, 429);
        assert_eq!(r.code(), "rate_limited");
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=61).contains(&retry), "{retry}");
        assert_eq!(
            r.json()["error"],
            format!("Rate limit exceeded. Retry after {retry} seconds.")
        );
        assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    }
    assert_eq!(
        env.upstream.count(),
        7,
        "refused requests are not forwarded"
    );
    let usage = env.get("/api/v1/client/usage", &secret).await.json();
    assert_eq!(
        usage["monthly_quota"]["used"], 7,
        "refused requests are not counted"
    );
}

async fn quota_exhaustion_waits_for_the_first(b: Backend) {
    let env = Env::setup(b).redis_timeout_ms(500).start().await;
    let (_, secret) = env.client("acme", json!({"monthly": 3}), &[READ]).await;
    for _ in 0..3 {
        assert_eq!(env.get(CP, &secret).await.status, 200);
    }
    let r = env.get(CP, &secret).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.code(), "rate_limited");
    let now = chrono::Utc::now();
    let next = tollgate::limits::month::next_month_start(now.timestamp());
    let reset = tollgate::clock::iso8601(next);
    assert!(
        r.json()["error"].as_str().unwrap().contains(&reset),
        "{:?}",
        r.json()
    );
    let retry: i64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((retry - (next - now.timestamp())).abs() <= 2, "{retry}");
    assert_eq!(env.upstream.count(), 3);
}

async fn usage_document_is_exact_and_counts_nothing(b: Backend) {
    let env = Env::setup(b).redis_timeout_ms(500).start().await;
    let (_, secret) = env
        .client("acme", json!({"per_minute": 10, "monthly": 50}), &[READ])
        .await;
    for _ in 0..4 {
        assert_eq!(env.get(CP, &secret).await.status, 200);
    }
    let u1 = env.get("/api/v1/client/usage", &secret).await;
    assert_eq!(u1.status, 200);
    let u2 = env.get("/api/v1/client/usage", &secret).await.json();
    let u1 = u1.json();
    assert_eq!(u1, u2, "usage counts nothing");
    let (start, end) = tollgate::limits::month::period_dates(chrono::Utc::now().timestamp());
    assert_eq!(u1["rate_limit"]["limit"], 10);
    assert_eq!(u1["rate_limit"]["remaining"], 6);
    assert_eq!(u1["rate_limit"]["period"], "minute");
    assert_eq!(
        u1["monthly_quota"],
        json!({"limit": 50, "used": 4, "remaining": 46, "period": "month",
               "period_start": start, "period_end": end})
    );
    // The admin API serves the same document.
    let admin = common::admin::call(
        &env.http,
        &env.tg,
        Method::GET,
        "/admin/v1/clients/acme/usage",
        None,
    )
    .await
    .json();
    assert_eq!(admin, u1);
    // Answered even when the limits are exhausted.
    for _ in 0..6 {
        env.get(CP, &secret).await;
    }
    assert_eq!(env.get(CP, &secret).await.status, 429);
    let u = env.get("/api/v1/client/usage", &secret).await;
    assert_eq!(u.status, 200);
    assert_eq!(u.json()["rate_limit"]["remaining"], 0);
    assert_eq!(env.upstream.count(), 10);
}

async fn revocation_is_immediate(b: Backend) {
    let env = Env::setup(b).redis_timeout_ms(500).start().await;
    let (key_id, secret) = env.client("acme", json!({}), &[READ]).await;
    assert_eq!(env.get(CP, &secret).await.status, 200);
    revoke(&env.http, &env.tg, &key_id).await;
    assert_eq!(env.get(CP, &secret).await.status, 401);
    assert_eq!(env.upstream.count(), 1);
}

async fn upstream_down_is_502_and_slow_is_504(b: Backend) {
    let env = Env::setup(b).redis_timeout_ms(500).start().await;
    let (_, secret) = env.client("acme", json!({}), &[READ]).await;
    let started = Instant::now();
    let r = env.get("/slow/5000", &secret).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.code(), "gateway_timeout");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(r.header("x-ratelimit-limit").is_some());

    // An upstream that refuses connections.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let tg = Tollgate::start(&config(&dead, env.store(), ""));
    let (_, secret) = if env.redis.is_some() {
        // Shares the Redis: the key made above works here too.
        (String::new(), secret)
    } else {
        create_client(&env.http, &tg, "acme", json!({})).await;
        create_key(&env.http, &tg, "acme", &[READ]).await
    };
    let r = env.http.get_key(&tg.url(CP), &secret).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.code(), "bad_gateway");
}

async fn hop_by_hop_and_credentials_are_stripped(b: Backend) {
    let env = Env::setup(b).redis_timeout_ms(500).start().await;
    let (_, secret) = env.client("acme", json!({}), &[READ]).await;
    let r = env
        .http
        .get(
            &env.tg.url("/echo"),
            &[
                ("x-api-key", &secret),
                ("connection", "x-hop"),
                ("x-hop", "1"),
                ("keep-alive", "timeout=5"),
                ("proxy-authorization", "Basic x"),
                ("te", "trailers"),
                ("x-tollgate-client-id", "evil"),
                ("x-forwarded-for", "10.1.2.3"),
                ("x-custom", "kept"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    let rec = env.upstream.last();
    for gone in [
        "x-hop",
        "keep-alive",
        "proxy-authorization",
        "te",
        "x-api-key",
    ] {
        assert!(rec.header(gone).is_none(), "{gone} forwarded");
    }
    assert_eq!(rec.header_all("x-tollgate-client-id"), ["acme"]);
    assert_eq!(
        rec.header("x-forwarded-for").as_deref(),
        Some("10.1.2.3, 127.0.0.1")
    );
    assert_eq!(rec.header("x-custom").as_deref(), Some("kept"));
}

async fn admin_api_needs_the_token_and_is_not_public(b: Backend) {
    let env = Env::setup(b).redis_timeout_ms(500).start().await;
    let (_, secret) = env.client("acme", json!({}), &[READ]).await;
    let r = env
        .http
        .get(&env.tg.admin_url("/admin/v1/clients"), &[])
        .await;
    assert_eq!(r.status, 401);
    let r = env
        .http
        .get(
            &env.tg.admin_url("/admin/v1/clients"),
            &[("authorization", "Bearer wrong")],
        )
        .await;
    assert_eq!(r.status, 401);
    // On the public listener /admin/v1 is just an upstream path, never the admin API.
    let r = env
        .http
        .get(&env.tg.url("/admin/v1/clients"), &[("x-api-key", &secret)])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-upstream"), Some("yes"));
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            env.http.get(&env.tg.admin_url(path), &[]).await.status,
            200,
            "{path}"
        );
    }
    let metrics = env.http.get(&env.tg.admin_url("/metrics"), &[]).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("tollgate_requests_total{outcome=\"forwarded\"} 1"),
        "{text}"
    );
    assert!(!text.contains(&secret));
}
