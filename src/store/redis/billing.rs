//! Billing cycles and usage history over Redis (docs/billing.md).
//!
//! Owns what the proxy sends `admit.lua` about the quota period (ARGV[17..23],
//! KEYS[4]) and what it does with a `RECOMPUTE` answer, the per-process
//! cache of each client's cycle that makes the first guess right, and the
//! history read. Lua has no tz database, so the period maths is
//! [`crate::limits::cycle`]'s, in Rust; the script only checks that Redis
//! `TIME` falls inside the ranges computed for the cycle the client really
//! has, so `TIME` stays the clock.

use jiff::civil::Date;

use super::*;
use crate::history::{DayCounts, Range};
use crate::limits::cycle::{Cycle, Period};

/// `admit.lua`'s answer when the caller's cycle, period or day is not the store's.
pub(super) const RECOMPUTE: i64 = -2;

/// Most clients whose cycle one process remembers; past it the cache starts
/// afresh (a forgotten client costs one more round trip, once).
const MAX_CACHED_CYCLES: usize = 100_000;

/// Attempts at one admission call when the period moves under it: the
/// first guess, the store's cycle and instant, and one more should a
/// boundary pass between the two.
pub(super) const PERIOD_ATTEMPTS: usize = 3;

/// The per-process guesses of clients' cycles.
#[derive(Default)]
pub(super) struct Cycles {
    known: Mutex<HashMap<String, Cycle>>,
}

impl Cycles {
    pub(super) fn get(&self, client_id: &str) -> Cycle {
        self.known
            .lock()
            .get(client_id)
            .cloned()
            .unwrap_or_else(Cycle::utc_month)
    }

    pub(super) fn learn(&self, client_id: &str, cycle: Cycle) {
        let mut known = self.known.lock();
        if known.len() >= MAX_CACHED_CYCLES && !known.contains_key(client_id) {
            known.clear();
        }
        known.insert(client_id.to_owned(), cycle);
    }
}

/// The billing arguments of one admission call: the cycle, and the period
/// and day containing the instant they were computed for.
#[derive(Debug, Clone)]
pub(super) struct Guess {
    pub(super) cycle: Cycle,
    pub(super) period: Period,
    day: Date,
    day_start_ms: i64,
    day_end_ms: i64,
}

impl Guess {
    pub(super) fn new(cycle: Cycle, now_ms: i64) -> Guess {
        let period = cycle.period_at(now_ms);
        let (day, day_start_ms, day_end_ms) = cycle.day_at(now_ms);
        Guess {
            cycle,
            period,
            day,
            day_start_ms,
            day_end_ms,
        }
    }

    /// KEYS[4] and ARGV[16..23] (after the policies' 13..15; 16, their
    /// spare, left empty).
    pub(super) fn add_to(
        &self,
        keys: &mut Vec<String>,
        args: &mut Args,
        client_id: &str,
        days: u32,
    ) {
        keys.push(layout::history_day(client_id, &iso_day(self.day)));
        args.push("")
            .push(self.cycle.day())
            .push(self.cycle.zone_name())
            .push(self.period.start_ms)
            .push(self.period.end_ms)
            .push(self.day_start_ms)
            .push(self.day_end_ms)
            .push(days);
    }
}

/// `day` as `YYYY-MM-DD`, as its `Display` writes it, without the
/// formatting machinery for the years 0..=9999 (every admission names its
/// day's key).
fn iso_day(day: Date) -> String {
    let (y, m, d) = (day.year(), day.month(), day.day());
    if !(0..=9999).contains(&y) {
        return day.to_string();
    }
    let mut s = String::with_capacity(10);
    for (n, width) in [(y as u32, 4), (m as u32, 2), (d as u32, 2)] {
        if width == 2 {
            s.push('-');
        }
        for place in (0..width).rev() {
            s.push(char::from_digit(n / 10u32.pow(place) % 10, 10).unwrap_or('0'));
        }
    }
    s
}

/// A `RECOMPUTE` answer: the store's instant and the client's cycle, or
/// `None` when the reply is something else.
pub(super) fn recompute(reply: &redis::Value) -> Option<Result<(i64, Cycle), StoreError>> {
    let redis::Value::Array(items) = reply else {
        return None;
    };
    if !matches!(items.first(), Some(redis::Value::Int(RECOMPUTE))) {
        return None;
    }
    let text = |i: usize| -> Option<String> { redis::from_redis_value(items.get(i)?.clone()).ok() };
    let parsed = (|| {
        let now_ms: i64 = redis::from_redis_value(items.get(1)?.clone()).ok()?;
        let day = text(2)?;
        let zone = text(3)?;
        let day = if day.is_empty() {
            crate::model::DEFAULT_QUOTA_DAY
        } else {
            day.parse().ok()?
        };
        let zone = if zone.is_empty() {
            DEFAULT_QUOTA_TZ.to_owned()
        } else {
            zone
        };
        Some((now_ms, Cycle::new(day, &zone).ok()?))
    })();
    Some(parsed.ok_or_else(|| corrupt("client quota_day or quota_tz")))
}

/// One day key's `f`, `r`, `q`, `x`.
type Row = Vec<Option<u64>>;
/// The client hash's current day: its key's name, and `hf`, `hr`, `hq`.
type Today = (Option<String>, [Option<u64>; 3]);

impl RedisStore {
    /// The client's history for each day of `range`: one `HMGET` per day,
    /// pipelined (all keys in the client's slot).
    pub(super) async fn read_history(
        &self,
        client_id: &str,
        range: Range,
    ) -> Result<Vec<DayCounts>, StoreError> {
        let keys: Vec<String> = range
            .days()
            .map(|d| layout::history_day(client_id, &d.to_string()))
            .collect();
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.cmd("HMGET").arg(key).arg(&["f", "r", "q", "x"]);
        }
        // The current day's counts, kept in the client hash (admit.lua).
        pipe.cmd("HMGET")
            .arg(layout::client(client_id))
            .arg(&[cf::HISTORY_DAY, "hf", "hr", "hq"]);
        let (rows, today): (Vec<Row>, Today) = self
            .call(|mut c| async move {
                let mut all: Vec<redis::Value> = pipe.query_async(&mut c).await?;
                let today = all.pop().unwrap_or(redis::Value::Nil);
                let (day, f, r, q): (Option<String>, Option<u64>, Option<u64>, Option<u64>) =
                    redis::from_redis_value(today)?;
                let rows = all
                    .into_iter()
                    .map(redis::from_redis_value)
                    .collect::<Result<Vec<Row>, _>>()?;
                Ok((rows, (day, [f, r, q])))
            })
            .await?;
        let (today_key, [tf, tr, tq]) = today;
        Ok(rows
            .into_iter()
            .zip(&keys)
            .map(|(r, key)| {
                let at = |i: usize| r.get(i).copied().flatten().unwrap_or(0);
                let mut d = DayCounts {
                    forwarded: at(0),
                    rate_limited: at(1),
                    quota_exceeded: at(2),
                    refunded: at(3),
                };
                if today_key.as_deref() == Some(key.as_str()) {
                    d.forwarded += tf.unwrap_or(0);
                    d.rate_limited += tr.unwrap_or(0);
                    d.quota_exceeded += tq.unwrap_or(0);
                }
                d
            })
            .collect())
    }

    /// The instant the first guess of a call's period is made for: the
    /// test clock's, else this process's (Redis `TIME` decides; a skewed
    /// guess costs a second round trip near a boundary only).
    pub(super) fn guess_now_ms(&self) -> i64 {
        match &self.inner.clock {
            Some(c) => c.now_ms(),
            None => crate::clock::SystemClock.now_ms(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::iso_day;
    use jiff::civil::date;

    #[test]
    fn iso_day_writes_what_display_writes() {
        for d in [
            date(2026, 11, 28),
            date(2027, 1, 1),
            date(9999, 12, 31),
            date(1, 2, 3),
        ] {
            assert_eq!(iso_day(d), d.to_string());
        }
        assert_eq!(iso_day(date(-5, 1, 1)), date(-5, 1, 1).to_string());
    }
}
