//! Runs the real `tollgate` binary for integration tests: writes a config with
//! both listeners on port 0, starts `tollgate serve`, and waits for the
//! "listening" log line that carries the bound addresses (no sleeps).
//! Also sends it signals and waits for its exit or for a log line, each
//! with a deadline.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

pub const ADMIN_TOKEN: &str = "test-admin-token-5f2c";

/// The `[auth]` lines of [`config`] that tests of bcrypt or of the failure
/// throttle replace: a cheap bcrypt, and a failure budget high enough that
/// tests of other things may fail authentication from 127.0.0.1 freely.
pub const AUTH_TUNING: &str = "bcrypt_cost = 4\nmax_failures_per_minute = 10000";

/// The test config's scopes.
pub const SCOPES: &[&str] = &["read:charge_points", "write:charge_points"];

/// The test config's routes: `GET` needs the read scope, the writing
/// methods the write scope.
pub const ROUTES: &str = r#"[[routes]]
path = "/api/v1/charge_points"
methods = ["GET"]
scope = "read:charge_points"

[[routes]]
path = "/api/v1/charge_points"
methods = ["POST", "PUT", "PATCH", "DELETE"]
scope = "write:charge_points""#;

/// The parts of the test config a test may change; [`Parts::new`] gives
/// those of [`config`].
pub struct Parts<'a> {
    /// The lines of `[upstream]`.
    pub upstream: String,
    /// The `[store]` section.
    pub store: &'a str,
    /// `auth.scopes`.
    pub scopes: &'a [&'a str],
    /// The `[auth]` lines after `scopes`.
    pub auth: &'a str,
    /// The `[[routes]]` tables.
    pub routes: &'a str,
    /// Appended verbatim.
    pub extra: &'a str,
}

impl<'a> Parts<'a> {
    /// The upstream at `url` (2 s timeout), `store`, and the rest of [`config`].
    pub fn new(url: &str, store: &'a str) -> Parts<'a> {
        Parts {
            upstream: format!("url = \"{url}\"\ntimeout_ms = 2000"),
            store,
            scopes: SCOPES,
            auth: AUTH_TUNING,
            routes: ROUTES,
            extra: "",
        }
    }

    /// The config text.
    pub fn text(&self) -> String {
        let Parts {
            upstream,
            store,
            auth,
            routes,
            extra,
            ..
        } = self;
        let scopes: Vec<String> = self.scopes.iter().map(|s| format!("\"{s}\"")).collect();
        let scopes = scopes.join(", ");
        format!(
            r#"
[server]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[upstream]
{upstream}

{store}

[limits]
per_minute = 100
monthly = 10000

[auth]
scopes = [{scopes}]
{auth}

{routes}
{extra}
"#
        )
    }
}

/// The config a test starts from; `extra` is appended verbatim (routes etc.).
pub fn config(upstream: &str, store: &str, extra: &str) -> String {
    Parts {
        extra,
        ..Parts::new(upstream, store)
    }
    .text()
}

/// `config_text` with its [`AUTH_TUNING`] lines replaced by `auth` and
/// `server` lines added to its `[server]` section (each when not empty).
pub fn tune(config_text: &str, auth: &str, server: &str) -> String {
    let mut text = config_text.to_owned();
    if !auth.is_empty() {
        assert!(
            text.contains(AUTH_TUNING),
            "no [auth] tuning lines to replace"
        );
        text = text.replacen(AUTH_TUNING, auth, 1);
    }
    if !server.is_empty() {
        text = text.replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:0\"\n{server}"),
            1,
        );
    }
    text
}

/// `[store]` for the memory backend.
pub fn memory_store() -> String {
    "[store]\nbackend = \"memory\"".to_string()
}

/// `[store]` for a Redis at `url`, with a short timeout.
pub fn redis_store(url: &str, timeout_ms: u64) -> String {
    format!("[store]\nbackend = \"redis\"\nurl = \"{url}\"\ntimeout_ms = {timeout_ms}")
}

/// `[store]` for a Redis Cluster seeded with `urls`.
pub fn cluster_store(urls: &[String], timeout_ms: u64) -> String {
    format!(
        "[store]\nbackend = \"redis-cluster\"\nurls = [{}]\ntimeout_ms = {timeout_ms}",
        quoted(urls)
    )
}

/// `[store]` for the Sentinel set-up of [`super::redis_cluster::RedisSentinel`].
pub fn sentinel_store(sentinels: &[String], timeout_ms: u64) -> String {
    format!(
        "[store]\nbackend = \"redis-sentinel\"\nsentinels = [{}]\nmaster_name = \"{}\"\ntimeout_ms = {timeout_ms}",
        quoted(sentinels),
        super::redis_cluster::MASTER_NAME
    )
}

/// `"a", "b"`: TOML array items.
fn quoted(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|u| format!("\"{u}\"")).collect();
    items.join(", ")
}

/// The `tollgate` binary with none of the caller's `TOLLGATE_*` settings or
/// `RUST_LOG`, so nothing from the shell running the tests leaks in.
pub fn command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.env_remove("TOLLGATE_CONFIG")
        .env_remove("TOLLGATE_ADMIN_URL")
        .env_remove("TOLLGATE_ADMIN_TOKEN")
        .env_remove("RUST_LOG");
    cmd
}

pub struct Tollgate {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    child: Child,
    pub logs: Arc<Mutex<Vec<String>>>,
    _dir: Option<tempfile::TempDir>,
    pub config_path: PathBuf,
}

impl Tollgate {
    /// Runs the CLI (`command()`) against this process's admin listener
    /// with the test token.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        command()
            .args(args)
            .env("TOLLGATE_ADMIN_URL", format!("http://{}", self.admin))
            .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .output()
            .expect("run tollgate")
    }

    /// Starts the binary with `config_text`; panics (with its output) if it does not come up.
    pub fn start(config_text: &str) -> Tollgate {
        Self::start_with_env(config_text, &[])
    }

    pub fn start_with_env(config_text: &str, env: &[(&str, &str)]) -> Tollgate {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("tollgate.toml");
        std::fs::write(&config_path, config_text).expect("write config");
        Self::spawn(config_path, Some(dir), env)
    }

    /// Starts the binary on a config file the caller owns (e.g. a ConfigMap-style layout).
    pub fn start_at(config_path: &Path, env: &[(&str, &str)]) -> Tollgate {
        Self::spawn(config_path.to_owned(), None, env)
    }

    fn spawn(
        config_path: PathBuf,
        dir: Option<tempfile::TempDir>,
        env: &[(&str, &str)],
    ) -> Tollgate {
        let mut cmd = command();
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn tollgate");
        let stderr = child.stderr.take().expect("stderr");
        let logs: Arc<Mutex<Vec<String>>> = Arc::default();
        let (tx, rx) = mpsc::channel();
        let logs2 = logs.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("listening") {
                    if let (Some(p), Some(a)) = (field(&line, "public"), field(&line, "admin")) {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send((p, a));
                        }
                    }
                }
                logs2.lock().expect("logs").push(line);
            }
        });
        // Generous: the machine running the tests may be loaded.
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok((public, admin)) => Tollgate {
                public,
                admin,
                child,
                logs,
                _dir: dir,
                config_path,
            },
            Err(_) => {
                let _ = child.kill();
                let out = logs.lock().expect("logs").join("\n");
                panic!("tollgate did not start:\n{out}");
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process logged so far.
    pub fn log_text(&self) -> String {
        self.logs.lock().expect("logs").join("\n")
    }

    /// The log lines so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.logs.lock().expect("logs").clone()
    }

    /// Waits until a logged line contains `needle`; false at the deadline.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_for_log_count(needle, 1, timeout)
    }

    /// Waits until `n` logged lines contain `needle`; false at the deadline.
    pub fn wait_for_log_count(&self, needle: &str, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self
                .logs
                .lock()
                .expect("logs")
                .iter()
                .filter(|l| l.contains(needle))
                .count();
            if seen >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends a signal (`"TERM"`, `"HUP"`, ...) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg("-s")
            .arg(name)
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {name} failed");
    }

    /// Waits for the process to exit; `None` if it is still running at the deadline.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Tollgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name=ADDR` from a text log line, or `"name":"ADDR"` from a JSON one.
fn field(line: &str, name: &str) -> Option<SocketAddr> {
    let text_key = format!("{name}=");
    let json_key = format!("\"{name}\":\"");
    let start = match line.find(&text_key) {
        Some(at) => at + text_key.len(),
        None => line.find(&json_key)? + json_key.len(),
    };
    let rest = &line[start..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"')
        .unwrap_or(rest.len());
    rest[..end].trim_matches('"').parse().ok()
}
