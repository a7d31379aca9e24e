//! Prometheus metrics: every metric name is defined here, once. Nothing here
//! ever takes a secret or a key id as a label; a client id only behind the
//! `[metrics] per_client` opt-in, and then for at most `per_client_max`
//! distinct clients (later ones are counted under [`OTHER_CLIENTS`]).

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;

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

/// The label value for clients beyond `per_client_max`. It cannot be a client
/// id (those start with a letter or digit).
pub const OTHER_CLIENTS: &str = "_other";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientLabels {
    client: Arc<str>,
    outcome: Outcome,
}

/// How a config reload ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ReloadResult {
    /// The new config is in force (settings that need a restart excepted).
    ok,
    /// The file was refused; the previous config keeps serving.
    failed,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuotaLabels {
    client: Arc<str>,
}

/// Policies: why a request was shadowed (the refusal it would have got), or refunded.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Notifications: what became of a delivery attempt or notification.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: ReloadResult,
}

/// The process's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: ByVariant<OutcomeLabels>,
    request_duration: Histogram,
    upstream_duration: Histogram,
    store_duration: Histogram,
    store_errors: Counter,
    auth_rejections: Family<RejectionLabels, Counter>,
    auth_cache: ByVariant<CacheLabels>,
    bcrypt_verifications: Counter,
    in_flight: Gauge,
    config_reloads: Family<ReloadLabels, Counter>,
    client_requests: Family<ClientLabels, Counter>,
    client_quota_used: Family<QuotaLabels, Gauge<f64, AtomicU64>>,
    /// The client ids that have a label of their own.
    labelled_clients: Mutex<HashSet<Arc<str>>>,
    other_clients: Arc<str>,
    store_degraded: Gauge,
    degraded_admissions: Counter,
    config_restart_required: Gauge,
    shadow_refusals: Family<ReasonLabels, Counter>,
    refunds: Family<ReasonLabels, Counter>,
    refunds_dropped: Counter,
    plan_unknown: Counter,
    notifications: Family<ResultLabels, Counter>,
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
        let store_degraded = Gauge::default();
        registry.register(
            "store_degraded",
            "1 while the store is unreachable and failure_mode = \"open\" serves known keys from local limits",
            store_degraded.clone(),
        );
        let config_restart_required = Gauge::default();
        registry.register(
            "config_restart_required",
            "Restart-only settings whose value in the config file differs from the running one \
             (set by each successful reload; 0 when the file agrees with the process)",
            config_restart_required.clone(),
        );
        let degraded_admissions = Counter::default();
        registry.register(
            "degraded_admissions",
            "Requests admitted by the local limiter while the store was unreachable (not counted in the store)",
            degraded_admissions.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        registry.register("build_info", "Build information", build);
        let config_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reloads (SIGHUP or file change), by result",
            config_reloads.clone(),
        );
        for result in [ReloadResult::ok, ReloadResult::failed] {
            let _ = config_reloads.get_or_create(&ReloadLabels { result });
        }
        let client_requests = Family::<ClientLabels, Counter>::default();
        registry.register(
            "client_requests",
            "Public requests with a valid key, by client and outcome \
             (only with [metrics] per_client = true)",
            client_requests.clone(),
        );
        let client_quota_used = Family::<QuotaLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "client_quota_used_ratio",
            "Share of the monthly quota used, by client, as of the client's latest request \
             that reached the store (only with [metrics] per_client = true, and only for \
             clients with a label of their own)",
            client_quota_used.clone(),
        );
        let shadow_refusals = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "shadow_refusals",
            "Requests forwarded and counted under shadow mode that the limits would have \
             refused, by the refusal (rate_limited, quota_exceeded)",
            shadow_refusals.clone(),
        );
        let refunds = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "refunds",
            "Admitted requests given back to the client's counters ([limits] refund_on), \
             by outcome (unreachable, 5xx)",
            refunds.clone(),
        );
        let refunds_dropped = Counter::default();
        registry.register(
            "refunds_dropped",
            "Refunds not applied: the refund queue was full or the store call failed",
            refunds_dropped.clone(),
        );
        let notifications = Family::<ResultLabels, Counter>::default();
        registry.register(
            "notifications",
            "Quota threshold notifications (docs/billing.md), by result: delivered (2xx), \
             failed (an attempt that got no 2xx; retried), expired (dropped at the period's end), \
             dropped (the in-memory bound was full)",
            notifications.clone(),
        );
        let plan_unknown = Counter::default();
        registry.register(
            "plan_unknown_requests",
            "Requests of clients whose plan the config does not define (served with [limits])",
            plan_unknown.clone(),
        );
        Metrics {
            shadow_refusals,
            refunds,
            refunds_dropped,
            plan_unknown,
            notifications,
            registry,
            requests: ByVariant::new(requests),
            request_duration,
            upstream_duration,
            store_duration,
            store_errors,
            auth_rejections,
            auth_cache: ByVariant::new(auth_cache),
            bcrypt_verifications,
            in_flight,
            config_reloads,
            client_requests,
            client_quota_used,
            labelled_clients: Mutex::new(HashSet::new()),
            other_clients: Arc::from(OTHER_CLIENTS),
            store_degraded,
            degraded_admissions,
            config_restart_required,
        }
    }

    /// Counts a request of `client` when `cfg.per_client` is on. The first
    /// `cfg.per_client_max` distinct clients get a label of their own. With
    /// `quota` (monthly `used`, `limit`, as the store reported them for this
    /// request), a labelled client's quota gauge is set too.
    pub fn client_request(
        &self,
        cfg: &crate::config::MetricsConfig,
        client: &Arc<str>,
        outcome: Outcome,
        quota: Option<(u64, u64)>,
    ) {
        if !cfg.per_client {
            return;
        }
        let client = {
            let mut seen = self.labelled_clients.lock();
            if seen.contains(client) {
                client.clone()
            } else if seen.len() < cfg.per_client_max {
                seen.insert(client.clone());
                client.clone()
            } else {
                self.other_clients.clone()
            }
        };
        if let Some((used, limit)) = quota.filter(|&(_, limit)| limit > 0) {
            if !Arc::ptr_eq(&client, &self.other_clients) {
                self.client_quota_used
                    .get_or_create(&QuotaLabels {
                        client: client.clone(),
                    })
                    .set(used as f64 / limit as f64);
            }
        }
        self.client_requests
            .get_or_create(&ClientLabels { client, outcome })
            .inc();
    }

    pub fn config_reload(&self, result: ReloadResult) {
        self.config_reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
    }

    /// Sets `tollgate_config_restart_required`.
    pub fn config_restart_required(&self, settings: usize) {
        self.config_restart_required
            .set(i64::try_from(settings).unwrap_or(i64::MAX));
    }

    /// Sets `tollgate_store_degraded`.
    pub fn set_store_degraded(&self, degraded: bool) {
        self.store_degraded.set(i64::from(degraded));
    }

    /// Counts one request admitted by the local limiter.
    pub fn degraded_admission(&self) {
        self.degraded_admissions.inc();
    }

    /// Policies: a request forwarded under shadow mode that the limits would
    /// have refused (`reason`: `rate_limited` or `quota_exceeded`).
    pub fn shadow_refusal(&self, reason: &'static str) {
        self.shadow_refusals
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Policies: a refund applied (`reason`: `unreachable` or `5xx`).
    pub fn refund(&self, reason: &'static str) {
        self.refunds.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Notifications: `result` is `delivered`, `failed`, `expired` or `dropped`.
    pub fn notification(&self, result: &'static str) {
        self.notifications
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Policies: a refund that was not applied.
    pub fn refund_dropped(&self) {
        self.refunds_dropped.inc();
    }

    /// Policies: a request of a client whose plan is not defined.
    pub fn plan_unknown(&self) {
        self.plan_unknown.inc();
    }

    pub fn request(&self, outcome: Outcome, elapsed: Duration) {
        self.requests
            .inc(outcome as usize, || OutcomeLabels { outcome });
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
        self.auth_cache
            .inc(result as usize, || CacheLabels { result });
    }

    pub fn bcrypt_verified(&self) {
        self.bcrypt_verifications.inc();
    }

    /// Public requests being served right now.
    pub fn in_flight_now(&self) -> i64 {
        self.in_flight.get()
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

/// Series of a per-request counter family whose one label is a fieldless
/// enum, by the variant's index. Each series is created in the family on first
/// use (so the exposition lists the ones that happened, as any family does),
/// then found again without hashing the labels or taking the family's lock.
#[derive(Debug)]
struct ByVariant<L> {
    family: Family<L, Counter>,
    series: [OnceLock<Counter>; MAX_VARIANTS],
}

/// Variants a [`ByVariant`] indexes; a later one is looked up in the family.
const MAX_VARIANTS: usize = 16;

impl<L: Clone + std::hash::Hash + Eq> ByVariant<L> {
    fn new(family: Family<L, Counter>) -> Self {
        ByVariant {
            family,
            series: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Counts one in the series of variant `index`, whose labels `labels` makes.
    fn inc(&self, index: usize, labels: impl FnOnce() -> L) {
        match self.series.get(index) {
            Some(cell) => {
                cell.get_or_init(|| self.family.get_or_create(&labels()).clone())
                    .inc();
            }
            None => {
                self.family.get_or_create(&labels()).inc();
            }
        }
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
            "tollgate_config_reloads_total{result=\"ok\"} 0",
            "tollgate_config_reloads_total{result=\"failed\"} 0",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert!(!text.contains("tollgate_client_requests_total{"), "{text}");
    }

    #[test]
    fn enum_labelled_series_appear_when_first_counted_and_keep_counting() {
        let m = Metrics::new();
        assert!(!m.encode().contains("tollgate_requests_total{"));
        for _ in 0..3 {
            m.request(Outcome::auth_throttled, Duration::from_millis(1));
        }
        m.request(Outcome::served, Duration::from_millis(1));
        m.auth_cache(CacheResult::miss);
        m.auth_cache(CacheResult::miss);
        let text = m.encode();
        for needle in [
            "tollgate_requests_total{outcome=\"auth_throttled\"} 3",
            "tollgate_requests_total{outcome=\"served\"} 1",
            "tollgate_auth_cache_total{result=\"miss\"} 2",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert!(!text.contains("outcome=\"forwarded\""), "{text}");
        assert!(!text.contains("result=\"hit\""), "{text}");

        // Past the indexed variants, the family itself counts.
        let family = Family::<OutcomeLabels, Counter>::default();
        let few = ByVariant {
            family: family.clone(),
            series: std::array::from_fn(|_| OnceLock::new()),
        };
        few.inc(MAX_VARIANTS + 1, || OutcomeLabels {
            outcome: Outcome::forbidden,
        });
        let n = family
            .get_or_create(&OutcomeLabels {
                outcome: Outcome::forbidden,
            })
            .get();
        assert_eq!(n, 1);
    }

    #[test]
    fn per_client_labels_are_opt_in_and_capped() {
        use crate::config::MetricsConfig;
        let m = Metrics::new();
        let off = MetricsConfig {
            per_client: false,
            per_client_max: 10,
        };
        m.client_request(&off, &Arc::from("acme"), Outcome::forwarded, Some((5, 10)));
        assert!(!m.encode().contains("client=\"acme\""));
        let on = MetricsConfig {
            per_client: true,
            per_client_max: 2,
        };
        for client in ["a", "b", "c", "d", "a"] {
            m.client_request(&on, &Arc::from(client), Outcome::forwarded, Some((9, 10)));
        }
        // A refusal without a limit state leaves the gauge as it was; a
        // quota of 0 (nothing allowed) sets nothing rather than dividing by it.
        m.client_request(&on, &Arc::from("b"), Outcome::unauthorized, None);
        m.client_request(&on, &Arc::from("a"), Outcome::rate_limited, Some((3, 4)));
        m.client_request(&on, &Arc::from("b"), Outcome::rate_limited, Some((3, 0)));
        let text = m.encode();
        for needle in [
            "tollgate_client_requests_total{client=\"a\",outcome=\"forwarded\"} 2",
            "tollgate_client_requests_total{client=\"b\",outcome=\"forwarded\"} 1",
            "tollgate_client_requests_total{client=\"_other\",outcome=\"forwarded\"} 2",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert!(!text.contains("client=\"c\""), "{text}");
        // The quota gauge: labelled clients only, never `_other`.
        assert!(
            text.contains("tollgate_client_quota_used_ratio{client=\"a\"} 0.75"),
            "{text}"
        );
        assert!(
            text.contains("tollgate_client_quota_used_ratio{client=\"b\"} 0.9"),
            "{text}"
        );
        assert!(
            !text.contains("tollgate_client_quota_used_ratio{client=\"_other\"}"),
            "{text}"
        );
        assert!(
            !text.contains("tollgate_client_quota_used_ratio{client=\"acme\"}"),
            "{text}"
        );
    }
}
