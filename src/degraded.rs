//! `[store] failure_mode = "open"`: admission from local limits while the
//! store cannot be reached.
//!
//! Owns the degraded state of the process. Only keys this process has
//! verified reach it (an unknown key needs the store to verify and gets 503),
//! so authentication always fails closed. For those keys a per-process
//! limiter enforces the client's limits divided by `[store] replicas`: the
//! per-minute sliding window ([`Window`], the same maths as the store) and a
//! share of what was left of the monthly quota when the store last answered.
//! The limits come from the last decision the store made for the client in
//! this process (the configured defaults if there was none); a client last
//! seen suspended stays refused. The decision's [`LimitState`] describes the
//! local limits, so the `X-RateLimit-*` headers say what is enforced.
//!
//! Nothing is counted silently: entering and leaving degraded mode are
//! logged (leaving says how many requests were admitted locally, which the
//! store never counted), `tollgate_store_degraded` is 1 meanwhile and
//! `tollgate_degraded_admissions` counts each local admission.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::auth::Principal;
use crate::limits::cycle::{Cycle, Period};
use crate::limits::window::Window;
use crate::limits::{Decision, LimitState, Limits, Verdict};
use crate::metrics::Metrics;

/// The degraded-mode state of one process.
#[derive(Debug)]
pub struct Degraded {
    replicas: u64,
    active: AtomicBool,
    /// Requests admitted locally since degraded mode was entered.
    admitted: AtomicU64,
    clients: Mutex<HashMap<Arc<str>, Local>>,
}

/// What this process knows of one client.
#[derive(Debug, Default)]
struct Local {
    /// From the store's last decision: limits, monthly use and its month.
    known: Option<Known>,
    window: Window,
    /// Requests admitted locally in the period starting at `month_period` (Unix ms).
    month_count: u64,
    month_period: i64,
}

#[derive(Debug, Clone, Copy)]
struct Known {
    per_minute: u64,
    monthly: u64,
    monthly_used: u64,
    period: Period,
    suspended: bool,
}

impl Degraded {
    pub fn new(replicas: u64) -> Degraded {
        Degraded {
            replicas: replicas.max(1),
            active: AtomicBool::new(false),
            admitted: AtomicU64::new(0),
            clients: Mutex::new(HashMap::new()),
        }
    }

    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Records the store's decision for a client; leaves degraded mode.
    pub fn observe(&self, client_id: &Arc<str>, d: &Decision, metrics: &Metrics) {
        if self.active.swap(false, Ordering::Relaxed) {
            metrics.set_store_degraded(false);
            let admitted = self.admitted.swap(0, Ordering::Relaxed);
            tracing::warn!(
                admitted_locally = admitted,
                "store reachable again: leaving degraded mode; requests admitted locally \
                 meanwhile were not counted in the store"
            );
            let mut clients = self.clients.lock();
            for l in clients.values_mut() {
                l.window = Window::default();
                l.month_count = 0;
            }
        }
        let Some(st) = d.state else { return };
        let known = Known {
            per_minute: st.per_minute,
            monthly: st.monthly,
            monthly_used: st.monthly_used,
            period: st.period,
            suspended: d.verdict == Verdict::ClientSuspended,
        };
        self.clients
            .lock()
            .entry(client_id.clone())
            .or_default()
            .known = Some(known);
    }

    /// Decides a request of `cost` units locally (the store just failed);
    /// enters degraded mode.
    pub fn admit(
        &self,
        p: &Principal,
        scope: Option<&str>,
        (defaults, cost): (Limits, u64),
        now_ms: i64,
        metrics: &Metrics,
    ) -> Decision {
        let cost = cost.max(1);
        if !self.active.swap(true, Ordering::Relaxed) {
            metrics.set_store_degraded(true);
            tracing::warn!(
                replicas = self.replicas,
                "store unreachable: entering degraded mode (failure_mode = \"open\"); \
                 verified keys are served from local limits divided by store.replicas, \
                 unknown keys are refused"
            );
        }
        let mut clients = self.clients.lock();
        let local = clients.entry(p.client_id.clone()).or_default();
        // The client's period as the store last described it; once that
        // has ended (or for a client never seen), the UTC month: the
        // cycle itself is the store's to know.
        let fallback = Cycle::utc_month().period_at(now_ms);
        let known = local.known.unwrap_or(Known {
            per_minute: defaults.per_minute,
            monthly: defaults.monthly,
            monthly_used: 0,
            period: fallback,
            suspended: false,
        });
        let period = if known.period.start_ms <= now_ms && now_ms < known.period.end_ms {
            known.period
        } else {
            fallback
        };
        if local.month_period != period.start_ms {
            local.month_period = period.start_ms;
            local.month_count = 0;
        }
        let used_before = if known.period.start_ms == period.start_ms {
            known.monthly_used
        } else {
            0
        };
        let per_minute = (known.per_minute / self.replicas).max(1);
        let month_share = known.monthly.saturating_sub(used_before) / self.replicas;

        local.window.expire(now_ms);
        let before = local.window.state(now_ms, per_minute);
        let verdict = if known.suspended {
            Verdict::ClientSuspended
        } else if scope.is_some_and(|s| !p.has_scope(s)) {
            Verdict::ScopeDenied
        } else if local.month_count + cost > month_share {
            Verdict::QuotaExhausted
        } else if before.count + cost > per_minute {
            Verdict::RateLimited
        } else {
            local.window.add(now_ms, cost);
            local.month_count += cost;
            self.admitted.fetch_add(1, Ordering::Relaxed);
            metrics.degraded_admission();
            Verdict::Admitted
        };
        let w = local.window.state(now_ms, per_minute);
        Decision {
            verdict,
            policy: crate::limits::policy::PolicyOutcome {
                cost,
                ..Default::default()
            },
            state: Some(LimitState {
                now_ms,
                per_minute,
                remaining: w.remaining,
                reset_at: w.reset_at,
                // The quota this process enforces: what was used plus its share.
                monthly: used_before + month_share,
                monthly_used: used_before + local.month_count,
                window_retry_at_ms: (verdict == Verdict::RateLimited)
                    .then_some(before.retry_at_ms)
                    .flatten(),
                period,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_770_717_600_000;

    fn principal() -> Principal {
        Principal::new(Arc::from("k"), Arc::from("acme"), 0, &["read:x".to_owned()])
    }

    #[test]
    fn local_limits_are_divided_by_replicas_and_reset_on_recovery() {
        let m = Metrics::new();
        let d = Degraded::new(3);
        let known = Decision {
            verdict: Verdict::Admitted,
            policy: Default::default(),
            state: Some(LimitState {
                now_ms: T0,
                per_minute: 30,
                remaining: 29,
                reset_at: T0 / 1000 + 61,
                monthly: 1000,
                monthly_used: 400,
                window_retry_at_ms: None,
                period: Cycle::utc_month().period_at(T0),
            }),
        };
        d.observe(&Arc::from("acme"), &known, &m);
        let p = principal();
        let lim = Limits {
            per_minute: 5,
            monthly: 5,
        };
        let verdicts: Vec<_> = (0..11)
            .map(|_| d.admit(&p, Some("read:x"), (lim, 1), T0, &m))
            .collect();
        assert!(d.is_active());
        let admitted = verdicts
            .iter()
            .filter(|v| v.verdict == Verdict::Admitted)
            .count();
        assert_eq!(admitted, 10);
        let last = verdicts[10];
        assert_eq!(last.verdict, Verdict::RateLimited);
        let st = last.state.unwrap();
        assert_eq!((st.per_minute, st.remaining), (10, 0));
        assert_eq!((st.monthly, st.monthly_used), (400 + 200, 410));
        assert_eq!(st.window_retry_at_ms, Some(T0 + 61_000));
        assert_eq!(
            d.admit(&p, Some("write:x"), (lim, 1), T0, &m).verdict,
            Verdict::ScopeDenied
        );
        d.observe(&Arc::from("acme"), &known, &m);
        assert!(!d.is_active());
        assert_eq!(
            d.admit(&p, None, (lim, 1), T0, &m).verdict,
            Verdict::Admitted,
            "local window starts afresh"
        );
    }

    #[test]
    fn a_route_cost_counts_its_units_locally() {
        let m = Metrics::new();
        let d = Degraded::new(1);
        let lim = Limits {
            per_minute: 10,
            monthly: 1000,
        };
        let p = principal();
        let got: Vec<_> = (0..3)
            .map(|_| d.admit(&p, None, (lim, 4), T0, &m))
            .map(|d| (d.verdict, d.policy.cost))
            .collect();
        assert_eq!(
            got,
            [
                (Verdict::Admitted, 4),
                (Verdict::Admitted, 4),
                (Verdict::RateLimited, 4)
            ]
        );
        // 2 units left: a request of cost 2 fits exactly.
        let last = d.admit(&p, None, (lim, 2), T0, &m);
        assert_eq!(last.verdict, Verdict::Admitted);
        assert_eq!(last.state.map(|s| s.remaining), Some(0));
    }

    #[test]
    fn unknown_client_gets_the_defaults_divided_and_suspended_stays_refused() {
        let m = Metrics::new();
        let d = Degraded::new(2);
        let lim = Limits {
            per_minute: 4,
            monthly: 3,
        };
        let p = principal();
        let v: Vec<_> = (0..3)
            .map(|_| d.admit(&p, None, (lim, 1), T0, &m).verdict)
            .collect();
        assert_eq!(
            v,
            [
                Verdict::Admitted,
                Verdict::QuotaExhausted,
                Verdict::QuotaExhausted
            ]
        );
        let suspended = Decision {
            verdict: Verdict::ClientSuspended,
            policy: Default::default(),
            state: Some(LimitState {
                now_ms: T0,
                per_minute: 4,
                remaining: 4,
                reset_at: T0 / 1000,
                monthly: 3,
                monthly_used: 0,
                window_retry_at_ms: None,
                period: Cycle::utc_month().period_at(T0),
            }),
        };
        d.observe(&Arc::from("acme"), &suspended, &m);
        assert_eq!(
            d.admit(&p, None, (lim, 1), T0, &m).verdict,
            Verdict::ClientSuspended
        );
    }
}
