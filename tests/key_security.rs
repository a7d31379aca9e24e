//! Attacks on the key path, each against the real binary, a real upstream
//! and (where the store matters) both stores: mistyped and over-long keys,
//! two credentials in one request, a wrong-secret flood, spoofed
//! `X-Forwarded-For`, hostile request paths and absolute-form targets, and
//! method and URL overrides. `docs/key-security.md` lists them with what
//! tollgate answers.

#[macro_use]
mod common;

use common::Backend;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::admin::{create_client, create_key};
use common::env::{counter, Env};
use common::flood::{flood, flood_target, BCRYPT};
use common::http::Http;
use http::Method;
use serde_json::json;

const READ: &str = "read:charge_points";
const WRITE: &str = "write:charge_points";
const READ_KEYS: &str = "read:api_keys";
const CP: &str = "/api/v1/charge_points";

const CACHE_MISS: &str = "tollgate_auth_cache_total{result=\"miss\"}";

fn rejections(reason: &str) -> String {
    format!("tollgate_auth_rejections_total{{reason=\"{reason}\"}}")
}

/// Sends raw bytes on a new connection; returns the status (0 if the server
/// closed without answering) and the whole response text.
fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).expect("write");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn raw_request(method: &str, target: &[u8], key: &str) -> Vec<u8> {
    let mut r = format!("{method} ").into_bytes();
    r.extend_from_slice(target);
    r.extend_from_slice(
        format!(
            " HTTP/1.1\r\nHost: tollgate.test\r\nX-API-Key: {key}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    r
}

both_stores!(
    mistyped_keys_are_refused_without_store_or_bcrypt,
    keys_longer_than_issued_are_refused_before_hashing,
    two_credentials_are_401_never_500,
    wrong_secret_flood_is_throttled_and_valid_clients_stay_flat,
    a_new_key_on_many_connections_at_once_is_verified_once_not_throttled,
    hostile_paths_never_reach_a_scoped_route_without_the_scope,
    method_and_url_overrides_cannot_change_what_was_authorised,
);

async fn mistyped_keys_are_refused_without_store_or_bcrypt(b: Backend) {
    let env = Env::new(b).await;
    create_client(&env.http, &env.tg, "acme", json!({})).await;
    let (_, secret) = create_key(&env.http, &env.tg, "acme", &[READ]).await;
    let before = env.metrics().await;
    // One character changed anywhere after the prefix: the CRC32 fails.
    let mut typos = Vec::new();
    for pos in [8, 20, 40, 60, 71] {
        let mut b = secret.clone().into_bytes();
        b[pos] = if b[pos] == b'x' { b'y' } else { b'x' };
        typos.push(String::from_utf8(b).unwrap());
    }
    // Two adjacent characters swapped.
    let mut swapped = secret.clone().into_bytes();
    let i = (30..70).find(|&i| swapped[i] != swapped[i + 1]).unwrap();
    swapped.swap(i, i + 1);
    typos.push(String::from_utf8(swapped).unwrap());
    for typo in &typos {
        let r = env.http.get_key(&env.tg.url(CP), typo).await;
        assert_eq!(r.status, 401, "{typo}");
        assert_eq!(r.code(), "unauthorized");
    }
    let after = env.metrics().await;
    let delta = |series: &str| counter(&after, series) - counter(&before, series);
    assert_eq!(delta(&rejections("checksum")), typos.len() as u64);
    assert_eq!(delta(BCRYPT), 0, "bcrypt ran for a mistyped key");
    assert_eq!(
        delta(CACHE_MISS),
        0,
        "the store was consulted for a mistyped key"
    );
    assert_eq!(env.upstream.count(), 0);
    // The real one still works (and costs one verification).
    assert_eq!(env.http.get_key(&env.tg.url(CP), &secret).await.status, 200);
    assert_eq!(env.counter(BCRYPT).await, counter(&before, BCRYPT) + 1);
}

async fn keys_longer_than_issued_are_refused_before_hashing(b: Backend) {
    let env = Env::new(b).await;
    create_client(&env.http, &env.tg, "acme", json!({})).await;
    let (_, secret) = create_key(&env.http, &env.tg, "acme", &[READ]).await;
    assert_eq!(secret.len(), 72, "tollgate issues 72-byte secrets");
    assert_eq!(env.http.get_key(&env.tg.url(CP), &secret).await.status, 200);
    let before = env.metrics().await;
    // bcrypt reads only 72 bytes: a key equal to a valid one in its first 72
    // bytes and different after must not verify.
    let long = [
        format!("{secret}A"),
        format!("{secret}{}", "B".repeat(28)),
        format!("{secret}{}", "x".repeat(8000)),
        secret[..71].to_string(),
        format!("{}{}", &secret[..71], "AA"),
    ];
    for key in &long {
        let r = env.http.get_key(&env.tg.url(CP), key).await;
        assert_eq!(r.status, 401, "{} bytes", key.len());
        let bearer = format!("Bearer {key}");
        let r = env
            .http
            .get(&env.tg.url(CP), &[("authorization", bearer.as_str())])
            .await;
        assert_eq!(r.status, 401, "{} bytes as Bearer", key.len());
    }
    let after = env.metrics().await;
    let delta = |series: &str| counter(&after, series) - counter(&before, series);
    assert_eq!(delta(&rejections("malformed")), 2 * long.len() as u64);
    assert_eq!(delta(BCRYPT), 0);
    assert_eq!(delta(CACHE_MISS), 0);
    assert_eq!(env.upstream.count(), 1);
}

async fn two_credentials_are_401_never_500(b: Backend) {
    let env = Env::new(b).await;
    create_client(&env.http, &env.tg, "acme", json!({})).await;
    let (_, a) = create_key(&env.http, &env.tg, "acme", &[READ]).await;
    let (_, other) = create_key(&env.http, &env.tg, "acme", &[READ, WRITE]).await;
    let bearer_a = format!("Bearer {a}");
    let bearer_other = format!("Bearer {other}");
    let refused: Vec<Vec<(&str, &str)>> = vec![
        vec![("x-api-key", &a), ("x-api-key", &other)],
        vec![("x-api-key", &a), ("x-api-key", &a)],
        vec![("x-api-key", &a), ("authorization", &bearer_other)],
        vec![("x-api-key", &other), ("authorization", &bearer_a)],
        vec![
            ("authorization", &bearer_a),
            ("authorization", &bearer_other),
        ],
        vec![("authorization", &bearer_a), ("authorization", &bearer_a)],
        vec![("x-api-key", "garbage"), ("authorization", &bearer_a)],
    ];
    let before = env.counter(&rejections("ambiguous")).await;
    for headers in &refused {
        let r = env.http.get(&env.tg.url(CP), headers).await;
        assert_eq!(r.status, 401, "{headers:?}");
        assert_eq!(r.code(), "unauthorized");
    }
    assert_eq!(
        env.counter(&rejections("ambiguous")).await - before,
        refused.len() as u64
    );
    // Comma-joined values are one malformed credential.
    let joined = format!("{a}, {other}");
    let r = env.http.get_key(&env.tg.url(CP), &joined).await;
    assert_eq!(r.status, 401);
    // The same credential in both forms is one credential.
    let r = env
        .http
        .get(
            &env.tg.url(CP),
            &[("x-api-key", &a), ("authorization", &bearer_a)],
        )
        .await;
    assert_eq!(r.status, 200);
    // The same, over raw HTTP/1.1 with duplicated headers on the wire.
    let req = format!(
        "POST {CP} HTTP/1.1\r\nHost: t\r\nX-API-Key: {a}\r\nX-Api-Key: {other}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(raw(env.tg.public, req.as_bytes()).0, 401);
    assert_eq!(env.upstream.count(), 1);
    assert_eq!(
        env.counter("tollgate_requests_total{outcome=\"unauthorized\"}")
            .await,
        refused.len() as u64 + 2
    );
}

/// The flood against the default budget: throttled before bcrypt, and the
/// valid client always gets 200. Prints both p99 figures.
async fn wrong_secret_flood_is_throttled_and_valid_clients_stay_flat(b: Backend) {
    // A production-like bcrypt cost, so that unthrottled verification would hurt.
    let (env, key_id, valid) = flood_target(b, 20).await;
    let f = flood(&env, &key_id, &valid).await;
    f.report(&format!("{b:?} store, bcrypt cost 10, 20 failures/min"));

    assert_eq!(f.statuses.len(), 1000);
    let (throttled, unauthorized) = (f.count(429), f.count(401));
    assert_eq!(throttled + unauthorized, 1000, "{:?}", f.statuses);
    // The budget (20) plus one attempt per 3 s of flood.
    let allowed = 20 + (f.secs / 3.0).ceil() as usize;
    assert!(unauthorized <= allowed, "{unauthorized} reached bcrypt");
    assert!(f.statuses.iter().filter(|(s, _)| *s == 429).all(|(_, r)| r
        .as_deref()
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n >= 1)));
    assert!(
        f.bcrypt_runs <= allowed as u64,
        "{} bcrypt runs",
        f.bcrypt_runs
    );
    assert_eq!(env.upstream.count(), 301 + f.during.len());

    // The throttle is per peer: a new (uncached) key from the flooding
    // address waits too; the spoofed header did not move the flood elsewhere.
    // (First use up whatever the budget regained while the flood ran.)
    let url = env.tg.url(CP);
    let (_, fresh) = create_key(&env.http, &env.tg, "acme", &[READ]).await;
    let mut exhausted = false;
    for _ in 0..5 {
        let wrong = tollgate::keys::generate_for(&key_id).unwrap();
        if env.http.get_key(&url, wrong.expose()).await.status == 429 {
            exhausted = true;
            break;
        }
    }
    assert!(exhausted, "the budget does not run out");
    let r = env.http.get_key(&url, &fresh).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.code(), "rate_limited");
    assert!(r.header("x-ratelimit-limit").is_none());
}

/// A client's new key arriving on 40 connections at once (a pool warming
/// up) is one verification: the requests that find it under way wait for it
/// and are not charged to the peer's failure budget (3 here), so none is
/// throttled, and bcrypt runs once.
async fn a_new_key_on_many_connections_at_once_is_verified_once_not_throttled(b: Backend) {
    // A verification slow enough (bcrypt cost 10) for the requests to overlap.
    let env = Env::setup(b)
        .auth("bcrypt_cost = 10\nmax_failures_per_minute = 3")
        .start()
        .await;
    create_client(&env.http, &env.tg, "acme", json!({"per_minute": 1000})).await;
    let (_, secret) = create_key(&env.http, &env.tg, "acme", &[READ]).await;
    let bcrypt_before = env.counter(BCRYPT).await;
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let (http, url, secret) = (Http::default(), env.tg.url(CP), secret.clone());
            tokio::spawn(async move { http.get_key(&url, &secret).await.status.as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(env.counter(BCRYPT).await - bcrypt_before, 1);
    assert_eq!(env.counter(&rejections("throttled")).await, 0);
}

/// Behind a trusted proxy, failures are charged to the client the proxy
/// names, never to a hop the client wrote itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxy_hops_decide_the_peer() {
    let env = Env::setup(Backend::Memory)
        .auth("bcrypt_cost = 4\nmax_failures_per_minute = 3")
        .server("trusted_proxies = [\"127.0.0.1/32\"]")
        .start()
        .await;
    create_client(&env.http, &env.tg, "acme", json!({})).await;
    let (key_id, _) = create_key(&env.http, &env.tg, "acme", &[READ]).await;
    let url = env.tg.url(CP);
    let wrong = || tollgate::keys::generate_for(&key_id).unwrap();
    let attempt = |xff: &'static str| {
        let (http, url, w) = (env.http.clone(), url.clone(), wrong());
        async move {
            let mut h = vec![("x-api-key", w.expose().to_owned())];
            if !xff.is_empty() {
                h.push(("x-forwarded-for", xff.to_owned()));
            }
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            http.get(&url, &h).await.status.as_u16()
        }
    };
    for _ in 0..3 {
        assert_eq!(attempt("203.0.113.9").await, 401);
    }
    assert_eq!(attempt("203.0.113.9").await, 429);
    // A hop the client prepends does not help: the proxy's (right-most) hop counts.
    assert_eq!(attempt("198.51.100.1, 203.0.113.9").await, 429);
    // Another client behind the same proxy has its own budget.
    assert_eq!(attempt("203.0.113.10").await, 401);
    let (_, fresh) = create_key(&env.http, &env.tg, "acme", &[READ]).await;
    let r = env
        .http
        .get(
            &url,
            &[("x-api-key", &fresh), ("x-forwarded-for", "203.0.113.11")],
        )
        .await;
    assert_eq!(r.status, 200);
}

/// Without trusted proxies, `X-Forwarded-For` is the client's own claim and
/// never moves its failures elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_forwarded_for_does_not_escape_the_throttle() {
    let env = Env::setup(Backend::Memory)
        .auth("bcrypt_cost = 4\nmax_failures_per_minute = 3")
        .start()
        .await;
    create_client(&env.http, &env.tg, "acme", json!({})).await;
    let (key_id, _) = create_key(&env.http, &env.tg, "acme", &[READ]).await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let w = tollgate::keys::generate_for(&key_id).unwrap();
        let spoof = format!("192.0.2.{i}");
        let r = env
            .http
            .get(
                &env.tg.url(CP),
                &[("x-api-key", w.expose()), ("x-forwarded-for", &spoof)],
            )
            .await;
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429]);
}

/// Every hostile spelling of a scoped path, sent byte for byte: refused
/// (400) or judged on the path it means (403 without the scope); with the
/// scope, the upstream receives exactly the normalised path.
async fn hostile_paths_never_reach_a_scoped_route_without_the_scope(b: Backend) {
    let env = Env::new(b).await;
    create_client(&env.http, &env.tg, "acme", json!({})).await;
    let (_, no_scope) = create_key(&env.http, &env.tg, "acme", &[READ_KEYS]).await;
    let (_, reader) = create_key(&env.http, &env.tg, "acme", &[READ]).await;
    let targets: Vec<&[u8]> = vec![
        b"/api/v1/charge_points",
        b"//api/v1/charge_points",
        b"/api/v1//charge_points",
        b"/api//v1/charge_points/",
        b"/api/v1/./charge_points",
        b"/api/v1/././charge_points",
        b"/api/v1/x/../charge_points",
        b"/x/../api/v1/charge_points",
        b"/api/v1/charge_points/.",
        b"/api/v1/charge_points/x/..",
        b"/api/v1/%63harge_points",
        b"/api/v1/charge%5Fpoints",
        b"/%61%70%69/v1/charge_points",
        b"/api/v1/%2e/charge_points",
        b"/api/v1/x/%2e%2e/charge_points",
        b"/api/v1/x/%2E%2e/charge_points",
        b"/api/v1/x/.%2e/charge_points",
        b"/api%2Fv1/charge_points",
        b"/api%2fv1%2fcharge_points",
        b"/api/v1%5Ccharge_points",
        b"/api/v1/x%5C..%5Ccharge_points",
        b"/api/v1\\charge_points",
        b"/api;x=1/v1/charge_points",
        b"/api/v1/charge_points;x=1",
        b"/api/v1/charge_points;",
        b"/api/v1;/charge_points/7",
        b"/api/v1/x/..;/charge_points",
        b"/api/v1/x/..;jsessionid=1/charge_points",
        b"/api/;/v1/charge_points",
        b"/api/v1/.;/charge_points",
        b"/api/v1/charge_points%3Bx",
        b"/api%3F/v1/charge_points",
        b"/api/v1/charge_points%23",
        b"/api/v1/charge_points%0a",
        b"/api/v1/%252e/charge_points",
        b"/api/v1/%252e%252e/x/charge_points",
        b"/api/v1/charge%255Fpoints",
        b"/api/v1/charge_points%00",
        b"/api/v1/charge_points%00.json",
        b"/api/v1/charge_points\0",
        b"/api/v1/charge_points%",
        b"/api/v1/charge_points%G1",
        b"/..",
        b"/../api/v1/charge_points",
        b"/api/v1/charge_points/../../../..",
        b"http://evil.example/api/v1/charge_points",
        b"http://evil.example/api/v1/%63harge_points",
        b"http://evil.example//api/v1/./charge_points",
        b"HTTP://EVIL.EXAMPLE:81/api/v1/charge_points?x=1",
        b"*",
    ];
    for target in &targets {
        let shown = String::from_utf8_lossy(target);
        let before = env.upstream.count();
        // GET without the read scope, and POST with only the read scope.
        for (method, key) in [("GET", &no_scope), ("POST", &reader), ("HEAD", &no_scope)] {
            let (status, text) = raw(env.tg.public, &raw_request(method, target, key));
            assert!(
                [400, 403].contains(&status),
                "{method} {shown}: {status}\n{text}"
            );
            assert_eq!(
                env.upstream.count(),
                before,
                "{method} {shown} was forwarded"
            );
        }
        // With the scope: forwarded exactly as normalised, or refused as before.
        let (status, text) = raw(env.tg.public, &raw_request("GET", target, &reader));
        let path = target
            .iter()
            .position(|&c| c == b'?')
            .map_or(&target[..], |q| &target[..q]);
        let origin_form = match std::str::from_utf8(path) {
            Ok(p) if p.to_ascii_lowercase().starts_with("http://") => {
                let rest = &p["http://".len()..];
                rest.find('/').map(|i| &rest[i..])
            }
            Ok(p) => Some(p),
            Err(_) => None,
        };
        let want = origin_form.and_then(|p| tollgate::routes::normalize(p).ok());
        match want {
            Some(n) if !p_has_nul(target) => {
                assert_eq!(status, 200, "GET {shown} with the scope\n{text}");
                let rec = env.upstream.last();
                let forwarded = rec.target.split('?').next().unwrap().to_owned();
                assert_eq!(forwarded, n, "GET {shown}");
                assert_eq!(
                    tollgate::routes::normalize(&forwarded).as_deref(),
                    Ok(forwarded.as_str()),
                    "the forwarded path is already normal"
                );
            }
            _ => {
                assert_eq!(status, 400, "GET {shown} with the scope\n{text}");
                assert_eq!(env.upstream.count(), before, "GET {shown} was forwarded");
            }
        }
    }
}

fn p_has_nul(t: &[u8]) -> bool {
    t.contains(&0)
}

/// An absolute-form target is judged, and forwarded, by its path; the
/// upstream sees the target's host as `Host` and `X-Forwarded-Host`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_targets_are_judged_by_their_path() {
    let env = Env::new(Backend::Memory).await;
    create_client(&env.http, &env.tg, "acme", json!({})).await;
    let (_, no_scope) = create_key(&env.http, &env.tg, "acme", &[READ_KEYS]).await;
    let (_, reader) = create_key(&env.http, &env.tg, "acme", &[READ]).await;
    let target = b"http://other-host/api/v1/charge_points?page=2";
    let (status, _) = raw(env.tg.public, &raw_request("GET", target, &no_scope));
    assert_eq!(status, 403);
    assert_eq!(env.upstream.count(), 0);
    let (status, _) = raw(env.tg.public, &raw_request("GET", target, &reader));
    assert_eq!(status, 200);
    let rec = env.upstream.last();
    assert_eq!(rec.target, "/api/v1/charge_points?page=2");
    assert_eq!(rec.header("host").as_deref(), Some("other-host"));
    assert_eq!(
        rec.header("x-forwarded-host").as_deref(),
        Some("other-host")
    );
    // Origin form: the Host header as sent.
    let (status, _) = raw(env.tg.public, &raw_request("GET", CP.as_bytes(), &reader));
    assert_eq!(status, 200);
    let rec = env.upstream.last();
    assert_eq!(rec.header("host").as_deref(), Some("tollgate.test"));
    assert_eq!(
        rec.header("x-forwarded-host").as_deref(),
        Some("tollgate.test")
    );
    // tollgate's own endpoints are found by path in absolute form too, never forwarded.
    let (status, text) = raw(
        env.tg.public,
        &raw_request("GET", b"http://x/api/v1/client/usage", &reader),
    );
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("monthly_quota"));
    assert_eq!(env.upstream.count(), 2);
}

async fn method_and_url_overrides_cannot_change_what_was_authorised(b: Backend) {
    let env = Env::new(b).await;
    create_client(&env.http, &env.tg, "acme", json!({})).await;
    let (_, reader) = create_key(&env.http, &env.tg, "acme", &[READ]).await;
    let (_, writer) = create_key(&env.http, &env.tg, "acme", &[WRITE]).await;
    let (_, nothing) = create_key(&env.http, &env.tg, "acme", &[READ_KEYS]).await;
    let overrides = [
        ("x-http-method-override", "DELETE"),
        ("x-http-method", "PUT"),
        ("x-method-override", "PATCH"),
        ("X-HTTP-Method-Override", "POST"),
        ("x-original-url", "/api/v1/charge_points/7/delete"),
        ("x-rewrite-url", "/admin"),
    ];
    for (name, value) in overrides {
        let r = env
            .http
            .get(&env.tg.url(CP), &[("x-api-key", &reader), (name, value)])
            .await;
        assert_eq!(r.status, 200, "{name}");
        let rec = env.upstream.last();
        assert_eq!(rec.method, "GET");
        assert_eq!(rec.target, CP);
        assert!(rec.header(name).is_none(), "{name} forwarded");
        // An override toward GET does not make a write readable.
        let r = env
            .http
            .send(
                Method::POST,
                &env.tg.url(CP),
                &[("x-api-key", &reader), (name, "GET")],
                "",
            )
            .await;
        assert_eq!(r.status, 403, "POST with {name}: GET");
    }
    // An override naming another path does not move an unscoped request onto it.
    let r = env
        .http
        .get(
            &env.tg.url("/public"),
            &[("x-api-key", &nothing), ("x-original-url", CP)],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(env.upstream.last().target, "/public");
    assert!(env.upstream.last().header("x-original-url").is_none());
    // HEAD needs the GET scope.
    for (key, want) in [(&writer, 403), (&nothing, 403), (&reader, 200)] {
        let r = env
            .http
            .send(Method::HEAD, &env.tg.url(CP), &[("x-api-key", key)], "")
            .await;
        assert_eq!(r.status, want);
    }
}
