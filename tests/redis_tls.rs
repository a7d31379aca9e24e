//! Managed Redis (SPEC.md "Managed Redis"): tollgate on real `redis-server`
//! processes that speak TLS, with certificates made in the test (`rcgen`),
//! credentials from the environment, mutual TLS, a TLS Sentinel set-up
//! through a failover; every way the connection can be wrong is a clear
//! error at start-up (`serve` logs it, `/readyz` answers 503), never a
//! plaintext fallback; and what `tollgate check` can know without
//! connecting is a config error naming the key and line.
//!
//! The cluster case (three TLS primaries running the store conformance
//! suite) lives in tests/store_conformance.rs beside the other backends.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::admin::{create_client, create_key};
use common::http::Http;
use common::redis_cluster::cli;
use common::tls_redis::{Pki, TlsOptions, TlsRedis, TlsRedisSentinel, TLS_MASTER_NAME};
use common::tollgate::{config, Tollgate};
use common::upstream::Upstream;
use serde_json::json;

const CP: &str = "/api/v1/charge_points";
const PASSWORD_ENV: &str = "TG_TEST_REDIS_PASSWORD";
const USER_ENV: &str = "TG_TEST_REDIS_USER";
const PASSWORD: &str = "s3cret-from-a-Secret-7d1e";
/// How long a bad connection may take to be reported.
const REPORT_DEADLINE: Duration = Duration::from_secs(20);

/// `[store]` for one TLS server: `url`, then `extra` lines.
fn tls_store(url: &str, extra: &str) -> String {
    format!("[store]\nbackend = \"redis\"\nurl = \"{url}\"\ntimeout_ms = 2000\n{extra}")
}

fn ca_line(path: &Path) -> String {
    format!("ca = \"{}\"\n", path.display())
}

/// An environment without any system trust store: with `store.ca` set,
/// none is needed (rustls-native-certs finds an empty file and directory).
fn no_system_roots(dir: &Path) -> Vec<(String, String)> {
    let empty_file = dir.join("no-system-roots.pem");
    let empty_dir = dir.join("no-system-roots.d");
    std::fs::write(&empty_file, "").expect("write");
    std::fs::create_dir_all(&empty_dir).expect("mkdir");
    vec![
        ("SSL_CERT_FILE".into(), empty_file.display().to_string()),
        ("SSL_CERT_DIR".into(), empty_dir.display().to_string()),
    ]
}

fn start(cfg: &str, env: &[(String, String)]) -> Tollgate {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Tollgate::start_with_env(cfg, &env)
}

/// Polls `/readyz` until it answers `want`; panics with the log otherwise.
async fn wait_ready(http: &Http, tg: &Tollgate, want: u16) {
    let deadline = Instant::now() + REPORT_DEADLINE;
    loop {
        let status = http.get(&tg.admin_url("/readyz"), &[]).await.status;
        if status.as_u16() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {status}, wanted {want}:\n{}",
            tg.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client and key created through tollgate, and one proxied request:
/// the store works end to end.
async fn round_trip(http: &Http, tg: &Tollgate, upstream: &Upstream, id: &str) {
    create_client(http, tg, id, json!({"per_minute": 5})).await;
    let (_, secret) = create_key(http, tg, id, &["read:charge_points"]).await;
    let r = http.get_key(&tg.url(CP), &secret).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("4"));
    assert!(upstream.count() > 0);
}

/// The start-up error line, once logged.
fn startup_error(tg: &Tollgate) -> String {
    assert!(
        tg.wait_for_log("cannot connect at start-up", REPORT_DEADLINE),
        "no start-up error logged:\n{}",
        tg.log_text()
    );
    tg.log_lines()
        .into_iter()
        .find(|l| l.contains("cannot connect at start-up"))
        .expect("the line")
}

// ---------------------------------------------------------------- success

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_over_tls_with_the_password_from_the_environment() {
    let pki = Pki::new();
    let mut options = TlsOptions::new(&pki);
    options.extra = vec!["--requirepass".into(), PASSWORD.into()];
    let redis = TlsRedis::start(pki.dir(), &options);
    let upstream = Upstream::start().await;
    let store = tls_store(
        &redis.url("localhost"),
        &format!(
            "{}password_env = \"{PASSWORD_ENV}\"\n",
            ca_line(&pki.ca_file)
        ),
    );
    let mut env = no_system_roots(pki.dir());
    env.push((PASSWORD_ENV.into(), PASSWORD.into()));
    let tg = start(&config(&upstream.url(), &store, ""), &env);
    let http = Http::default();
    wait_ready(&http, &tg, 200).await;
    round_trip(&http, &tg, &upstream, "acme").await;
    // The data is in this Redis (read over its plain admin port).
    let auth = ["--no-auth-warning", "-a", PASSWORD];
    let members = cli(
        redis.plain,
        &[&auth[..], &["SMEMBERS", "tg:clients"]].concat(),
    );
    assert_eq!(members.as_deref(), Some("acme"));
    assert!(!tg.log_text().contains(PASSWORD), "{}", tg.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_user_and_password_from_the_environment() {
    let pki = Pki::new();
    let redis = TlsRedis::start(pki.dir(), &TlsOptions::new(&pki));
    let acl = [
        "ACL",
        "SETUSER",
        "tollgate",
        "on",
        ">acl-pass-91",
        "~tg:*",
        "+@all",
    ];
    assert_eq!(cli(redis.plain, &acl).as_deref(), Some("OK"));
    // Only the ACL user can log in from now on.
    assert_eq!(
        cli(redis.plain, &["ACL", "SETUSER", "default", "off"]).as_deref(),
        Some("OK")
    );
    let upstream = Upstream::start().await;
    let store = tls_store(
        &redis.url("127.0.0.1"),
        &format!(
            "{}username_env = \"{USER_ENV}\"\npassword_env = \"{PASSWORD_ENV}\"\n",
            ca_line(&pki.ca_file)
        ),
    );
    let env = [
        (USER_ENV.to_string(), "tollgate".to_string()),
        (PASSWORD_ENV.to_string(), "acl-pass-91".to_string()),
    ];
    let tg = start(&config(&upstream.url(), &store, ""), &env);
    let http = Http::default();
    wait_ready(&http, &tg, 200).await;
    round_trip(&http, &tg, &upstream, "acme").await;

    // The same password without the user is refused by the server.
    let store = tls_store(
        &redis.url("127.0.0.1"),
        &format!(
            "{}password_env = \"{PASSWORD_ENV}\"\n",
            ca_line(&pki.ca_file)
        ),
    );
    let tg = start(&config(&upstream.url(), &store, ""), &env[1..]);
    let line = startup_error(&tg);
    assert!(line.contains("Password authentication failed"), "{line}");
    wait_ready(&http, &tg, 503).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_client_certificate() {
    let pki = Pki::new();
    let mut options = TlsOptions::new(&pki);
    options.require_client_cert = true;
    let redis = TlsRedis::start(pki.dir(), &options);
    let upstream = Upstream::start().await;
    let http = Http::default();
    let store = tls_store(
        &redis.url("localhost"),
        &format!(
            "{}client_cert = \"{}\"\nclient_key = \"{}\"\n",
            ca_line(&pki.ca_file),
            pki.client.cert.display(),
            pki.client.key.display()
        ),
    );
    let tg = start(&config(&upstream.url(), &store, ""), &[]);
    wait_ready(&http, &tg, 200).await;
    round_trip(&http, &tg, &upstream, "acme").await;

    // Without the certificate the server refuses the handshake.
    let store = tls_store(&redis.url("localhost"), &ca_line(&pki.ca_file));
    let tg = start(&config(&upstream.url(), &store, ""), &[]);
    let line = startup_error(&tg);
    assert!(line.contains("store unavailable"), "{line}");
    wait_ready(&http, &tg, 503).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_and_primary_over_tls_through_a_failover() {
    let pki = Pki::new();
    let sentinel = TlsRedisSentinel::start(&pki);
    let upstream = Upstream::start().await;
    let urls: Vec<String> = sentinel
        .sentinel_urls()
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect();
    let store = format!(
        "[store]\nbackend = \"redis-sentinel\"\nsentinels = [{}]\nmaster_name = \"{TLS_MASTER_NAME}\"\n\
         timeout_ms = 1000\n{}",
        urls.join(", "),
        ca_line(&pki.ca_file)
    );
    let tg = start(&config(&upstream.url(), &store, ""), &[]);
    let http = Http::default();
    wait_ready(&http, &tg, 200).await;
    create_client(&http, &tg, "acme", json!({"per_minute": 1000})).await;
    let (_, secret) = create_key(&http, &tg, "acme", &["read:charge_points"]).await;
    assert_eq!(http.get_key(&tg.url(CP), &secret).await.status, 200);

    let (old, new) = sentinel.failover();
    assert_ne!(old, new);
    // tollgate asks the sentinels again on reconnect and reaches the new
    // primary, over TLS, with the same CA.
    let deadline = Instant::now() + REPORT_DEADLINE;
    loop {
        let r = http.get_key(&tg.url(CP), &secret).await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "{:?}", r.body);
        assert!(
            Instant::now() < deadline,
            "no 200 after the failover:\n{}",
            tg.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The new primary holds the client (replicated, then written to).
    let members = cli(
        sentinel.plain_port_of(new),
        &["SISMEMBER", "tg:clients", "acme"],
    );
    assert_eq!(members.as_deref(), Some("1"));
}

// ---------------------------------------------------------------- failures

/// `serve` on `store` against a server that presents `cert`: the start-up
/// error line, after checking `/readyz` answers 503 and nothing leaks.
async fn refused(redis_url: &str, store_extra: &str, env: &[(String, String)]) -> String {
    let upstream = Upstream::start().await;
    let store = tls_store(redis_url, store_extra);
    let tg = start(&config(&upstream.url(), &store, ""), env);
    let line = startup_error(&tg);
    let http = Http::default();
    wait_ready(&http, &tg, 503).await;
    // Requests that need the store fail fast with 503, never reach upstream.
    let r = http.get_key(&tg.url(CP), "tg_live_whatever").await;
    assert!(r.status == 401 || r.status == 503, "{}", r.status);
    assert_eq!(upstream.count(), 0);
    assert!(!tg.log_text().contains(PASSWORD), "{}", tg.log_text());
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let (_, foreign) = pki.foreign();
    let mut options = TlsOptions::new(&pki);
    options.cert = foreign;
    let redis = TlsRedis::start(pki.dir(), &options);
    let line = refused(&redis.url("localhost"), &ca_line(&pki.ca_file), &[]).await;
    assert!(line.contains("UnknownIssuer"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_server_certificate_is_refused() {
    let pki = Pki::new();
    let mut options = TlsOptions::new(&pki);
    options.cert = pki.issue("expired", &["localhost", "127.0.0.1"], true);
    let redis = TlsRedis::start(pki.dir(), &options);
    let line = refused(&redis.url("localhost"), &ca_line(&pki.ca_file), &[]).await;
    assert!(line.contains("certificate expired"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_for_another_name_is_refused() {
    let pki = Pki::new();
    let mut options = TlsOptions::new(&pki);
    options.cert = pki.issue("elsewhere", &["redis.elsewhere.example"], false);
    let redis = TlsRedis::start(pki.dir(), &options);
    let line = refused(&redis.url("localhost"), &ca_line(&pki.ca_file), &[]).await;
    assert!(
        line.contains("certificate not valid for name \"localhost\""),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_and_never_printed() {
    let pki = Pki::new();
    let mut options = TlsOptions::new(&pki);
    options.extra = vec!["--requirepass".into(), "the-right-one".into()];
    let redis = TlsRedis::start(pki.dir(), &options);
    let extra = format!(
        "{}password_env = \"{PASSWORD_ENV}\"\n",
        ca_line(&pki.ca_file)
    );
    let env = [(PASSWORD_ENV.to_string(), PASSWORD.to_string())];
    let line = refused(&redis.url("localhost"), &extra, &env).await;
    assert!(line.contains("Password authentication failed"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_to_a_plaintext_port_fails_instead_of_falling_back() {
    let pki = Pki::new();
    let redis = TlsRedis::start(pki.dir(), &TlsOptions::new(&pki));
    let url = format!("rediss://localhost:{}/", redis.plain);
    let line = refused(&url, &ca_line(&pki.ca_file), &[]).await;
    assert!(line.contains("store unavailable"), "{line}");
}

// ---------------------------------------------------------------- check

fn check(dir: &Path, text: &str, env: &[(&str, &str)]) -> Output {
    let path = dir.join("tollgate.toml");
    std::fs::write(&path, text).expect("write config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.arg("check")
        .arg("--config")
        .arg(&path)
        .env_remove("TOLLGATE_CONFIG")
        .env_remove(PASSWORD_ENV)
        .env_remove(USER_ENV);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run tollgate check")
}

/// The lines of `[store]` after `[upstream]`: `url` on line 5.
fn store_config(url: &str, extra: &str) -> String {
    format!(
        "[upstream]\nurl = \"http://127.0.0.1:3000\"\n[store]\nbackend = \"redis\"\nurl = \"{url}\"\n{extra}"
    )
}

/// `check` exits 2 and its one problem starts with `expected` (after the path).
fn assert_refused(out: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    let problems: Vec<&str> = stderr.lines().collect();
    assert_eq!(problems.len(), 1, "{stderr}");
    let problem = problems[0].split_once(": ").map_or("", |(_, p)| p);
    assert!(
        problem.starts_with(expected),
        "expected {expected:?}, got {stderr}"
    );
    assert!(!stderr.contains(PASSWORD));
}

/// Environment variables for one `check`.
type Env = &'static [(&'static str, &'static str)];

#[test]
fn check_reports_what_it_can_know_without_connecting() {
    let pki = Pki::new();
    let dir = pki.dir();
    let not_pem = dir.join("not-pem.pem");
    std::fs::write(&not_pem, "this is not a certificate\n").expect("write");
    let url = "rediss://redis.internal:6380/0";
    let ca = ca_line(&pki.ca_file);
    let cases: Vec<(String, Env, String)> = vec![
        (
            format!("ca = \"{}\"\n", dir.join("absent.pem").display()),
            &[],
            format!(
                "line 6: store.ca: cannot read {}",
                dir.join("absent.pem").display()
            ),
        ),
        (
            format!("ca = \"{}\"\n", not_pem.display()),
            &[],
            format!(
                "line 6: store.ca: {}: holds no certificate",
                not_pem.display()
            ),
        ),
        (
            format!("{ca}client_cert = \"{}\"\n", pki.client.cert.display()),
            &[],
            "line 7: store.client_cert: needs store.client_key".into(),
        ),
        (
            format!(
                "{ca}client_cert = \"{}\"\nclient_key = \"{}\"\n",
                pki.client.cert.display(),
                pki.stray_key().display()
            ),
            &[],
            "line 8: store.client_key: is not the key of the certificate in store.client_cert"
                .into(),
        ),
        (
            format!(
                "{ca}client_cert = \"{}\"\nclient_key = \"{}\"\n",
                pki.client.cert.display(),
                pki.client.cert.display()
            ),
            &[],
            format!(
                "line 8: store.client_key: {}: holds no usable private key",
                pki.client.cert.display()
            ),
        ),
        (
            format!("{ca}password_env = \"{PASSWORD_ENV}\"\n"),
            &[],
            format!(
                "line 7: store.password_env: the environment variable {PASSWORD_ENV} is not set"
            ),
        ),
        (
            format!("{ca}username_env = \"{USER_ENV}\"\n"),
            &[(USER_ENV, "")],
            format!("line 7: store.username_env: the environment variable {USER_ENV} is empty"),
        ),
    ];
    for (extra, env, expected) in &cases {
        let out = check(dir, &store_config(url, extra), env);
        assert_refused(&out, expected);
    }

    // A password in the URL while password_env is set: which one would win?
    let out = check(
        dir,
        &store_config(
            &format!("rediss://:{PASSWORD}@redis.internal:6380/0"),
            &format!("password_env = \"{PASSWORD_ENV}\"\n"),
        ),
        &[(PASSWORD_ENV, "x")],
    );
    assert_refused(
        &out,
        "line 5: store.url: holds a password, and store.password_env is set",
    );

    // TLS settings beside a plain URL would silently not be used.
    let out = check(
        dir,
        &store_config("redis://redis.internal:6379/0", &ca),
        &[],
    );
    assert_refused(&out, "line 6: store.ca: is only used over TLS");

    // There is no switch that skips verification.
    let out = check(
        dir,
        &store_config("rediss://redis.internal:6380/0#insecure", ""),
        &[],
    );
    assert_refused(&out, "line 5: store.url: has a fragment");

    // All of it right: exit 0, and the effective config names files and
    // variables, never their contents.
    let good = format!(
        "{ca}client_cert = \"{}\"\nclient_key = \"{}\"\nusername_env = \"{USER_ENV}\"\npassword_env = \"{PASSWORD_ENV}\"\n",
        pki.client.cert.display(),
        pki.client.key.display()
    );
    let out = check(
        dir,
        &store_config(url, &good),
        &[(USER_ENV, "tollgate"), (PASSWORD_ENV, PASSWORD)],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        format!("url = \"{url}\""),
        format!("ca = \"{}\"", pki.ca_file.display()),
        format!("client_key = \"{}\"", pki.client.key.display()),
        format!("password_env = \"{PASSWORD_ENV}\""),
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "{line:?} missing:\n{stdout}"
        );
    }
    assert!(!stdout.contains(PASSWORD));
    assert!(!stdout.contains("PRIVATE KEY"));
}

#[test]
fn serve_refuses_an_unset_password_variable_with_exit_2() {
    let pki = Pki::new();
    let path: PathBuf = pki.dir().join("tollgate.toml");
    std::fs::write(
        &path,
        store_config(
            "rediss://redis.internal:6380/0",
            &format!("password_env = \"{PASSWORD_ENV}\"\n"),
        ),
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .env_remove(PASSWORD_ENV)
        .output()
        .expect("run tollgate serve");
    assert_refused(
        &out,
        &format!("line 6: store.password_env: the environment variable {PASSWORD_ENV} is not set"),
    );
}
