//! Prometheus metrics: every metric name is defined here, once, and nothing
//! here ever takes a secret, a key id or a client id as a label.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// How a public request ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    forwarded,
    served,
    bad_request,
    unauthorized,
    forbidden,
    rate_limited,
    quota_exceeded,
    upstream_error,
    store_error,
    /// 429 for too many failed authentication attempts from one peer.
    auth_throttled,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: Outcome,
}

/// Why a presented credential was refused.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum AuthRejection {
    /// No credential at all.
    missing,
    /// Two different credentials in one request.
    ambiguous,
    /// Not the shape of a tollgate secret.
    malformed,
    /// Right shape, wrong checksum: refused without touching store or bcrypt.
    checksum,
    /// No such key (never issued, or revoked).
    unknown_key,
    /// The key exists but the secret does not verify.
    bad_secret,
    /// Revoked, expired or rotated out, as found by the admission check.
    invalid_key,
    /// Not checked: the peer failed too often (answered 429, not 401).
    throttled,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabels {
    reason: AuthRejection,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum CacheResult {
    hit,
    miss,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    result: CacheResult,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// The process's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<OutcomeLabels, Counter>,
    request_duration: Histogram,
    upstream_duration: Histogram,
    store_duration: Histogram,
    store_errors: Counter,
    auth_rejections: Family<RejectionLabels, Counter>,
    auth_cache: Family<CacheLabels, Counter>,
    bcrypt_verifications: Counter,
    in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tollgate");
        let requests = Family::<OutcomeLabels, Counter>::default();
        registry.register("requests", "Public requests by outcome", requests.clone());
        let latency = || Histogram::new(exponential_buckets(0.000_25, 2.0, 16));
        let request_duration = latency();
        registry.register(
            "request_duration_seconds",
            "Time from request to response headers, on the public listener",
            request_duration.clone(),
        );
        let upstream_duration = latency();
        registry.register(
            "upstream_duration_seconds",
            "Time from forwarding to the upstream's response headers",
            upstream_duration.clone(),
        );
        let store_duration = latency();
        registry.register(
            "store_duration_seconds",
            "Round-trip time of admission and usage store calls",
            store_duration.clone(),
        );
        let store_errors = Counter::default();
        registry.register(
            "store_errors",
            "Store calls that failed or timed out",
            store_errors.clone(),
        );
        let auth_rejections = Family::<RejectionLabels, Counter>::default();
        registry.register(
            "auth_rejections",
            "Credentials refused, by reason",
            auth_rejections.clone(),
        );
        let auth_cache = Family::<CacheLabels, Counter>::default();
        registry.register(
            "auth_cache",
            "Lookups of the verified-secret cache",
            auth_cache.clone(),
        );
        let bcrypt_verifications = Counter::default();
        registry.register(
            "bcrypt_verifications",
            "bcrypt verifications run",
            bcrypt_verifications.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight_requests",
            "Public requests being served",
            in_flight.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        registry.register("build_info", "Build information", build);
        Metrics {
            registry,
            requests,
            request_duration,
            upstream_duration,
            store_duration,
            store_errors,
            auth_rejections,
            auth_cache,
            bcrypt_verifications,
            in_flight,
        }
    }

    pub fn request(&self, outcome: Outcome, elapsed: Duration) {
        self.requests
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        self.request_duration.observe(elapsed.as_secs_f64());
    }

    pub fn upstream(&self, elapsed: Duration) {
        self.upstream_duration.observe(elapsed.as_secs_f64());
    }

    pub fn store_call(&self, elapsed: Duration, ok: bool) {
        self.store_duration.observe(elapsed.as_secs_f64());
        if !ok {
            self.store_errors.inc();
        }
    }

    pub fn auth_rejected(&self, reason: AuthRejection) {
        self.auth_rejections
            .get_or_create(&RejectionLabels { reason })
            .inc();
    }

    pub fn auth_cache(&self, result: CacheResult) {
        self.auth_cache.get_or_create(&CacheLabels { result }).inc();
    }

    pub fn bcrypt_verified(&self) {
        self.bcrypt_verifications.inc();
    }

    /// Counts a request in flight until the guard drops.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Decrements the in-flight gauge when dropped.
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_named_series() {
        let m = Metrics::new();
        m.request(Outcome::forwarded, Duration::from_millis(3));
        m.auth_rejected(AuthRejection::checksum);
        m.auth_cache(CacheResult::hit);
        m.bcrypt_verified();
        {
            let _g = m.in_flight();
        }
        let text = m.encode();
        for needle in [
            "tollgate_requests_total{outcome=\"forwarded\"} 1",
            "tollgate_auth_rejections_total{reason=\"checksum\"} 1",
            "tollgate_auth_cache_total{result=\"hit\"} 1",
            "tollgate_bcrypt_verifications_total 1",
            "tollgate_in_flight_requests 0",
            "tollgate_request_duration_seconds_bucket",
            "tollgate_build_info{version=",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
