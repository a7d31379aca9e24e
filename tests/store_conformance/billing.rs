//! Billing cycles and daily history (docs/billing.md), on every backend of
//! the conformance suite, with the manual clock: each case puts the clock
//! just before and just after a period boundary and checks the decision,
//! the period's dates and instants, and the quota 429's Retry-After.

use super::*;
use tollgate::history::{DayCounts, Range};
use tollgate::limits::cycle::Period;

/// Unix ms of an RFC 3339 instant.
fn at(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>()
        .expect("test instant")
        .as_millisecond()
}

fn date(s: &str) -> jiff::civil::Date {
    s.parse().expect("test date")
}

/// Client `acme` (key `key_a`) with a monthly quota of `monthly` on the
/// cycle (`quota_day`, `quota_tz`).
async fn cycled(fx: &Fx, monthly: u64, day: u8, tz: &str) {
    let mut c = client("acme");
    c.per_minute = Some(1000);
    c.monthly = Some(monthly);
    c.quota_day = day;
    c.quota_tz = tz.into();
    fx.store.create_client(&c).await.unwrap();
    fx.store
        .create_key(&key("key_a", "acme", "default"))
        .await
        .unwrap();
}

fn period(first: &str, last: &str, start: &str, end: &str) -> Period {
    Period {
        start_ms: at(start),
        end_ms: at(end),
        first_day: date(first),
        last_day: date(last),
    }
}

/// Uses up the quota at `now`, then checks the 429 just before `end`
/// (Retry-After 1 s and the period `p`) and the fresh period from `end` on
/// (`next`, one request used), through both store handles.
async fn boundary(fx: &Fx, monthly: u64, now: &str, p: Period, next: Period) {
    fx.clock.set_ms(at(now));
    for used in 1..=monthly {
        let s = state(&admit(&fx.store).await);
        assert_eq!((s.monthly_used, s.period), (used, p));
    }
    let d = admit(&fx.other).await;
    assert_eq!(d.verdict, Verdict::QuotaExhausted);
    let s = state(&d);
    assert_eq!(s.period, p);
    let wait_ms = (p.end_ms - at(now)) as u64;
    assert_eq!(s.retry_after_secs(d.verdict), Some(wait_ms.div_ceil(1000)));

    fx.clock.set_ms(p.end_ms - 1);
    let d = admit(&fx.store).await;
    assert_eq!(
        d.verdict,
        Verdict::QuotaExhausted,
        "the last instant of {p:?}"
    );
    assert_eq!(state(&d).retry_after_secs(d.verdict), Some(1));
    assert_eq!(usage(fx).await.period, p);

    fx.clock.set_ms(p.end_ms);
    assert_eq!(usage(fx).await.monthly_used, 0);
    let d = admit(&fx.other).await;
    assert_eq!(
        d.verdict,
        Verdict::Admitted,
        "the first instant of {next:?}"
    );
    let s = state(&d);
    assert_eq!((s.monthly_used, s.period), (1, next));
}

pub(super) async fn cycle_boundary_in_utc(fx: Fx) {
    cycled(&fx, 3, 15, "UTC").await;
    boundary(
        &fx,
        3,
        "2026-03-14T23:59:50Z",
        period(
            "2026-02-15",
            "2026-03-14",
            "2026-02-15T00:00:00Z",
            "2026-03-15T00:00:00Z",
        ),
        period(
            "2026-03-15",
            "2026-04-14",
            "2026-03-15T00:00:00Z",
            "2026-04-15T00:00:00Z",
        ),
    )
    .await;
}

/// Los Angeles, day 1: March is PST at its start and PDT at its end, so the
/// period is 743 hours; it does not reset at 00:00Z (a UTC month would).
pub(super) async fn cycle_boundary_in_los_angeles_across_dst(fx: Fx) {
    cycled(&fx, 2, 1, "America/Los_Angeles").await;
    let march = period(
        "2026-03-01",
        "2026-03-31",
        "2026-03-01T08:00:00Z",
        "2026-04-01T07:00:00Z",
    );
    assert_eq!(march.end_ms - march.start_ms, 743 * 3_600_000);
    boundary(
        &fx,
        2,
        "2026-03-07T12:00:00Z",
        march,
        period(
            "2026-04-01",
            "2026-04-30",
            "2026-04-01T07:00:00Z",
            "2026-05-01T07:00:00Z",
        ),
    )
    .await;
}

/// Kolkata (+05:30), day 10: the period turns at 18:30Z.
pub(super) async fn cycle_boundary_in_kolkata(fx: Fx) {
    cycled(&fx, 2, 10, "Asia/Kolkata").await;
    boundary(
        &fx,
        2,
        "2026-06-09T18:00:00Z",
        period(
            "2026-05-10",
            "2026-06-09",
            "2026-05-09T18:30:00Z",
            "2026-06-09T18:30:00Z",
        ),
        period(
            "2026-06-10",
            "2026-07-09",
            "2026-06-09T18:30:00Z",
            "2026-07-09T18:30:00Z",
        ),
    )
    .await;
}

/// Day 31 through February 2028 (a leap year): Jan 31 → Feb 29 → Mar 31.
pub(super) async fn cycle_day_31_through_a_leap_february(fx: Fx) {
    cycled(&fx, 1, 31, "UTC").await;
    let feb = period(
        "2028-02-29",
        "2028-03-30",
        "2028-02-29T00:00:00Z",
        "2028-03-31T00:00:00Z",
    );
    boundary(
        &fx,
        1,
        "2028-02-10T00:00:00Z",
        period(
            "2028-01-31",
            "2028-02-28",
            "2028-01-31T00:00:00Z",
            "2028-02-29T00:00:00Z",
        ),
        feb,
    )
    .await;
    // The 429's message names the reset instant the Retry-After counts to.
    fx.clock.set_ms(at("2028-03-30T23:59:59.500Z"));
    let d = admit(&fx.store).await;
    assert_eq!(d.verdict, Verdict::QuotaExhausted);
    assert_eq!(state(&d).period, feb);
    assert_eq!(state(&d).retry_after_secs(d.verdict), Some(1));
}

/// A cycle changed mid-period: `used` carries into the new cycle's current
/// period and resets at that period's end (docs/billing.md).
pub(super) async fn a_cycle_change_carries_used_to_the_new_period_end(fx: Fx) {
    cycled(&fx, 5, 1, "UTC").await;
    fx.clock.set_ms(at("2026-02-10T10:00:00Z"));
    for _ in 0..3 {
        admit(&fx.store).await;
    }
    let patch = ClientPatch {
        quota_day: Some(15),
        quota_tz: Some("Europe/Berlin".into()),
        ..ClientPatch::default()
    };
    let c = fx.store.update_client("acme", &patch).await.unwrap();
    assert_eq!(
        c.map(|c| (c.quota_day, c.quota_tz)),
        Some((15, "Europe/Berlin".to_owned()))
    );
    let berlin = period(
        "2026-01-15",
        "2026-02-14",
        "2026-01-14T23:00:00Z",
        "2026-02-14T23:00:00Z",
    );
    let u = usage(&fx).await;
    assert_eq!((u.monthly_used, u.period), (3, berlin));
    let s = state(&admit(&fx.other).await);
    assert_eq!((s.monthly_used, s.period), (4, berlin));
    // The new cycle's period ends: a fresh count.
    fx.clock.set_ms(berlin.end_ms);
    let s = state(&admit(&fx.store).await);
    assert_eq!(s.monthly_used, 1);
    assert_eq!(s.period.first_day, date("2026-02-15"));
}

/// The history counts per local day of the client's zone: forwarded,
/// refused by the window, refused by the quota; the day turns at local
/// midnight (18:30Z in Kolkata), and forwarded sums to `used`.
pub(super) async fn history_counts_each_local_day(fx: Fx) {
    let mut c = client("acme");
    c.per_minute = Some(2);
    c.monthly = Some(5);
    c.quota_tz = "Asia/Kolkata".into();
    fx.store.create_client(&c).await.unwrap();
    fx.store
        .create_key(&key("key_a", "acme", "default"))
        .await
        .unwrap();
    // 2026-03-02 local: 2 forwarded, 1 rate limited.
    fx.clock.set_ms(at("2026-03-02T18:29:00Z"));
    for _ in 0..3 {
        admit(&fx.store).await;
    }
    // 2026-03-03 local (one minute later in UTC, past local midnight):
    // 2 forwarded, then 1 rate limited; a minute on, 1 forwarded and 2
    // refused by the quota.
    fx.clock.set_ms(at("2026-03-02T18:30:30Z"));
    for _ in 0..3 {
        admit(&fx.other).await;
    }
    fx.clock.set_ms(at("2026-03-02T18:32:00Z"));
    let verdicts = [
        admit(&fx.store).await.verdict,
        admit(&fx.store).await.verdict,
        admit(&fx.store).await.verdict,
    ];
    assert_eq!(
        verdicts,
        [
            Verdict::Admitted,
            Verdict::QuotaExhausted,
            Verdict::QuotaExhausted
        ]
    );
    let range = Range {
        from: date("2026-03-01"),
        to: date("2026-03-04"),
    };
    let days = fx.store.history("acme", range).await.unwrap();
    let day = |f, r, q| DayCounts {
        forwarded: f,
        rate_limited: r,
        quota_exceeded: q,
        refunded: 0,
    };
    assert_eq!(
        days,
        [day(0, 0, 0), day(2, 1, 0), day(3, 1, 2), day(0, 0, 0)]
    );
    let forwarded: u64 = days.iter().map(|d| d.forwarded).sum();
    assert_eq!(forwarded, usage(&fx).await.monthly_used);
    // Another client, or none, has no history.
    let none = fx.store.history("nobody", range).await.unwrap();
    assert_eq!(none, vec![DayCounts::default(); 4]);
}

/// With route cost the history counts units, so `forwarded` still sums to
/// `used`; a refund moves its units from `forwarded` to `refunded` on the
/// local day they were counted in (Kolkata: 2026-03-03 from 18:30Z), and
/// gives them back to the period of the client's cycle.
pub(super) async fn history_counts_units_and_refunds(fx: Fx) {
    cycled(&fx, 100, 10, "Asia/Kolkata").await;
    let plans = plans(false);
    fx.clock.set_ms(at("2026-03-02T18:40:00Z"));
    let first = admit_with(&fx.store, &policy(4, None, &plans)).await;
    assert_eq!(first.verdict, Verdict::Admitted);
    let second = admit_with(&fx.other, &policy(3, None, &plans)).await;
    assert_eq!(state(&second).monthly_used, 7);
    fx.store.refund(&refund_of(&first)).await.unwrap();
    let range = Range {
        from: date("2026-03-03"),
        to: date("2026-03-03"),
    };
    let days = fx.store.history("acme", range).await.unwrap();
    assert_eq!(
        days,
        [DayCounts {
            forwarded: 3,
            rate_limited: 0,
            quota_exceeded: 0,
            refunded: 4,
        }]
    );
    assert_eq!(usage(&fx).await.monthly_used, 3);
    assert_eq!(days[0].forwarded, usage(&fx).await.monthly_used);
}
