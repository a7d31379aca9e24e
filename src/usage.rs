//! The usage document of SPEC.md, computed from a [`LimitState`].

use serde::{Deserialize, Serialize};

use crate::clock::iso8601;
use crate::limits::LimitState;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UsageDoc {
    pub rate_limit: RateLimitUsage,
    pub monthly_quota: QuotaUsage,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RateLimitUsage {
    pub limit: u64,
    pub remaining: u64,
    pub period: String,
    pub reset_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct QuotaUsage {
    pub limit: u64,
    pub used: u64,
    pub remaining: u64,
    pub period: String,
    pub period_start: String,
    pub period_end: String,
}

impl From<&LimitState> for UsageDoc {
    fn from(s: &LimitState) -> Self {
        let period_start = s.period.first_day.to_string();
        let period_end = s.period.last_day.to_string();
        UsageDoc {
            rate_limit: RateLimitUsage {
                limit: s.per_minute,
                remaining: s.remaining,
                period: "minute".into(),
                reset_at: iso8601(s.reset_at),
            },
            monthly_quota: QuotaUsage {
                limit: s.monthly,
                used: s.monthly_used,
                remaining: s.monthly_remaining(),
                period: "month".into(),
                period_start,
                period_end,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_spec_example() {
        let s = LimitState {
            now_ms: 1_770_717_630_000,
            per_minute: 100,
            remaining: 87,
            reset_at: 1_770_717_660,
            monthly: 10_000,
            monthly_used: 3456,
            window_retry_at_ms: None,
            period: crate::limits::cycle::Cycle::utc_month().period_at(1_770_717_630_000),
        };
        let v = serde_json::to_value(UsageDoc::from(&s)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "rate_limit": {"limit": 100, "remaining": 87, "period": "minute", "reset_at": "2026-02-10T10:01:00Z"},
                "monthly_quota": {"limit": 10000, "used": 3456, "remaining": 6544, "period": "month",
                                  "period_start": "2026-02-01", "period_end": "2026-02-28"}
            })
        );
    }
}
