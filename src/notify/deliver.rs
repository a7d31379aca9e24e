//! One notification's delivery: the event's JSON body, its signature, the
//! POST, and the retries until a 2xx or the end of the period.
//!
//! Signature: `X-Tollgate-Signature: sha256=<hex>`, the lowercase hex
//! HMAC-SHA256 of the exact body bytes keyed with the `[notify] secret_env`
//! value. Only a 2xx answer is a delivery; a redirect (not followed), any
//! other status, a connection error or a timeout is a failed attempt.

use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::Rng;
use sha2::Sha256;

use super::{Pending, ATTEMPT_TIMEOUT, BACKOFF_BASE, BACKOFF_MAX};
use crate::config::Secret;
use crate::metrics::Metrics;
use crate::store::SharedStore;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-tollgate-signature";

/// `sha256=<hex HMAC-SHA256 of body keyed with secret>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The event's JSON body (SPEC.md "Notifications"); instants are UTC,
/// ISO 8601 to the second.
pub fn body(p: &Pending) -> Vec<u8> {
    let iso = |ms: i64| crate::clock::iso8601(ms.div_euclid(1000));
    serde_json::json!({
        "event": "quota.threshold",
        "client_id": p.client_id,
        "threshold": p.threshold,
        "used": p.used,
        "limit": p.limit,
        "period_start": iso(p.period_start_ms),
        "period_end": iso(p.period_end_ms),
        "at": iso(p.at_ms),
    })
    .to_string()
    .into_bytes()
}

/// The HTTP client of the receiver, shared by the delivery tasks.
#[derive(Clone)]
pub struct Sender {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: http::Uri,
    secret: Secret,
}

impl Sender {
    pub fn new(url: http::Uri, secret: Secret) -> Sender {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(ATTEMPT_TIMEOUT));
        http.enforce_http(false);
        let tls = crate::tls::upstream_client_config(None);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Sender {
            client: Client::builder(TokioExecutor::new()).build(connector),
            url,
            secret,
        }
    }

    /// One attempt: `Ok` on a 2xx, else why not (never the secret).
    pub async fn post(&self, p: &Pending) -> Result<(), String> {
        let body = body(p);
        let request = http::Request::post(self.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                SIGNATURE_HEADER,
                signature(self.secret.expose().as_bytes(), &body),
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("bad request: {e}"))?;
        let attempt = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("no answer: {e}"))?;
            let status = response.status();
            // Read (bounded by the timeout) and discard the answer.
            let _ = response.into_body().collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("answered {status}"))
            }
        };
        match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {ATTEMPT_TIMEOUT:?}")),
        }
    }
}

/// The wait before retry number `n` (0-based): `BACKOFF_BASE * 2^n` capped
/// at `BACKOFF_MAX`, then a random point in its upper half (jitter).
pub fn backoff(n: u32) -> Duration {
    let full = BACKOFF_BASE
        .saturating_mul(1u32 << n.min(16))
        .min(BACKOFF_MAX);
    let half = full / 2;
    half + Duration::from_millis(rand::rng().random_range(0..=half.as_millis() as u64))
}

/// Delivers `p` until a 2xx or its period's end. `durable`: the store holds
/// it; the lease is renewed before each attempt (delivery stops if the
/// notification is gone, delivered by another process) and it is removed
/// after a 2xx or at the period's end.
pub async fn until_done(
    sender: &Sender,
    p: &Pending,
    store: &SharedStore,
    durable: bool,
    metrics: &Metrics,
) {
    let mut failures = 0u32;
    loop {
        let now_ms = chrono::Utc::now().timestamp_millis();
        if now_ms >= p.period_end_ms {
            metrics.notification("expired");
            tracing::warn!(
                client_id = %p.client_id,
                threshold = p.threshold,
                attempts = failures,
                "quota notification dropped: its period ended before the receiver took it"
            );
            if durable {
                let _ = store.finish_notification(p).await;
            }
            return;
        }
        if durable {
            match store.claim_notifications(Some(p)).await {
                Ok(still) if still.is_empty() => return,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "quota notification: store unreachable, retrying");
                    tokio::time::sleep(backoff(failures)).await;
                    failures = failures.saturating_add(1);
                    continue;
                }
            }
        }
        match sender.post(p).await {
            Ok(()) => {
                metrics.notification("delivered");
                if durable {
                    if let Err(e) = store.finish_notification(p).await {
                        // It stays pending: a sweep delivers it again later.
                        tracing::warn!(error = %e, "quota notification delivered, not removed");
                    }
                }
                return;
            }
            Err(why) => {
                metrics.notification("failed");
                tracing::info!(
                    client_id = %p.client_id,
                    threshold = p.threshold,
                    error = %why,
                    "quota notification not taken; retrying"
                );
                tokio::time::sleep(backoff(failures)).await;
                failures = failures.saturating_add(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe".
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        for n in 0..20 {
            let d = backoff(n);
            let full = BACKOFF_BASE.saturating_mul(1 << n.min(16)).min(BACKOFF_MAX);
            assert!(d >= full / 2 && d <= full, "{n}: {d:?}");
        }
    }
}
