//! Refunds (`[limits] refund_on`, docs/rate-limiting.md "Refunds"): an
//! admitted request that the upstream never answered (tollgate's 502/504),
//! or answered 5xx when configured, is given back to its client's counters.
//!
//! Owns the bounded queue between the request path and one worker task that
//! makes one store call ([`crate::store::Store::refund`]) per refund, after
//! the response is on its way. The request path never waits: a full queue
//! drops the refund at once, and a store call that fails drops it too; both
//! are logged and counted in `tollgate_refunds_dropped_total`. Applied
//! refunds are counted in `tollgate_refunds_total{reason}`. At shutdown,
//! [`Refunds::flush`] waits (bounded) for the queue to empty; what is left
//! is logged and counted as dropped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};

use crate::metrics::Metrics;
use crate::store::{Refund, SharedStore};

/// Refunds waiting for their store call; more are dropped (and counted).
pub const REFUND_QUEUE_CAPACITY: usize = 4096;

/// The queue and its worker (started by the first refund, on the runtime
/// that serves requests).
pub struct Refunds {
    tx: mpsc::Sender<(Refund, &'static str)>,
    /// The worker's end, until the worker is started.
    rx: Mutex<Option<mpsc::Receiver<(Refund, &'static str)>>>,
    store: SharedStore,
    metrics: Arc<Metrics>,
    /// Refunds queued or in their store call; the worker notifies `done`
    /// after each one.
    pending: Arc<Pending>,
}

#[derive(Default)]
struct Pending {
    count: AtomicUsize,
    done: Notify,
}

impl std::fmt::Debug for Refunds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refunds")
            .field("queued", &(self.tx.max_capacity() - self.tx.capacity()))
            .finish_non_exhaustive()
    }
}

impl Refunds {
    pub fn new(store: SharedStore, metrics: Arc<Metrics>, capacity: usize) -> Refunds {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        Refunds {
            tx,
            rx: Mutex::new(Some(rx)),
            store,
            metrics,
            pending: Arc::default(),
        }
    }

    /// Waits up to `within` for every queued refund to be sent; counts the
    /// ones left as dropped (and logs them). Returns how many were left.
    pub async fn flush(&self, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let done = self.pending.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            let left = self.pending.count.load(Ordering::Acquire);
            if left == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, done).await.is_err() {
                let left = self.pending.count.swap(0, Ordering::AcqRel);
                for _ in 0..left {
                    self.metrics.refund_dropped();
                }
                tracing::warn!(
                    refunds = left,
                    "refunds dropped at shutdown: the store did not take them in time"
                );
                return left;
            }
        }
    }

    /// Queues a refund (`reason`: `unreachable` or `5xx`); never waits.
    /// `false` when it was dropped because the queue is full.
    pub fn submit(&self, refund: Refund, reason: &'static str) -> bool {
        if let Some(rx) = self.rx.lock().take() {
            let (store, metrics, pending) = (
                self.store.clone(),
                self.metrics.clone(),
                self.pending.clone(),
            );
            tokio::spawn(work(rx, store, metrics, pending));
        }
        self.pending.count.fetch_add(1, Ordering::AcqRel);
        match self.tx.try_send((refund, reason)) {
            Ok(()) => true,
            Err(e) => {
                self.pending.count.fetch_sub(1, Ordering::AcqRel);
                let (refund, _) = e.into_inner();
                self.metrics.refund_dropped();
                tracing::warn!(
                    client_id = %refund.client_id,
                    units = refund.units,
                    reason,
                    "refund dropped: the refund queue is full (the store is slow or down)"
                );
                false
            }
        }
    }
}

async fn work(
    mut rx: mpsc::Receiver<(Refund, &'static str)>,
    store: SharedStore,
    metrics: Arc<Metrics>,
    pending: Arc<Pending>,
) {
    while let Some((refund, reason)) = rx.recv().await {
        let result = store.refund(&refund).await;
        // Counted once: by the worker, unless `flush` gave up on it first.
        let counted = pending
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        match result {
            Ok(()) => metrics.refund(reason),
            Err(_) if !counted => {}
            Err(e) => {
                metrics.refund_dropped();
                tracing::warn!(
                    client_id = %refund.client_id,
                    units = refund.units,
                    reason,
                    error = %e,
                    "refund dropped: the store call failed"
                );
            }
        }
        pending.done.notify_waiters();
    }
}
