//! Listeners and process lifetime.
use crate::config::Config;

pub fn serve_blocking(_config: Config) -> anyhow::Result<()> {
    anyhow::bail!("not implemented")
}
