//! Quota notifications on Redis: the pending ones `admit.lua` records in
//! each client's `tg:{c:<id>}:notify` hash, leased by `notify_claim.lua`
//! (one client per call, in its slot, so a cluster routes it), found by a
//! sweep over `tg:clients`, and removed once delivered (src/notify/).

use super::*;
use crate::notify::{Pending, LEASE};

/// Client ids read per `SSCAN` step of a sweep.
const SWEEP_COUNT: usize = 500;

impl RedisStore {
    /// Leases `client_id`'s pending notifications: `field` alone (renewed
    /// whatever its lease), or every one whose lease ran out.
    pub(super) async fn claim_client(
        &self,
        client_id: &str,
        field: Option<String>,
    ) -> Result<Vec<Pending>, StoreError> {
        let mut inv = self.inner.notify_claim.prepare_invoke();
        inv.key(layout::notify(client_id))
            .arg(self.now_arg())
            .arg(LEASE.as_millis().to_string())
            .arg(field.unwrap_or_default());
        let pairs: Vec<String> = self
            .call(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        Ok(pairs
            .chunks_exact(2)
            .filter_map(|fv| parse(client_id, &fv[0], &fv[1]))
            .collect())
    }

    /// Every client's pending notifications whose lease ran out.
    pub(super) async fn sweep_notifications(&self) -> Result<Vec<Pending>, StoreError> {
        let mut found = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, ids): (u64, Vec<String>) = self
                .call(|mut c| async move {
                    redis::cmd("SSCAN")
                        .arg(layout::CLIENTS)
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(SWEEP_COUNT)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            for id in ids {
                found.extend(self.claim_client(&id, None).await?);
                if found.len() >= crate::notify::MAX_IN_MEMORY {
                    return Ok(found);
                }
            }
            if next == 0 {
                return Ok(found);
            }
            cursor = next;
        }
    }

    /// Removes a delivered (or expired) notification.
    pub(super) async fn remove_notification(&self, p: &Pending) -> Result<(), StoreError> {
        let key = layout::notify(&p.client_id);
        let field = field(p);
        let _: i64 = self
            .call(|mut c| async move {
                redis::cmd("HDEL")
                    .arg(key)
                    .arg(field)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(())
    }
}

/// The hash field of a notification: `<period start ms>:<threshold>`.
pub(super) fn field(p: &Pending) -> String {
    format!("{}:{}", p.period_start_ms, p.threshold)
}

/// A stored notification; `None` for one that does not parse (left alone).
fn parse(client_id: &str, field: &str, value: &str) -> Option<Pending> {
    let (start, threshold) = field.split_once(':')?;
    let mut v = value.split(',').map(str::parse::<i64>);
    let (used, limit, end, at) = (
        v.next()?.ok()?,
        v.next()?.ok()?,
        v.next()?.ok()?,
        v.next()?.ok()?,
    );
    Some(Pending {
        client_id: client_id.to_owned(),
        threshold: threshold.parse().ok()?,
        used: u64::try_from(used).ok()?,
        limit: u64::try_from(limit).ok()?,
        period_start_ms: start.parse().ok()?,
        period_end_ms: end,
        at_ms: at,
    })
}
