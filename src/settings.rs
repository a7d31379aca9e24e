//! Which settings are fixed at start-up and which a reload may change — the
//! split linkerd2-proxy and Envoy make between what the process binds and
//! builds once (bootstrap) and the policy request code reads (dynamic).
//!
//! - [`Boot`] holds only the restart-only values: the listeners and their
//!   header limits, the store, the admin token variable, bcrypt cost, cache
//!   capacity, the failed-authentication budget, trusted proxies, the log
//!   format. It is built once from the start-up [`Config`] and never replaced.
//! - [`LiveConfig`] holds only what a reload puts in force: limits (with
//!   shadow and refund_on), plans, routes (with cost and shadow),
//!   scopes, upstream, headers, body limits, WebSocket, log level, metrics
//!   labels, reload and drain settings. Request code reads it from the
//!   snapshot of [`crate::app::Live`].
//!
//! Neither type can hold a setting of the other kind, so request code cannot
//! read a reloadable setting from the start-up copy (there is no such field to
//! read), and a restart-only value exists in one place only.
//!
//! [`SETTINGS`] is the one table that says which is which. Reload reporting
//! walks it; a test holds docs/configuration.md and README to its restart-only
//! names; another holds it to [`Boot`]'s fields. Adding a setting is one entry.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use std::collections::BTreeMap;

use crate::config::{
    backend_name, Config, HeadersConfig, LimitsConfig, LogFormat, MetricsConfig, NotifyConfig,
    ReloadConfig, Route, ServerTls, StoreConfig, UpstreamConfig,
};
use crate::limits::policy::PlanLimits;
use crate::throttle::Cidr;

/// The restart-only settings, fixed for the life of the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    /// The config file, re-read by a reload.
    pub path: PathBuf,
    /// `server.listen`.
    pub listen: SocketAddr,
    /// `server.header_read_timeout_ms` (also the first-byte timeout).
    pub header_read_timeout: Duration,
    /// `server.max_header_bytes`: hyper's read buffer and HTTP/2 header list size.
    pub max_header_bytes: u32,
    /// `server.trusted_proxies`.
    pub trusted_proxies: Vec<Cidr>,
    /// `[server.tls]`: whether the public listener speaks TLS, and its files
    /// (their content reloads by itself: `tls::watch_files`).
    pub tls: Option<ServerTls>,
    /// `admin.listen`.
    pub admin_listen: SocketAddr,
    /// `admin.token_env`.
    pub admin_token_env: String,
    /// The whole `[store]` section.
    pub store: StoreConfig,
    /// `auth.bcrypt_cost`.
    pub bcrypt_cost: u32,
    /// `auth.cache_capacity`.
    pub cache_capacity: usize,
    /// `auth.max_failures_per_minute`.
    pub max_failures_per_minute: u32,
    /// `log.format`.
    pub log_format: LogFormat,
    /// `history.days` (the store keeps it).
    pub history_days: u32,
    /// `[notify]` (its delivery tasks start with the process).
    pub notify: Option<NotifyConfig>,
}

impl Boot {
    pub fn new(c: &Config) -> Boot {
        Boot {
            path: c.path.clone(),
            listen: c.server.listen,
            header_read_timeout: c.server.header_read_timeout,
            max_header_bytes: c.server.max_header_bytes,
            trusted_proxies: c.server.trusted_proxies.clone(),
            tls: c.server.tls.clone(),
            admin_listen: c.admin.listen,
            admin_token_env: c.admin.token_env.clone(),
            store: c.store.clone(),
            bcrypt_cost: c.auth.bcrypt_cost,
            cache_capacity: c.auth.cache_capacity,
            max_failures_per_minute: c.auth.max_failures_per_minute,
            log_format: c.log.format,
            history_days: c.history.days,
            notify: c.notify.clone(),
        }
    }
}

/// The settings a reload puts in force. The sections keep [`Config`]'s names
/// (`live.config.limits`, `live.config.auth.scopes`, ...).
#[derive(Debug, Clone)]
pub struct LiveConfig {
    pub server: LiveServer,
    pub upstream: UpstreamConfig,
    pub limits: LimitsConfig,
    pub plans: BTreeMap<String, PlanLimits>,
    pub auth: LiveAuth,
    pub routes: Vec<Route>,
    pub headers: HeadersConfig,
    pub log: LiveLog,
    pub metrics: MetricsConfig,
    pub reload: ReloadConfig,
}

/// The reloadable part of `[server]`: what the request path checks per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveServer {
    pub drain_timeout: Duration,
    pub body_read_timeout: Duration,
    /// `None`: unlimited.
    pub max_body_bytes: Option<u64>,
    pub websocket: bool,
}

/// The reloadable part of `[auth]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveAuth {
    pub scopes: std::collections::BTreeSet<String>,
}

/// The reloadable part of `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveLog {
    /// An `EnvFilter` directive.
    pub level: String,
}

impl LiveConfig {
    pub fn new(c: &Config) -> LiveConfig {
        LiveConfig {
            server: LiveServer {
                drain_timeout: c.server.drain_timeout,
                body_read_timeout: c.server.body_read_timeout,
                max_body_bytes: c.server.max_body_bytes,
                websocket: c.server.websocket,
            },
            upstream: c.upstream.clone(),
            limits: c.limits.clone(),
            plans: c.plans.clone(),
            auth: LiveAuth {
                scopes: c.auth.scopes.clone(),
            },
            routes: c.routes.clone(),
            headers: c.headers.clone(),
            log: LiveLog {
                level: c.log.level.clone(),
            },
            metrics: c.metrics,
            reload: c.reload,
        }
    }
}

/// When a change of a setting takes effect.
#[derive(Debug, Clone, Copy)]
pub enum Applies {
    /// Held in [`Boot`]: a reload that changes it is reported and the running
    /// value kept. `show` never returns a secret (no store URL).
    OnRestart {
        same: fn(&Boot, &Boot) -> bool,
        show: fn(&Boot) -> String,
    },
    /// Held in [`LiveConfig`]: a reload puts it in force.
    OnReload {
        same: fn(&LiveConfig, &LiveConfig) -> bool,
    },
}

/// One setting (or section) of the config file.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// As written in the file: `server.listen`, or a section (`store`).
    pub name: &'static str,
    pub applies: Applies,
}

const fn restart(
    name: &'static str,
    same: fn(&Boot, &Boot) -> bool,
    show: fn(&Boot) -> String,
) -> Setting {
    Setting {
        name,
        applies: Applies::OnRestart { same, show },
    }
}

const fn reload(name: &'static str, same: fn(&LiveConfig, &LiveConfig) -> bool) -> Setting {
    Setting {
        name,
        applies: Applies::OnReload { same },
    }
}

/// Every setting, restart-only or live. The one place that decides.
pub const SETTINGS: &[Setting] = &[
    // Restart-only: bound or built once at start-up.
    restart(
        "server.listen",
        |a, b| a.listen == b.listen,
        |b| b.listen.to_string(),
    ),
    restart(
        "server.header_read_timeout_ms",
        |a, b| a.header_read_timeout == b.header_read_timeout,
        |b| b.header_read_timeout.as_millis().to_string(),
    ),
    restart(
        "server.max_header_bytes",
        |a, b| a.max_header_bytes == b.max_header_bytes,
        |b| b.max_header_bytes.to_string(),
    ),
    restart(
        "server.trusted_proxies",
        |a, b| a.trusted_proxies == b.trusted_proxies,
        |b| {
            let nets: Vec<String> = b.trusted_proxies.iter().map(ToString::to_string).collect();
            format!("[{}]", nets.join(", "))
        },
    ),
    restart(
        "server.tls",
        |a, b| a.tls == b.tls,
        |b| match &b.tls {
            Some(t) => format!("cert {} key {}", t.cert.display(), t.key.display()),
            None => "absent".to_owned(),
        },
    ),
    restart(
        "admin.listen",
        |a, b| a.admin_listen == b.admin_listen,
        |b| b.admin_listen.to_string(),
    ),
    restart(
        "admin.token_env",
        |a, b| a.admin_token_env == b.admin_token_env,
        |b| b.admin_token_env.clone(),
    ),
    // The whole section: its URLs may hold a password, so only the backend is shown.
    restart(
        "store",
        |a, b| a.store == b.store,
        |b| format!("backend {}", backend_name(&b.store.backend)),
    ),
    restart(
        "auth.bcrypt_cost",
        |a, b| a.bcrypt_cost == b.bcrypt_cost,
        |b| b.bcrypt_cost.to_string(),
    ),
    restart(
        "auth.cache_capacity",
        |a, b| a.cache_capacity == b.cache_capacity,
        |b| b.cache_capacity.to_string(),
    ),
    restart(
        "auth.max_failures_per_minute",
        |a, b| a.max_failures_per_minute == b.max_failures_per_minute,
        |b| b.max_failures_per_minute.to_string(),
    ),
    restart(
        "log.format",
        |a, b| a.log_format == b.log_format,
        |b| b.log_format.as_str().to_owned(),
    ),
    restart(
        "history.days",
        |a, b| a.history_days == b.history_days,
        |b| b.history_days.to_string(),
    ),
    restart(
        "notify",
        |a, b| a.notify == b.notify,
        |b| match &b.notify {
            // Never the secret: its variable's name only.
            Some(n) => format!(
                "url {:?}, thresholds {:?}, secret_env {}",
                n.url, n.thresholds, n.secret_env
            ),
            None => "off".to_owned(),
        },
    ),
    // Live: read from the snapshot a request starts with.
    reload("limits", |a, b| a.limits == b.limits),
    reload("plans", |a, b| a.plans == b.plans),
    reload("routes", |a, b| a.routes == b.routes),
    reload("auth.scopes", |a, b| a.auth.scopes == b.auth.scopes),
    reload("upstream", |a, b| a.upstream == b.upstream),
    reload("headers", |a, b| a.headers.ietf == b.headers.ietf),
    reload("log.level", |a, b| a.log.level == b.log.level),
    reload("metrics", |a, b| a.metrics == b.metrics),
    reload("reload", |a, b| a.reload == b.reload),
    reload("server.drain_timeout_ms", |a, b| {
        a.server.drain_timeout == b.server.drain_timeout
    }),
    reload("server.body_read_timeout_ms", |a, b| {
        a.server.body_read_timeout == b.server.body_read_timeout
    }),
    reload("server.max_body_bytes", |a, b| {
        a.server.max_body_bytes == b.server.max_body_bytes
    }),
    reload("server.websocket", |a, b| {
        a.server.websocket == b.server.websocket
    }),
];

/// The names of the restart-only settings, in table order.
pub fn restart_only() -> impl Iterator<Item = &'static str> {
    SETTINGS
        .iter()
        .filter(|s| matches!(s.applies, Applies::OnRestart { .. }))
        .map(|s| s.name)
}

/// One message per restart-only setting whose value in `loaded` differs from
/// the running one in `running`: `(name, message)`. Never shows a secret.
pub fn restart_needed(running: &Boot, loaded: &Boot) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for s in SETTINGS {
        let Applies::OnRestart { same, show } = s.applies else {
            continue;
        };
        if same(running, loaded) {
            continue;
        }
        let (was, now) = (show(running), show(loaded));
        let name = s.name;
        let message = if was == now {
            format!("{name} changed (value not shown), which needs a restart; still using the start-up value")
        } else {
            format!("{name} changed from {was} to {now}, which needs a restart; still using {was}")
        };
        out.push((name, message));
    }
    out
}

/// The live settings that differ between two snapshots.
pub fn changed(old: &LiveConfig, new: &LiveConfig) -> Vec<&'static str> {
    SETTINGS
        .iter()
        .filter_map(|s| match s.applies {
            Applies::OnReload { same } if !same(old, new) => Some(s.name),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    fn parse(text: &str) -> Config {
        match Config::parse(text, Path::new("t.toml")) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    const BASE: &str = "[upstream]\nurl = \"http://127.0.0.1:3000\"\n";

    /// Boot's fields, destructured without `..`: adding a field to [`Boot`]
    /// breaks this until it is counted here, and the count must match the
    /// table's restart-only entries (the config file path is not a setting).
    fn boot_settings(b: &Boot) -> usize {
        let Boot {
            path: _,
            listen: _,
            header_read_timeout: _,
            max_header_bytes: _,
            trusted_proxies: _,
            tls: _,
            admin_listen: _,
            admin_token_env: _,
            store: _,
            bcrypt_cost: _,
            cache_capacity: _,
            max_failures_per_minute: _,
            log_format: _,
            history_days: _,
            notify: _,
        } = b;
        14
    }

    #[test]
    fn every_boot_field_has_one_restart_only_entry_and_names_are_unique() {
        let boot = Boot::new(&parse(BASE));
        assert_eq!(restart_only().count(), boot_settings(&boot));
        let names: BTreeSet<&str> = SETTINGS.iter().map(|s| s.name).collect();
        assert_eq!(names.len(), SETTINGS.len(), "a setting listed twice");
    }

    /// Each restart-only entry compares the field it names: changing that one
    /// key in the file is reported under that name and no other.
    #[test]
    fn each_restart_only_change_is_reported_under_its_own_name() {
        let cases: &[(&str, &str)] = &[
            ("server.listen", "[server]\nlisten = \"127.0.0.1:1\"\n"),
            (
                "server.header_read_timeout_ms",
                "[server]\nheader_read_timeout_ms = 1234\n",
            ),
            (
                "server.max_header_bytes",
                "[server]\nmax_header_bytes = 20000\n",
            ),
            (
                "server.trusted_proxies",
                "[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n",
            ),
            ("admin.listen", "[admin]\nlisten = \"127.0.0.1:2\"\n"),
            ("admin.token_env", "[admin]\ntoken_env = \"OTHER_TOKEN\"\n"),
            (
                "store",
                "[store]\nbackend = \"redis\"\nurl = \"redis://:hunter2@h:6379/0\"\n",
            ),
            ("auth.bcrypt_cost", "[auth]\nbcrypt_cost = 5\n"),
            ("auth.cache_capacity", "[auth]\ncache_capacity = 77\n"),
            (
                "auth.max_failures_per_minute",
                "[auth]\nmax_failures_per_minute = 3\n",
            ),
            ("log.format", "[log]\nformat = \"json\"\n"),
            ("history.days", "[history]\ndays = 30\n"),
            (
                "notify",
                "[notify]\nurl = \"http://127.0.0.1:9/hook\"\nsecret_env = \"PATH\"\n",
            ),
        ];
        // `[server.tls]` names certificate files that a config load checks,
        // so its change is made on the Boot value instead of in the file.
        let mut listed: Vec<&str> = cases.iter().map(|(n, _)| *n).collect();
        listed.insert(4, "server.tls");
        assert_eq!(listed, restart_only().collect::<Vec<_>>());
        let boot = Boot::new(&parse(BASE));
        assert!(restart_needed(&boot, &boot).is_empty());
        for (name, edit) in cases {
            let loaded = Boot::new(&parse(&format!("{BASE}{edit}")));
            let got = restart_needed(&boot, &loaded);
            assert_eq!(got.len(), 1, "{name}: {got:?}");
            assert_eq!(got[0].0, *name);
            assert!(got[0].1.starts_with(&format!("{name} changed")), "{got:?}");
            assert!(!got[0].1.contains("hunter2"), "{got:?}");
        }
        let mut tls = boot.clone();
        tls.tls = Some(ServerTls {
            cert: "/etc/tls/tls.crt".into(),
            key: "/etc/tls/tls.key".into(),
        });
        let got = restart_needed(&boot, &tls);
        assert_eq!(got.len(), 1, "server.tls: {got:?}");
        assert_eq!(
            got[0].1,
            "server.tls changed from absent to cert /etc/tls/tls.crt key /etc/tls/tls.key, \
             which needs a restart; still using absent"
        );
        let loaded = Boot::new(&parse(&format!(
            "{BASE}[server]\nlisten = \"127.0.0.1:1\"\n"
        )));
        assert_eq!(
            restart_needed(&boot, &loaded)[0].1,
            "server.listen changed from 0.0.0.0:8080 to 127.0.0.1:1, which needs a restart; \
             still using 0.0.0.0:8080"
        );
    }

    #[test]
    fn each_live_change_is_named() {
        let cases: &[(&str, &str)] = &[
            ("limits", "[limits]\nper_minute = 5\n"),
            ("plans", "[plans.free]\nper_minute = 5\n"),
            ("routes", "[[routes]]\npath = \"/x\"\n"),
            ("auth.scopes", "[auth]\nscopes = [\"a:b\"]\n"),
            ("upstream", "timeout_ms = 1234\n"),
            ("headers", "[headers]\nietf = true\n"),
            ("log.level", "[log]\nlevel = \"debug\"\n"),
            ("metrics", "[metrics]\nper_client = true\n"),
            ("reload", "[reload]\nwatch = false\n"),
            (
                "server.drain_timeout_ms",
                "[server]\ndrain_timeout_ms = 7\n",
            ),
            (
                "server.body_read_timeout_ms",
                "[server]\nbody_read_timeout_ms = 7\n",
            ),
            ("server.max_body_bytes", "[server]\nmax_body_bytes = 7\n"),
            ("server.websocket", "[server]\nwebsocket = true\n"),
        ];
        let live: Vec<&str> = SETTINGS
            .iter()
            .filter(|s| matches!(s.applies, Applies::OnReload { .. }))
            .map(|s| s.name)
            .collect();
        assert_eq!(cases.iter().map(|(n, _)| *n).collect::<Vec<_>>(), live);
        let base = LiveConfig::new(&parse(BASE));
        assert!(changed(&base, &base).is_empty());
        for (name, edit) in cases {
            let loaded = LiveConfig::new(&parse(&format!("{BASE}{edit}")));
            assert_eq!(changed(&base, &loaded), [*name]);
        }
    }

    /// docs/configuration.md and README list exactly the restart-only settings
    /// of [`SETTINGS`], each as `` `name` `` on the line after the marker.
    #[test]
    fn docs_list_exactly_the_restart_only_settings() {
        let want: BTreeSet<String> = restart_only().map(|n| format!("`{n}`")).collect();
        for file in ["docs/configuration.md", "README.md"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
            let text = std::fs::read_to_string(&path).unwrap();
            let marker = "Restart-only settings:";
            let at = text
                .find(marker)
                .unwrap_or_else(|| panic!("{file}: no {marker:?}"));
            let line = text[at + marker.len()..].lines().nth(1).unwrap_or("");
            let got: BTreeSet<String> = line
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|w| w.starts_with('`'))
                .map(|w| w.trim_end_matches('.').to_owned())
                .collect();
            assert_eq!(got, want, "{file}: {line}");
        }
    }
}
