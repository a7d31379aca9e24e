//! Policies (SPEC.md "Policies", issue 11) end to end with the real binary,
//! on the memory store and on a real Redis: plans (their limits, their
//! sources in the client JSON, PATCH refusing an unknown plan, a reload
//! removing a plan in use, two processes each reloading their own file),
//! route cost in units (headers, /usage, the 429 messages, a cost above the
//! limit), shadow mode (headers, metric, access log, the refusals it never
//! covers), refunds (unreachable and 5xx, not 4xx/2xx; a full queue counted),
//! and the CLI's --plan / --no-plan.

#[macro_use]
mod common;

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::admin::{call, create_key, revoke, set_status};
use common::env::Env;
use common::http::Reply;
use common::redis_server::RedisServer;
use common::tollgate::config;
use common::Backend;
use http::Method;
use serde_json::{json, Value};

const READ: &str = "read:charge_points";
const CP: &str = "/api/v1/charge_points";
const DEADLINE: Duration = Duration::from_secs(20);

/// Plans, and routes of cost 10, 100 and 1 (shadowed).
const POLICIES: &str = r#"
[plans.free]
per_minute = 25

[plans.pro]
per_minute = 1000
monthly = 5000

[[routes]]
path = "/api/v1/reports"
cost = 10

[[routes]]
path = "/api/v1/huge"
cost = 100

[[routes]]
path = "/api/v1/trial"
shadow = true
"#;

both_stores!(
    plans_cost_and_units_through_the_proxy,
    shadow_forwards_and_counts_only_limit_refusals,
    refunds_for_unreachable_and_5xx_only,
    a_reload_removing_a_plan_in_use_falls_back_to_limits,
);

/// The test config with `[limits]` lines added and `extra` appended.
fn text(limits: &str, extra: &str) -> String {
    config("{upstream}", "{store}", extra).replacen(
        "monthly = 10000\n",
        &format!("monthly = 10000\n{limits}\n"),
        1,
    )
}

async fn start(backend: Backend, limits: &str, extra: &str) -> Env {
    Env::setup(backend).text(&text(limits, extra)).start().await
}

async fn patch(env: &Env, id: &str, body: Value) -> Reply {
    call(
        &env.http,
        &env.tg,
        Method::PATCH,
        &format!("/admin/v1/clients/{id}"),
        Some(body),
    )
    .await
}

fn limit_and_remaining(r: &Reply) -> (String, String) {
    let h = |n| r.header(n).unwrap_or("-").to_owned();
    (h("x-ratelimit-limit"), h("x-ratelimit-remaining"))
}

async fn plans_cost_and_units_through_the_proxy(backend: Backend) {
    let env = start(
        backend,
        "",
        &format!("{POLICIES}\n[headers]\nietf = true\n"),
    )
    .await;
    let created = call(
        &env.http,
        &env.tg,
        Method::POST,
        "/admin/v1/clients",
        Some(json!({"id": "acme", "plan": "free"})),
    )
    .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let c = created.json();
    assert_eq!(c["plan"], "free");
    assert_eq!(
        (c["per_minute"].as_u64(), c["monthly"].as_u64()),
        (Some(25), Some(10000))
    );
    assert_eq!(
        c["limit_sources"],
        json!({"per_minute": "plan", "monthly": "limits"})
    );
    let (_, key) = create_key(&env.http, &env.tg, "acme", &[READ]).await;

    // A route of cost 10 counts 10 units; headers speak in units.
    for left in ["15", "5"] {
        let r = env.get("/api/v1/reports", &key).await;
        assert_eq!(r.status, 200);
        assert_eq!(limit_and_remaining(&r), ("25".into(), left.into()));
        // The IETF fields too.
        let policy = r.header("ratelimit-policy").unwrap_or_default();
        assert!(
            policy.starts_with("\"minute\";q=25;w=60, \"month\";q=10000;"),
            "{policy}"
        );
        let current = r.header("ratelimit").unwrap_or_default();
        assert!(
            current.starts_with(&format!("\"minute\";r={left};")),
            "{current}"
        );
    }
    let r = env.get("/api/v1/reports", &key).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.code(), "rate_limited");
    assert!(r.header("retry-after").is_some());
    let msg = r.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        msg.starts_with("Rate limit exceeded. Retry after "),
        "{msg}"
    );
    assert!(
        msg.contains("costs 10 units; 5 of 25 units remain"),
        "{msg}"
    );
    // 5 units left: a request of cost 1 still fits.
    let r = env.get(CP, &key).await;
    assert_eq!(
        (r.status.as_u16(), limit_and_remaining(&r).1),
        (200, "4".into())
    );
    let usage = env.get("/api/v1/client/usage", &key).await.json();
    assert_eq!(usage["rate_limit"]["limit"], 25);
    assert_eq!(usage["rate_limit"]["remaining"], 4);
    assert_eq!(usage["monthly_quota"]["used"], 21);

    // A route costing more than the limit: 429, said so, nothing to wait for.
    let r = env.get("/api/v1/huge", &key).await;
    assert_eq!((r.status.as_u16(), r.code()), (429, "rate_limited".into()));
    assert_eq!(r.header("retry-after"), None);
    let msg = r.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        msg.contains("costs 100 units per request, more than the per-minute limit of 25"),
        "{msg}"
    );

    // An unknown plan is refused, naming the plans that exist.
    let r = patch(&env, "acme", json!({"plan": "gold"})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "bad_request".into()));
    let msg = r.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        msg.contains("\"gold\"") && msg.contains("\"free\", \"pro\""),
        "{msg}"
    );
    // A plan change applies from the next request.
    let r = patch(&env, "acme", json!({"plan": "pro"})).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["limit_sources"],
        json!({"per_minute": "plan", "monthly": "plan"})
    );
    let r = env.get(CP, &key).await;
    assert_eq!(limit_and_remaining(&r).0, "1000");
    let r = patch(&env, "acme", json!({"plan": null, "per_minute": 60})).await;
    let c = r.json();
    assert_eq!(
        (c["plan"].clone(), c["per_minute"].clone()),
        (Value::Null, json!(60))
    );
    assert_eq!(
        c["limit_sources"],
        json!({"per_minute": "client", "monthly": "limits"})
    );
    let shown = call(
        &env.http,
        &env.tg,
        Method::GET,
        "/admin/v1/clients/acme",
        None,
    )
    .await;
    assert_eq!(shown.json(), c);
}

async fn shadow_forwards_and_counts_only_limit_refusals(backend: Backend) {
    let env = start(backend, "shadow = true", "").await;
    let (_, key) = env.client("acme", json!({"per_minute": 1}), &[READ]).await;
    assert_eq!(env.get(CP, &key).await.status, 200);
    let before = env.upstream.count();
    let r = env.get(CP, &key).await;
    assert_eq!(r.status, 200, "shadowed: forwarded");
    assert_eq!(env.upstream.count(), before + 1);
    assert_eq!(limit_and_remaining(&r), ("1".into(), "0".into()));
    assert_eq!(r.header("retry-after"), None);
    assert_eq!(
        env.counter("tollgate_shadow_refusals_total{reason=\"rate_limited\"}")
            .await,
        1
    );
    assert!(
        env.tg
            .wait_for_log("decision=shadow_rate_limited", DEADLINE),
        "{}",
        env.tg.log_text()
    );
    let usage = env.get("/api/v1/client/usage", &key).await.json();
    assert_eq!(usage["monthly_quota"]["used"], 2, "shadowed requests count");

    // Never shadowed: authentication, scope, suspension, revocation.
    let forwarded = env.upstream.count();
    assert_eq!(env.http.get(&env.tg.url(CP), &[]).await.status, 401);
    // The key with its last character changed (to one it is not).
    let last = if key.ends_with('x') { 'y' } else { 'x' };
    let bogus = format!("{}{last}", &key[..key.len() - 1]);
    assert_eq!(env.get(CP, &bogus).await.status, 401);
    let post = env
        .http
        .send(Method::POST, &env.tg.url(CP), &[("x-api-key", &key)], "{}")
        .await;
    assert_eq!(post.status, 403);
    set_status(&env.http, &env.tg, "acme", "suspended").await;
    assert_eq!(env.get(CP, &key).await.status, 403);
    set_status(&env.http, &env.tg, "acme", "active").await;
    let (key_id, other) = create_key(&env.http, &env.tg, "acme", &[READ]).await;
    revoke(&env.http, &env.tg, &key_id).await;
    assert_eq!(env.get(CP, &other).await.status, 401);
    assert_eq!(
        env.upstream.count(),
        forwarded,
        "none of them was forwarded"
    );
    assert_eq!(
        env.counter("tollgate_shadow_refusals_total{reason=\"rate_limited\"}")
            .await,
        1
    );
}

/// Polls the client's monthly `used` until it is `want`; panics at the deadline.
async fn until_used(env: &Env, key: &str, want: u64) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let used = env.get("/api/v1/client/usage", key).await.json()["monthly_quota"]["used"]
            .as_u64()
            .unwrap_or(u64::MAX);
        if used == want {
            return;
        }
        assert!(Instant::now() < deadline, "used {used}, want {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn refunds_for_unreachable_and_5xx_only(backend: Backend) {
    let env = start(backend, "refund_on = [\"unreachable\", \"5xx\"]", "").await;
    let (_, key) = env.client("acme", json!({}), &[READ]).await;
    // The upstream times out after 2 s: tollgate answers 504.
    assert_eq!(env.get("/slow/3000", &key).await.status, 504);
    assert_eq!(env.get("/status/503", &key).await.status, 503);
    assert_eq!(env.get("/status/404", &key).await.status, 404);
    assert_eq!(env.get(CP, &key).await.status, 200);
    until_used(&env, &key, 2).await;
    let deadline = Instant::now() + DEADLINE;
    while env.counter("tollgate_refunds_total{reason=\"5xx\"}").await < 1 {
        assert!(Instant::now() < deadline, "{}", env.metrics().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        env.counter("tollgate_refunds_total{reason=\"unreachable\"}")
            .await,
        1
    );
    assert_eq!(
        env.counter("tollgate_refunds_total{reason=\"5xx\"}").await,
        1
    );
    assert_eq!(env.counter("tollgate_refunds_dropped_total").await, 0);

    // Without refund_on nothing is given back.
    let plain = start(backend, "", "").await;
    let (_, key) = plain.client("acme", json!({}), &[READ]).await;
    assert_eq!(plain.get("/status/500", &key).await.status, 500);
    assert_eq!(plain.get("/slow/3000", &key).await.status, 504);
    until_used(&plain, &key, 2).await;
    assert_eq!(
        plain
            .counter("tollgate_refunds_total{reason=\"5xx\"}")
            .await,
        0
    );
}

fn write_atomic(path: &Path, content: &str) {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn wait_log_count(env: &Env, needle: &str, n: usize) {
    assert!(
        env.tg.wait_for_log_count(needle, n, DEADLINE),
        "no {n}th {needle:?}:\n{}",
        env.tg.log_text()
    );
}

async fn a_reload_removing_a_plan_in_use_falls_back_to_limits(backend: Backend) {
    let env = start(
        backend,
        "",
        &format!("{POLICIES}\n[reload]\nwatch = false\n"),
    )
    .await;
    let (_, key) = env.client("acme", json!({"plan": "free"}), &[READ]).await;
    assert_eq!(limit_and_remaining(&env.get(CP, &key).await).0, "25");

    let without = env
        .config_text
        .replace("[plans.free]\nper_minute = 25\n", "");
    write_atomic(&env.tg.config_path, &without);
    env.tg.signal("HUP");
    wait_log_count(&env, "config reloaded", 1);
    assert!(
        env.tg.log_text().contains("plan removed"),
        "{}",
        env.tg.log_text()
    );
    const UNKNOWN: &str = "names a plan the config does not define";
    for _ in 0..2 {
        let r = env.get(CP, &key).await;
        assert_eq!(
            (r.status.as_u16(), limit_and_remaining(&r).0),
            (200, "100".into())
        );
    }
    assert_eq!(env.counter("tollgate_plan_unknown_requests_total").await, 2);
    wait_log_count(&env, UNKNOWN, 1);
    let c = call(
        &env.http,
        &env.tg,
        Method::GET,
        "/admin/v1/clients/acme",
        None,
    )
    .await
    .json();
    assert_eq!(
        (c["plan"].clone(), c["per_minute"].clone()),
        (json!("free"), json!(100))
    );
    assert_eq!(c["limit_sources"]["per_minute"], "limits");

    // Logged once per reload: the next reload logs it again, once.
    env.tg.signal("HUP");
    wait_log_count(&env, "config reloaded", 2);
    env.get(CP, &key).await;
    env.get(CP, &key).await;
    wait_log_count(&env, UNKNOWN, 2);
    let logged = env
        .tg
        .log_lines()
        .iter()
        .filter(|l| l.contains(UNKNOWN))
        .count();
    assert_eq!(logged, 2);
}

/// Two processes, one Redis: a PATCH through one applies in the other from
/// its next request; a plan's numbers change in each process when it
/// reloads its own file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_across_two_processes_on_one_redis() {
    let env = start(
        Backend::Redis,
        "",
        &format!("{POLICIES}\n[reload]\nwatch = false\n"),
    )
    .await;
    let b = env.second_process();
    let (_, key) = env.client("acme", json!({"plan": "free"}), &[READ]).await;
    let limit_at = |url: String| {
        let (http, key) = (env.http.clone(), key.clone());
        async move { limit_and_remaining(&http.get_key(&url, &key).await).0 }
    };
    assert_eq!(limit_at(b.url(CP)).await, "25");

    let raised = env
        .config_text
        .replace("per_minute = 25", "per_minute = 40");
    write_atomic(&env.tg.config_path, &raised);
    env.tg.signal("HUP");
    wait_log_count(&env, "config reloaded", 1);
    assert_eq!(limit_at(env.tg.url(CP)).await, "40");
    assert_eq!(
        limit_at(b.url(CP)).await,
        "25",
        "b has not reloaded its file yet"
    );
    write_atomic(&b.config_path, &raised);
    b.signal("HUP");
    assert!(b.wait_for_log("config reloaded", DEADLINE));
    assert_eq!(limit_at(b.url(CP)).await, "40");

    assert_eq!(
        patch(&env, "acme", json!({"plan": "pro"})).await.status,
        200
    );
    assert_eq!(limit_at(b.url(CP)).await, "1000");
}

/// A refund queue of 2 in front of a paused Redis: the worker holds one,
/// two wait, the rest are dropped at once and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_refund_queue_drops_and_counts() {
    use tollgate::metrics::Metrics;
    use tollgate::refunds::Refunds;
    use tollgate::store::redis::RedisStore;
    use tollgate::store::{Refund, SharedStore, TimeSource};

    let redis = RedisServer::start();
    let store: SharedStore = Arc::new(
        RedisStore::new(&redis.url(), Duration::from_millis(1000), TimeSource::Store).unwrap(),
    );
    store.ping().await.unwrap();
    let metrics = Arc::new(Metrics::new());
    let refunds = Refunds::new(store, metrics.clone(), 2);
    redis.pause();
    let refund = Refund {
        client_id: "acme".into(),
        units: 1,
        at_ms: 0,
    };
    let first = Instant::now();
    let mut accepted = 0;
    for i in 0..10 {
        if refunds.submit(refund.clone(), "5xx") {
            accepted += 1;
        }
        if i == 0 {
            // Let the worker take the first one (it then waits on Redis).
            let deadline = Instant::now() + DEADLINE;
            while format!("{refunds:?}").contains("queued: 1") {
                assert!(Instant::now() < deadline);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    assert!(
        first.elapsed() < Duration::from_millis(900),
        "submit never waits"
    );
    redis.resume();
    assert_eq!(accepted, 3, "one taken by the worker, two queued");
    let dropped = |m: &Metrics| common::env::counter(&m.encode(), "tollgate_refunds_dropped_total");
    assert!(dropped(&metrics) >= 7, "{}", metrics.encode());
}

fn json_of(o: &Output) -> Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("one JSON document")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_sets_and_clears_the_plan() {
    let env = start(Backend::Memory, "", POLICIES).await;
    let c = json_of(
        &env.tg
            .cli(&["clients", "create", "acme", "--plan", "free", "--json"]),
    );
    assert_eq!(
        (c["plan"].clone(), c["per_minute"].clone()),
        (json!("free"), json!(25))
    );
    let c = json_of(
        &env.tg
            .cli(&["clients", "update", "acme", "--plan", "pro", "--json"]),
    );
    assert_eq!(
        c["limit_sources"],
        json!({"per_minute": "plan", "monthly": "plan"})
    );
    let out = env.tg.cli(&["clients", "show", "acme"]);
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(shown.contains("plan:        pro"), "{shown}");
    assert!(shown.contains("per minute:  1000 (from plan)"), "{shown}");
    let c = json_of(
        &env.tg
            .cli(&["clients", "update", "acme", "--no-plan", "--json"]),
    );
    assert_eq!(
        (c["plan"].clone(), c["per_minute"].clone()),
        (Value::Null, json!(100))
    );
    // An unknown plan: the server's 400, exit 2; both flags at once: usage error.
    let bad = env.tg.cli(&["clients", "update", "acme", "--plan", "gold"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("\"free\", \"pro\""));
    let both = env
        .tg
        .cli(&["clients", "update", "acme", "--plan", "pro", "--no-plan"]);
    assert_eq!(both.status.code(), Some(2));
}

/// At shutdown the queue is flushed within a bound: an empty queue returns
/// at once, and what a paused store did not take is counted as dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_waits_for_the_queue_then_counts_what_is_left() {
    use tollgate::metrics::Metrics;
    use tollgate::refunds::Refunds;
    use tollgate::store::redis::RedisStore;
    use tollgate::store::{Refund, SharedStore, TimeSource};

    let redis = RedisServer::start();
    let store: SharedStore = Arc::new(
        RedisStore::new(&redis.url(), Duration::from_millis(3000), TimeSource::Store).unwrap(),
    );
    store.ping().await.unwrap();
    let metrics = Arc::new(Metrics::new());
    let refunds = Refunds::new(store, metrics.clone(), 8);
    let refund = Refund {
        client_id: "acme".into(),
        units: 1,
        at_ms: 0,
    };
    assert!(refunds.submit(refund.clone(), "5xx"));
    assert_eq!(refunds.flush(DEADLINE).await, 0);
    let count = |series: &str| common::env::counter(&metrics.encode(), series);
    assert_eq!(count("tollgate_refunds_total{reason=\"5xx\"}"), 1);

    redis.pause();
    assert!(refunds.submit(refund.clone(), "5xx"));
    assert!(refunds.submit(refund, "5xx"));
    let started = Instant::now();
    assert_eq!(refunds.flush(Duration::from_millis(300)).await, 2);
    assert!(started.elapsed() < Duration::from_millis(2500), "bounded");
    assert_eq!(count("tollgate_refunds_dropped_total"), 2);
    redis.resume();
}
