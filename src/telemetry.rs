//! Logging set-up: `tracing` to stderr, text or JSON, level from the config
//! (overridden by `RUST_LOG` when set). The level can be changed while the
//! process runs ([`set_level`], used by a config reload); the format cannot.

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::config::{LogConfig, LogFormat};

/// The handle that swaps the level filter of the installed subscriber.
static LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();
/// Set when `RUST_LOG` decided the level: the config's level then never applies.
static FROM_ENV: OnceLock<bool> = OnceLock::new();

/// Installs the global subscriber; a second call is a no-op.
pub fn init(cfg: &LogConfig) {
    let (filter, from_env) = match EnvFilter::try_from_default_env() {
        Ok(f) => (f, true),
        Err(_) => (
            EnvFilter::try_new(&cfg.level).unwrap_or_else(|_| EnvFilter::new("info")),
            false,
        ),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let output = match cfg.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    if tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .is_ok()
    {
        let _ = LEVEL.set(handle);
        let _ = FROM_ENV.set(from_env);
    }
}

/// What [`set_level`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LevelChange {
    Applied,
    /// `RUST_LOG` is set and wins over the config.
    OverriddenByEnv,
    /// No subscriber of ours is installed (a library user installed their own).
    NotInstalled,
}

/// Replaces the level filter with `level` (an `EnvFilter` directive, already
/// validated by the config).
pub fn set_level(level: &str) -> Result<LevelChange, String> {
    if FROM_ENV.get().copied().unwrap_or(false) {
        return Ok(LevelChange::OverriddenByEnv);
    }
    let Some(handle) = LEVEL.get() else {
        return Ok(LevelChange::NotInstalled);
    };
    let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
    handle.reload(filter).map_err(|e| e.to_string())?;
    Ok(LevelChange::Applied)
}
