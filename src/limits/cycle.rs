//! Billing cycles: the quota period of a client whose monthly quota resets
//! on day `quota_day` of the month, at local midnight in the IANA time zone
//! `quota_tz` (SPEC.md, "Billing cycles").
//!
//! This module owns the calendar maths only: given an instant, which period
//! contains it, as two instants (start inclusive, end exclusive) and as the
//! two local dates a person reads (first and last day). It does no I/O and
//! takes the instant as an argument; the store decides *which* instant (its
//! own clock, Redis `TIME`).
//!
//! Rules:
//! - The period starts at local midnight of `quota_day` and ends at local
//!   midnight of `quota_day` of the next month.
//! - A month without that day (31 in April, 29–31 in February) resets on its
//!   last day instead: `quota_day = 31` gives Jan 31, Feb 28 (29 in a leap
//!   year), Mar 31, Apr 30, …
//! - A local midnight that does not exist (a DST gap that starts at
//!   midnight, as in America/Santiago or Asia/Beirut) starts the period at
//!   the first instant after the gap; a midnight that exists twice (a fold)
//!   starts it at the first of the two. These are the RFC 5545 "compatible"
//!   rules, which [`jiff`] implements.
//!
//! Why jiff: its bundled tz database (`tzdb-bundle-always`) travels with the
//! binary, so a distroless container without `/usr/share/zoneinfo` resolves
//! zones the same as a full OS, and its gap/fold disambiguation is explicit
//! rather than a `None` to special-case.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// The earliest and latest `quota_day`.
pub const QUOTA_DAY_RANGE: std::ops::RangeInclusive<u8> = 1..=31;

/// Why a cycle cannot be built from a client's fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CycleError {
    #[error("quota_day must be an integer from 1 to 31")]
    Day,
    #[error("quota_tz: unknown time zone {0:?} (an IANA name such as \"Europe/Berlin\")")]
    Zone(String),
}

/// When a client's quota resets.
#[derive(Debug, Clone, PartialEq)]
pub struct Cycle {
    day: u8,
    zone_name: String,
    zone: TimeZone,
}

/// One quota period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// First instant of the period, Unix milliseconds.
    pub start_ms: i64,
    /// First instant of the next period, Unix milliseconds.
    pub end_ms: i64,
    /// The local date the period starts on.
    pub first_day: Date,
    /// The last local date of the period (the day before the next period's
    /// first day).
    pub last_day: Date,
}

impl Cycle {
    /// The calendar-month UTC cycle: the default.
    pub fn utc_month() -> Cycle {
        Cycle {
            day: 1,
            zone_name: "UTC".to_owned(),
            zone: TimeZone::UTC,
        }
    }

    /// The cycle resetting on `day` at local midnight in the zone named `zone`.
    pub fn new(day: u8, zone: &str) -> Result<Cycle, CycleError> {
        if !QUOTA_DAY_RANGE.contains(&day) {
            return Err(CycleError::Day);
        }
        let tz = TimeZone::get(zone).map_err(|_| CycleError::Zone(zone.to_owned()))?;
        Ok(Cycle {
            day,
            zone_name: zone.to_owned(),
            zone: tz,
        })
    }

    pub fn day(&self) -> u8 {
        self.day
    }

    /// `"<day> <zone>"`: names the cycle in the store (admit.lua compares
    /// it with the client's fields).
    pub fn tag(&self) -> String {
        format!("{} {}", self.day, self.zone_name)
    }

    /// Whether `tag` is this cycle's [`Cycle::tag`], without making one.
    pub fn is_tag(&self, tag: &str) -> bool {
        tag.split_once(' ')
            .is_some_and(|(day, zone)| zone == self.zone_name && day.parse() == Ok(self.day))
    }

    /// The local day containing `now_ms`: its date and `[start, end)` in
    /// Unix milliseconds (a day is 23 or 25 hours long across DST).
    pub fn day_at(&self, now_ms: i64) -> (Date, i64, i64) {
        let date = self.local_date(now_ms);
        let next = date.tomorrow().unwrap_or(date);
        (date, self.midnight_ms(date), self.midnight_ms(next))
    }

    /// The IANA name the cycle was built from.
    pub fn zone_name(&self) -> &str {
        &self.zone_name
    }

    /// The period containing the instant `now_ms` (Unix milliseconds).
    pub fn period_at(&self, now_ms: i64) -> Period {
        let local = self.local_date(now_ms);
        // The reset day of the local month, and the instant it happens.
        let this = self.reset_date(local.year(), local.month());
        let this_ms = self.midnight_ms(this);
        let (first_day, start_ms) = if now_ms >= this_ms {
            (this, this_ms)
        } else {
            let prev = month_before(local);
            let d = self.reset_date(prev.year(), prev.month());
            (d, self.midnight_ms(d))
        };
        let next = month_after(first_day);
        let next_day = self.reset_date(next.year(), next.month());
        Period {
            start_ms,
            end_ms: self.midnight_ms(next_day),
            first_day,
            last_day: next_day.yesterday().unwrap_or(next_day),
        }
    }

    /// The local date the instant `ms` falls on in the cycle's zone (the day
    /// a usage-history entry is counted under).
    pub fn local_date(&self, ms: i64) -> Date {
        let t = Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH);
        self.zone.to_datetime(t).date()
    }

    /// The reset day in the month `year`-`month`: `day`, or the month's last
    /// day when the month is shorter.
    fn reset_date(&self, year: i16, month: i8) -> Date {
        let first = Date::new(year, month, 1).unwrap_or(Date::MIN);
        let day = (self.day as i8).min(first.days_in_month());
        Date::new(year, month, day).unwrap_or(first)
    }

    /// The first instant of local `date` (the instant after a gap when its
    /// midnight does not exist; the earlier one when it exists twice).
    fn midnight_ms(&self, date: Date) -> i64 {
        let midnight: DateTime = date.to_datetime(jiff::civil::Time::midnight());
        self.zone
            .to_ambiguous_timestamp(midnight)
            .compatible()
            .map(|t| t.as_millisecond())
            .unwrap_or(i64::MIN)
    }
}

fn month_before(d: Date) -> Date {
    d.first_of_month()
        .checked_sub(1.month())
        .unwrap_or(Date::MIN)
}

fn month_after(d: Date) -> Date {
    d.first_of_month()
        .checked_add(1.month())
        .unwrap_or(Date::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc3339: &str) -> i64 {
        rfc3339
            .parse::<Timestamp>()
            .expect("test instant")
            .as_millisecond()
    }

    fn date(s: &str) -> Date {
        s.parse().expect("test date")
    }

    #[test]
    fn is_tag_matches_exactly_the_cycles_own_tag() {
        let berlin = Cycle::new(15, "Europe/Berlin").expect("cycle");
        assert!(berlin.is_tag(&berlin.tag()));
        for other in [
            "",
            "15",
            "15 ",
            "5 Europe/Berlin",
            "15 Europe/Paris",
            "1 UTC",
            "15 europe/berlin",
            "x Europe/Berlin",
        ] {
            assert!(!berlin.is_tag(other), "{other:?}");
        }
        assert!(Cycle::utc_month().is_tag(&Cycle::utc_month().tag()));
    }

    /// Numbered cases: (zone, quota_day, now, period start, period end, first day, last day).
    #[rustfmt::skip]
    const CASES: &[(&str, u8, &str, &str, &str, &str, &str)] = &[
        // 1. The default: calendar month in UTC.
        ("UTC", 1, "2026-02-10T10:01:00Z", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z", "2026-02-01", "2026-02-28"),
        // 2. A boundary in UTC: the last millisecond of a period and the first of the next.
        ("UTC", 15, "2026-03-14T23:59:59.999Z", "2026-02-15T00:00:00Z", "2026-03-15T00:00:00Z", "2026-02-15", "2026-03-14"),
        ("UTC", 15, "2026-03-15T00:00:00Z", "2026-03-15T00:00:00Z", "2026-04-15T00:00:00Z", "2026-03-15", "2026-04-14"),
        // 4. Los Angeles across the March DST change (PST -8 → PDT -7): the
        //    period is one hour shorter than its days.
        ("America/Los_Angeles", 1, "2026-03-20T12:00:00Z", "2026-03-01T08:00:00Z", "2026-04-01T07:00:00Z", "2026-03-01", "2026-03-31"),
        // 5. … and across November's (PDT → PST): one hour longer.
        ("America/Los_Angeles", 1, "2026-11-02T00:00:00Z", "2026-11-01T07:00:00Z", "2026-12-01T08:00:00Z", "2026-11-01", "2026-11-30"),
        // 6. Just before local midnight in LA it is already the next day in UTC.
        ("America/Los_Angeles", 1, "2026-04-01T06:59:59Z", "2026-03-01T08:00:00Z", "2026-04-01T07:00:00Z", "2026-03-01", "2026-03-31"),
        // 7. Kolkata, a half-hour offset (+05:30).
        ("Asia/Kolkata", 10, "2026-06-09T18:29:59Z", "2026-05-09T18:30:00Z", "2026-06-09T18:30:00Z", "2026-05-10", "2026-06-09"),
        ("Asia/Kolkata", 10, "2026-06-09T18:30:00Z", "2026-06-09T18:30:00Z", "2026-07-09T18:30:00Z", "2026-06-10", "2026-07-09"),
        // 9. quota_day 31 through February of a leap year: Jan 31 → Feb 29 → Mar 31.
        ("UTC", 31, "2028-02-10T00:00:00Z", "2028-01-31T00:00:00Z", "2028-02-29T00:00:00Z", "2028-01-31", "2028-02-28"),
        ("UTC", 31, "2028-03-01T00:00:00Z", "2028-02-29T00:00:00Z", "2028-03-31T00:00:00Z", "2028-02-29", "2028-03-30"),
        // 11. … and of a common year: Feb 28.
        ("UTC", 31, "2027-03-01T00:00:00Z", "2027-02-28T00:00:00Z", "2027-03-31T00:00:00Z", "2027-02-28", "2027-03-30"),
        // 12. April has 30 days: a 31st cycle resets on Apr 30.
        ("UTC", 31, "2026-05-01T00:00:00Z", "2026-04-30T00:00:00Z", "2026-05-31T00:00:00Z", "2026-04-30", "2026-05-30"),
        // 13. Berlin, day 15 (docs/billing.md's example), winter (+01:00).
        ("Europe/Berlin", 15, "2026-01-20T00:00:00Z", "2026-01-14T23:00:00Z", "2026-02-14T23:00:00Z", "2026-01-15", "2026-02-14"),
        // 14. A midnight that does not exist: Santiago moves its clocks from
        //     00:00 -04 to 01:00 -03 on 2026-09-06; the period starts at
        //     01:00 -03, the first instant after the gap.
        ("America/Santiago", 6, "2026-09-10T00:00:00Z", "2026-09-06T04:00:00Z", "2026-10-06T03:00:00Z", "2026-09-06", "2026-10-05"),
        // 15. A midnight that exists twice: the Azores move their clocks from
        //     01:00 +00 back to 00:00 -01 on 2026-10-25; the period starts at
        //     the first of the two midnights.
        ("Atlantic/Azores", 25, "2026-11-01T00:00:00Z", "2026-10-25T00:00:00Z", "2026-11-25T01:00:00Z", "2026-10-25", "2026-11-24"),
    ];

    #[test]
    fn the_numbered_cases() {
        for (i, &(zone, day, now, start, end, first, last)) in CASES.iter().enumerate() {
            let c = Cycle::new(day, zone).expect("cycle");
            let p = c.period_at(ms(now));
            let want = Period {
                start_ms: ms(start),
                end_ms: ms(end),
                first_day: date(first),
                last_day: date(last),
            };
            assert_eq!(p, want, "case {} ({zone}, day {day}, at {now})", i + 1);
        }
    }

    #[test]
    fn every_instant_is_in_the_period_it_gets_and_periods_tile() {
        // Walk three years in steps of 7h13m through zones with gaps, folds
        // and odd offsets: each period contains the instant, and the period
        // after a period's end starts exactly at that end.
        for zone in [
            "UTC",
            "America/Los_Angeles",
            "Asia/Kolkata",
            "America/Santiago",
            "America/Havana",
            "Atlantic/Azores",
            "Australia/Lord_Howe",
        ] {
            for day in [1u8, 15, 29, 31] {
                let c = Cycle::new(day, zone).expect("cycle");
                let mut t = ms("2026-01-01T00:00:00Z");
                let stop = ms("2029-01-01T00:00:00Z");
                while t < stop {
                    let p = c.period_at(t);
                    assert!(
                        p.start_ms <= t && t < p.end_ms,
                        "{zone} {day} at {t}: {p:?}"
                    );
                    assert_eq!(c.period_at(p.end_ms).start_ms, p.end_ms, "{zone} {day}");
                    assert_eq!(c.period_at(p.end_ms - 1), p, "{zone} {day}");
                    assert_eq!(c.local_date(p.start_ms), p.first_day, "{zone} {day}");
                    t += (7 * 3600 + 13 * 60) * 1000;
                }
            }
        }
    }

    #[test]
    fn the_default_cycle_is_the_utc_calendar_month() {
        let c = Cycle::utc_month();
        let at = ms("2026-02-10T10:01:00Z");
        let p = c.period_at(at);
        let secs = at / 1000;
        assert_eq!(p.start_ms / 1000, crate::limits::month::month_start(secs));
        assert_eq!(
            p.end_ms / 1000,
            crate::limits::month::next_month_start(secs)
        );
        let (a, b) = crate::limits::month::period_dates(secs);
        assert_eq!((p.first_day.to_string(), p.last_day.to_string()), (a, b));
    }

    #[test]
    fn bad_fields_are_refused_with_the_reason() {
        assert_eq!(Cycle::new(0, "UTC"), Err(CycleError::Day));
        assert_eq!(Cycle::new(32, "UTC"), Err(CycleError::Day));
        assert_eq!(
            Cycle::new(1, "Mars/Olympus_Mons"),
            Err(CycleError::Zone("Mars/Olympus_Mons".into()))
        );
        assert_eq!(
            CycleError::Zone("X".into()).to_string(),
            "quota_tz: unknown time zone \"X\" (an IANA name such as \"Europe/Berlin\")"
        );
    }
}
