//! Header names (each defined once), hop-by-hop removal (RFC 9110 §7.6.1) and
//! the rate-limit decoration of responses.

use std::cell::RefCell;
use std::thread::LocalKey;

use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};

use crate::clock::iso8601;
use crate::limits::LimitState;

pub static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
pub static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_TOLLGATE_CLIENT_ID: HeaderName = HeaderName::from_static("x-tollgate-client-id");
pub static X_TOLLGATE_KEY_ID: HeaderName = HeaderName::from_static("x-tollgate-key-id");
pub static X_TOLLGATE_SCOPES: HeaderName = HeaderName::from_static("x-tollgate-scopes");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Hop-by-hop headers that are always removed (besides those `Connection` names
/// and any `Proxy-*`).
static HOP_BY_HOP: [&HeaderName; 6] = [
    &CONNECTION,
    &KEEP_ALIVE,
    &TE,
    &TRAILER,
    &TRANSFER_ENCODING,
    &UPGRADE,
];

/// Removes hop-by-hop headers: the fixed set, the ones `Connection` names, and
/// every `Proxy-*` header.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds which are there: most requests carry
    // none, most responses only `Connection: keep-alive`.
    let mut fixed = [false; HOP_BY_HOP.len()];
    let (mut connection, mut proxy) = (false, false);
    for name in headers.keys() {
        match HOP_BY_HOP.iter().position(|h| *h == name) {
            Some(i) => fixed[i] = true,
            None => proxy |= name.as_str().starts_with("proxy-"),
        }
        connection |= name == CONNECTION;
    }
    if !fixed.contains(&true) && !proxy {
        return;
    }
    if connection {
        // Copied out (a reference count each), as removing needs the map.
        let listed: Vec<HeaderValue> = headers.get_all(CONNECTION).iter().cloned().collect();
        for name in listed
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
        {
            // Looked up as text: no `HeaderName` is made for it.
            headers.remove(name.trim());
        }
    }
    for (name, present) in HOP_BY_HOP.iter().zip(fixed) {
        if present {
            headers.remove(*name);
        }
    }
    if proxy {
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("proxy-"))
            .cloned()
            .collect();
        for name in names {
            headers.remove(&name);
        }
    }
}

/// Removes every header of `names`, looking them up only when one of them is
/// there (found in one pass over the names, as most requests carry none).
pub fn remove_each(headers: &mut HeaderMap, names: &[HeaderName]) {
    if headers.keys().any(|k| names.contains(k)) {
        for name in names {
            headers.remove(name);
        }
    }
}

/// The last header value one thread made, and what it was made from.
type LastValue<K, V> = RefCell<Option<(K, V)>>;

thread_local! {
    /// `X-RateLimit-Reset` by the second it names: it changes once a second.
    static RESET_VALUE: LastValue<i64, Option<HeaderValue>> = const { RefCell::new(None) };
    /// `X-RateLimit-Limit`: the same for every response of a client.
    static LIMIT_VALUE: LastValue<u64, HeaderValue> = const { RefCell::new(None) };
}

/// The value for `key`: this thread's last one if it was made from the same
/// key, else a new one from `make` (remembered in its place). Cloning a
/// header value is a reference count, making one is an allocation (and, for
/// a date, a `strftime`).
fn reuse<K: Copy + PartialEq + 'static, V: Clone + 'static>(
    last: &'static LocalKey<LastValue<K, V>>,
    key: K,
    make: impl FnOnce(K) -> V,
) -> V {
    last.with(|cell| {
        let mut last = cell.borrow_mut();
        match &*last {
            Some((k, v)) if *k == key => v.clone(),
            _ => {
                let v = make(key);
                *last = Some((key, v.clone()));
                v
            }
        }
    })
}

/// Largest Integer a structured field (RFC 9651 §3.3.1) may carry.
const SF_INTEGER_MAX: u64 = 999_999_999_999_999;

/// `n` as a structured-field Integer: larger values are capped, not emitted invalid.
fn sf_int(n: u64) -> u64 {
    n.min(SF_INTEGER_MAX)
}

/// Adds `X-RateLimit-*` and, when `ietf` is set, the fields of
/// draft-ietf-httpapi-ratelimit-headers (-10 and -11 agree on this syntax):
/// two named quota policies, `"minute"` (the sliding window) and `"month"`
/// (the calendar-month quota), as structured-field Lists of Strings with
/// parameters.
///
/// - `RateLimit-Policy: "minute";q=<limit>;w=60, "month";q=<quota>;w=<seconds in this month>`
/// - `RateLimit: "minute";r=<remaining>;t=<s>, "month";r=<remaining>;t=<s to the 1st>`
///
/// `t` is the draft's effective window: within `t` seconds the client can use
/// no more than `r`. For the minute it counts down to the instant the oldest
/// counted request leaves the window (`X-RateLimit-Reset`), so on a 429 it
/// is never more than `Retry-After`, as the draft asks (Retry-After never
/// earlier than the end of the effective window). `pk` is not sent: a key's quota is always
/// its client's, the one partition the caller can see. `qu` is left at its
/// default, "requests": the numbers are units, one per request unless a
/// route sets `cost` (docs/rate-limiting.md, "Policies").
pub fn decorate(headers: &mut HeaderMap, state: &LimitState, ietf: bool) {
    headers.insert(
        X_RATELIMIT_LIMIT.clone(),
        reuse(&LIMIT_VALUE, state.per_minute, HeaderValue::from),
    );
    headers.insert(
        X_RATELIMIT_REMAINING.clone(),
        HeaderValue::from(state.remaining),
    );
    if let Some(v) = reuse(&RESET_VALUE, state.reset_at, |secs| {
        HeaderValue::from_str(&iso8601(secs)).ok()
    }) {
        headers.insert(X_RATELIMIT_RESET.clone(), v);
    }
    if ietf {
        let now_s = state.now_ms.div_euclid(1000);
        let month_reset = crate::limits::month::next_month_start(now_s);
        let policy = format!(
            "\"minute\";q={};w={}, \"month\";q={};w={}",
            sf_int(state.per_minute),
            crate::limits::window::WINDOW_SECS,
            sf_int(state.monthly),
            month_reset - crate::limits::month::month_start(now_s)
        );
        let current = format!(
            "\"minute\";r={};t={}, \"month\";r={};t={}",
            sf_int(state.remaining),
            (state.reset_at - now_s).max(0),
            sf_int(state.monthly_remaining()),
            (month_reset - now_s).max(0)
        );
        if let Ok(v) = HeaderValue::from_str(&policy) {
            headers.insert(RATELIMIT_POLICY.clone(), v);
        }
        if let Ok(v) = HeaderValue::from_str(&current) {
            headers.insert(RATELIMIT.clone(), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header map with these fields, in this order.
    fn map(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in fields {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("connection", "close, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("x-kept", "yes"),
            ("content-length", "5"),
        ]);
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["content-length", "x-kept"]);
    }

    #[test]
    fn every_connection_value_and_name_counts_whatever_its_case() {
        let mut h = map(&[
            ("connection", "Keep-Alive"),
            ("connection", " X-One ,x-two,, bad name"),
            ("keep-alive", "timeout=5"),
            ("x-one", "1"),
            ("x-two", "2"),
            ("x-three", "3"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-three"]);
    }

    #[test]
    fn messages_without_hop_by_hop_headers_are_left_alone() {
        let names = |h: &HeaderMap| -> Vec<String> { h.keys().map(|k| k.to_string()).collect() };
        let mut h = HeaderMap::new();
        for k in [
            "host",
            "accept",
            "x-api-key",
            "x-proxy-id",
            "content-length",
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static("1"));
        }
        let before = names(&h);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), before);
        // A lone `Proxy-*` header is still found.
        h.append(
            HeaderName::from_static("proxy-authenticate"),
            HeaderValue::from_static("Basic"),
        );
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), before);
    }

    #[test]
    fn remove_each_removes_every_value_of_each_name() {
        static NAMES: [HeaderName; 2] = [
            HeaderName::from_static("x-a"),
            HeaderName::from_static("x-b"),
        ];
        let mut h = HeaderMap::new();
        h.append("x-kept", HeaderValue::from_static("1"));
        remove_each(&mut h, &NAMES);
        assert_eq!(h.len(), 1);
        h.append("x-b", HeaderValue::from_static("1"));
        h.append("x-b", HeaderValue::from_static("2"));
        h.append("x-a", HeaderValue::from_static("3"));
        remove_each(&mut h, &NAMES);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }

    /// 7 per minute with 4 left, 3 of 100 used, at 2026-02-10T10:00:00.5Z.
    fn sample_state() -> LimitState {
        LimitState {
            now_ms: 1_770_717_600_500,
            per_minute: 7,
            remaining: 4,
            reset_at: 1_770_717_660,
            monthly: 100,
            monthly_used: 3,
            window_retry_at_ms: None,
        }
    }

    #[test]
    fn reused_values_follow_the_state() {
        let mut st = sample_state();
        for (per_minute, reset_at, want) in [
            (7, 1_770_717_660, "2026-02-10T10:01:00Z"),
            (7, 1_770_717_660, "2026-02-10T10:01:00Z"),
            (8, 1_770_717_661, "2026-02-10T10:01:01Z"),
            (7, 1_770_717_660, "2026-02-10T10:01:00Z"),
            (9, 0, "1970-01-01T00:00:00Z"),
        ] {
            st.per_minute = per_minute;
            st.reset_at = reset_at;
            let mut h = HeaderMap::new();
            decorate(&mut h, &st, false);
            assert_eq!(h[&X_RATELIMIT_LIMIT], per_minute.to_string().as_str());
            assert_eq!(h[&X_RATELIMIT_RESET], want);
        }
    }

    #[test]
    fn decoration() {
        let st = sample_state();
        let mut h = HeaderMap::new();
        decorate(&mut h, &st, false);
        assert_eq!(h[&X_RATELIMIT_LIMIT], "7");
        assert_eq!(h[&X_RATELIMIT_REMAINING], "4");
        assert_eq!(h[&X_RATELIMIT_RESET], "2026-02-10T10:01:00Z");
        assert!(h.get(&RATELIMIT).is_none());
        decorate(&mut h, &st, true);
        assert_eq!(
            h[&RATELIMIT_POLICY],
            "\"minute\";q=7;w=60, \"month\";q=100;w=2419200"
        );
        assert_eq!(
            h[&RATELIMIT],
            "\"minute\";r=4;t=60, \"month\";r=97;t=1605600"
        );
    }

    #[test]
    fn ietf_integers_stay_within_structured_field_bounds() {
        let st = LimitState {
            now_ms: 1_770_717_600_500,
            per_minute: u64::MAX,
            remaining: u64::MAX - 1,
            reset_at: 1_770_717_660,
            monthly: u64::MAX,
            monthly_used: 0,
            window_retry_at_ms: None,
        };
        let mut h = HeaderMap::new();
        decorate(&mut h, &st, true);
        assert_eq!(
            h[&RATELIMIT_POLICY],
            "\"minute\";q=999999999999999;w=60, \"month\";q=999999999999999;w=2419200"
        );
        assert_eq!(
            h[&RATELIMIT],
            "\"minute\";r=999999999999999;t=60, \"month\";r=999999999999999;t=1605600"
        );
    }
}
