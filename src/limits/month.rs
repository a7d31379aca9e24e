//! Calendar-month (UTC) quota periods.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};

/// `YYYYMM` of the month containing `unix_secs`: the quota period's id.
pub fn period_id(unix_secs: i64) -> u32 {
    let t = at(unix_secs);
    t.year() as u32 * 100 + t.month()
}

/// Unix seconds of the first instant of the month containing `unix_secs`.
pub fn month_start(unix_secs: i64) -> i64 {
    let t = at(unix_secs);
    first_of(t.year(), t.month())
}

/// Unix seconds of the first instant of the month after the one containing `unix_secs`.
pub fn next_month_start(unix_secs: i64) -> i64 {
    let t = at(unix_secs);
    let (y, m) = if t.month() == 12 {
        (t.year() + 1, 1)
    } else {
        (t.year(), t.month() + 1)
    };
    first_of(y, m)
}

/// `(period_start, period_end)` as `YYYY-MM-DD`: the first and last day of the month.
pub fn period_dates(unix_secs: i64) -> (String, String) {
    let start = at(month_start(unix_secs)).date_naive();
    let end = at(next_month_start(unix_secs) - 86_400).date_naive();
    (
        start.format("%Y-%m-%d").to_string(),
        end.format("%Y-%m-%d").to_string(),
    )
}

fn at(unix_secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(unix_secs, 0).unwrap_or_default()
}

fn first_of(year: i32, month: u32) -> i64 {
    NaiveDate::from_ymd_opt(year, month, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| Utc.from_utc_datetime(&d).timestamp())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FEB_10_2026: i64 = 1_770_717_660; // 2026-02-10T10:01:00Z

    #[test]
    fn periods() {
        assert_eq!(period_id(FEB_10_2026), 202602);
        assert_eq!(
            period_dates(FEB_10_2026),
            ("2026-02-01".into(), "2026-02-28".into())
        );
        assert_eq!(month_start(FEB_10_2026), 1_769_904_000);
        assert_eq!(next_month_start(FEB_10_2026), 1_772_323_200);
    }

    #[test]
    fn december_rolls_into_january_and_leap_february() {
        let dec = 1_796_083_200; // 2026-12-01T00:00:00Z
        assert_eq!(period_id(dec), 202612);
        assert_eq!(next_month_start(dec), 1_798_761_600); // 2027-01-01
        let feb_2028 = 1_832_457_600; // 2028-01-25
        assert_eq!(
            period_dates(feb_2028 + 10 * 86_400),
            ("2028-02-01".into(), "2028-02-29".into())
        );
    }

    #[test]
    fn last_second_of_a_month_belongs_to_it() {
        let mar1 = 1_772_323_200;
        assert_eq!(period_id(mar1 - 1), 202602);
        assert_eq!(period_id(mar1), 202603);
    }
}
