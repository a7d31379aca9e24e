//! What an operator sees, from the real binary: the `/metrics` families after
//! a mix of requests (every outcome, on Redis), opt-in per-client labels with
//! their cap, the access log in both of its own formats (one line per request
//! with every documented field, never a credential), its non-blocking writing
//! (lines arrive on their own, in order, all out at exit after SIGTERM),
//! and the IETF `RateLimit-Policy` / `RateLimit` fields on both stores.

mod common;

use common::Backend;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::admin::{create_client, create_key};
use common::http::{Http, Reply};
use common::redis_server::RedisServer;
use common::tollgate::{config, memory_store, redis_store, Tollgate};
use common::upstream::Upstream;
use http::Method;
use serde_json::{json, Value};

const READ: &str = "read:charge_points";
const CP: &str = "/api/v1/charge_points";

/// The value of the series named exactly `series` (name and labels).
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in\n{metrics}"))
}

async fn scrape(http: &Http, tg: &Tollgate) -> String {
    let r = http.get(&tg.admin_url("/metrics"), &[]).await;
    assert_eq!(r.status, 200);
    String::from_utf8_lossy(&r.body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_every_outcome_and_carry_no_secret() {
    let upstream = Upstream::start().await;
    let redis = RedisServer::start();
    let tg = Tollgate::start(&config(
        &upstream.url(),
        &redis_store(&redis.url(), 500),
        "",
    ));
    let http = Http::default();
    create_client(&http, &tg, "fast", json!({"per_minute": 1})).await;
    create_client(&http, &tg, "tiny", json!({"monthly": 1})).await;
    create_client(&http, &tg, "plain", json!({})).await;
    let (fast_id, fast) = create_key(&http, &tg, "fast", &[READ]).await;
    let (tiny_id, tiny) = create_key(&http, &tg, "tiny", &[READ]).await;
    let (plain_id, plain) = create_key(&http, &tg, "plain", &[READ]).await;
    let get = |path: &str, key: &str| {
        let (url, key) = (tg.url(path), key.to_owned());
        let http = http.clone();
        async move { http.get_key(&url, &key).await.status.as_u16() }
    };

    assert_eq!(get(CP, &fast).await, 200); // forwarded
    assert_eq!(get(CP, &fast).await, 429); // rate_limited
    assert_eq!(get(CP, &tiny).await, 200); // forwarded
    assert_eq!(get(CP, &tiny).await, 429); // quota_exceeded
    assert_eq!(http.get(&tg.url(CP), &[]).await.status, 401); // unauthorized
    let post = http
        .send(Method::POST, &tg.url(CP), &[("x-api-key", &plain)], "{}")
        .await;
    assert_eq!(post.status, 403); // forbidden
    assert_eq!(get("/slow/2500", &plain).await, 504); // upstream_error (timeout 2 s)
    assert_eq!(get("/api/v1/client/usage", &plain).await, 200); // served
    assert_eq!(get("/a/%2F/b", &plain).await, 400); // bad_request
    redis.pause();
    let down = get(CP, &plain).await; // store_error
    redis.resume();
    assert_eq!(down, 503);

    let m = scrape(&http, &tg).await;
    for (outcome, n) in [
        ("forwarded", 2.0),
        ("rate_limited", 1.0),
        ("quota_exceeded", 1.0),
        ("unauthorized", 1.0),
        ("forbidden", 1.0),
        ("upstream_error", 1.0),
        ("served", 1.0),
        ("bad_request", 1.0),
        ("store_error", 1.0),
    ] {
        assert_eq!(
            sample(
                &m,
                &format!("tollgate_requests_total{{outcome=\"{outcome}\"}}")
            ),
            n,
            "{outcome}"
        );
    }
    assert_eq!(sample(&m, "tollgate_request_duration_seconds_count"), 10.0);
    assert_eq!(sample(&m, "tollgate_upstream_duration_seconds_count"), 2.0);
    assert!(sample(&m, "tollgate_store_duration_seconds_count") >= 8.0);
    assert_eq!(sample(&m, "tollgate_store_errors_total"), 1.0);
    assert_eq!(
        sample(&m, "tollgate_auth_rejections_total{reason=\"missing\"}"),
        1.0
    );
    // One miss and one bcrypt verification per key; the rest from the cache.
    assert_eq!(
        sample(&m, "tollgate_auth_cache_total{result=\"miss\"}"),
        3.0
    );
    assert_eq!(sample(&m, "tollgate_bcrypt_verifications_total"), 3.0);
    assert_eq!(sample(&m, "tollgate_auth_cache_total{result=\"hit\"}"), 5.0);
    assert_eq!(sample(&m, "tollgate_in_flight_requests"), 0.0);
    assert_eq!(
        sample(&m, "tollgate_config_reloads_total{result=\"ok\"}"),
        0.0
    );
    assert_eq!(
        sample(&m, "tollgate_config_reloads_total{result=\"failed\"}"),
        0.0
    );
    assert_eq!(
        sample(
            &m,
            &format!(
                "tollgate_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
    assert!(m.contains("tollgate_request_duration_seconds_bucket{le=\"0.001\"}"));
    // Per-client labels are opt-in; ids and secrets never appear.
    assert!(!m.contains("client="), "{m}");
    for secret in [&fast, &tiny, &plain, &fast_id, &tiny_id, &plain_id] {
        assert!(!m.contains(secret.as_str()), "{secret} in metrics");
    }
    assert!(!m.contains(common::tollgate::ADMIN_TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_client_labels_are_opt_in_and_capped() {
    let upstream = Upstream::start().await;
    let extra = "\n[metrics]\nper_client = true\nper_client_max = 2\n";
    let tg = Tollgate::start(&config(&upstream.url(), &memory_store(), extra));
    let http = Http::default();
    let mut keys = Vec::new();
    for id in ["alpha", "beta", "gamma"] {
        create_client(&http, &tg, id, json!({})).await;
        keys.push(create_key(&http, &tg, id, &[READ]).await);
    }
    for (_, secret) in &keys {
        assert_eq!(http.get_key(&tg.url(CP), secret).await.status, 200);
    }
    assert_eq!(http.get_key(&tg.url(CP), &keys[0].1).await.status, 200);
    let post = http
        .send(Method::POST, &tg.url(CP), &[("x-api-key", &keys[1].1)], "")
        .await;
    assert_eq!(post.status, 403);

    let m = scrape(&http, &tg).await;
    let series = |client: &str, outcome: &str| {
        format!("tollgate_client_requests_total{{client=\"{client}\",outcome=\"{outcome}\"}}")
    };
    assert_eq!(sample(&m, &series("alpha", "forwarded")), 2.0);
    assert_eq!(sample(&m, &series("beta", "forwarded")), 1.0);
    assert_eq!(sample(&m, &series("beta", "forbidden")), 1.0);
    // The third client is past the cap of two.
    assert_eq!(sample(&m, &series("_other", "forwarded")), 1.0);
    assert!(!m.contains("client=\"gamma\""), "{m}");
    for (key_id, secret) in &keys {
        assert!(!m.contains(key_id.as_str()) && !m.contains(secret.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_log_has_one_line_per_request_and_no_credential() {
    let upstream = Upstream::start().await;
    let extra = "\n[log]\nformat = \"json\"\n";
    let tg = Tollgate::start(&config(&upstream.url(), &memory_store(), extra));
    let http = Http::default();
    create_client(&http, &tg, "acme", json!({"per_minute": 2})).await;
    let (key_id, secret) = create_key(&http, &tg, "acme", &[READ]).await;
    let bearer = format!("Bearer {secret}");
    let bogus = "sk_live_notarealkeybutsecretlooking";

    let replies: Vec<Reply> = vec![
        http.get_key(&tg.url(&format!("{CP}?api_key={secret}&page=2")), &secret)
            .await,
        http.get(&tg.url("/other/path"), &[("authorization", &bearer)])
            .await,
        http.get_key(&tg.url(CP), &secret).await,
        http.get(&tg.url(CP), &[("x-api-key", bogus)]).await,
    ];
    let statuses: Vec<u16> = replies.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(statuses, [200, 200, 429, 401]);

    let access = |tg: &Tollgate| -> Vec<Value> {
        tg.log_lines()
            .iter()
            .filter(|l| l.contains("tollgate::access"))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while access(&tg).len() < 4 {
        assert!(Instant::now() < deadline, "{}", tg.log_text());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lines = access(&tg);
    assert_eq!(lines.len(), 4, "one access line per public request");
    let expect = [
        ("GET", CP, 200, "acme", key_id.as_str(), 200, "forwarded"),
        ("GET", "/other/path", 200, "acme", &key_id, 200, "forwarded"),
        ("GET", CP, 429, "acme", &key_id, 0, "rate_limited"),
        ("GET", CP, 401, "-", "-", 0, "unauthorized"),
    ];
    for (line, (method, path, status, client, key, upstream_status, decision)) in
        lines.iter().zip(expect)
    {
        assert_eq!(line["target"], "tollgate::access", "{line}");
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["method"], method, "{line}");
        assert_eq!(line["path"], path, "the query is never logged: {line}");
        assert_eq!(line["status"], status, "{line}");
        assert_eq!(line["client_id"], client, "{line}");
        assert_eq!(line["key_id"], key, "{line}");
        assert_eq!(line["upstream_status"], upstream_status, "{line}");
        assert_eq!(line["decision"], decision, "{line}");
        assert!(line["duration_ms"].as_f64().is_some(), "{line}");
        assert!(line["timestamp"].is_string(), "{line}");
        assert_eq!(line["message"], "request", "{line}");
        // Every documented key, and no other (a missing field fails here).
        let keys: BTreeSet<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, BTreeSet::from(JSON_KEYS), "{line}");
    }
    // Every line of the log, not only access lines, is JSON and credential-free.
    let log = tg.log_text();
    for l in log.lines() {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
    }
    for credential in [secret.as_str(), bogus, &secret[8..]] {
        assert!(!log.contains(credential), "credential in the log:\n{log}");
    }
}

/// The keys of a JSON access line, in the order docs/operations.md gives.
const JSON_KEYS: [&str; 12] = [
    "timestamp",
    "level",
    "target",
    "message",
    "method",
    "path",
    "status",
    "client_id",
    "key_id",
    "upstream_status",
    "decision",
    "duration_ms",
];

/// A text access line split into its `name=value` fields (a quoted value is a
/// JSON string), after the `<timestamp>  INFO tollgate::access: request` prefix.
fn text_fields(line: &str) -> Vec<(String, String)> {
    let (prefix, rest) = line
        .split_once(" tollgate::access: request ")
        .unwrap_or_else(|| panic!("not an access line: {line}"));
    assert!(prefix.ends_with("  INFO"), "{line}");
    let mut out = Vec::new();
    let mut rest = rest;
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=').unwrap_or_else(|| panic!("{line}"));
        let (value, tail) = if after.starts_with('"') {
            let mut de = serde_json::Deserializer::from_str(after).into_iter::<String>();
            let v = de.next().unwrap().unwrap();
            let used = de.byte_offset();
            (v, &after[used..])
        } else {
            after
                .split_once(' ')
                .map_or((after.to_owned(), ""), |(v, t)| (v.to_owned(), t))
        };
        out.push((name.to_owned(), value));
        rest = tail.trim_start_matches(' ');
    }
    out
}

/// Access lines go through the non-blocking writer, yet each arrives on its
/// own (nothing else is logged here to push it out), they stay in order with
/// the other lines, each has every documented field, and every one is out
/// when the process exits on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_access_lines_arrive_on_their_own_and_are_all_out_at_exit() {
    let upstream = Upstream::start().await;
    let mut tg = Tollgate::start(&config(&upstream.url(), &memory_store(), ""));
    let http = Http::default();
    create_client(&http, &tg, "acme", json!({})).await;
    let (_, secret) = create_key(&http, &tg, "acme", &[READ]).await;

    assert_eq!(http.get_key(&tg.url("/alone"), &secret).await.status, 200);
    assert!(
        tg.wait_for_log("path=/alone", Duration::from_secs(10)),
        "the access line never arrived:\n{}",
        tg.log_text()
    );

    for i in 0..20 {
        let r = http.get_key(&tg.url(&format!("/batch/{i}")), &secret).await;
        assert_eq!(r.status, 200);
    }
    tg.signal("TERM");
    let status = tg
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("still running 20 s after SIGTERM:\n{}", tg.log_text()));
    assert_eq!(status.code(), Some(0), "{}", tg.log_text());
    // The process is gone; its last lines may still be in the pipe.
    assert!(
        tg.wait_for_log("drained", Duration::from_secs(10)),
        "{}",
        tg.log_text()
    );
    let lines = tg.log_lines();
    let access: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains("tollgate::access"))
        .collect();
    assert_eq!(access.len(), 21, "one line per request:\n{}", tg.log_text());
    for (n, &at) in access[1..].iter().enumerate() {
        assert!(
            lines[at].contains(&format!("path=/batch/{n} ")),
            "out of order: {}",
            lines[at]
        );
        let fields = text_fields(&lines[at]);
        let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, JSON_KEYS[4..], "{}", lines[at]);
        let value = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(value("method"), Some("GET"));
        assert_eq!(value("path"), Some(format!("/batch/{n}").as_str()));
        assert_eq!(value("status"), Some("200"));
        assert_eq!(value("client_id"), Some("acme"));
        assert_eq!(value("upstream_status"), Some("200"));
        assert_eq!(value("decision"), Some("forwarded"));
        let ms: f64 = value("duration_ms").unwrap().parse().unwrap();
        assert!(ms >= 0.0, "{}", lines[at]);
    }
    let signal = lines
        .iter()
        .position(|l| l.contains("shutdown signal received"))
        .expect("the shutdown line");
    assert!(
        access.iter().all(|&i| i < signal),
        "access lines after the shutdown line:\n{}",
        tg.log_text()
    );
}

// ---------------------------------------------------------------------------
// IETF RateLimit-Policy / RateLimit (draft-ietf-httpapi-ratelimit-headers)
// ---------------------------------------------------------------------------

/// One member of a structured-field List: `"name";k=v;k=v`.
#[derive(Debug)]
struct Item {
    name: String,
    params: Vec<(String, i64)>,
}

impl Item {
    fn param(&self, key: &str) -> i64 {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no {key} in {self:?}"))
            .1
    }
}

/// Parses the List shape tollgate emits (String items, Integer parameters),
/// strictly: anything else fails the test.
fn sf_list(value: &str) -> Vec<Item> {
    value
        .split(", ")
        .map(|member| {
            let mut parts = member.split(';');
            let name = parts.next().unwrap();
            assert!(
                name.len() >= 2 && name.starts_with('"') && name.ends_with('"'),
                "{value}"
            );
            let params = parts
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or_else(|| panic!("{value}"));
                    assert!(k.bytes().all(|b| b.is_ascii_lowercase()), "{value}");
                    let v: i64 = v.parse().unwrap_or_else(|_| panic!("{value}"));
                    assert!((0..=999_999_999_999_999).contains(&v), "{value}");
                    (k.to_owned(), v)
                })
                .collect();
            Item {
                name: name.trim_matches('"').to_owned(),
                params,
            }
        })
        .collect()
}

async fn ietf_headers(backend: Backend, enabled: bool) {
    let upstream = Upstream::start().await;
    let redis = matches!(backend, Backend::Redis).then(RedisServer::start);
    let store = match &redis {
        None => memory_store(),
        Some(r) => redis_store(&r.url(), 500),
    };
    let extra = if enabled {
        "\n[headers]\nietf = true\n"
    } else {
        ""
    };
    let tg = Tollgate::start(&config(&upstream.url(), &store, extra));
    let http = Http::default();
    create_client(&http, &tg, "acme", json!({"per_minute": 2, "monthly": 50})).await;
    let (_, secret) = create_key(&http, &tg, "acme", &[READ]).await;

    let now = chrono::Utc::now().timestamp();
    let month_len =
        tollgate::limits::month::next_month_start(now) - tollgate::limits::month::month_start(now);
    let first = http.get_key(&tg.url(CP), &secret).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-ratelimit-limit"), Some("2"));
    if !enabled {
        assert!(first.header("ratelimit-policy").is_none());
        assert!(first.header("ratelimit").is_none());
        let refused = http.get(&tg.url(CP), &[("x-api-key", &secret)]).await;
        assert!(refused.header("ratelimit").is_none());
        return;
    }
    assert_eq!(
        first.header("ratelimit-policy"),
        Some(format!("\"minute\";q=2;w=60, \"month\";q=50;w={month_len}").as_str())
    );
    let items = sf_list(first.header("ratelimit").expect("RateLimit"));
    assert_eq!(items.len(), 2);
    assert_eq!((items[0].name.as_str(), items[0].param("r")), ("minute", 1));
    assert!((1..=61).contains(&items[0].param("t")), "{items:?}");
    assert_eq!((items[1].name.as_str(), items[1].param("r")), ("month", 49));
    let to_month_end = tollgate::limits::month::next_month_start(now) - now;
    assert!(
        (items[1].param("t") - to_month_end).abs() <= 2,
        "{items:?} vs {to_month_end}"
    );

    // A 429 carries them too, with r=0 and an effective window no later than Retry-After.
    assert_eq!(http.get_key(&tg.url(CP), &secret).await.status, 200);
    let limited = http.get_key(&tg.url(CP), &secret).await;
    assert_eq!(limited.status, 429);
    let items = sf_list(limited.header("ratelimit").expect("RateLimit on 429"));
    let retry: i64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert_eq!(items[0].param("r"), 0);
    assert!(
        items[0].param("t") <= retry,
        "{items:?} vs Retry-After {retry}"
    );
    assert_eq!(items[1].param("r"), 48);
    assert!(limited.header("ratelimit-policy").is_some());
}

macro_rules! both_stores {
    ($($name:ident: $enabled:expr),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::ietf_headers(super::Backend::Memory, $enabled).await })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::ietf_headers(super::Backend::Redis, $enabled).await })*
        }
    };
}

both_stores!(
    ietf_ratelimit_fields_when_enabled: true,
    no_ietf_ratelimit_fields_by_default: false,
);
