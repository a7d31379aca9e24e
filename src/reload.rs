//! Live reload of the config file, on SIGHUP and when the file's content
//! changes, without dropping a request.
//!
//! This module owns when a reload happens and what it may change. A reload
//! re-reads the file and validates it exactly as start-up does. An invalid
//! file is refused: the error names every problem, the
//! `tollgate_config_reloads_total{result="failed"}` counter goes up, and the
//! config in force keeps serving. A valid file is put in force for every
//! request that starts afterwards (one `ArcSwap` store of a new
//! [`Live`] snapshot; requests in flight finish with the one they began with).
//!
//! Settings a running process cannot change — the listeners, the store, the
//! admin token variable, the log format, `auth.bcrypt_cost` and
//! `auth.cache_capacity` — are kept at their start-up values; a reload that
//! changes one applies everything else and logs a warning naming each such
//! setting and saying it needs a restart.
//!
//! **Why polling, not inotify.** Kubernetes updates a mounted ConfigMap by
//! writing a new timestamped directory and atomically renaming a `..data`
//! symlink; `tollgate.toml` is a symlink through `..data`. An inotify watch
//! on the file follows the old inode and never fires; one has to watch the
//! directory and guess which events matter, and editors that write in place,
//! rename over, or keep the mtime each need another rule. Reading the file
//! through its path every `[reload] interval_ms` (default 1 s) and comparing
//! a SHA-256 of its content catches every one of those updates the same way,
//! costs one small read per second, and needs no extra dependency. The delay
//! is at most one interval, small beside the kubelet's own ConfigMap sync
//! period (up to a minute or more).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::app::{App, Live};
use crate::config::Config;
use crate::metrics::ReloadResult;
use crate::telemetry::{self, LevelChange};

/// What started a reload, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Signal,
    FileChanged,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::FileChanged => "file changed",
        }
    }
}

/// The outcome of putting a loaded config in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The reloadable settings that changed (`limits`, `routes`, ...).
    pub changed: Vec<&'static str>,
    /// One message per setting that changed in the file but needs a restart.
    pub need_restart: Vec<String>,
}

/// Puts `loaded` in force on `app`, keeping what needs a restart at its
/// start-up value. Does no I/O beyond logging.
pub fn apply(app: &App, loaded: Config) -> Applied {
    let boot = &app.config;
    let need_restart = restart_needed(boot, &loaded);
    let current = app.live();
    let effective = Live::effective(loaded, boot);
    let changed = changed_settings(&current.config, &effective);
    if effective.log.level != current.config.log.level {
        match telemetry::set_level(&effective.log.level) {
            Ok(LevelChange::Applied | LevelChange::NotInstalled) => {}
            Ok(LevelChange::OverriddenByEnv) => tracing::warn!(
                "log.level changed, but RUST_LOG is set and decides the level until a restart"
            ),
            Err(e) => tracing::warn!(error = %e, "log.level could not be applied"),
        }
    }
    app.replace_live(Live::new(effective, Some(&current)));
    Applied {
        changed,
        need_restart,
    }
}

/// Messages for the settings of `loaded` that differ from `boot` and that a
/// running process cannot change. Never prints a store URL (it may hold a password).
pub fn restart_needed(boot: &Config, loaded: &Config) -> Vec<String> {
    let mut out = Vec::new();
    // Each setting as it is shown in the message.
    type Show = fn(&Config) -> String;
    let settings: [(&str, Show); 10] = [
        ("server.listen", |c| c.server.listen.to_string()),
        ("server.tls", |c| match &c.server.tls {
            Some(t) => format!("cert {} key {}", t.cert.display(), t.key.display()),
            None => "absent".to_owned(),
        }),
        ("server.header_read_timeout_ms", |c| {
            c.server.header_read_timeout.as_millis().to_string()
        }),
        ("server.trusted_proxies", |c| {
            let nets: Vec<String> = c
                .server
                .trusted_proxies
                .iter()
                .map(ToString::to_string)
                .collect();
            format!("{nets:?}")
        }),
        ("auth.max_failures_per_minute", |c| {
            c.auth.max_failures_per_minute.to_string()
        }),
        ("admin.listen", |c| c.admin.listen.to_string()),
        ("admin.token_env", |c| c.admin.token_env.clone()),
        ("auth.bcrypt_cost", |c| c.auth.bcrypt_cost.to_string()),
        ("auth.cache_capacity", |c| c.auth.cache_capacity.to_string()),
        ("log.format", |c| c.log.format.as_str().to_owned()),
    ];
    for (key, show) in settings {
        let (was, now) = (show(boot), show(loaded));
        if was != now {
            out.push(format!(
                "{key} changed from {was} to {now}, which needs a restart; still using {was}"
            ));
        }
    }
    if boot.store != loaded.store {
        let backend = |c: &Config| crate::config::backend_name(&c.store.backend);
        out.push(format!(
            "[store] changed (backend {} → {}; url and timeout not shown), which needs a restart; \
             still using the start-up store",
            backend(boot),
            backend(loaded)
        ));
    }
    out
}

/// The reloadable settings that differ between two effective configs.
fn changed_settings(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |name: &'static str, differs: bool| {
        if differs {
            changed.push(name);
        }
    };
    check("limits", old.limits != new.limits);
    check("routes", old.routes != new.routes);
    check("auth.scopes", old.auth.scopes != new.auth.scopes);
    check("upstream", old.upstream != new.upstream);
    check("headers", old.headers.ietf != new.headers.ietf);
    check("log.level", old.log.level != new.log.level);
    check("metrics", old.metrics != new.metrics);
    check("reload", old.reload != new.reload);
    check(
        "server.drain_timeout_ms",
        old.server.drain_timeout != new.server.drain_timeout,
    );
    changed
}

/// Watches for SIGHUP and for changes of the config file; reloads on either.
pub struct Reloader {
    app: Arc<App>,
    path: PathBuf,
    /// Digest of the content last loaded (or tried); `None` if unreadable.
    last: Option<[u8; 32]>,
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
}

impl Reloader {
    /// Registers the SIGHUP handler now (so that a SIGHUP from this point on
    /// reloads rather than kills the process) and notes the file's content.
    /// Must be called within a Tokio runtime.
    pub fn new(app: Arc<App>) -> Reloader {
        let path = app.config.path.clone();
        #[cfg(unix)]
        let hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot handle SIGHUP: reload on signal is off");
                None
            }
        };
        let last = read(&path).ok().map(|text| digest(&text));
        Reloader {
            app,
            path,
            last,
            #[cfg(unix)]
            hangup,
        }
    }

    /// Runs until `stop` changes (or its sender goes away).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            let settings = self.app.live().config.reload;
            tokio::select! {
                _ = stop.changed() => return,
                () = hangup(self.hangup_mut()) => self.reload(Trigger::Signal),
                () = tokio::time::sleep(settings.interval), if settings.watch => {
                    let now = read(&self.path).ok().map(|text| digest(&text));
                    if now != self.last {
                        self.reload(Trigger::FileChanged);
                    }
                }
            }
        }
    }

    #[cfg(unix)]
    fn hangup_mut(&mut self) -> Option<&mut tokio::signal::unix::Signal> {
        self.hangup.as_mut()
    }

    #[cfg(not(unix))]
    fn hangup_mut(&mut self) -> Option<&mut ()> {
        None
    }

    /// Re-reads and validates the file; puts it in force or refuses it.
    pub fn reload(&mut self, trigger: Trigger) {
        let trigger_name = trigger.as_str();
        let loaded = match read(&self.path) {
            Err(problem) => {
                self.last = None;
                Err(vec![problem])
            }
            Ok(text) => {
                self.last = Some(digest(&text));
                Config::parse(&text, &self.path).map_err(|e| e.problems)
            }
        };
        match loaded {
            Err(problems) => {
                self.app.metrics.config_reload(ReloadResult::failed);
                tracing::error!(
                    trigger = trigger_name,
                    file = %self.path.display(),
                    problems = %problems.join("; "),
                    "config reload refused; the previous configuration keeps serving"
                );
            }
            Ok(config) => {
                for warning in &config.warnings {
                    tracing::warn!(trigger = trigger_name, "config: {warning}");
                }
                let applied = apply(&self.app, config);
                for message in &applied.need_restart {
                    tracing::warn!(trigger = trigger_name, "config reload: {message}");
                }
                self.app.metrics.config_reload(ReloadResult::ok);
                let changed = if applied.changed.is_empty() {
                    "nothing reloadable".to_owned()
                } else {
                    applied.changed.join(", ")
                };
                tracing::info!(
                    trigger = trigger_name,
                    file = %self.path.display(),
                    changed = %changed,
                    "config reloaded"
                );
            }
        }
    }
}

/// Resolves when the signal arrives; never, without a handler.
#[cfg(unix)]
async fn hangup(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            if s.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

#[cfg(not(unix))]
async fn hangup(_: Option<&mut ()>) {
    std::future::pending::<()>().await;
}

/// The file's text, through any symlinks (a ConfigMap's `..data` swap included).
fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read config file: {e}"))
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        match Config::parse(text, Path::new("t.toml")) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    const BASE: &str = "[upstream]\nurl = \"http://127.0.0.1:3000\"\n";

    #[test]
    fn restart_needed_names_each_fixed_setting_and_never_a_password() {
        let boot = parse(BASE);
        assert!(restart_needed(&boot, &parse(BASE)).is_empty());
        let changed = parse(&format!(
            "{BASE}[server]\nlisten = \"127.0.0.1:1\"\n[admin]\nlisten = \"127.0.0.1:2\"\n\
             [store]\nbackend = \"redis\"\nurl = \"redis://:hunter2@h:6379/0\"\n\
             [log]\nformat = \"json\"\n[limits]\nper_minute = 5\n"
        ));
        let messages = restart_needed(&boot, &changed);
        let all = messages.join("\n");
        assert_eq!(messages.len(), 4, "{all}");
        assert!(all.contains(
            "server.listen changed from 0.0.0.0:8080 to 127.0.0.1:1, which needs a restart"
        ));
        assert!(all.contains("admin.listen changed"));
        assert!(all.contains("log.format changed from text to json"));
        assert!(all.contains("[store] changed (backend memory → redis"));
        assert!(!all.contains("hunter2"), "{all}");
    }

    #[test]
    fn effective_keeps_the_fixed_settings_and_takes_the_rest() {
        let boot = parse(BASE);
        let loaded = parse(&format!(
            "{BASE}[server]\nlisten = \"127.0.0.1:1\"\ndrain_timeout_ms = 7\n\
             [limits]\nper_minute = 5\n[log]\nformat = \"json\"\nlevel = \"debug\"\n"
        ));
        let eff = Live::effective(loaded, &boot);
        assert_eq!(eff.server.listen, boot.server.listen);
        assert_eq!(eff.log.format, boot.log.format);
        assert_eq!(eff.log.level, "debug");
        assert_eq!(eff.limits.per_minute, 5);
        assert_eq!(eff.server.drain_timeout.as_millis(), 7);
        assert_eq!(
            changed_settings(&boot, &eff),
            ["limits", "log.level", "server.drain_timeout_ms"]
        );
    }
}
