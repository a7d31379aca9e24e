//! What `tollgate check` prints: [`Config::describe`] renders the validated
//! config back in the file's shape, every default filled in, secrets masked.
//!
//! There is no second copy of the schema here: the validated types derive
//! `Serialize` (their attributes give each field its file name and unit) and
//! this module holds only the `serialize_with` helpers they name, plus the
//! one hand-written impl, [`UpstreamConfig`]'s, whose three fields are one
//! `url` in the file. Secrets: Redis URLs are masked ([`redact_url`]), the
//! values read from `store.username_env`/`password_env` and PEM contents
//! are skipped, and [`super::Secret`] has no `Serialize` at all.

use std::fmt::Display;
use std::time::Duration;

use serde::ser::{SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};

use super::{redact_url, Config, UpstreamConfig};

impl Config {
    /// The config as understood, defaults filled in, secrets masked: what `check` prints.
    ///
    /// The output is itself a valid config file (bar the masked password).
    pub fn describe(&self) -> String {
        let mut header = format!(
            "# Effective configuration from {}: every default filled in, secrets masked.\n",
            one_line(&self.path.display().to_string())
        );
        for warning in &self.warnings {
            header.push_str(&format!("# warning: {}\n", one_line(warning)));
        }
        match toml::to_string(self) {
            Ok(body) => header + &body,
            Err(e) => format!("{header}# cannot render the configuration as TOML: {e}\n"),
        }
    }
}

/// `text` fit for a TOML comment.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

impl Serialize for UpstreamConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Destructured in full: a new field does not compile until it is shown here.
        let UpstreamConfig {
            tls: _,
            authority: _,
            base_path: _,
            timeout,
            connect_timeout,
            pool_idle_timeout,
            pool_max_idle_per_host,
            keep_credential,
            protocol,
            ca,
        } = self;
        let mut s = serializer.serialize_struct("UpstreamConfig", 8)?;
        s.serialize_field("url", &self.url())?;
        s.serialize_field("timeout_ms", &ms(*timeout))?;
        s.serialize_field("connect_timeout_ms", &ms(*connect_timeout))?;
        s.serialize_field("pool_idle_timeout_ms", &ms(*pool_idle_timeout))?;
        s.serialize_field("pool_max_idle_per_host", pool_max_idle_per_host)?;
        s.serialize_field("keep_credential", keep_credential)?;
        s.serialize_field("protocol", protocol)?;
        match ca {
            Some(ca) => s.serialize_field("ca", ca)?,
            None => s.skip_field("ca")?,
        }
        s.end()
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A duration as the file writes it: whole milliseconds (`*_ms` keys).
pub(super) fn millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(ms(*d))
}

/// `None` (unlimited) as the file writes it: 0.
pub(super) fn zero_if_none<S: Serializer>(n: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(n.unwrap_or(0))
}

/// Values in their written form (`10.0.0.0/8`).
pub(super) fn as_strings<T: Display, S: Serializer>(items: &[T], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(items.iter().map(ToString::to_string))
}

/// A Redis URL, its password masked.
pub(super) fn redacted<S: Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url))
}

/// Redis URLs, their passwords masked.
pub(super) fn all_redacted<S: Serializer>(urls: &[String], s: S) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(urls.len()))?;
    for url in urls {
        seq.serialize_element(&redact_url(url))?;
    }
    seq.end()
}

/// Route methods by name (`"GET"`); only called when there is a list.
pub(super) fn methods<S: Serializer>(
    methods: &Option<Vec<http::Method>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match methods {
        Some(list) => s.collect_seq(list.iter().map(http::Method::as_str)),
        None => s.serialize_none(),
    }
}
