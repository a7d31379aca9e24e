//! Group commit of admissions: concurrent requests of one key go to the
//! store together, in one call that asks for `n` admissions.
//!
//! Owns the queue of admissions waiting for a store call. While a call for a
//! group (client, key, secret generation, scope, default limits) is in
//! flight, later requests of that group wait in its queue; when the call
//! returns, the whole queue (up to [`MAX_BATCH`]) goes in the next call. A
//! request that finds no call in flight starts one at once, so an idle
//! client pays no added wait, and a busy one pays one store call per batch
//! instead of one per request.
//!
//! Bounds: at most `max_queued` requests wait in queues at once (more are
//! refused at once with [`StoreError::Unavailable`], as calls beyond the
//! store's in-flight bound are), and when a call fails, the requests queued
//! behind it get its error at once; so on a hung store every request is
//! answered within one store timeout.
//!
//! Counting stays exact, across processes too: the store admits
//! `min(n, room in the window, room in the month)` of a batch atomically, as
//! `n` calls in a row would (room counted in requests of the route's cost:
//! the cost is part of the group, so a batch admits in queue order while
//! each request's cost fits), and [`Batch::decision`] gives each request of
//! the batch the decision (and the `X-RateLimit-Remaining`) it would have got
//! from its own call in that order.
//!
//! Store calls run in a task of their own, so a request that goes away (its
//! client disconnected) never strands the requests queued behind it; a
//! request that goes away before its batch is sent is not counted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::{AdmitRequest, StoreError};
use crate::limits::policy::Policy;
use crate::limits::{Decision, Limits, Verdict};

/// Most requests one store call admits; a longer queue goes in several calls.
pub const MAX_BATCH: usize = 1024;

/// The requests that can be decided together: every field the store's
/// decision depends on, besides the counters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupKey {
    pub client_id: String,
    pub key_id: String,
    pub gen: u64,
    pub scope: Option<String>,
    pub defaults: Limits,
    /// Cost, route shadow and plans: requests of one batch share them.
    pub policy: Policy,
}

impl GroupKey {
    fn of(req: &AdmitRequest<'_>) -> Self {
        GroupKey {
            client_id: req.client_id.to_owned(),
            key_id: req.key_id.to_owned(),
            gen: req.gen,
            scope: req.scope.map(str::to_owned),
            defaults: req.defaults,
            policy: req.policy.clone(),
        }
    }
}

/// What the store decided about a batch of `n` requests of one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// How many of the batch (its first ones) were admitted and counted.
    pub admitted: u64,
    /// How many of the admitted ones were within the limits; the rest (up
    /// to `admitted`) were counted under shadow mode, and `last.policy.shadow`
    /// is the refusal they would have got.
    pub within: u64,
    /// The state after the writes, with the verdict for the requests beyond
    /// `admitted` (`Admitted` when all were).
    pub last: Decision,
}

impl Batch {
    /// The decision for request `i` (0-based) of the batch: what its own call
    /// would have returned had the batch's requests been sent one by one.
    pub fn decision(&self, i: u64) -> Decision {
        if i >= self.admitted {
            return self.last;
        }
        let cost = self.last.policy.cost.max(1);
        let shadowed = i >= self.within;
        // Requests after `i` in the batch took `later` requests' units more
        // from both limits (of which `later_within` within the window's room).
        let later = self.admitted - 1 - i;
        let later_within = self.within.saturating_sub(i + 1);
        let state = self.last.state.map(|mut s| {
            if !shadowed {
                s.remaining += later_within * cost;
            }
            s.monthly_used = s.monthly_used.saturating_sub(later * cost);
            if later_within > 0 {
                // The window had room left after this request: no retry instant.
                s.window_retry_at_ms = None;
            }
            s
        });
        let mut policy = self.last.policy;
        if !shadowed {
            policy.shadow = None;
        }
        Decision {
            verdict: Verdict::Admitted,
            state,
            policy,
        }
    }
}

/// A store that can decide a batch of one group's requests in one call.
#[async_trait]
pub trait AdmitMany: Send + Sync + 'static {
    /// Checks key, client and scope as `Store::admit` does, then admits as
    /// many of `n` requests as both limits have room for. `since` is when
    /// the batch's oldest request started waiting: the store answers within
    /// its timeout of that instant, so no request waits longer.
    async fn admit_many(
        &self,
        group: &GroupKey,
        n: u64,
        since: Instant,
    ) -> Result<Batch, StoreError>;
}

/// A request waiting for its batch's decision.
struct Waiter {
    tx: oneshot::Sender<Result<Decision, StoreError>>,
    since: Instant,
}

/// The queues of every group with a call in flight.
#[derive(Default)]
struct Queues {
    /// A group is here exactly while its runner task lives. Hashed with
    /// foldhash (seeded per process), not SipHash: a request hashes its
    /// group's dozen fields four or five times (SipHash cost some 6,000
    /// instructions per request), and the fields are tollgate's own ids,
    /// route settings and config, not text a client chooses.
    groups: HashMap<GroupKey, Vec<Waiter>, foldhash::fast::RandomState>,
    /// Waiters in all queues (not those of a batch in flight).
    queued: usize,
}

/// Coalesces concurrent admissions per group; see the module documentation.
pub struct GroupCommit<S> {
    store: S,
    queues: Arc<Mutex<Queues>>,
    /// Most requests queued at once over all groups; more are refused at
    /// once, so a hung store cannot pile up waiting requests.
    max_queued: usize,
}

impl<S> std::fmt::Debug for GroupCommit<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let q = self.queues.lock();
        f.debug_struct("GroupCommit")
            .field("groups", &q.groups.len())
            .field("queued", &q.queued)
            .finish_non_exhaustive()
    }
}

impl<S: AdmitMany + Clone> GroupCommit<S> {
    pub fn new(store: S, max_queued: usize) -> Self {
        GroupCommit {
            store,
            queues: Arc::default(),
            max_queued,
        }
    }

    /// Admits one request, in the next batch of its group.
    pub async fn admit(&self, req: &AdmitRequest<'_>) -> Result<Decision, StoreError> {
        let key = GroupKey::of(req);
        let (tx, rx) = oneshot::channel();
        let tx = Waiter {
            tx,
            since: Instant::now(),
        };
        let start_runner = {
            let mut q = self.queues.lock();
            if q.queued >= self.max_queued {
                return Err(StoreError::Unavailable(
                    "too many store calls in flight".into(),
                ));
            }
            q.queued += 1;
            match q.groups.get_mut(&key) {
                Some(queue) => {
                    queue.push(tx);
                    None
                }
                None => {
                    q.groups.insert(key.clone(), vec![tx]);
                    Some(key)
                }
            }
        };
        if let Some(key) = start_runner {
            let runner = Runner {
                store: self.store.clone(),
                queues: self.queues.clone(),
                key,
                finished: false,
            };
            tokio::spawn(runner.run());
        }
        // The runner answers every waiter it takes; it is only dropped
        // without answering if its task is (runtime shutdown, a panic).
        rx.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the store call was abandoned".into(),
            ))
        })
    }
}

/// Sends one group's batches until its queue is empty, then removes it.
struct Runner<S> {
    store: S,
    queues: Arc<Mutex<Queues>>,
    key: GroupKey,
    /// Set when the runner removed its (empty) group itself.
    finished: bool,
}

impl<S: AdmitMany> Runner<S> {
    async fn run(mut self) {
        while let Some(batch) = self.take(MAX_BATCH) {
            let n = batch.len() as u64;
            // The queue is in arrival order: the first waited longest.
            let since = batch.first().map_or_else(Instant::now, |w| w.since);
            match self.store.admit_many(&self.key, n, since).await {
                Ok(result) => {
                    for (i, waiter) in (0u64..).zip(batch) {
                        // A waiter that went away meanwhile was counted, as a
                        // request whose client disconnects after admission is.
                        let _ = waiter.tx.send(Ok(result.decision(i)));
                    }
                }
                Err(e) => {
                    // The requests that queued behind the failed call get its
                    // error too, at once: they would otherwise wait out
                    // another timeout on a store that just failed.
                    let queued = self.take(usize::MAX).unwrap_or_default();
                    for waiter in batch.into_iter().chain(queued) {
                        let _ = waiter.tx.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    /// Up to `most` waiters from the front of the queue, skipping those
    /// whose request went away; `None` (and the group removed, under the
    /// same lock) when none are left.
    fn take(&mut self, most: usize) -> Option<Vec<Waiter>> {
        let mut guard = self.queues.lock();
        let q = &mut *guard;
        let Some(queue) = q.groups.get_mut(&self.key) else {
            // Not reached: only this runner removes its group.
            self.finished = true;
            return None;
        };
        let before = queue.len();
        queue.retain(|w| !w.tx.is_closed());
        if queue.is_empty() {
            q.groups.remove(&self.key);
            q.queued -= before;
            self.finished = true;
            return None;
        }
        let rest = queue.split_off(queue.len().min(most));
        let batch = std::mem::replace(queue, rest);
        q.queued -= before - queue.len();
        Some(batch)
    }
}

impl<S> Drop for Runner<S> {
    /// A runner that ends early (its task cancelled or panicking) takes its
    /// group along: the queued requests get an error instead of waiting
    /// for a runner that will never come, and the next request starts anew.
    /// (After a normal end the entry may already be a new runner's.)
    fn drop(&mut self) {
        if !self.finished {
            let mut q = self.queues.lock();
            if let Some(queue) = q.groups.remove(&self.key) {
                q.queued -= queue.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::LimitState;

    fn batch(admitted: u64, verdict: Verdict, remaining: u64, used: u64) -> Batch {
        Batch {
            admitted,
            within: admitted,
            last: Decision {
                policy: Default::default(),
                verdict,
                state: Some(LimitState {
                    now_ms: 1_000,
                    per_minute: 10,
                    remaining,
                    reset_at: 61,
                    monthly: 100,
                    monthly_used: used,
                    window_retry_at_ms: (remaining == 0).then_some(61_000),
                    period: crate::limits::cycle::Cycle::utc_month().period_at(1_000),
                }),
            },
        }
    }

    #[test]
    fn each_request_gets_the_state_of_its_own_turn() {
        // 5 asked, 4 admitted (4 used before): remaining 3,2,1,0 then a 429.
        let b = batch(4, Verdict::RateLimited, 0, 8);
        let got: Vec<_> = (0..5)
            .map(|i| {
                let d = b.decision(i);
                let s = d.state.unwrap();
                (d.verdict, s.remaining, s.monthly_used, s.window_retry_at_ms)
            })
            .collect();
        assert_eq!(
            got,
            [
                (Verdict::Admitted, 3, 5, None),
                (Verdict::Admitted, 2, 6, None),
                (Verdict::Admitted, 1, 7, None),
                (Verdict::Admitted, 0, 8, Some(61_000)),
                (Verdict::RateLimited, 0, 8, Some(61_000)),
            ]
        );
    }

    #[test]
    fn a_refused_batch_refuses_all() {
        let b = Batch {
            admitted: 0,
            within: 0,
            last: Decision::new(Verdict::KeyInvalid, None),
        };
        assert_eq!(b.decision(0), b.last);
        assert_eq!(b.decision(7), b.last);
    }
}
