//! The per-minute sliding window: one-second buckets, pure maths.
//!
//! At an instant in second `s`, the window counts the requests admitted in
//! seconds `s-60 ..= s` (61 buckets). It therefore covers between 60 and 61
//! seconds of history: it never admits more than the limit within any 60
//! seconds, and under-admits only by requests between 60 and 61 seconds old.
//! A bucket admitted in second `b` leaves the window at the start of second
//! `b + 61`, which is what `reset_at` and the retry instant report, so a
//! request sent `Retry-After` seconds after a 429 is admitted.
//!
//! The Redis store runs the same algorithm in Lua (`store/admit.lua`); the
//! store conformance suite holds both to the same answers.
//! See `docs/rate-limiting.md`.

use std::collections::VecDeque;

/// Seconds of history behind the current second.
pub const WINDOW_SECS: i64 = 60;
/// Seconds after which a bucket leaves the window.
pub const BUCKET_LIFETIME_SECS: i64 = WINDOW_SECS + 1;

/// The window of one client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    /// `(second, count)`, oldest first, seconds strictly increasing, counts > 0.
    buckets: VecDeque<(i64, u64)>,
    total: u64,
}

/// The window's state after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowState {
    pub count: u64,
    pub remaining: u64,
    /// Unix seconds when the oldest counted request leaves (now, rounded up, when empty).
    pub reset_at: i64,
    /// When full: Unix milliseconds at which one more request fits.
    pub retry_at_ms: Option<i64>,
}

impl Window {
    /// Drops the buckets that have left the window at `now_ms`.
    pub fn expire(&mut self, now_ms: i64) {
        let cutoff = now_ms.div_euclid(1000) - WINDOW_SECS;
        while let Some(&(sec, n)) = self.buckets.front() {
            if sec >= cutoff {
                break;
            }
            self.total -= n;
            self.buckets.pop_front();
        }
    }

    /// Requests counted at `now_ms`.
    pub fn count(&mut self, now_ms: i64) -> u64 {
        self.expire(now_ms);
        self.total
    }

    /// Counts `n` requests in the current second. Call [`Window::expire`] first.
    pub fn add(&mut self, now_ms: i64, n: u64) {
        if n == 0 {
            return;
        }
        let sec = now_ms.div_euclid(1000);
        match self.buckets.back_mut() {
            Some((last, count)) if *last == sec => *count += n,
            _ => self.buckets.push_back((sec, n)),
        }
        self.total += n;
    }

    /// The state at `now_ms` under `limit`. Call [`Window::expire`] first.
    pub fn state(&self, now_ms: i64, limit: u64) -> WindowState {
        self.state_for(now_ms, limit, 1)
    }

    /// Takes back up to `n` requests counted in second `sec` (a refund). A
    /// second that has left the window (call [`Window::expire`] first) gives
    /// nothing back; no count goes below zero.
    pub fn give_back(&mut self, sec: i64, n: u64) {
        let Some(i) = self.buckets.iter().position(|&(s, _)| s == sec) else {
            return;
        };
        let taken = n.min(self.buckets[i].1);
        self.buckets[i].1 -= taken;
        self.total -= taken;
        if self.buckets[i].1 == 0 {
            self.buckets.remove(i);
        }
    }

    /// [`Window::state`] for requests of `cost` units: the retry instant is
    /// when one more request of that cost fits (none when the cost exceeds
    /// the limit: waiting does not help).
    pub fn state_for(&self, now_ms: i64, limit: u64, cost: u64) -> WindowState {
        let reset_at = match self.buckets.front() {
            Some(&(sec, _)) => sec + BUCKET_LIFETIME_SECS,
            None => now_ms.div_euclid(1000) + i64::from(now_ms.rem_euclid(1000) != 0),
        };
        let full = self.total.saturating_add(cost) > limit && cost <= limit;
        let retry_at_ms = full.then(|| {
            // The earliest bucket whose departure makes room for `cost`.
            let mut left = self.total;
            let mut at = now_ms;
            for &(sec, n) in &self.buckets {
                left -= n;
                at = (sec + BUCKET_LIFETIME_SECS) * 1000;
                if left + cost <= limit {
                    break;
                }
            }
            at
        });
        WindowState {
            count: self.total,
            remaining: limit.saturating_sub(self.total),
            reset_at,
            retry_at_ms,
        }
    }

    /// Whether the window holds no request.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_770_717_600_000; // a whole minute

    fn admit(w: &mut Window, now: i64, limit: u64) -> bool {
        w.expire(now);
        if w.state(now, limit).remaining == 0 {
            return false;
        }
        w.add(now, 1);
        true
    }

    #[test]
    fn remaining_counts_down_and_refuses_at_the_limit() {
        let mut w = Window::default();
        let seen: Vec<u64> = (0..7)
            .map(|i| {
                assert!(admit(&mut w, T0 + i * 10, 7));
                w.state(T0 + i * 10, 7).remaining
            })
            .collect();
        assert_eq!(seen, [6, 5, 4, 3, 2, 1, 0]);
        assert!(!admit(&mut w, T0 + 100, 7));
        assert_eq!(w.count(T0 + 100), 7, "a refusal counts nothing");
    }

    #[test]
    fn retry_instant_admits_and_one_ms_earlier_does_not() {
        let mut w = Window::default();
        for i in 0..3 {
            assert!(admit(&mut w, T0 + 500 + i * 1000, 3));
        }
        let now = T0 + 30_250;
        w.expire(now);
        let st = w.state(now, 3);
        let at = st.retry_at_ms.unwrap();
        assert_eq!(at, T0 + 61_000);
        assert!(!admit(&mut w.clone(), at - 1, 3));
        assert!(admit(&mut w, at, 3));
    }

    #[test]
    fn never_more_than_the_limit_in_any_sixty_seconds() {
        // Offer one request every 100 ms for five minutes; check every 60 s span.
        let limit = 50;
        let mut w = Window::default();
        let mut admitted = Vec::new();
        for i in 0..3000 {
            let now = T0 + 37 + i * 100;
            if admit(&mut w, now, limit) {
                admitted.push(now);
            }
        }
        for (i, &start) in admitted.iter().enumerate() {
            let within = admitted[i..]
                .iter()
                .take_while(|&&t| t < start + 60_000)
                .count();
            assert!(within as u64 <= limit, "{within} in 60 s from {start}");
        }
        // And it admits close to the limit: at least limit per 61 s.
        assert!(admitted.len() as u64 >= limit * 300 / 61);
    }

    #[test]
    fn reset_is_when_the_oldest_bucket_leaves() {
        let mut w = Window::default();
        w.add(T0 + 2_400, 1);
        w.add(T0 + 9_000, 2);
        let st = w.state(T0 + 10_000, 10);
        assert_eq!(st.reset_at, T0 / 1000 + 2 + 61);
        assert_eq!(st.remaining, 7);
        assert_eq!(st.retry_at_ms, None);
        assert_eq!(Window::default().state(T0 + 1, 5).reset_at, T0 / 1000 + 1);
    }

    #[test]
    fn long_idle_empties_the_window() {
        let mut w = Window::default();
        w.add(T0, 5);
        assert_eq!(w.count(T0 + 60_999), 5);
        assert_eq!(w.count(T0 + 61_000), 0);
        assert!(w.is_empty());
    }
}
