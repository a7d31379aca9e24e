//! Daily usage history (SPEC.md "History"; docs/billing.md): per client and
//! local day of its `quota_tz`, the requests forwarded, refused by the
//! per-minute limit, refused by the quota, and refunded.
//!
//! This module owns the history's types, the query's rules (dates, range,
//! the default range) and the memory store's per-client book. The counting
//! itself happens inside each store's atomic admission (the Redis store's
//! `admit.lua`, one hash per client-day, `store::redis::layout::history_day`)
//! so it costs no extra round trip; nothing here does I/O.
//!
//! A refund moves its units from `forwarded` to `refunded` of the day it was
//! counted in: [`DayBook::refund`] on the memory store, `settle.lua`'s
//! `refund` mode on Redis.

use std::collections::BTreeMap;

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::limits::cycle::Cycle;

/// `[history] days` when the config sets none.
pub const DEFAULT_DAYS: u32 = 400;
/// Accepted `[history] days`.
pub const DAYS_RANGE: std::ops::RangeInclusive<u32> = 1..=3660;
/// Longest range one history query may ask for, in days (both ends included).
pub const MAX_QUERY_DAYS: i32 = 400;

/// One day of a client's history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayCounts {
    pub forwarded: u64,
    pub rate_limited: u64,
    pub quota_exceeded: u64,
    pub refunded: u64,
}

impl DayCounts {
    pub fn is_empty(&self) -> bool {
        *self == DayCounts::default()
    }
}

/// A day of the history document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayEntry {
    /// `YYYY-MM-DD`, in the client's `quota_tz`.
    pub date: String,
    #[serde(flatten)]
    pub counts: DayCounts,
}

/// `GET /admin/v1/clients/{id}/usage/history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryDoc {
    pub client_id: String,
    pub time_zone: String,
    /// Every day of the range, in order, zeros included.
    pub days: Vec<DayEntry>,
}

impl HistoryDoc {
    /// The document for days `from..=to`, filled from `counts` (missing
    /// days are zeros).
    pub fn new(client_id: &str, cycle: &Cycle, range: Range, counts: &[DayCounts]) -> Self {
        let days = range
            .days()
            .zip(
                counts
                    .iter()
                    .copied()
                    .chain(std::iter::repeat(DayCounts::default())),
            )
            .map(|(d, counts)| DayEntry {
                date: d.to_string(),
                counts,
            })
            .collect();
        HistoryDoc {
            client_id: client_id.to_owned(),
            time_zone: cycle.zone_name().to_owned(),
            days,
        }
    }
}

/// A validated range of local dates, both ends included, at most
/// [`MAX_QUERY_DAYS`] days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from: Date,
    pub to: Date,
}

impl Range {
    /// The range of `from` and `to` (each `YYYY-MM-DD`, absent: the first
    /// and last day of the period containing `now_ms`), or the message a
    /// bad one is refused with.
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        cycle: &Cycle,
        now_ms: i64,
    ) -> Result<Range, String> {
        let period = cycle.period_at(now_ms);
        let date = |name: &str, v: Option<&str>, default: Date| match v {
            None => Ok(default),
            Some(s) => parse_date(s)
                .ok_or_else(|| format!("\"{name}\" must be a date YYYY-MM-DD, got {:?}", clip(s))),
        };
        let from = date("from", from, period.first_day)?;
        let to = date("to", to, period.last_day)?;
        if from > to {
            return Err(format!("\"from\" ({from}) is after \"to\" ({to})"));
        }
        let span = from.until(to).map(|s| s.get_days()).unwrap_or(i32::MAX);
        if span >= MAX_QUERY_DAYS {
            return Err(format!(
                "the range may cover at most {MAX_QUERY_DAYS} days, got {}",
                i64::from(span) + 1
            ));
        }
        Ok(Range { from, to })
    }

    /// Every date of the range, in order.
    pub fn days(self) -> impl Iterator<Item = Date> {
        let to = self.to;
        std::iter::successors(Some(self.from), move |d| {
            d.tomorrow().ok().filter(|n| *n <= to)
        })
    }
}

/// `YYYY-MM-DD` exactly (jiff alone also reads other forms).
pub fn parse_date(s: &str) -> Option<Date> {
    let b = s.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return None;
    }
    s.parse().ok()
}

fn clip(s: &str) -> String {
    s.chars().take(32).collect()
}

/// The memory store's history of one client: its days, the oldest pruned
/// once more than `keep` days older than the newest.
#[derive(Debug, Default)]
pub struct DayBook {
    days: BTreeMap<Date, DayCounts>,
}

/// Which count of a day a request adds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    Forwarded,
    RateLimited,
    QuotaExceeded,
}

impl DayBook {
    /// Adds `n` requests to `day`, then forgets days over `keep` days before it.
    pub fn add(&mut self, day: Date, what: Counted, n: u64, keep: u32) {
        if n == 0 {
            return;
        }
        let c = self.days.entry(day).or_default();
        match what {
            Counted::Forwarded => c.forwarded += n,
            Counted::RateLimited => c.rate_limited += n,
            Counted::QuotaExceeded => c.quota_exceeded += n,
        }
        if let Ok(oldest) = day.checked_sub(jiff::Span::new().days(i64::from(keep))) {
            self.days = self.days.split_off(&oldest);
        }
    }

    /// A refund: `n` units of `day` move from `forwarded` to `refunded`.
    pub fn refund(&mut self, day: Date, n: u64) {
        if let Some(c) = self.days.get_mut(&day) {
            c.refunded += n;
            c.forwarded = c.forwarded.saturating_sub(n);
        }
    }

    /// The counts of every day of `range` (zeros where none).
    pub fn counts(&self, range: Range) -> Vec<DayCounts> {
        range
            .days()
            .map(|d| self.days.get(&d).copied().unwrap_or_default())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Date {
        s.parse().unwrap()
    }

    /// 2026-02-10T10:01:00Z.
    const NOW: i64 = 1_770_717_660_000;

    #[test]
    fn ranges_default_to_the_period_and_refuse_bad_input() {
        let c = Cycle::new(15, "Europe/Berlin").unwrap();
        let r = Range::parse(None, None, &c, NOW).unwrap();
        assert_eq!((r.from, r.to), (d("2026-01-15"), d("2026-02-14")));
        assert_eq!(r.days().count(), 31);
        let r = Range::parse(Some("2026-02-01"), Some("2026-02-01"), &c, NOW).unwrap();
        assert_eq!(r.days().collect::<Vec<_>>(), [d("2026-02-01")]);
        let ok = Range::parse(Some("2025-01-01"), Some("2026-02-04"), &c, NOW).unwrap();
        assert_eq!(ok.days().count(), 400);
        for (from, to, want) in [
            (Some("2026-02-02"), Some("2026-02-01"), "is after"),
            (
                Some("2025-01-01"),
                Some("2026-02-05"),
                "at most 400 days, got 401",
            ),
            (Some("2026-2-1"), None, "\"from\" must be a date YYYY-MM-DD"),
            (None, Some("2026-02-30"), "\"to\" must be a date"),
            (None, Some("yesterday"), "\"to\" must be a date"),
            (Some("+02026-02-01"), None, "must be a date"),
        ] {
            let e = Range::parse(from, to, &c, NOW).unwrap_err();
            assert!(e.contains(want), "{from:?} {to:?}: {e}");
        }
    }

    #[test]
    fn the_book_keeps_days_and_prunes_old_ones() {
        let mut b = DayBook::default();
        b.add(d("2026-01-01"), Counted::Forwarded, 3, 30);
        b.add(d("2026-01-02"), Counted::RateLimited, 2, 30);
        b.add(d("2026-01-02"), Counted::QuotaExceeded, 1, 30);
        b.refund(d("2026-01-01"), 1);
        let r = Range {
            from: d("2026-01-01"),
            to: d("2026-01-03"),
        };
        let c = b.counts(r);
        assert_eq!(
            c[0],
            DayCounts {
                forwarded: 2,
                refunded: 1,
                ..DayCounts::default()
            }
        );
        assert_eq!((c[1].rate_limited, c[1].quota_exceeded), (2, 1));
        assert!(c[2].is_empty());
        // 31 days later the first day has gone, the second stays.
        b.add(d("2026-02-01"), Counted::Forwarded, 1, 30);
        let c = b.counts(r);
        assert!(c[0].is_empty());
        assert_eq!(c[1].rate_limited, 2);
    }

    #[test]
    fn the_document_has_every_day() {
        let c = Cycle::new(1, "Asia/Kolkata").unwrap();
        let r = Range {
            from: d("2026-02-27"),
            to: d("2026-03-01"),
        };
        let doc = HistoryDoc::new(
            "acme",
            &c,
            r,
            &[DayCounts {
                forwarded: 5,
                ..DayCounts::default()
            }],
        );
        let v = serde_json::to_value(&doc).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"client_id": "acme", "time_zone": "Asia/Kolkata", "days": [
                {"date": "2026-02-27", "forwarded": 5, "rate_limited": 0, "quota_exceeded": 0, "refunded": 0},
                {"date": "2026-02-28", "forwarded": 0, "rate_limited": 0, "quota_exceeded": 0, "refunded": 0},
                {"date": "2026-03-01", "forwarded": 0, "rate_limited": 0, "quota_exceeded": 0, "refunded": 0},
            ]})
        );
    }
}
