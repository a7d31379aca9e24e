//! Quota threshold notifications (issue 12 part 3, docs/billing.md
//! "Notifications"): exactly one signed POST per client, period and
//! threshold across processes, retried until a 2xx, kept in Redis across a
//! restart, never on the request path; and the `[notify]` config contract.
//! Real tollgate binaries, real redis-server, a real HTTP receiver
//! (tests/common/receiver.rs).

use std::path::Path;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

#[macro_use]
mod common;

use common::env::{counter, Env};
use common::receiver::{Answer, Receiver};
use common::tollgate::command;
use common::two::alternate;
use common::Backend;

/// The variable the tests' configs name; every test sets the same value.
const SECRET_ENV: &str = "TG_TEST_NOTIFY_SECRET";
const SECRET: &str = "s3cret-for-the-notify-tests";
const PATH: &str = "/api/v1/charge_points";

fn set_secret() {
    // Same value from every test thread, so the race is harmless; the
    // tollgate children inherit it.
    std::env::set_var(SECRET_ENV, SECRET);
}

fn notify_section(receiver: &Receiver, thresholds: &str) -> String {
    format!(
        "[notify]\nurl = \"{}\"\nthresholds = {thresholds}\nsecret_env = \"{SECRET_ENV}\"\n",
        receiver.url()
    )
}

/// The documented check: HMAC-SHA256 of the raw body keyed with the secret,
/// hex, after `sha256=`.
fn verify(body: &[u8], header: &str) -> bool {
    let Some(hex) = header.strip_prefix("sha256=") else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    want == hex
}

async fn env_with(backend: Backend, receiver: &Receiver, thresholds: &str) -> Env {
    set_secret();
    Env::setup(backend)
        .extra(&notify_section(receiver, thresholds))
        .start()
        .await
}

/// Memory store, the basic case: a quota of 10 with thresholds 50 and 100;
/// ten requests one after the other give one POST at the 5th and one at the
/// 10th, signed, with the documented fields; refused requests after that
/// give none.
async fn basic_case(backend: Backend) {
    let receiver = Receiver::start().await;
    let env = env_with(backend, &receiver, "[50, 100]").await;
    let (_, secret) = env
        .client("acme", json!({"monthly": 10}), &["read:charge_points"])
        .await;
    for _ in 0..12 {
        env.get(PATH, &secret).await;
    }
    assert_eq!(receiver.wait_accepted(2, Duration::from_secs(20)).await, 2);
    let got = receiver.received();
    let mut events: Vec<serde_json::Value> = got.iter().map(|r| r.json()).collect();
    events.sort_by_key(|e| e["threshold"].as_u64());
    for (e, (threshold, used)) in events.iter().zip([(50, 5), (100, 10)]) {
        assert_eq!(e["event"], "quota.threshold");
        assert_eq!(e["client_id"], "acme");
        assert_eq!(e["threshold"], threshold);
        assert_eq!(e["used"], used);
        assert_eq!(e["limit"], 10);
        for f in ["period_start", "period_end", "at"] {
            assert!(e[f].as_str().is_some_and(|s| s.ends_with('Z')), "{f}: {e}");
        }
    }
    for r in &got {
        let sig = r.header("x-tollgate-signature").expect("signature header");
        assert!(verify(&r.body, &sig), "signature does not verify: {sig}");
        assert!(!verify(b"{}", &sig));
    }
    // More refused requests, and time for any duplicate to arrive: none.
    for _ in 0..3 {
        env.get(PATH, &secret).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.received().len(), 2);
    assert_eq!(
        env.counter("tollgate_notifications_total{result=\"delivered\"}")
            .await,
        2
    );
    // The secret appears in no log line.
    assert!(!env.tg.log_text().contains(SECRET));
}

both_stores!(basic_case, refund_then_recross_posts_once);

/// Two processes, one Redis, a burst of 300 concurrent requests against a
/// quota of 100 with thresholds 25, 50, 80 and 100: exactly one POST per
/// threshold, each verifiable, whatever process admitted the crossing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_across_two_processes_posts_once_per_threshold() {
    let receiver = Receiver::start().await;
    let env = env_with(Backend::Redis, &receiver, "[25, 50, 80, 100]").await;
    let b = env.second_process();
    let (_, secret) = env
        .client(
            "acme",
            json!({"per_minute": 1000, "monthly": 100}),
            &["read:charge_points"],
        )
        .await;
    let counts = alternate(&env.http, &env.tg, &b, PATH, &secret, 300).await;
    counts.assert_only(&[200, 429]);
    assert_eq!(counts.of(200), 100);
    assert_eq!(receiver.wait_accepted(4, Duration::from_secs(30)).await, 4);
    // Time for a duplicate (from either process, or a sweep) to arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = receiver.received();
    let mut thresholds: Vec<u64> = got
        .iter()
        .map(|r| r.json()["threshold"].as_u64().expect("threshold"))
        .collect();
    thresholds.sort_unstable();
    assert_eq!(thresholds, [25, 50, 80, 100], "{got:#?}");
    for r in &got {
        let e = r.json();
        let (t, used) = (e["threshold"].as_u64(), e["used"].as_u64());
        assert!(used >= t, "{e}");
        let sig = r.header("x-tollgate-signature").expect("signature");
        assert!(verify(&r.body, &sig));
    }
}

/// A receiver that fails three times (a 500, a redirect, garbage) and then
/// answers 200 gets the same event four times, then no more; the failures
/// are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_until_a_2xx_then_no_more() {
    let receiver = Receiver::start().await;
    receiver.queue(&[Answer::Status(500), Answer::Redirect, Answer::Garbage]);
    let env = env_with(Backend::Redis, &receiver, "[100]").await;
    let (_, secret) = env
        .client("acme", json!({"monthly": 3}), &["read:charge_points"])
        .await;
    for _ in 0..3 {
        assert_eq!(env.get(PATH, &secret).await.status, 200);
    }
    // Backoff 0.5 s, 1 s, 2 s (each jittered down to half): well within 30 s.
    assert_eq!(receiver.wait_accepted(1, Duration::from_secs(30)).await, 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = receiver.received();
    assert_eq!(got.len(), 4, "{got:#?}");
    assert_eq!(
        got.iter().map(|r| r.answer).collect::<Vec<_>>(),
        [
            Answer::Status(500),
            Answer::Redirect,
            Answer::Garbage,
            Answer::Status(200)
        ]
    );
    assert!(got.iter().all(|r| r.body == got[0].body));
    let m = env.metrics().await;
    assert_eq!(
        counter(&m, "tollgate_notifications_total{result=\"failed\"}"),
        3
    );
    assert_eq!(
        counter(&m, "tollgate_notifications_total{result=\"delivered\"}"),
        1
    );
    // Delivered: nothing is left pending in Redis.
    let redis = env.redis.as_ref().expect("redis");
    assert_eq!(hlen(&redis.url(), "tg:{c:acme}:notify").await, 0);
}

async fn hlen(url: &str, key: &str) -> i64 {
    let client = ::redis::Client::open(url).expect("redis url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    ::redis::cmd("HLEN")
        .arg(key)
        .query_async(&mut c)
        .await
        .expect("HLEN")
}

/// Redis: the threshold is crossed while the receiver refuses everything;
/// that tollgate is killed; another process on the same Redis (started
/// after) delivers the notification once the receiver answers 200 — once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_notification_survives_a_restart() {
    let receiver = Receiver::start().await;
    receiver.set_default(Answer::Status(503));
    let mut env = env_with(Backend::Redis, &receiver, "[100]").await;
    let (_, secret) = env
        .client("acme", json!({"monthly": 2}), &["read:charge_points"])
        .await;
    for _ in 0..2 {
        assert_eq!(env.get(PATH, &secret).await.status, 200);
    }
    // The first attempt failed: the notification is pending in Redis.
    assert!(receiver.wait_received(1, Duration::from_secs(20)).await >= 1);
    let redis_url = env.redis.as_ref().expect("redis").url();
    assert_eq!(hlen(&redis_url, "tg:{c:acme}:notify").await, 1);
    env.tg.signal("KILL");
    assert!(env.tg.wait_exit(Duration::from_secs(20)).is_some());
    let failed_before = receiver.received().len();

    receiver.set_default(Answer::Status(200));
    let b = env.second_process();
    // The dead process's lease (20 s) runs out, then a sweep (every 10 s) takes it.
    assert_eq!(receiver.wait_accepted(1, Duration::from_secs(90)).await, 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.accepted().len(), 1);
    assert_eq!(receiver.received().len(), failed_before + 1);
    let e = receiver.accepted()[0].json();
    assert_eq!(
        (e["threshold"].as_u64(), e["used"].as_u64()),
        (Some(100), Some(2))
    );
    assert_eq!(hlen(&redis_url, "tg:{c:acme}:notify").await, 0);
    drop(b);
}

/// A receiver that never answers: requests keep their latency. 200
/// sequential requests of a client that crosses nothing, measured before
/// and while 40 notifications hang; p99 compared with a generous margin
/// (the machine is shared).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_receiver_does_not_slow_requests() {
    let receiver = Receiver::start().await;
    receiver.set_default(Answer::Hang);
    let env = env_with(Backend::Redis, &receiver, "[50, 100]").await;
    let (_, quiet) = env
        .client(
            "quiet",
            json!({"per_minute": 100000, "monthly": 1000000}),
            &["read:charge_points"],
        )
        .await;
    let p99 = |mut v: Vec<Duration>| {
        v.sort_unstable();
        v[v.len() * 99 / 100 - 1]
    };
    let measure = || async {
        let mut v = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            assert_eq!(env.get(PATH, &quiet).await.status, 200);
            v.push(t.elapsed());
        }
        v
    };
    let before = p99(measure().await);
    for i in 0..20 {
        let id = format!("c{i}");
        let (_, s) = env
            .client(&id, json!({"monthly": 2}), &["read:charge_points"])
            .await;
        for _ in 0..2 {
            assert_eq!(env.get(PATH, &s).await.status, 200);
        }
    }
    assert!(receiver.wait_received(40, Duration::from_secs(30)).await >= 40);
    let during = p99(measure().await);
    eprintln!("p99 before: {before:?}, with 40 hanging deliveries: {during:?} (loaded machine)");
    assert!(
        during <= before * 3 + Duration::from_millis(50),
        "p99 {during:?} vs {before:?}"
    );
}

fn parse(text: &str) -> Result<tollgate::config::Config, tollgate::config::ConfigError> {
    tollgate::config::Config::parse(text, Path::new("tollgate.toml"))
}

/// Each bad `[notify]` is a config error naming key and line; `tollgate
/// check` exits 2 and never prints the secret.
#[test]
fn bad_notify_configs_name_key_and_line() {
    set_secret();
    let head = "[upstream]\nurl = \"http://a\"\n[notify]\n";
    let ok = format!("secret_env = \"{SECRET_ENV}\"\n");
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{head}url = \"ftp://x/y\"\n{ok}"),
            "line 4: notify.url: \"ftp://x/y\" is not an http:// or https:// URL",
        ),
        (
            format!("{head}url = \"not a url\"\n{ok}"),
            "line 4: notify.url:",
        ),
        (
            format!("{head}url = \"http://x/\"\nthresholds = [0, 100]\n{ok}"),
            "line 5: notify.thresholds[0]: must be a percent between 1 and 100, got 0",
        ),
        (
            format!("{head}url = \"http://x/\"\nthresholds = [80, 101]\n{ok}"),
            "line 5: notify.thresholds[1]: must be a percent between 1 and 100, got 101",
        ),
        (
            format!("{head}url = \"http://x/\"\nthresholds = [100, 80]\n{ok}"),
            "line 5: notify.thresholds[1]: 80 is not above the threshold before it",
        ),
        (
            format!("{head}url = \"http://x/\"\nthresholds = [80, 80]\n{ok}"),
            "line 5: notify.thresholds[1]: 80 is not above the threshold before it",
        ),
        (
            format!("{head}url = \"http://x/\"\nthresholds = []\n{ok}"),
            "line 5: notify.thresholds: is empty",
        ),
        (
            format!("{head}url = \"http://x/\"\nsecret_env = \"TG_TEST_SURELY_UNSET_VAR\"\n"),
            "line 5: notify.secret_env: the environment variable TG_TEST_SURELY_UNSET_VAR is not set",
        ),
        (
            format!("{head}url = \"http://x/\"\nsecret = \"x\"\n"),
            "line 5: notify.secret: unknown key",
        ),
    ];
    for (text, want) in &cases {
        let got = match parse(text) {
            Ok(_) => vec!["<accepted>".to_owned()],
            Err(e) => e.problems,
        };
        assert!(
            got.len() == 1 && got[0].starts_with(want),
            "config:\n{text}\nwant: {want}\ngot: {got:#?}"
        );
    }
    // Accepted: the defaults, and the secret kept out of the description.
    let c = parse(&format!("{head}url = \"https://x/hook\"\n{ok}")).expect("accepted");
    let n = c.notify.as_ref().expect("notify");
    assert_eq!(n.thresholds, [80, 100]);
    assert!(!format!("{c:?}").contains(SECRET));
    // No url: no notifications.
    assert!(parse("[upstream]\nurl = \"http://a\"\n")
        .expect("accepted")
        .notify
        .is_none());

    // `tollgate check`: exit 2 on a bad one; the good one's output has no secret.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, &cases[0].0).expect("write");
    let out = command()
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run check");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("notify.url"));
    std::fs::write(&path, format!("{head}url = \"https://x/hook\"\n{ok}")).expect("write");
    let out = command()
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run check");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains(SECRET_ENV), "{all}");
    assert!(!all.contains(SECRET), "{all}");
}

/// Redis Cluster: the notify hash shares the client's slot, so the script
/// and the sweep's lease call route like the admission; a burst across two
/// processes still gives exactly one POST per threshold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_burst_posts_once_per_threshold() {
    set_secret();
    let receiver = Receiver::start().await;
    let cluster = common::redis_cluster::RedisCluster::start();
    let upstream = common::upstream::Upstream::start().await;
    let text = common::tollgate::config(
        &upstream.url(),
        &common::tollgate::cluster_store(&cluster.seed_urls(), 1000),
        &notify_section(&receiver, "[50, 100]"),
    );
    let a = common::tollgate::Tollgate::start(&text);
    let b = common::tollgate::Tollgate::start(&text);
    let http = common::http::Http::default();
    common::admin::create_client(
        &http,
        &a,
        "acme",
        json!({"per_minute": 1000, "monthly": 40}),
    )
    .await;
    let (_, secret) = common::admin::create_key(&http, &a, "acme", &["read:charge_points"]).await;
    let counts = alternate(&http, &a, &b, PATH, &secret, 100).await;
    counts.assert_only(&[200, 429]);
    assert_eq!(counts.of(200), 40);
    assert_eq!(receiver.wait_accepted(2, Duration::from_secs(30)).await, 2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut thresholds: Vec<u64> = receiver
        .received()
        .iter()
        .map(|r| r.json()["threshold"].as_u64().expect("threshold"))
        .collect();
    thresholds.sort_unstable();
    assert_eq!(thresholds, [50, 100]);
}

/// A refund that takes `used` back below a threshold does not make it
/// notify again in the same period: a quota of 1, threshold 100, the
/// crossing request (the first of the period) answered 5xx and refunded,
/// then the next request reaches 100 % again: still one POST.
async fn refund_then_recross_posts_once(backend: Backend) {
    set_secret();
    let receiver = Receiver::start().await;
    let text =
        common::tollgate::config("{upstream}", "{store}", &notify_section(&receiver, "[100]"))
            .replacen(
                "monthly = 10000",
                "monthly = 10000\nrefund_on = [\"5xx\"]",
                1,
            );
    assert!(text.contains("refund_on"));
    let env = Env::setup(backend).text(&text).start().await;
    let (_, secret) = env
        .client("acme", json!({"monthly": 1}), &["read:charge_points"])
        .await;
    assert_eq!(env.get("/status/500", &secret).await.status, 500);
    assert_eq!(receiver.wait_accepted(1, Duration::from_secs(20)).await, 1);
    // The refund gives the unit back (after the response).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let used =
            env.get("/api/v1/client/usage", &secret).await.json()["monthly_quota"]["used"].as_u64();
        if used == Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "used {used:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(env.get(PATH, &secret).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.received().len(), 1, "{:#?}", receiver.received());
}
