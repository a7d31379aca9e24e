//! Rate-limit decisions and the pure maths behind them.
//!
//! [`window`] is the per-minute sliding window, [`month`] the calendar-month
//! quota; both take `now` as an argument and do no I/O. A [`Decision`] carries
//! everything a response needs (headers, 429 body, usage document), so those
//! are computed by one piece of code from one value.

pub mod cycle;
pub mod month;
pub mod policy;
pub mod window;

/// The per-client limits in force for one decision. Serializes as
/// `[limits]` in the config file (`tollgate check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Limits {
    pub per_minute: u64,
    pub monthly: u64,
}

/// What the store decided about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forwarded and counted against both limits.
    Admitted,
    /// The key does not exist (any more), expired, or its secret generation is stale.
    KeyInvalid,
    /// The key's client does not exist.
    ClientMissing,
    /// The key's client is suspended.
    ClientSuspended,
    /// The key lacks the scope the route needs.
    ScopeDenied,
    /// The per-minute window is full.
    RateLimited,
    /// The calendar-month quota is used up.
    QuotaExhausted,
}

/// The limit state of a client at the instant of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitState {
    /// The store's clock at the decision, Unix milliseconds.
    pub now_ms: i64,
    pub per_minute: u64,
    /// Requests left in the window after this decision.
    pub remaining: u64,
    /// Unix seconds at which the window's oldest counted request leaves it.
    pub reset_at: i64,
    pub monthly: u64,
    pub monthly_used: u64,
    /// For `RateLimited`: Unix milliseconds at which one more request is admitted.
    pub window_retry_at_ms: Option<i64>,
}

impl LimitState {
    /// Whole seconds to wait before a request is admitted again (at least 1),
    /// for a refusal with this verdict; `None` for verdicts that waiting does not cure.
    pub fn retry_after_secs(&self, verdict: Verdict) -> Option<u64> {
        let at_ms = match verdict {
            Verdict::RateLimited => self.window_retry_at_ms?,
            Verdict::QuotaExhausted => month::next_month_start(self.now_ms.div_euclid(1000)) * 1000,
            _ => return None,
        };
        let wait_ms = (at_ms - self.now_ms).max(0) as u64;
        Some(wait_ms.div_ceil(1000).max(1))
    }

    pub fn monthly_remaining(&self) -> u64 {
        self.monthly.saturating_sub(self.monthly_used)
    }
}

/// A verdict and the limit state it was made in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// Absent only when there is no client to describe (`KeyInvalid`, `ClientMissing`).
    pub state: Option<LimitState>,
    /// The route's cost, a shadowed refusal, an unknown plan (`policy`).
    pub policy: policy::PolicyOutcome,
}

impl Decision {
    /// A decision without policy effects (cost 1, nothing shadowed).
    pub fn new(verdict: Verdict, state: Option<LimitState>) -> Decision {
        Decision {
            verdict,
            state,
            policy: policy::PolicyOutcome::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(now_ms: i64, retry_at: Option<i64>) -> LimitState {
        LimitState {
            now_ms,
            per_minute: 10,
            remaining: 0,
            reset_at: 0,
            monthly: 10,
            monthly_used: 10,
            window_retry_at_ms: retry_at,
        }
    }

    #[test]
    fn retry_after_rounds_up_and_is_at_least_one() {
        let s = state(1_000_500, Some(1_003_000));
        assert_eq!(s.retry_after_secs(Verdict::RateLimited), Some(3));
        let s = state(1_000_000, Some(1_000_000));
        assert_eq!(s.retry_after_secs(Verdict::RateLimited), Some(1));
        assert_eq!(s.retry_after_secs(Verdict::ScopeDenied), None);
    }

    #[test]
    fn quota_retry_counts_down_to_the_first() {
        // 2026-02-27T00:00:00Z → 2026-03-01T00:00:00Z is two days.
        let now = 1_772_150_400_000;
        let s = state(now, None);
        assert_eq!(
            s.retry_after_secs(Verdict::QuotaExhausted),
            Some(2 * 86_400)
        );
    }
}
