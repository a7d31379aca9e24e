//! Two tollgate processes on one store: starting them, sending concurrent
//! requests to both alternately and counting the statuses, and the
//! exact-limit check built on that (used for one Redis, a Cluster and
//! Sentinel alike).

use std::collections::BTreeMap;

use serde_json::json;

use super::admin::{create_client, create_key};
use super::http::Http;
use super::tollgate::{config, Tollgate};
use super::upstream::Upstream;

/// Two processes on the same config (on Redis: the same store).
pub fn start_two(config_text: &str) -> (Tollgate, Tollgate) {
    (Tollgate::start(config_text), Tollgate::start(config_text))
}

/// A fresh upstream and two processes on the test config with `store`
/// (a `[store]` section), and a client.
pub async fn two_on(store: &str) -> (Upstream, Tollgate, Tollgate, Http) {
    let upstream = Upstream::start().await;
    let (a, b) = start_two(&config(&upstream.url(), store, ""));
    (upstream, a, b, Http::default())
}

/// How many replies had each status.
#[derive(Debug, Default)]
pub struct Counts(BTreeMap<u16, u64>);

impl Counts {
    /// Replies with `status` (0 when none).
    pub fn of(&self, status: u16) -> u64 {
        self.0.get(&status).copied().unwrap_or(0)
    }

    /// Panics if any reply had a status outside `allowed`.
    pub fn assert_only(&self, allowed: &[u16]) {
        for status in self.0.keys() {
            assert!(
                allowed.contains(status),
                "unexpected status {status}: {self:?}"
            );
        }
    }
}

/// `n` concurrent `GET path` with `secret`, even ones to `a`, odd ones to
/// `b`; the statuses they got.
pub async fn alternate(
    http: &Http,
    a: &Tollgate,
    b: &Tollgate,
    path: &str,
    secret: &str,
    n: usize,
) -> Counts {
    let mut tasks = Vec::new();
    for i in 0..n {
        let url = if i % 2 == 0 { a.url(path) } else { b.url(path) };
        let (http, secret) = (http.clone(), secret.to_owned());
        tasks.push(tokio::spawn(async move {
            http.get_key(&url, &secret).await.status.as_u16()
        }));
    }
    let mut counts = Counts::default();
    for t in tasks {
        let status = t.await.expect("request task");
        *counts.0.entry(status).or_default() += 1;
    }
    counts
}

/// Client `id` (`per_minute` 25) with a read key, both processes' key
/// caches warmed through `/api/v1/client/usage` (which spends nothing), then
/// 80 concurrent requests split over the two: exactly 25 admitted and
/// forwarded, 55 refused with 429, nothing else.
pub async fn exact_limit(http: &Http, a: &Tollgate, b: &Tollgate, upstream: &Upstream, id: &str) {
    create_client(http, a, id, json!({"per_minute": 25})).await;
    let (_, secret) = create_key(http, a, id, &["read:charge_points"]).await;
    for tg in [a, b] {
        let r = http.get_key(&tg.url("/api/v1/client/usage"), &secret).await;
        assert_eq!(r.status, 200);
    }
    let before = upstream.count();
    let counts = alternate(http, a, b, "/api/v1/charge_points", &secret, 80).await;
    counts.assert_only(&[200, 429]);
    assert_eq!((counts.of(200), counts.of(429)), (25, 55));
    assert_eq!(upstream.count() - before, 25);
}
