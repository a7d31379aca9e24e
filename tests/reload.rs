//! Live reload with the real binary: on SIGHUP and on a change of the file
//! (a Kubernetes ConfigMap's `..data` symlink swap included) the limit
//! defaults, routes, scopes, upstream timeouts and log level change without a
//! restart; an invalid file is refused and the old config keeps serving; a
//! listener change is reported as needing a restart.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::admin::{call, create_client, create_key};
use common::http::{Http, Reply};
use common::tollgate::{config, memory_store, Tollgate};
use common::upstream::Upstream;
use http::Method;
use serde_json::json;

const READ: &str = "read:charge_points";
const CP: &str = "/api/v1/charge_points";
/// No file watching: only SIGHUP reloads.
const SIGNAL_ONLY: &str = "\n[reload]\nwatch = false\n";
/// File watching with a short poll, so the tests wait less.
const WATCH_FAST: &str = "\n[reload]\ninterval_ms = 200\n";
const DEADLINE: Duration = Duration::from_secs(20);

/// The test config with `edits` (`from` → `to`) applied and `extra` appended.
fn text(upstream: &str, edits: &[(&str, &str)], extra: &str) -> String {
    let mut t = config(upstream, &memory_store(), extra);
    for (from, to) in edits {
        assert!(t.contains(from), "{from:?} not in the config");
        t = t.replace(from, to);
    }
    t
}

/// Replaces the file's content in one step (write aside, then rename), so a
/// watcher never reads half a file.
fn write_atomic(path: &Path, content: &str) {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Env {
    upstream: Upstream,
    tg: Tollgate,
    http: Http,
    secret: String,
}

impl Env {
    /// tollgate on `text` (with `{upstream}` filled in), client `acme` with a read key.
    async fn start(text: &str) -> Env {
        let upstream = Upstream::start().await;
        let tg = Tollgate::start(&text.replace("{upstream}", &upstream.url()));
        let http = Http::default();
        create_client(&http, &tg, "acme", json!({})).await;
        let (_, secret) = create_key(&http, &tg, "acme", &[READ]).await;
        Env {
            upstream,
            tg,
            http,
            secret,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.http.get_key(&self.tg.url(path), &self.secret).await
    }

    /// Rewrites the config file (`{upstream}` filled in).
    fn rewrite(&self, text: &str) {
        write_atomic(
            &self.tg.config_path,
            &text.replace("{upstream}", &self.upstream.url()),
        );
    }

    /// Sends SIGHUP and waits for the `n`th reload log line containing `needle`.
    fn hup_and_wait(&self, needle: &str, n: usize) {
        self.tg.signal("HUP");
        self.wait_log_count(needle, n);
    }

    fn wait_log_count(&self, needle: &str, n: usize) {
        let deadline = Instant::now() + DEADLINE;
        while self
            .tg
            .log_lines()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
            < n
        {
            assert!(
                Instant::now() < deadline,
                "no {n}th {needle:?} line:\n{}",
                self.tg.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    async fn metrics(&self) -> String {
        let r = self.http.get(&self.tg.admin_url("/metrics"), &[]).await;
        String::from_utf8_lossy(&r.body).into_owned()
    }

    /// Polls `path` until `pred` holds for the reply; panics at the deadline.
    async fn until(&self, path: &str, what: &str, pred: impl Fn(&Reply) -> bool) -> Reply {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let r = self.get(path).await;
            if pred(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: never happened; last reply {} {:?}\n{}",
                r.status,
                r.headers,
                self.tg.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn metric_line(metrics: &str, series: &str) -> String {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_default_per_minute_limit() {
    let base = text("{upstream}", &[], SIGNAL_ONLY);
    let env = Env::start(&base).await;
    let r = env.get(CP).await;
    assert_eq!(r.header("x-ratelimit-limit"), Some("100"));

    env.rewrite(&base.replace("\nper_minute = 100", "\nper_minute = 7"));
    // Without a signal (and with watching off) nothing changes.
    assert_eq!(env.get(CP).await.header("x-ratelimit-limit"), Some("100"));
    env.hup_and_wait("config reloaded", 1);
    let r = env.get(CP).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-limit"), Some("7"));
    // Two requests were counted before; this is the third of seven.
    assert_eq!(r.header("x-ratelimit-remaining"), Some("4"));
    let log = env.tg.log_text();
    assert!(log.contains("trigger=\"SIGHUP\""), "{log}");
    assert!(log.contains("changed=limits"), "{log}");
    let m = env.metrics().await;
    assert_eq!(
        metric_line(&m, "tollgate_config_reloads_total{result=\"ok\"}"),
        "tollgate_config_reloads_total{result=\"ok\"} 1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_reloads_routes_without_a_signal() {
    let route = "\n[[routes]]\npath = \"/private\"\nscope = \"write:charge_points\"\n";
    let base = text("{upstream}", &[], &format!("{route}{WATCH_FAST}"));
    let env = Env::start(&base).await;
    let r = env.get("/private/x").await;
    assert_eq!(r.status, 403, "{:?}", r.body);

    env.rewrite(&base.replace(
        "path = \"/private\"\nscope = \"write:charge_points\"",
        "path = \"/private\"\nscope = \"read:charge_points\"",
    ));
    let r = env
        .until("/private/x", "route change picked up", |r| r.status == 200)
        .await;
    assert_eq!(r.header("x-upstream"), Some("yes"));
    let log = env.tg.log_text();
    assert!(log.contains("trigger=\"file changed\""), "{log}");
    assert!(log.contains("changed=routes"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_scopes_that_keys_may_then_hold() {
    let base = text("{upstream}", &[], SIGNAL_ONLY);
    let env = Env::start(&base).await;
    let new_key = || {
        call(
            &env.http,
            &env.tg,
            Method::POST,
            "/admin/v1/clients/acme/keys",
            Some(json!({"name": format!("b{}", rand_name()), "scopes": ["billing:read"]})),
        )
    };
    let r = new_key().await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "invalid_scope");

    env.rewrite(&base.replace(
        "scopes = [\"read:charge_points\", \"write:charge_points\"]",
        "scopes = [\"read:charge_points\", \"write:charge_points\", \"billing:read\"]",
    ));
    env.hup_and_wait("config reloaded", 1);
    let r = new_key().await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert!(env.tg.log_text().contains("changed=auth.scopes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_the_upstream_timeout() {
    let base = text("{upstream}", &[], SIGNAL_ONLY);
    let env = Env::start(&base).await;
    // timeout_ms = 2000 in the test config.
    assert_eq!(env.get("/slow/800").await.status, 200);
    env.rewrite(&base.replace("timeout_ms = 2000", "timeout_ms = 200"));
    env.hup_and_wait("config reloaded", 1);
    let started = Instant::now();
    let r = env.get("/slow/800").await;
    assert_eq!(r.status, 504, "{:?}", r.body);
    assert_eq!(r.code(), "gateway_timeout");
    assert!(started.elapsed() < Duration::from_millis(700));
    assert!(env.tg.log_text().contains("changed=upstream"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_the_log_level() {
    // The start-up and reload lines stay visible; access lines (info) do not.
    let quiet = "\n[log]\nlevel = \"warn,tollgate::server=info,tollgate::reload=info\"\n";
    let base = text("{upstream}", &[], &format!("{quiet}{SIGNAL_ONLY}"));
    let env = Env::start(&base).await;
    assert_eq!(env.get("/before").await.status, 200);

    env.rewrite(&base.replace(
        "level = \"warn,tollgate::server=info,tollgate::reload=info\"",
        "level = \"info\"",
    ));
    env.hup_and_wait("config reloaded", 1);
    assert_eq!(env.get("/after").await.status, 200);
    env.wait_log_count("path=/after", 1);
    let log = env.tg.log_text();
    assert!(!log.contains("path=/before"), "{log}");
    assert!(log.contains("changed=log.level"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_is_refused_and_the_old_config_keeps_serving() {
    let base = text(
        "{upstream}",
        &[("\nper_minute = 100", "\nper_minute = 5")],
        SIGNAL_ONLY,
    );
    let env = Env::start(&base).await;
    assert_eq!(env.get(CP).await.header("x-ratelimit-limit"), Some("5"));

    let broken = base
        .replace("\nper_minute = 5", "\nper_minute = 0")
        .replace("scope = \"read:charge_points\"", "scope = \"nope\"");
    env.rewrite(&broken);
    env.hup_and_wait("config reload refused", 1);
    let log = env.tg.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("config reload refused"))
        .unwrap();
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains("limits.per_minute: must be at least 1, got 0"),
        "{line}"
    );
    assert!(
        line.contains("routes[0].scope: unknown scope \"nope\""),
        "{line}"
    );
    // The old config still serves.
    let r = env.get(CP).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-limit"), Some("5"));
    let m = env.metrics().await;
    assert_eq!(
        metric_line(&m, "tollgate_config_reloads_total{result=\"failed\"}"),
        "tollgate_config_reloads_total{result=\"failed\"} 1"
    );
    assert_eq!(
        metric_line(&m, "tollgate_config_reloads_total{result=\"ok\"}"),
        "tollgate_config_reloads_total{result=\"ok\"} 0"
    );

    // A syntax error, too, is refused with its line.
    env.rewrite(&format!("{base}\n[limits\n"));
    env.hup_and_wait("config reload refused", 2);
    assert_eq!(env.get(CP).await.header("x-ratelimit-limit"), Some("5"));

    // Fixed again: applied.
    env.rewrite(&base.replace("\nper_minute = 5", "\nper_minute = 9"));
    env.hup_and_wait("config reloaded", 1);
    assert_eq!(env.get(CP).await.header("x-ratelimit-limit"), Some("9"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_symlink_swap_is_picked_up_without_a_signal() {
    // The layout the kubelet writes for a ConfigMap volume:
    //   ..2026_01_01_00_00_00.000000001/tollgate.toml
    //   ..data -> ..2026_01_01_00_00_00.000000001
    //   tollgate.toml -> ..data/tollgate.toml
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let v1 = "..2026_01_01_00_00_00.000000001";
    let base = text(&upstream.url(), &[], ""); // default [reload]: watch, every second
    std::fs::create_dir(d.join(v1)).unwrap();
    std::fs::write(d.join(v1).join("tollgate.toml"), &base).unwrap();
    std::os::unix::fs::symlink(v1, d.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/tollgate.toml", d.join("tollgate.toml")).unwrap();

    let tg = Tollgate::start_at(&d.join("tollgate.toml"), &[]);
    let http = Http::default();
    create_client(&http, &tg, "acme", json!({})).await;
    let (_, secret) = create_key(&http, &tg, "acme", &[READ]).await;
    let r = http.get_key(&tg.url(CP), &secret).await;
    assert_eq!(r.header("x-ratelimit-limit"), Some("100"));

    // The update: a new timestamped directory, then `..data` renamed over atomically.
    let v2 = "..2026_01_01_00_01_00.000000002";
    std::fs::create_dir(d.join(v2)).unwrap();
    std::fs::write(
        d.join(v2).join("tollgate.toml"),
        base.replace("\nper_minute = 100", "\nper_minute = 11"),
    )
    .unwrap();
    std::os::unix::fs::symlink(v2, d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    std::fs::remove_dir_all(d.join(v1)).unwrap();

    let deadline = Instant::now() + DEADLINE;
    loop {
        // Once the new limit of 11 applies, the polling itself may exceed it: 429.
        let r = http.get_key(&tg.url(CP), &secret).await;
        assert!(r.status == 200 || r.status == 429, "{}", r.status);
        if r.header("x-ratelimit-limit") == Some("11") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ConfigMap update was not picked up:\n{}",
            tg.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = tg.log_text();
    assert!(log.contains("trigger=\"file changed\""), "{log}");
    assert!(!log.contains("config reload refused"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_change_is_reported_as_needing_a_restart() {
    let base = text("{upstream}", &[], SIGNAL_ONLY);
    let env = Env::start(&base).await;
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other = free.local_addr().unwrap();
    drop(free);
    let changed = base.replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{other}\""),
        1,
    );
    env.rewrite(&changed.replace("\nper_minute = 100", "\nper_minute = 8"));
    env.hup_and_wait("config reloaded", 1);
    let log = env.tg.log_text();
    let warning = log
        .lines()
        .find(|l| l.contains("server.listen changed"))
        .unwrap_or_else(|| panic!("no warning:\n{log}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        warning.contains(&format!(
            "server.listen changed from 127.0.0.1:0 to {other}, which needs a restart"
        )),
        "{warning}"
    );
    // Still serving on the old address, with the reloadable part applied.
    let r = env.get(CP).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-limit"), Some("8"));
    assert!(
        std::net::TcpStream::connect(other).is_err(),
        "nothing should listen on {other}"
    );
}

fn rand_name() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
