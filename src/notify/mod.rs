//! Quota threshold notifications (`[notify]`, docs/billing.md "Notifications").
//!
//! Owns what happens after the store decided that an admission took a
//! client's monthly use across a threshold (the store decides, exactly once
//! per client, period and threshold: `admit.lua` on Redis, the lock of the
//! memory store): the bounded hand-over from the request path, the delivery
//! tasks that POST each event signed ([`deliver`]) and retry it with
//! exponential backoff and jitter until a 2xx or the period's end, and, on a
//! durable store, the sweep that picks up notifications left pending by a
//! process that stopped.
//!
//! Bounds: at most [`MAX_IN_MEMORY`] notifications are queued or being
//! delivered by one process; one more is not taken (counted `dropped` on the
//! memory store; on Redis it stays pending in the store and a later sweep
//! takes it). A delivery task holds one notification and sleeps between
//! attempts, each attempt bounded by [`ATTEMPT_TIMEOUT`].
//!
//! On Redis, a notification stays in the store until its delivery got a 2xx
//! (or its period ended); the process delivering it holds a lease
//! ([`LEASE`]) renewed before each attempt, so a sweep of another process
//! takes only notifications whose lease ran out (their process died).

pub mod deliver;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::config::Secret;
use crate::metrics::Metrics;
use crate::store::SharedStore;

/// `[notify] thresholds` when absent.
pub const DEFAULT_THRESHOLDS: [u8; 2] = [80, 100];
/// `[notify] secret_env` when absent.
pub const DEFAULT_SECRET_ENV: &str = "TOLLGATE_NOTIFY_SECRET";
/// At most this many thresholds (the admission reply carries them as bits).
pub const MAX_THRESHOLDS: usize = 20;
/// Notifications one process holds at most (queued or being delivered).
pub const MAX_IN_MEMORY: usize = 1024;
/// One POST's bound, connection included.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// The first retry waits about this long; each next one twice as long ...
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// ... up to this (before jitter).
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How long a process may hold a pending notification of the store before
/// another process's sweep may take it; renewed before each attempt, so
/// longer than [`ATTEMPT_TIMEOUT`] + [`BACKOFF_MAX`]. `admit.lua` sets the
/// first lease with the same value (`NOTIFY_LEASE_MS`).
pub const LEASE: Duration = Duration::from_secs(20);
/// How often the durable store is swept for notifications nobody holds.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// One event to deliver: `client_id`'s monthly use reached `threshold` %.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pending {
    pub client_id: String,
    pub threshold: u8,
    /// Units counted after the admission that crossed it.
    pub used: u64,
    /// The monthly quota then.
    pub limit: u64,
    pub period_start_ms: i64,
    pub period_end_ms: i64,
    /// The store's instant of that admission.
    pub at_ms: i64,
}

impl Pending {
    /// What names it in a process and in the store: client, period, threshold.
    pub fn id(&self) -> (String, i64, u8) {
        (self.client_id.clone(), self.period_start_ms, self.threshold)
    }

    /// The thresholds `crossed` (bit i: `thresholds[i]`, the admission
    /// reply's encoding) as events.
    #[allow(clippy::too_many_arguments)]
    pub fn crossed(
        thresholds: &[u8],
        crossed: u64,
        client_id: &str,
        used: u64,
        limit: u64,
        period: (i64, i64),
        at_ms: i64,
    ) -> Vec<Pending> {
        thresholds
            .iter()
            .enumerate()
            .filter(|(i, _)| *i < 64 && crossed & (1 << i) != 0)
            .map(|(_, &threshold)| Pending {
                client_id: client_id.to_owned(),
                threshold,
                used,
                limit,
                period_start_ms: period.0,
                period_end_ms: period.1,
                at_ms,
            })
            .collect()
    }
}

/// The thresholds crossed when `units` more take use from `used - units` to
/// `used` of `limit`: bit i for `thresholds[i]` (the rule of `admit.lua`).
pub fn crossing(thresholds: &[u8], used: u64, units: u64, limit: u64) -> u64 {
    if limit == 0 || units == 0 {
        return 0;
    }
    let before = u128::from(used.saturating_sub(units)) * 100;
    let after = u128::from(used) * 100;
    let mut bits = 0;
    for (i, &t) in thresholds.iter().enumerate().take(MAX_THRESHOLDS) {
        let at = u128::from(t) * u128::from(limit);
        if before < at && after >= at {
            bits |= 1 << i;
        }
    }
    bits
}

/// The hand-over between the stores and the delivery tasks.
pub struct Notifier {
    thresholds: Vec<u8>,
    /// ARGV[24] of `admit.lua`: the thresholds, comma-separated.
    encoded: String,
    tx: mpsc::Sender<Pending>,
    rx: Mutex<Option<mpsc::Receiver<Pending>>>,
    /// Notifications queued or being delivered here (a sweep skips them).
    held: Arc<Mutex<HashSet<(String, i64, u8)>>>,
    metrics: Arc<Metrics>,
    url: http::Uri,
    secret: Secret,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("thresholds", &self.thresholds)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    pub fn new(
        url: http::Uri,
        thresholds: Vec<u8>,
        secret: Secret,
        metrics: Arc<Metrics>,
    ) -> Arc<Notifier> {
        let (tx, rx) = mpsc::channel(MAX_IN_MEMORY);
        let encoded = thresholds
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join(",");
        Arc::new(Notifier {
            thresholds,
            encoded,
            tx,
            rx: Mutex::new(Some(rx)),
            held: Arc::default(),
            metrics,
            url,
            secret,
        })
    }

    pub fn thresholds(&self) -> &[u8] {
        &self.thresholds
    }

    /// `admit.lua`'s ARGV[24].
    pub fn encoded(&self) -> &str {
        &self.encoded
    }

    /// Hands a notification to the delivery tasks; never waits. `false`
    /// when it is already held here or the bound is full (`durable`: it
    /// stays in the store for a sweep; else it is dropped and counted).
    pub fn submit(&self, p: Pending, durable: bool) -> bool {
        let mut held = self.held.lock();
        if held.len() >= MAX_IN_MEMORY {
            drop(held);
            if !durable {
                self.metrics.notification("dropped");
                tracing::warn!(
                    client_id = %p.client_id,
                    threshold = p.threshold,
                    "quota notification dropped: {MAX_IN_MEMORY} are already being delivered"
                );
            }
            return false;
        }
        if !held.insert(p.id()) {
            return false;
        }
        match self.tx.try_send(p) {
            Ok(()) => true,
            Err(e) => {
                held.remove(&e.into_inner().id());
                false
            }
        }
    }

    /// Starts the delivery loop (and, on a durable store, the sweep) on
    /// the current runtime.
    pub fn start(self: &Arc<Self>, store: SharedStore, durable: bool) {
        let Some(mut rx) = self.rx.lock().take() else {
            return;
        };
        let client = deliver::Sender::new(self.url.clone(), self.secret.clone());
        let me = self.clone();
        let for_tasks = store.clone();
        tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                let (me, store, client) = (me.clone(), for_tasks.clone(), client.clone());
                tokio::spawn(async move {
                    let id = p.id();
                    deliver::until_done(&client, &p, &store, durable, &me.metrics).await;
                    me.held.lock().remove(&id);
                });
            }
        });
        if durable {
            let me = Arc::downgrade(self);
            tokio::spawn(async move {
                loop {
                    let Some(n) = me.upgrade() else { return };
                    match store.claim_notifications(None).await {
                        Ok(found) => {
                            for p in found {
                                n.submit(p, true);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "quota notification sweep failed")
                        }
                    }
                    drop(n);
                    tokio::time::sleep(SWEEP_INTERVAL).await;
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crossing_is_from_below_to_at_or_above() {
        let t = [80, 100];
        assert_eq!(crossing(&t, 79, 1, 100), 0);
        assert_eq!(crossing(&t, 80, 1, 100), 1);
        assert_eq!(crossing(&t, 81, 1, 100), 0);
        assert_eq!(crossing(&t, 100, 25, 100), 0b11);
        assert_eq!(crossing(&t, 100, 1, 100), 0b10);
        // 80 % of 7 is 5.6: reached at 6.
        assert_eq!(crossing(&t, 6, 1, 7), 1);
        assert_eq!(crossing(&t, 5, 1, 7), 0);
        assert_eq!(crossing(&t, 5, 0, 100), 0);
        assert_eq!(crossing(&t, 5, 5, 0), 0);
    }
}
