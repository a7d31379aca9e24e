//! A wrong-secret flood against a running tollgate, with a valid client's
//! latency before and during it: used by tests/key_security.rs (with its
//! assertions) and by the `flood` measurement in benches/measure.rs.

use std::time::{Duration, Instant};

use serde_json::json;

use super::admin::{create_client, create_key};
use super::env::Env;
use super::http::Http;
use super::Backend;

/// The bcrypt verifications counter of `/metrics`.
pub const BCRYPT: &str = "tollgate_bcrypt_verifications_total";
const CP: &str = "/api/v1/charge_points";

/// What a flood runs against: tollgate on `backend` with a production-like
/// bcrypt cost (10) and a failure budget of `failures_per_minute`, client
/// `acme` with limits never reached, and one read key: `(env, key_id, secret)`.
pub async fn flood_target(backend: Backend, failures_per_minute: u32) -> (Env, String, String) {
    let env = Env::setup(backend)
        .auth(&format!(
            "bcrypt_cost = 10\nmax_failures_per_minute = {failures_per_minute}"
        ))
        .start()
        .await;
    create_client(
        &env.http,
        &env.tg,
        "acme",
        json!({"per_minute": 1_000_000, "monthly": 1_000_000_000}),
    )
    .await;
    let (key_id, secret) = create_key(&env.http, &env.tg, "acme", &["read:charge_points"]).await;
    (env, key_id, secret)
}

/// What a wrong-secret flood did, and how a valid client fared.
pub struct Flood {
    pub statuses: Vec<(u16, Option<String>)>,
    pub secs: f64,
    pub bcrypt_runs: u64,
    pub baseline: Vec<Duration>,
    pub during: Vec<Duration>,
}

impl Flood {
    pub fn count(&self, status: u16) -> usize {
        self.statuses.iter().filter(|(s, _)| *s == status).count()
    }

    pub fn report(&self, label: &str) {
        println!(
            "wrong-secret flood ({label}): {} requests in {:.2} s, {} x 429, {} x 401, {} bcrypt \
             runs; valid client p99 before {:.2} ms ({} samples), during {:.2} ms ({} samples)",
            self.statuses.len(),
            self.secs,
            self.count(429),
            self.count(401),
            self.bcrypt_runs,
            p99(self.baseline.clone()).as_secs_f64() * 1000.0,
            self.baseline.len(),
            p99(self.during.clone()).as_secs_f64() * 1000.0,
            self.during.len()
        );
    }
}

/// Measures a valid (cached) client's latency alone, then while 1,000
/// requests with `key_id` and wrong secrets (right shape and checksum)
/// arrive 32 at a time from other connections, with spoofed
/// `X-Forwarded-For`. Asserts the valid client always gets 200.
pub async fn flood(env: &Env, key_id: &str, valid: &str) -> Flood {
    let url = env.tg.url(CP);
    assert_eq!(env.http.get_key(&url, valid).await.status, 200);
    let mut baseline = Vec::new();
    for _ in 0..300 {
        let t = Instant::now();
        let r = env.http.get_key(&url, valid).await;
        baseline.push(t.elapsed());
        assert_eq!(r.status, 200);
    }
    let bcrypt_before = env.counter(BCRYPT).await;
    let started = Instant::now();
    let task = {
        let (url, key_id) = (url.clone(), key_id.to_owned());
        tokio::spawn(async move {
            let http = Http::default();
            let mut tasks = Vec::new();
            for w in 0..32u32 {
                let (http, url, key_id) = (http.clone(), url.clone(), key_id.clone());
                tasks.push(tokio::spawn(async move {
                    let mut statuses = Vec::new();
                    for i in 0..(1000 / 32 + u32::from(w < 1000 % 32)) {
                        let wrong = tollgate::keys::generate_for(&key_id).unwrap();
                        let spoof = format!("10.{}.{}.{}", w, i % 250, i / 250);
                        let r = http
                            .get(
                                &url,
                                &[
                                    ("x-api-key", wrong.expose()),
                                    ("x-forwarded-for", spoof.as_str()),
                                ],
                            )
                            .await;
                        let retry = r.header("retry-after").map(str::to_owned);
                        statuses.push((r.status.as_u16(), retry));
                    }
                    statuses
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            all
        })
    };
    let mut during = Vec::new();
    while !task.is_finished() || during.len() < 100 {
        let t = Instant::now();
        let r = env.http.get_key(&url, valid).await;
        during.push(t.elapsed());
        assert_eq!(
            r.status, 200,
            "the valid client was refused during the flood"
        );
    }
    let statuses = task.await.unwrap();
    Flood {
        statuses,
        secs: started.elapsed().as_secs_f64(),
        bcrypt_runs: env.counter(BCRYPT).await - bcrypt_before,
        baseline,
        during,
    }
}

/// The 99th percentile of `samples` (not empty).
pub fn p99(mut samples: Vec<Duration>) -> Duration {
    assert!(!samples.is_empty());
    samples.sort();
    let idx = ((samples.len() as f64) * 0.99).ceil() as usize - 1;
    samples[idx.min(samples.len() - 1)]
}
