//! Secret hygiene: the real binary with `RUST_LOG=trace` on a real Redis,
//! driven through every key operation and refusal (create, list, rotate,
//! revoke, usage, forwarded, 401, 403, 429, admin API, HTTP/1.1 and h2c).
//! No issued secret, no bcrypt hash, no admin token and no credential header
//! value may appear in the log, in `/metrics`, or in any response body but
//! the one 201 that issued it.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::admin::create_client;
use common::http::{Http, Reply};
use common::redis_server::RedisServer;
use common::tollgate::{config, redis_store, Tollgate, ADMIN_TOKEN, AUTH_TUNING};
use common::upstream::Upstream;
use http::Method;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};

const READ: &str = "read:charge_points";
const CP: &str = "/api/v1/charge_points";
const KEYS: &str = "/api/v1/org/api-keys";

/// Every body seen, with the one secret it may carry (its own 201).
#[derive(Default)]
struct Seen {
    bodies: Vec<(String, String, Option<String>)>,
    secrets: Vec<String>,
}

impl Seen {
    fn body(&mut self, what: &str, r: &Reply) {
        self.bodies.push((
            what.to_owned(),
            String::from_utf8_lossy(&r.body).into_owned(),
            None,
        ));
    }

    /// A 201 that issued a secret: returns `(id, secret)`.
    fn issued(&mut self, what: &str, r: &Reply) -> (String, String) {
        assert_eq!(r.status, 201, "{what}: {:?}", r.body);
        let v = r.json();
        let secret = v["key"].as_str().expect("key").to_owned();
        self.bodies.push((
            what.to_owned(),
            String::from_utf8_lossy(&r.body).into_owned(),
            Some(secret.clone()),
        ));
        self.secrets.push(secret.clone());
        (v["id"].as_str().expect("id").to_owned(), secret)
    }
}

async fn org(
    http: &Http,
    tg: &Tollgate,
    method: Method,
    path: &str,
    key: &str,
    body: Value,
) -> Reply {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    http.send(method, &tg.url(path), &[("x-api-key", key)], body)
        .await
}

async fn admin(http: &Http, tg: &Tollgate, method: Method, path: &str, body: Value) -> Reply {
    common::admin::call(http, tg, method, path, (!body.is_null()).then_some(body)).await
}

/// One request over h2c (HTTP/2 without TLS), credential in `x-api-key`.
async fn h2c_get(tg: &Tollgate, path: &str, key: &str) -> u16 {
    let stream = tokio::net::TcpStream::connect(tg.public)
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://{}{path}", tg.public))
        .header("x-api-key", key)
        .header("authorization", format!("Bearer {key}"))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("h2c response");
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

/// Every bcrypt hash the store holds, current and previous.
async fn stored_hashes(redis: &RedisServer) -> Vec<String> {
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("tg:*:key:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut hashes = Vec::new();
    for k in keys {
        for field in ["hash", "prev_hash"] {
            let h: Option<String> = ::redis::cmd("HGET")
                .arg(&k)
                .arg(field)
                .query_async(&mut conn)
                .await
                .unwrap();
            hashes.extend(h);
        }
    }
    hashes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_hash_or_token_in_logs_metrics_or_bodies() {
    let upstream = Upstream::start().await;
    let redis = RedisServer::start();
    let text = config(&upstream.url(), &redis_store(&redis.url(), 1000), "").replacen(
        AUTH_TUNING,
        "bcrypt_cost = 4\nmax_failures_per_minute = 3",
        1,
    );
    let tg = Tollgate::start_with_env(&text, &[("RUST_LOG", "trace")]);
    let http = Http::default();
    let mut seen = Seen::default();
    let mut presented: Vec<String> = Vec::new();

    create_client(&http, &tg, "acme", json!({})).await;
    let r = admin(
        &http,
        &tg,
        Method::POST,
        "/admin/v1/clients/acme/keys",
        json!({"name": "root", "scopes": ["read:api_keys", "write:api_keys", READ]}),
    )
    .await;
    let (root_id, root) = seen.issued("admin create", &r);

    // The organisation API: list, create, rotate, revoke.
    let r = org(&http, &tg, Method::GET, KEYS, &root, Value::Null).await;
    assert_eq!(r.status, 200);
    seen.body("org list", &r);
    let r = org(
        &http,
        &tg,
        Method::POST,
        KEYS,
        &root,
        json!({"name": "svc", "scopes": [READ]}),
    )
    .await;
    let (svc_id, svc) = seen.issued("org create", &r);
    let r = org(
        &http,
        &tg,
        Method::POST,
        &format!("{KEYS}/{svc_id}/rotate"),
        &root,
        json!({"grace_seconds": 60}),
    )
    .await;
    let (_, svc2) = seen.issued("org rotate", &r);
    for key in [&svc, &svc2] {
        let r = http.get_key(&tg.url(CP), key).await;
        assert_eq!(r.status, 200);
        seen.body("forwarded", &r);
    }
    // 403: a read key writing.
    let r = http
        .send(Method::POST, &tg.url(CP), &[("x-api-key", &svc2)], "{}")
        .await;
    assert_eq!(r.status, 403);
    seen.body("403", &r);
    // 403: granting a scope the key lacks.
    let r = org(
        &http,
        &tg,
        Method::POST,
        KEYS,
        &svc2,
        json!({"name": "x", "scopes": [READ]}),
    )
    .await;
    assert_eq!(r.status, 403);
    seen.body("403 org", &r);
    let r = http.get_key(&tg.url("/api/v1/client/usage"), &svc2).await;
    assert_eq!(r.status, 200);
    seen.body("usage", &r);
    let mut hashes = stored_hashes(&redis).await;
    let r = org(
        &http,
        &tg,
        Method::DELETE,
        &format!("{KEYS}/{svc_id}"),
        &root,
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 204);
    seen.body("revoke", &r);
    for key in [&svc, &svc2] {
        let r = http.get_key(&tg.url(CP), key).await;
        assert_eq!(r.status, 401, "revoked");
        seen.body("401 revoked", &r);
    }

    // The admin API: rotate, list.
    let r = admin(
        &http,
        &tg,
        Method::POST,
        &format!("/admin/v1/keys/{root_id}/rotate"),
        json!({"grace_seconds": 0}),
    )
    .await;
    let (_, root2) = seen.issued("admin rotate", &r);
    // HTTP/2 (h2c), whose frame tracing is the likeliest to print headers.
    assert_eq!(h2c_get(&tg, CP, &root2).await, 200);
    let r = admin(
        &http,
        &tg,
        Method::GET,
        "/admin/v1/clients/acme/keys",
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 200);
    seen.body("admin list", &r);
    let r = admin(
        &http,
        &tg,
        Method::GET,
        "/admin/v1/clients/acme/usage",
        Value::Null,
    )
    .await;
    seen.body("admin usage", &r);
    let r = http
        .get(
            &tg.admin_url("/admin/v1/clients"),
            &[("authorization", "Bearer not-the-token")],
        )
        .await;
    assert_eq!(r.status, 401);
    seen.body("admin 401", &r);
    presented.push("not-the-token".into());

    // 401s of every kind, then 429 from the failure budget.
    let mut typo = root2.clone().into_bytes();
    typo[30] = if typo[30] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    let mut wrong: Vec<String> = (0..5)
        .map(|_| {
            tollgate::keys::generate_for(&root_id)
                .unwrap()
                .expose()
                .to_owned()
        })
        .collect();
    wrong.push(tollgate::keys::generate().expose().to_owned());
    let long = format!("{root2}tail-beyond-72-bytes");
    let mut statuses = Vec::new();
    for key in [&root, &typo, &long].into_iter().chain(wrong.iter()) {
        let bearer = format!("Bearer {key}");
        let r = http
            .get(&tg.url(CP), &[("authorization", bearer.as_str())])
            .await;
        statuses.push(r.status.as_u16());
        seen.body("refused", &r);
        presented.push(key.clone());
    }
    assert!(
        statuses.iter().all(|s| [401, 429].contains(s)),
        "{statuses:?}"
    );
    assert!(statuses.contains(&429), "{statuses:?}");
    let r = http
        .get(
            &tg.url(CP),
            &[
                ("x-api-key", &root2),
                ("authorization", "Bearer sk_live_other"),
            ],
        )
        .await;
    assert_eq!(r.status, 401);
    seen.body("ambiguous", &r);
    presented.push("sk_live_other".into());
    assert_eq!(h2c_get(&tg, CP, &typo).await, 401);

    // Everything the store holds that is secret: every hash, current and previous.
    hashes.extend(stored_hashes(&redis).await);
    assert!(hashes.len() >= 4, "{} hashes found", hashes.len());
    assert!(hashes.iter().all(|h| h.starts_with("$2")));

    // Wait until the last request's access-log line is in.
    let marker = "/hygiene-done";
    let _ = http.get_key(&tg.url(marker), &root2).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tg.log_text().contains(marker) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logs = tg.log_text();
    assert!(logs.contains(marker), "the access log never arrived");
    assert!(logs.contains("TRACE"), "trace logging is not on");
    let metrics =
        String::from_utf8_lossy(&http.get(&tg.admin_url("/metrics"), &[]).await.body).into_owned();

    let mut forbidden: Vec<(&str, String)> = Vec::new();
    forbidden.extend(seen.secrets.iter().map(|s| ("issued secret", s.clone())));
    forbidden.extend(hashes.iter().map(|h| ("bcrypt hash", h.clone())));
    forbidden.extend(
        presented
            .iter()
            .map(|p| ("presented credential", p.clone())),
    );
    forbidden.push(("admin token", ADMIN_TOKEN.to_owned()));
    for (what, value) in &forbidden {
        // The secret's listing prefix (12 characters) is public; the rest is not.
        let tail = if value.starts_with("sk_live_") && value.len() > 24 {
            &value[12..]
        } else {
            value.as_str()
        };
        assert!(!logs.contains(tail), "{what} in the log");
        assert!(!metrics.contains(tail), "{what} in /metrics");
        for (where_, body, allowed) in &seen.bodies {
            if allowed.as_deref() == Some(value.as_str()) {
                continue;
            }
            assert!(!body.contains(tail), "{what} in the {where_} body: {body}");
        }
    }
    for pattern in ["$2b$", "$2y$", "$2a$", "sk_live_", ADMIN_TOKEN] {
        assert!(!logs.contains(pattern), "{pattern} in the log");
        assert!(!metrics.contains(pattern), "{pattern} in /metrics");
    }
    for (where_, body, allowed) in &seen.bodies {
        if allowed.is_none() {
            assert!(
                !body.contains("$2"),
                "a hash-like string in the {where_} body"
            );
        }
    }
    println!(
        "checked {} secrets, {} hashes, {} presented credentials against {} log lines, \
         {} bytes of metrics and {} bodies",
        seen.secrets.len(),
        hashes.len(),
        presented.len(),
        logs.lines().count(),
        metrics.len(),
        seen.bodies.len()
    );
}
