//! Refunds (`[limits] refund_on`, docs/rate-limiting.md "Refunds"): an
//! admitted request that the upstream never answered (tollgate's 502/504),
//! or answered 5xx when configured, is given back to its client's counters.
//!
//! Owns the bounded queue between the request path and one worker task that
//! makes one store call ([`crate::store::Store::refund`]) per refund, after
//! the response is on its way. The request path never waits: a full queue
//! drops the refund at once, and a store call that fails drops it too; both
//! are logged and counted in `tollgate_refunds_dropped_total`. Applied
//! refunds are counted in `tollgate_refunds_total{reason}`.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::mpsc;

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
        }
    }

    /// Queues a refund (`reason`: `unreachable` or `5xx`); never waits.
    /// `false` when it was dropped because the queue is full.
    pub fn submit(&self, refund: Refund, reason: &'static str) -> bool {
        if let Some(rx) = self.rx.lock().take() {
            tokio::spawn(work(rx, self.store.clone(), self.metrics.clone()));
        }
        match self.tx.try_send((refund, reason)) {
            Ok(()) => true,
            Err(e) => {
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
) {
    while let Some((refund, reason)) = rx.recv().await {
        match store.refund(&refund).await {
            Ok(()) => metrics.refund(reason),
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
    }
}
