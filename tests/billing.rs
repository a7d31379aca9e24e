//! Billing cycles and daily usage history end to end (docs/billing.md):
//! the real binary on memory and on a real Redis, through the admin API and
//! the CLI; bad input refused with the field's name; and, across two
//! processes on one Redis, the day's `forwarded` summing to the quota's
//! `used` exactly under a concurrent burst (with the history's bytes per
//! client-day measured by `MEMORY USAGE`).

#[macro_use]
mod common;

use std::time::Duration;

use http::Method;
use serde_json::json;
use tollgate::clock::{Clock, ManualClock, SystemClock};
use tollgate::limits::cycle::Cycle;
use tollgate::limits::Limits;
use tollgate::store::redis::RedisStore;
use tollgate::store::{AdmitRequest, Store, TimeSource};

use common::admin::call;
use common::env::Env;
use common::two::alternate;
use common::Backend;

both_stores!(
    cycle_fields_are_validated_shown_and_patched,
    history_endpoint_answers_and_refuses_bad_ranges,
);

async fn cycle_fields_are_validated_shown_and_patched(backend: Backend) {
    let env = Env::new(backend).await;
    let (http, tg) = (&env.http, &env.tg);
    for (body, field) in [
        (json!({"id": "a", "quota_day": 0}), "quota_day"),
        (json!({"id": "a", "quota_day": 32}), "quota_day"),
        (json!({"id": "a", "quota_day": "15"}), "quota_day"),
        (
            json!({"id": "a", "quota_tz": "Mars/Olympus_Mons"}),
            "quota_tz",
        ),
        (json!({"id": "a", "quota_tz": ""}), "quota_tz"),
    ] {
        let r = call(
            http,
            tg,
            Method::POST,
            "/admin/v1/clients",
            Some(body.clone()),
        )
        .await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (400, "bad_request".into()),
            "{body}"
        );
        let msg = r.json()["error"].as_str().unwrap_or("").to_owned();
        assert!(msg.starts_with(&format!("\"{field}\"")), "{body}: {msg}");
    }
    let r = call(
        http,
        tg,
        Method::POST,
        "/admin/v1/clients",
        Some(json!({"id": "acme"})),
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        (r.json()["quota_day"].clone(), r.json()["quota_tz"].clone()),
        (json!(1), json!("UTC"))
    );
    let r = call(
        http,
        tg,
        Method::PATCH,
        "/admin/v1/clients/acme",
        Some(json!({"quota_day": 15, "quota_tz": "Europe/Berlin"})),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = call(http, tg, Method::GET, "/admin/v1/clients/acme", None).await;
    assert_eq!(
        (r.json()["quota_day"].clone(), r.json()["quota_tz"].clone()),
        (json!(15), json!("Europe/Berlin"))
    );
    let r = call(
        http,
        tg,
        Method::PATCH,
        "/admin/v1/clients/acme",
        Some(json!({"quota_tz": "Europe/Nowhere"})),
    )
    .await;
    assert_eq!(r.status, 400);

    // The usage document follows the cycle: the period starts on a 15th.
    let r = call(http, tg, Method::GET, "/admin/v1/clients/acme/usage", None).await;
    let q = &r.json()["monthly_quota"];
    assert!(
        q["period_start"].as_str().unwrap_or("").ends_with("-15"),
        "{q}"
    );
    assert!(
        q["period_end"].as_str().unwrap_or("").ends_with("-14"),
        "{q}"
    );

    // The CLI: the same rules before anything is sent, then the update.
    let o = tg.cli(&["clients", "update", "acme", "--quota-day", "32"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--quota-day"));
    let o = tg.cli(&["clients", "update", "acme", "--quota-tz", "Nope/Nope"]);
    assert_eq!(o.status.code(), Some(2));
    let o = tg.cli(&[
        "clients",
        "update",
        "acme",
        "--quota-day",
        "31",
        "--quota-tz",
        "Asia/Kolkata",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(
        (v["quota_day"].clone(), v["quota_tz"].clone()),
        (json!(31), json!("Asia/Kolkata"))
    );
}

async fn history_endpoint_answers_and_refuses_bad_ranges(backend: Backend) {
    let env = Env::new(backend).await;
    let (http, tg) = (&env.http, &env.tg);
    let (_, secret) = env
        .client(
            "acme",
            json!({"per_minute": 3, "monthly": 100}),
            &["read:charge_points"],
        )
        .await;
    for _ in 0..5 {
        env.get("/api/v1/charge_points", &secret).await;
    }
    let path = "/admin/v1/clients/acme/usage/history";
    // Default: every day of the current period, today holding the counts.
    let r = call(http, tg, Method::GET, path, None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let doc = r.json();
    assert_eq!(
        (doc["client_id"].clone(), doc["time_zone"].clone()),
        (json!("acme"), json!("UTC"))
    );
    let days = doc["days"].as_array().expect("days").clone();
    let usage = call(http, tg, Method::GET, "/admin/v1/clients/acme/usage", None)
        .await
        .json();
    let q = &usage["monthly_quota"];
    assert_eq!(
        days.first().map(|d| d["date"].clone()),
        Some(q["period_start"].clone())
    );
    assert_eq!(
        days.last().map(|d| d["date"].clone()),
        Some(q["period_end"].clone())
    );
    let sum = |f: &str| days.iter().map(|d| d[f].as_u64().unwrap_or(0)).sum::<u64>();
    assert_eq!(
        (sum("forwarded"), sum("rate_limited"), sum("refunded")),
        (3, 2, 0)
    );
    assert_eq!(sum("forwarded"), q["used"].as_u64().unwrap_or(0));

    let today = days
        .iter()
        .find(|d| d["forwarded"] == json!(3))
        .map(|d| d["date"].as_str().unwrap_or("").to_owned())
        .expect("a day with the requests");
    let r = call(
        http,
        tg,
        Method::GET,
        &format!("{path}?from={today}&to={today}"),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["days"],
        json!([{"date": today, "forwarded": 3, "rate_limited": 2, "quota_exceeded": 0, "refunded": 0}])
    );

    for query in [
        "from=2026-02-10&to=2026-02-09",
        "from=2025-01-01&to=2026-02-05",
        "from=2026-2-1",
        "to=2026-02-30",
        "from=yesterday",
        "since=2026-02-01",
        "from=2026-02-01&from=2026-02-02",
    ] {
        let r = call(http, tg, Method::GET, &format!("{path}?{query}"), None).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (400, "bad_request".into()),
            "{query}"
        );
    }
    let r = call(
        http,
        tg,
        Method::GET,
        "/admin/v1/clients/nobody/usage/history",
        None,
    )
    .await;
    assert_eq!(r.status, 404);

    // The CLI: CSV of the same day, and a bad date refused before sending.
    let o = tg.cli(&[
        "usage",
        "--client",
        "acme",
        "--history",
        "--from",
        &today,
        "--to",
        &today,
        "--csv",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("date,forwarded,rate_limited,quota_exceeded,refunded\n{today},3,2,0,0\n")
    );
    let o = tg.cli(&[
        "usage",
        "--client",
        "acme",
        "--history",
        "--from",
        "02/10/2026",
    ]);
    assert_eq!(o.status.code(), Some(2));
}

/// Two processes, one Redis, a burst of 400 concurrent requests against a
/// quota of 150: exactly 150 forwarded, and the history's `forwarded`
/// equals `used` and the upstream's count; the rest are `quota_exceeded`
/// or `rate_limited`. Then the day rolls over (a store with a clock one day
/// on): the day's counts land in its own key, whose bytes are measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_sums_to_used_across_two_processes() {
    let env = Env::new(Backend::Redis).await;
    let b = env.second_process();
    let (http, a) = (&env.http, &env.tg);
    let (key_id, secret) = env
        .client(
            "acme",
            json!({"per_minute": 1000, "monthly": 150}),
            &["read:charge_points"],
        )
        .await;
    for tg in [a, &b] {
        let r = http.get_key(&tg.url("/api/v1/client/usage"), &secret).await;
        assert_eq!(r.status, 200);
    }
    let counts = alternate(http, a, &b, "/api/v1/charge_points", &secret, 400).await;
    counts.assert_only(&[200, 429]);
    assert_eq!((counts.of(200), counts.of(429)), (150, 250));
    assert_eq!(env.upstream.count(), 150);

    let doc = call(
        http,
        a,
        Method::GET,
        "/admin/v1/clients/acme/usage/history",
        None,
    )
    .await
    .json();
    let days = doc["days"].as_array().expect("days");
    let sum = |f: &str| days.iter().map(|d| d[f].as_u64().unwrap_or(0)).sum::<u64>();
    let used = call(http, &b, Method::GET, "/admin/v1/clients/acme/usage", None)
        .await
        .json()["monthly_quota"]["used"]
        .as_u64();
    assert_eq!(Some(sum("forwarded")), used);
    assert_eq!(sum("forwarded"), 150);
    assert_eq!(sum("quota_exceeded") + sum("rate_limited"), 250);

    // The next day, the first admission moves today's counts from the
    // client hash to today's key: its contents, TTL and bytes.
    let redis = env.redis.as_ref().expect("redis");
    let now = SystemClock.now_ms();
    let today = Cycle::utc_month().day_at(now).0.to_string();
    let tomorrow = ManualClock::new(now + 86_400_000);
    let store = RedisStore::new(
        &redis.url(),
        Duration::from_secs(5),
        TimeSource::Clock(tomorrow),
    )
    .expect("store");
    let req = AdmitRequest {
        client_id: "acme",
        key_id: &key_id,
        gen: 1,
        scope: None,
        defaults: Limits {
            per_minute: 100,
            monthly: 100,
        },
        policy: Default::default(),
    };
    store.admit(&req).await.expect("admit tomorrow");
    let client = ::redis::Client::open(redis.url()).expect("url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let key = format!("tg:{{c:acme}}:h:{today}");
    let (f, r, q): (Option<u64>, Option<u64>, Option<u64>) = ::redis::cmd("HMGET")
        .arg(&key)
        .arg(&["f", "r", "q"])
        .query_async(&mut c)
        .await
        .expect("hmget");
    assert_eq!(f, Some(150));
    assert_eq!(r.unwrap_or(0) + q.unwrap_or(0), 250);
    let bytes: i64 = ::redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(&key)
        .query_async(&mut c)
        .await
        .expect("memory usage");
    let ttl: i64 = ::redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut c)
        .await
        .expect("ttl");
    eprintln!("history key {key}: {bytes} bytes, ttl {ttl} s");
    assert!(bytes < 256, "{key}: {bytes} bytes");
    // [history] days = 400 after the day's end, the day ended by now.
    assert!(
        (399 * 86_400..=400 * 86_400 + 1).contains(&ttl),
        "{key}: ttl {ttl}"
    );
}
