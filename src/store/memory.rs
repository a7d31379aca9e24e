//! The embedded, single-process store.
//!
//! Owns every client, key, window and monthly counter of one process, behind
//! one `parking_lot::Mutex`. Each operation takes the lock once, does its work
//! without awaiting, and releases it, so `admit` is as atomic here as the Lua
//! script is in Redis. Nothing is persisted: a restart forgets everything.
//!
//! The window is [`crate::limits::window::Window`]; the quota is a count
//! kept with the period it counts in (the client's billing cycle,
//! [`crate::limits::cycle`]), restarting from zero when the period of the
//! current time is another one; a cycle changed mid-period carries the
//! count to the end of the period it was counted in (docs/billing.md, the
//! same rule as `admit.lua`). A refusal changes no count (expiring old
//! buckets is not a change of count); a refusal by the limits adds to its
//! day's history ([`crate::history::DayBook`]), as admissions do.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{AdmitRequest, Refund, Store, StoreError, TimeSource, UsageRequest};
use crate::clock::{Clock, SystemClock};
use crate::history::{self, Counted as Day, DayBook, DayCounts, Range};
use crate::limits::cycle::{Cycle, Period};
use crate::limits::policy::{self, Policy, PolicyOutcome, Resolved};
use crate::limits::window::Window;
use crate::limits::{Decision, LimitState, Limits, Verdict};
use crate::model::{Client, ClientPatch, ClientStatus, KeyRecord, PreviousSecret};
use crate::notify::{self, Notifier, Pending};

/// The in-process store. Clones share the same state.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    clock: Arc<dyn Clock>,
    /// `[history] days`.
    history_days: Arc<AtomicU32>,
    /// `[notify]`, once set.
    notifier: Arc<OnceLock<Arc<Notifier>>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Inner {
    /// Ordered by id, as `list_clients` returns them.
    clients: BTreeMap<String, ClientEntry>,
    /// Every key of every client, by key id.
    keys: HashMap<String, KeyRecord>,
}

struct ClientEntry {
    client: Client,
    window: Window,
    /// The quota count and the period it counts in.
    month: Counted,
    /// The daily usage history.
    history: DayBook,
    /// `(created_at, key_id)`: the listing order.
    keys: BTreeSet<(i64, String)>,
    /// Key name → key id, for per-client name uniqueness.
    names: HashMap<String, String>,
    /// Notifications: the thresholds crossed, with the start of the period
    /// they were crossed in (older periods' are forgotten).
    notified: Vec<(i64, u8)>,
}

impl ClientEntry {
    /// Notifications: hands `n` the thresholds the admission of `units`
    /// (already in `self.month`) crossed for the first time in `period`.
    fn notify(
        &mut self,
        n: &Notifier,
        client_id: &str,
        period: &Period,
        units: u64,
        limit: u64,
        now_ms: i64,
    ) {
        let used = self.month.used;
        let crossed = notify::crossing(n.thresholds(), used, units, limit);
        if crossed == 0 {
            return;
        }
        self.notified.retain(|(start, _)| *start == period.start_ms);
        let found = Pending::crossed(
            n.thresholds(),
            crossed,
            client_id,
            used,
            limit,
            (period.start_ms, period.end_ms),
            now_ms,
        );
        for p in found {
            if self.notified.contains(&(period.start_ms, p.threshold)) {
                continue;
            }
            self.notified.push((period.start_ms, p.threshold));
            n.submit(p, false);
        }
    }

    /// The client's limits and shadow setting (own, plan, `[limits]`).
    fn resolve(&self, defaults: Limits, policy: &Policy) -> Resolved {
        let c = &self.client;
        policy::resolve(
            (c.per_minute, c.monthly),
            c.plan.as_deref(),
            defaults,
            policy,
        )
    }

    /// Requests counted in `period` of the client's `cycle` at `now_ms`,
    /// without rolling anything over.
    fn month_used(&self, period: &Period, cycle: &Cycle, now_ms: i64) -> u64 {
        let m = &self.month;
        if m.start_ms == period.start_ms || (!cycle.is_tag(&m.tag) && now_ms < m.end_ms) {
            m.used
        } else {
            0
        }
    }

    /// The limit state at `now_ms`, in the period of the client's cycle
    /// containing it, for requests of `cost` units; counts nothing.
    fn state(&mut self, now_ms: i64, cycle: &Cycle, limits: Limits, cost: u64) -> LimitState {
        self.window.expire(now_ms);
        let w = self.window.state_for(now_ms, limits.per_minute, cost);
        let period = cycle.period_at(now_ms);
        LimitState {
            now_ms,
            per_minute: limits.per_minute,
            remaining: w.remaining,
            reset_at: w.reset_at,
            monthly: limits.monthly,
            monthly_used: self.month_used(&period, cycle, now_ms),
            window_retry_at_ms: w.retry_at_ms,
            period,
        }
    }
}

/// A quota count and the period it counts in.
#[derive(Debug, Default)]
struct Counted {
    start_ms: i64,
    end_ms: i64,
    /// [`Cycle::tag`] of the cycle it was counted under.
    tag: String,
    used: u64,
}

/// Why a key does not admit a request, before any counter is looked at.
enum KeyCheck<'a> {
    Ok(&'a mut KeyRecord),
    Refused(Decision),
}

fn refused(verdict: Verdict, state: Option<LimitState>) -> Decision {
    Decision::new(verdict, state)
}

impl MemoryStore {
    pub fn new(time: TimeSource) -> MemoryStore {
        let clock: Arc<dyn Clock> = match time {
            TimeSource::Store => Arc::new(SystemClock),
            TimeSource::Clock(c) => c,
        };
        MemoryStore {
            inner: Arc::new(Mutex::new(Inner::default())),
            clock,
            history_days: Arc::new(AtomicU32::new(history::DEFAULT_DAYS)),
            notifier: Arc::default(),
        }
    }

    /// Keeps `days` days of usage history (`[history] days`).
    pub fn set_history_days(&self, days: u32) {
        self.history_days.store(days, Ordering::Relaxed);
    }
}

/// The key check shared by `admit` and `usage`: exists, belongs to the
/// client, not expired, current generation (or the previous one in its grace).
fn check_key<'a>(
    keys: &'a mut HashMap<String, KeyRecord>,
    client_id: &str,
    key_id: &str,
    gen: u64,
    now_ms: i64,
) -> KeyCheck<'a> {
    match keys.get_mut(key_id) {
        Some(k) if k.client_id == client_id && k.accepts(gen, now_ms) => KeyCheck::Ok(k),
        _ => KeyCheck::Refused(refused(Verdict::KeyInvalid, None)),
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn create_client(&self, client: &Client) -> Result<(), StoreError> {
        let mut inner = self.inner.lock();
        if inner.clients.contains_key(&client.id) {
            return Err(StoreError::ClientExists);
        }
        inner.clients.insert(
            client.id.clone(),
            ClientEntry {
                client: client.clone(),
                window: Window::default(),
                month: Counted::default(),
                history: DayBook::default(),
                notified: Vec::new(),
                keys: BTreeSet::new(),
                names: HashMap::new(),
            },
        );
        Ok(())
    }

    async fn get_client(&self, id: &str) -> Result<Option<Client>, StoreError> {
        Ok(self.inner.lock().clients.get(id).map(|e| e.client.clone()))
    }

    async fn list_clients(&self) -> Result<Vec<Client>, StoreError> {
        let inner = self.inner.lock();
        Ok(inner.clients.values().map(|e| e.client.clone()).collect())
    }

    async fn update_client(
        &self,
        id: &str,
        patch: &ClientPatch,
    ) -> Result<Option<Client>, StoreError> {
        let mut inner = self.inner.lock();
        let Some(entry) = inner.clients.get_mut(id) else {
            return Ok(None);
        };
        let c = &mut entry.client;
        if let Some(name) = &patch.name {
            c.name = name.clone();
        }
        if let Some(status) = patch.status {
            c.status = status;
        }
        if let Some(n) = patch.per_minute {
            c.per_minute = Some(n);
        }
        if let Some(n) = patch.monthly {
            c.monthly = Some(n);
        }
        if let Some(d) = patch.quota_day {
            c.quota_day = d;
        }
        if let Some(tz) = &patch.quota_tz {
            c.quota_tz = tz.clone();
        }
        if let Some(plan) = &patch.plan {
            c.plan = plan.clone();
        }
        Ok(Some(c.clone()))
    }

    async fn create_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let Some(entry) = inner.clients.get_mut(&key.client_id) else {
            return Err(StoreError::NoSuchClient);
        };
        if entry.names.contains_key(&key.name) {
            return Err(StoreError::NameTaken);
        }
        entry.names.insert(key.name.clone(), key.id.clone());
        entry.keys.insert((key.created_at, key.id.clone()));
        inner.keys.insert(key.id.clone(), key.clone());
        Ok(())
    }

    async fn get_key(&self, key_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self.inner.lock().keys.get(key_id).cloned())
    }

    async fn list_keys(&self, client_id: &str) -> Result<Vec<KeyRecord>, StoreError> {
        let inner = self.inner.lock();
        let Some(entry) = inner.clients.get(client_id) else {
            return Ok(Vec::new());
        };
        Ok(entry
            .keys
            .iter()
            .filter_map(|(_, id)| inner.keys.get(id).cloned())
            .collect())
    }

    async fn revoke_key(&self, key_id: &str, owner: Option<&str>) -> Result<bool, StoreError> {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let Some(key) = inner.keys.get(key_id) else {
            return Ok(false);
        };
        if owner.is_some_and(|o| o != key.client_id) {
            return Ok(false);
        }
        let Some(key) = inner.keys.remove(key_id) else {
            return Ok(false);
        };
        if let Some(entry) = inner.clients.get_mut(&key.client_id) {
            entry.keys.remove(&(key.created_at, key.id.clone()));
            if entry.names.get(&key.name) == Some(&key.id) {
                entry.names.remove(&key.name);
            }
        }
        Ok(true)
    }

    async fn rotate_key(
        &self,
        key_id: &str,
        owner: Option<&str>,
        new_hash: &str,
        grace: Duration,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let now_ms = self.clock.now_ms();
        let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let mut inner = self.inner.lock();
        let Some(key) = inner.keys.get_mut(key_id) else {
            return Ok(None);
        };
        if owner.is_some_and(|o| o != key.client_id) {
            return Ok(None);
        }
        key.previous = Some(PreviousSecret {
            hash: std::mem::replace(&mut key.hash, new_hash.to_owned()),
            gen: key.gen,
            until_ms: now_ms.saturating_add(grace_ms),
        });
        key.gen += 1;
        Ok(Some(key.clone()))
    }

    async fn admit(&self, req: &AdmitRequest<'_>) -> Result<Decision, StoreError> {
        let now_ms = self.clock.now_ms();
        let now_s = now_ms.div_euclid(1000);
        let keep = self.history_days.load(Ordering::Relaxed);
        let mut guard = self.inner.lock();
        let inner = &mut *guard;

        let key = match check_key(&mut inner.keys, req.client_id, req.key_id, req.gen, now_ms) {
            KeyCheck::Ok(k) => k,
            KeyCheck::Refused(d) => return Ok(d),
        };
        let Some(entry) = inner.clients.get_mut(req.client_id) else {
            return Ok(refused(Verdict::ClientMissing, None));
        };
        let cost = req.policy.cost.max(1);
        let resolved = entry.resolve(req.defaults, &req.policy);
        let limits = resolved.limits;
        let cycle = entry.client.cycle();
        let state = entry.state(now_ms, &cycle, limits, cost);
        let mut outcome = PolicyOutcome {
            cost,
            shadow: None,
            plan_unknown: resolved.plan_unknown,
        };
        let decided = |verdict, state| Decision {
            verdict,
            state: Some(state),
            policy: outcome,
        };
        // Never shadowed: suspension and scope.
        if entry.client.status != ClientStatus::Active {
            return Ok(decided(Verdict::ClientSuspended, state));
        }
        if req.scope.is_some_and(|s| !key.has_scope(s)) {
            return Ok(decided(Verdict::ScopeDenied, state));
        }
        // Policies: the request fits if `cost` units remain in both limits;
        // one that does not is refused, or counted anyway under shadow mode.
        let day = cycle.local_date(now_ms);
        let month_room = limits.monthly.saturating_sub(state.monthly_used);
        if policy::fitting(1, cost, state.remaining, month_room) == 0 {
            let verdict = policy::refusal(cost, month_room);
            if !resolved.shadow {
                // Billing: the refused units in the day's history.
                let what = if verdict == Verdict::QuotaExhausted {
                    Day::QuotaExceeded
                } else {
                    Day::RateLimited
                };
                entry.history.add(day, what, cost, keep);
                return Ok(decided(verdict, state));
            }
            outcome.shadow = Some(verdict);
        }

        // Admitted: count it against both limits, and in the day's history.
        entry.window.add(now_ms, cost);
        let m = &mut entry.month;
        (m.start_ms, m.end_ms) = (state.period.start_ms, state.period.end_ms);
        m.used = state.monthly_used + cost;
        if !cycle.is_tag(&m.tag) {
            m.tag = cycle.tag();
        }
        entry.history.add(day, Day::Forwarded, cost, keep);
        key.last_used_at = Some(now_s);
        if let Some(n) = self.notifier.get() {
            entry.notify(
                n,
                req.client_id,
                &state.period,
                cost,
                limits.monthly,
                now_ms,
            );
        }
        Ok(Decision {
            verdict: Verdict::Admitted,
            state: Some(entry.state(now_ms, &cycle, limits, cost)),
            policy: outcome,
        })
    }

    async fn usage(&self, req: &UsageRequest<'_>) -> Result<Decision, StoreError> {
        let now_ms = self.clock.now_ms();
        let mut guard = self.inner.lock();
        let inner = &mut *guard;

        if let Some((key_id, gen)) = req.key {
            if let KeyCheck::Refused(d) =
                check_key(&mut inner.keys, req.client_id, key_id, gen, now_ms)
            {
                return Ok(d);
            }
        }
        let Some(entry) = inner.clients.get_mut(req.client_id) else {
            return Ok(refused(Verdict::ClientMissing, None));
        };
        let resolved = entry.resolve(req.defaults, &req.policy);
        let cycle = entry.client.cycle();
        let state = entry.state(now_ms, &cycle, resolved.limits, 1);
        let policy = PolicyOutcome {
            plan_unknown: resolved.plan_unknown,
            ..PolicyOutcome::default()
        };
        let verdict = if req.key.is_some() && entry.client.status != ClientStatus::Active {
            Verdict::ClientSuspended
        } else {
            Verdict::Admitted
        };
        Ok(Decision {
            verdict,
            state: Some(state),
            policy,
        })
    }

    async fn history(&self, client_id: &str, range: Range) -> Result<Vec<DayCounts>, StoreError> {
        let inner = self.inner.lock();
        Ok(inner
            .clients
            .get(client_id)
            .map(|e| e.history.counts(range))
            .unwrap_or_else(|| vec![DayCounts::default(); range.days().count()]))
    }

    fn set_notifier(&self, notifier: Arc<Notifier>) {
        let _ = self.notifier.set(notifier);
    }

    async fn refund(&self, r: &Refund) -> Result<(), StoreError> {
        let now_ms = self.clock.now_ms();
        let mut inner = self.inner.lock();
        let Some(entry) = inner.clients.get_mut(&r.client_id) else {
            return Ok(());
        };
        // Policies: the arithmetic of settle.lua's "give back" — the second
        // if it is still in the window, the month if it is still the one.
        entry.window.expire(now_ms);
        entry.window.give_back(r.at_ms.div_euclid(1000), r.units);
        let cycle = entry.client.cycle();
        if entry.month.start_ms == cycle.period_at(r.at_ms).start_ms {
            entry.month.used = entry.month.used.saturating_sub(r.units);
        }
        // Billing: the units move from forwarded to refunded on their day.
        entry.history.refund(cycle.local_date(r.at_ms), r.units);
        Ok(())
    }
}
