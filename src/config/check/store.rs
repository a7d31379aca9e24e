//! Validation of `[store]`: the backend, its URLs and the store's bounds.
//! TLS material and credentials are [`crate::config::redis_access`]'s.

use std::ops::Range;

use toml::Spanned;

use super::Checker;
use crate::config::raw::*;
use crate::config::values::check_redis_url;
use crate::config::*;

impl Checker<'_> {
    pub(super) fn store(&mut self, raw: Opt<RawStore>) -> StoreConfig {
        let (span, raw) = section(raw);
        let backend = raw
            .backend
            .as_ref()
            .map_or("memory", |b| b.get_ref().as_str());
        let backend_span = raw.backend.as_ref().map(Spanned::span);
        let backend = match backend {
            "memory" => {
                // SPEC.md's own example sets url beside backend = "memory" and
                // calls itself a complete working config: a warning, not an error.
                if let Some(url) = &raw.url {
                    self.warn(
                        Some(&url.span()),
                        "store.url",
                        "ignored because store.backend is \"memory\"; \
                         set backend = \"redis\" to use it, or remove it",
                    );
                }
                StoreBackend::Memory
            }
            "redis" => match &raw.url {
                None => {
                    let at = backend_span.or(span);
                    self.report(
                        at.as_ref(),
                        "store.url",
                        "required when store.backend is \"redis\", \
                         e.g. url = \"redis://127.0.0.1:6379/0\"",
                    );
                    StoreBackend::Memory
                }
                Some(url) => {
                    if let Err(message) = check_redis_url(url.get_ref()) {
                        self.report(Some(&url.span()), "store.url", message);
                    }
                    StoreBackend::Redis {
                        url: url.get_ref().clone(),
                    }
                }
            },
            "redis-cluster" => {
                let urls = self.redis_urls("store.urls", &raw.urls, backend_span.or(span.clone()));
                StoreBackend::RedisCluster { urls }
            }
            "redis-sentinel" => {
                let at = backend_span.or(span.clone());
                let sentinels = self.redis_urls("store.sentinels", &raw.sentinels, at.clone());
                let master_name = match &raw.master_name {
                    Some(m) if !m.get_ref().trim().is_empty() => m.get_ref().clone(),
                    Some(m) => {
                        self.report(Some(&m.span()), "store.master_name", "is empty");
                        String::new()
                    }
                    None => {
                        self.report(
                            at.as_ref(),
                            "store.master_name",
                            "required when store.backend is \"redis-sentinel\", \
                             e.g. master_name = \"mymaster\"",
                        );
                        String::new()
                    }
                };
                StoreBackend::RedisSentinel {
                    sentinels,
                    master_name,
                }
            }
            other => {
                self.report(
                    backend_span.as_ref(),
                    "store.backend",
                    format!(
                        "unknown backend {other:?} (known: \"memory\", \"redis\", \
                         \"redis-cluster\", \"redis-sentinel\")"
                    ),
                );
                StoreBackend::Memory
            }
        };
        let timeout_ms = self.int(
            "store.timeout_ms",
            &raw.timeout_ms,
            DEFAULT_STORE_TIMEOUT_MS,
            *STORE_TIMEOUT_MS.start(),
            *STORE_TIMEOUT_MS.end(),
        );
        // Keys that only one backend reads.
        let unused = [
            (
                "store.url",
                raw.url.as_ref().map(Spanned::span),
                matches!(backend, StoreBackend::Redis { .. } | StoreBackend::Memory),
            ),
            (
                "store.urls",
                raw.urls.as_ref().map(Spanned::span),
                matches!(backend, StoreBackend::RedisCluster { .. }),
            ),
            (
                "store.sentinels",
                raw.sentinels.as_ref().map(Spanned::span),
                matches!(backend, StoreBackend::RedisSentinel { .. }),
            ),
            (
                "store.master_name",
                raw.master_name.as_ref().map(Spanned::span),
                matches!(backend, StoreBackend::RedisSentinel { .. }),
            ),
            (
                "store.batch_keys",
                raw.batch_keys.as_ref().map(Spanned::span),
                matches!(
                    backend,
                    StoreBackend::Redis { .. } | StoreBackend::RedisSentinel { .. }
                ),
            ),
        ];
        for (key, at, used) in unused {
            if let (Some(at), false) = (at, used) {
                self.report(
                    Some(&at),
                    key,
                    format!(
                        "is not read by store.backend = {:?}",
                        backend_name(&backend)
                    ),
                );
            }
        }
        let failure_mode = match &raw.failure_mode {
            None => FailureMode::default(),
            Some(f) => match f.get_ref().as_str() {
                "closed" => FailureMode::Closed,
                "open" => FailureMode::Open,
                other => {
                    self.report(
                        Some(&f.span()),
                        "store.failure_mode",
                        format!("unknown mode {other:?} (known: \"closed\", \"open\")"),
                    );
                    FailureMode::default()
                }
            },
        };
        let replicas = self.int(
            "store.replicas",
            &raw.replicas,
            DEFAULT_STORE_REPLICAS,
            1,
            *STORE_REPLICAS.end(),
        );
        let max_in_flight = self.int(
            "store.max_in_flight",
            &raw.max_in_flight,
            DEFAULT_STORE_MAX_IN_FLIGHT,
            1,
            *STORE_MAX_IN_FLIGHT.end(),
        );
        let batch_keys = self.int(
            "store.batch_keys",
            &raw.batch_keys,
            DEFAULT_STORE_BATCH_KEYS,
            *STORE_BATCH_KEYS.start(),
            *STORE_BATCH_KEYS.end(),
        );
        let batch_keys = matches!(
            backend,
            StoreBackend::Redis { .. } | StoreBackend::RedisSentinel { .. }
        )
        .then(|| usize::try_from(batch_keys).unwrap_or(usize::MAX));
        let access = self.redis_access(&raw, &backend);
        StoreConfig {
            backend,
            timeout: Duration::from_millis(timeout_ms),
            failure_mode,
            replicas,
            max_in_flight: usize::try_from(max_in_flight).unwrap_or(usize::MAX),
            batch_keys,
            access,
        }
    }

    /// A non-empty list of redis:// URLs (seed nodes or sentinels).
    pub(super) fn redis_urls(
        &mut self,
        key: &str,
        raw: &Opt<Vec<Spanned<String>>>,
        missing_at: Option<Range<usize>>,
    ) -> Vec<String> {
        let Some(list) = raw else {
            self.report(
                missing_at.as_ref(),
                key,
                "required by this store.backend, e.g. [\"redis://127.0.0.1:7000\"]",
            );
            return Vec::new();
        };
        if list.get_ref().is_empty() {
            self.report(
                Some(&list.span()),
                key,
                "is empty; list at least one redis:// URL",
            );
        }
        for url in list.get_ref() {
            if let Err(message) = check_redis_url(url.get_ref()) {
                self.report(Some(&url.span()), key, message);
            }
        }
        list.get_ref().iter().map(|u| u.get_ref().clone()).collect()
    }
}
