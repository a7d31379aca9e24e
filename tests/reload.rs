//! Live reload with the real binary: on SIGHUP and on a change of the file
//! (a Kubernetes ConfigMap's `..data` symlink swap included) every live
//! setting takes effect on the path that uses it — limit defaults, routes,
//! scopes, upstream timeouts, log level, the IETF headers, the body limit
//! (declared and chunked), WebSocket tunnelling; an invalid file is refused and
//! the old config keeps serving; every restart-only setting of
//! `tollgate::settings::SETTINGS` is reported (log line and gauge) and its
//! running value kept.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::admin::{call, create_client, create_key};
use common::env::Env;
use common::http::{Http, Reply};
use common::tollgate::{config, memory_store, Tollgate};
use common::upstream::Upstream;
use common::Backend;
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

/// The common [`Env`] on a memory store, with client `acme` and its read key.
struct Live {
    env: Env,
    secret: String,
}

impl std::ops::Deref for Live {
    type Target = Env;
    fn deref(&self) -> &Env {
        &self.env
    }
}

impl Live {
    /// tollgate on `text` (with `{upstream}` filled in), client `acme` with a read key.
    async fn start(text: &str) -> Live {
        let env = Env::setup(Backend::Memory).text(text).start().await;
        let (_, secret) = env.client("acme", json!({}), &[READ]).await;
        Live { env, secret }
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
        assert!(
            self.tg.wait_for_log_count(needle, n, DEADLINE),
            "no {n}th {needle:?} line:\n{}",
            self.tg.log_text()
        );
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
    let env = Live::start(&base).await;
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
    let env = Live::start(&base).await;
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
    let env = Live::start(&base).await;
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
    let env = Live::start(&base).await;
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
    let env = Live::start(&base).await;
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
    let env = Live::start(&base).await;
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
    let env = Live::start(&base).await;
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

/// Sends `request` on a fresh connection and returns the status of the reply.
async fn raw_status(addr: std::net::SocketAddr, request: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(2).any(|w| w == b"\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(DEADLINE, read).await.expect("a reply");
    let line = String::from_utf8_lossy(&head);
    line.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {line:?}"))
}

/// A `POST /upload` of `n` bytes, with `Content-Length` or chunked.
fn upload(key: &str, n: usize, chunked: bool) -> Vec<u8> {
    let body = "x".repeat(n);
    let (framing, body) = if chunked {
        (
            "Transfer-Encoding: chunked".to_owned(),
            format!("{n:x}\r\n{body}\r\n0\r\n\r\n"),
        )
    } else {
        (format!("Content-Length: {n}"), body)
    };
    format!(
        "POST /upload HTTP/1.1\r\nHost: t\r\nX-API-Key: {key}\r\n{framing}\r\nConnection: close\r\n\r\n{body}"
    )
    .into_bytes()
}

/// The body limit applies on both paths that check it — the declared
/// `Content-Length` (judged from the head) and a chunked body (counted while
/// it streams) — and a reload moves both, in either direction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moves_the_body_limit_with_and_without_content_length() {
    let base = with_server(&text("{upstream}", &[], SIGNAL_ONLY), "max_body_bytes = 10");
    let env = Live::start(&base).await;
    let statuses = || async {
        (
            raw_status(env.tg.public, &upload(&env.secret, 100, false)).await,
            raw_status(env.tg.public, &upload(&env.secret, 100, true)).await,
        )
    };
    assert_eq!(statuses().await, (413, 413));

    env.rewrite(&base.replace("max_body_bytes = 10", "max_body_bytes = 1000"));
    env.hup_and_wait("config reloaded", 1);
    assert_eq!(statuses().await, (200, 200));
    assert!(env.tg.log_text().contains("changed=server.max_body_bytes"));

    env.rewrite(&base.replace("max_body_bytes = 10", "max_body_bytes = 50"));
    env.hup_and_wait("config reloaded", 2);
    assert_eq!(statuses().await, (413, 413));
}

/// `[server]` with `keys` added at its top.
fn with_server(config: &str, keys: &str) -> String {
    config.replacen("[server]\n", &format!("[server]\n{keys}\n"), 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_turns_websocket_tunnelling_on_and_off() {
    use common::raw_upstream::{After, RawUpstream};
    let accept = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    let raw = RawUpstream::start(accept, After::Echo).await;
    let base = with_server(&text(&raw.url(), &[], SIGNAL_ONLY), "websocket = false");
    let tg = Tollgate::start(&base);
    let http = Http::default();
    create_client(&http, &tg, "acme", json!({})).await;
    let (_, key) = create_key(&http, &tg, "acme", &[READ]).await;
    let upgrade = format!(
        "GET /ws/chat HTTP/1.1\r\nHost: t\r\nX-API-Key: {key}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    assert_eq!(raw_status(tg.public, upgrade.as_bytes()).await, 501);

    let reload = |text: &str, n: usize| {
        write_atomic(&tg.config_path, text);
        tg.signal("HUP");
        let deadline = Instant::now() + DEADLINE;
        while tg
            .log_lines()
            .iter()
            .filter(|l| l.contains("config reloaded"))
            .count()
            < n
        {
            assert!(Instant::now() < deadline, "no reload:\n{}", tg.log_text());
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    reload(&base.replace("websocket = false", "websocket = true"), 1);
    assert_eq!(raw_status(tg.public, upgrade.as_bytes()).await, 101);
    assert_eq!(raw.requests().len(), 1);
    assert!(tg.log_text().contains("changed=server.websocket"));

    reload(&base, 2);
    assert_eq!(raw_status(tg.public, upgrade.as_bytes()).await, 501);
    assert_eq!(raw.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_turns_the_ietf_headers_on() {
    let base = text("{upstream}", &[], SIGNAL_ONLY);
    let env = Live::start(&base).await;
    let r = env.get(CP).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("ratelimit-policy"), None);

    env.rewrite(&format!("{base}\n[headers]\nietf = true\n"));
    env.hup_and_wait("config reloaded", 1);
    let r = env.get(CP).await;
    assert_eq!(r.status, 200);
    assert!(r.header("ratelimit-policy").is_some(), "{:?}", r.headers);
    assert!(env.tg.log_text().contains("changed=headers"));
}

/// Every restart-only setting of the table, changed in one reload: each is
/// reported by name (without a secret), the gauge counts them, the running
/// values stay in force (the header limit, the log format, the listeners),
/// the reloadable part is applied, and a reload back clears the gauge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_restart_only_change_is_reported_and_the_running_value_kept() {
    let base = with_server(
        &text("{upstream}", &[], SIGNAL_ONLY),
        "max_header_bytes = 32768",
    );
    let env = Live::start(&base).await;
    let free = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (public, admin) = (free(), free());
    // A real certificate pair for `[server.tls]` (a config load checks the files).
    let tls_dir = tempfile::tempdir().unwrap();
    let (cert, key) = common::tls::TestCa::new()
        .leaf(&["localhost"])
        .write(tls_dir.path());
    // (setting, from, to): one edit of the test config per restart-only setting.
    let edits: Vec<(&str, String, String)> = vec![
        (
            "server.listen",
            "listen = \"127.0.0.1:0\"".into(),
            format!("listen = \"{public}\""),
        ),
        (
            "server.header_read_timeout_ms",
            "[server]\n".into(),
            "[server]\nheader_read_timeout_ms = 4321\n".into(),
        ),
        (
            "server.max_header_bytes",
            "max_header_bytes = 32768".into(),
            "max_header_bytes = 8192".into(),
        ),
        (
            "server.trusted_proxies",
            "[server]\n".into(),
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n".into(),
        ),
        (
            "server.tls",
            SIGNAL_ONLY.into(),
            format!(
                "{SIGNAL_ONLY}\n{}",
                common::tls::server_tls_section(&cert, &key)
            ),
        ),
        (
            "admin.listen",
            // The second `listen` of the file, once the first is replaced.
            "listen = \"127.0.0.1:0\"".into(),
            format!("listen = \"{admin}\""),
        ),
        (
            "admin.token_env",
            "[admin]\n".into(),
            "[admin]\ntoken_env = \"OTHER_ADMIN_TOKEN\"\n".into(),
        ),
        (
            "store",
            "backend = \"memory\"".into(),
            "backend = \"redis\"\nurl = \"redis://:hunter2@127.0.0.1:1/0\"".into(),
        ),
        (
            "auth.bcrypt_cost",
            "bcrypt_cost = 4".into(),
            "bcrypt_cost = 5".into(),
        ),
        (
            "auth.cache_capacity",
            "[auth]\n".into(),
            "[auth]\ncache_capacity = 77\n".into(),
        ),
        (
            "auth.max_failures_per_minute",
            "max_failures_per_minute = 10000".into(),
            "max_failures_per_minute = 3".into(),
        ),
        (
            "log.format",
            SIGNAL_ONLY.into(),
            format!("{SIGNAL_ONLY}\n[log]\nformat = \"json\"\n"),
        ),
        (
            "history.days",
            SIGNAL_ONLY.into(),
            format!("{SIGNAL_ONLY}\n[history]\ndays = 30\n"),
        ),
        (
            "notify",
            SIGNAL_ONLY.into(),
            // PATH: a variable every process has, standing in for the secret.
            format!(
                "{SIGNAL_ONLY}\n[notify]\nurl = \"http://127.0.0.1:9/hook\"\nsecret_env = \"PATH\"\n"
            ),
        ),
    ];
    let names: Vec<&str> = edits.iter().map(|(n, _, _)| *n).collect();
    assert_eq!(
        names,
        tollgate::settings::restart_only().collect::<Vec<_>>(),
        "one edit per restart-only setting of the table"
    );
    let mut changed = base.replace("\nper_minute = 100", "\nper_minute = 8");
    for (name, from, to) in &edits {
        assert!(changed.contains(from.as_str()), "{name}: {from:?}");
        changed = changed.replacen(from.as_str(), to, 1);
    }
    env.rewrite(&changed);
    env.hup_and_wait("config reloaded", 1);
    let log = env.tg.log_text();
    assert!(!log.contains("hunter2"), "{log}");
    for name in &names {
        let line = log
            .lines()
            .find(|l| {
                l.contains(&format!("setting=\"{name}\""))
                    || l.contains(&format!("setting={name} "))
            })
            .unwrap_or_else(|| panic!("{name} not reported:\n{log}"));
        assert!(line.contains(" WARN "), "{line}");
        assert!(line.contains("which needs a restart"), "{line}");
    }
    let m = env.metrics().await;
    assert_eq!(
        metric_line(&m, "tollgate_config_restart_required"),
        format!("tollgate_config_restart_required {}", names.len())
    );

    // The reloadable part is in force; the running values are kept: the
    // listeners, the text log format, and the 32 KiB header limit (a 12 KiB
    // header would be refused 431 under the file's 8 KiB).
    let big = "y".repeat(12 * 1024);
    let r = env
        .http
        .get(
            &env.tg.url(CP),
            &[("x-api-key", &env.secret), ("x-big", &big)],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-limit"), Some("8"));
    assert!(std::net::TcpStream::connect(public).is_err());
    assert!(std::net::TcpStream::connect(admin).is_err());
    let last = env.tg.log_lines().pop().unwrap_or_default();
    assert!(!last.starts_with('{'), "the log format changed: {last}");

    // The file back in line with the process: the gauge returns to 0.
    env.rewrite(&base);
    env.hup_and_wait("config reloaded", 2);
    let m = env.metrics().await;
    assert_eq!(
        metric_line(&m, "tollgate_config_restart_required"),
        "tollgate_config_restart_required 0"
    );
}
