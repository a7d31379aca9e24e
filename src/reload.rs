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
//! Settings a running process cannot change — the restart-only entries of
//! [`crate::settings::SETTINGS`]: listeners and their header limits, trusted
//! proxies, the store, the admin token variable, bcrypt cost, cache capacity,
//! the failed-authentication budget, the log format — live in
//! [`crate::settings::Boot`] and keep their start-up values; a reload that
//! changes one applies everything else, logs a warning naming each such
//! setting and saying it needs a restart, and sets the
//! `tollgate_config_restart_required` gauge to the number of them (0 again
//! once the file agrees with the running process).
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
use crate::settings::{self, Boot, LiveConfig};
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
    /// `(setting, message)` per restart-only setting that differs in the file
    /// from the running value; the running value is kept.
    pub need_restart: Vec<(&'static str, String)>,
}

/// Puts the reloadable settings of `loaded` in force on `app`; the
/// restart-only ones (the [`crate::settings::SETTINGS`] table decides which)
/// are only compared with the running ones, never applied. Does no I/O
/// beyond logging.
pub fn apply(app: &App, loaded: &Config) -> Applied {
    let need_restart = settings::restart_needed(&app.boot, &Boot::new(loaded));
    app.metrics.config_restart_required(need_restart.len());
    let current = app.live();
    let next = LiveConfig::new(loaded);
    let changed = settings::changed(&current.config, &next);
    if next.log.level != current.config.log.level {
        match telemetry::set_level(&next.log.level) {
            Ok(LevelChange::Applied | LevelChange::NotInstalled) => {}
            Ok(LevelChange::OverriddenByEnv) => tracing::warn!(
                "log.level changed, but RUST_LOG is set and decides the level until a restart"
            ),
            Err(e) => tracing::warn!(error = %e, "log.level could not be applied"),
        }
    }
    // Policies: a plan may go while clients still name it; they fall back to [limits].
    for gone in current
        .config
        .plans
        .keys()
        .filter(|p| !next.plans.contains_key(*p))
    {
        tracing::warn!(
            plan = %gone,
            "config reload: plan removed; clients that name it are served with [limits] \
             from their next request"
        );
    }
    app.replace_live(Live::new(next, Some(&current)));
    Applied {
        changed,
        need_restart,
    }
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
        let path = app.boot.path.clone();
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
                let applied = apply(&self.app, &config);
                for (setting, message) in &applied.need_restart {
                    tracing::warn!(trigger = trigger_name, setting, "config reload: {message}");
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
