//! The [`Store`] operations over Redis.

use super::*;
use crate::history::{DayCounts, Range};

#[async_trait]
impl Store for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self
            .call(|mut c| async move { redis::cmd("PING").query_async(&mut c).await })
            .await?;
        Ok(())
    }

    /// Adds the id to `tg:clients` first, then creates the hash atomically.
    /// A failure in between leaves an id without a hash, which listings skip
    /// and a retried create completes; the other order could leave a client
    /// that exists but is never listed.
    async fn create_client(&self, client: &Client) -> Result<(), StoreError> {
        let id = client.id.clone();
        let _: i64 = self
            .call(|mut c| async move {
                redis::cmd("SADD")
                    .arg(layout::CLIENTS)
                    .arg(id)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let mut inv = self.inner.create_client.prepare_invoke();
        inv.key(layout::client(&client.id));
        for (field, value) in client_fields(client) {
            inv.arg(field).arg(value);
        }
        let created: i64 = self
            .call(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        if created == 1 {
            Ok(())
        } else {
            Err(StoreError::ClientExists)
        }
    }

    async fn get_client(&self, id: &str) -> Result<Option<Client>, StoreError> {
        let h = self.hgetall_client(layout::client(id)).await?;
        if h.is_empty() {
            return Ok(None);
        }
        client_from_hash(id, &h).map(Some)
    }

    async fn list_clients(&self) -> Result<Vec<Client>, StoreError> {
        let mut ids: Vec<String> = self
            .call(|mut c| async move {
                redis::cmd("SMEMBERS")
                    .arg(layout::CLIENTS)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        ids.sort();
        let hashes: Vec<HashMap<String, String>> = if self.inner.conn.is_cluster() {
            // The hashes live in different slots: one command each, a few at a time.
            use futures_util::{StreamExt, TryStreamExt};
            let reads: Vec<_> = ids
                .iter()
                .map(|id| self.hgetall_client(layout::client(id)))
                .collect();
            futures_util::stream::iter(reads)
                .buffered(CLUSTER_LIST_CONCURRENCY)
                .try_collect()
                .await?
        } else {
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("HGETALL").arg(layout::client(id));
            }
            let raw: Vec<RawHash> = self
                .call(|mut c| async move { pipe.query_async(&mut c).await })
                .await?;
            raw.into_iter()
                .map(client_text_fields)
                .collect::<Result<_, _>>()?
        };
        ids.iter()
            .zip(&hashes)
            // An id whose hash is missing is a create that did not finish.
            .filter(|(_, h)| !h.is_empty())
            .map(|(id, h)| client_from_hash(id, h))
            .collect()
    }

    async fn update_client(
        &self,
        id: &str,
        patch: &ClientPatch,
    ) -> Result<Option<Client>, StoreError> {
        let mut inv = self.inner.update_client.prepare_invoke();
        inv.key(layout::client(id));
        for (field, value) in patch_fields(patch) {
            inv.arg(field).arg(value);
        }
        let h: Option<RawHash> = self
            .call(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        match h {
            Some(h) => client_from_hash(id, &client_text_fields(h)?).map(Some),
            None => Ok(None),
        }
    }

    /// Writes the global index `tg:keyidx:<id>` FIRST, then the key in the
    /// client's slot. The index may thus point at a key that does not exist
    /// (a create that failed half-way), which every reader treats as "no
    /// such key"; the other order could leave a key that is listed and holds
    /// its name but that `get_key` and `revoke_key` cannot find.
    async fn create_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        let index = layout::key_index(&key.id);
        let (index2, cid) = (index.clone(), key.client_id.clone());
        let indexed: Option<String> = self
            .call(|mut c| async move {
                redis::cmd("SET")
                    .arg(index2)
                    .arg(cid)
                    .arg("NX")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if indexed.is_none() {
            return Err(StoreError::Corrupt("key id already in use".into()));
        }

        let cid = key.client_id.as_str();
        let mut inv = self.inner.create_key.prepare_invoke();
        inv.key(layout::client(cid))
            .key(layout::key(cid, &key.id))
            .key(layout::keys(cid))
            .key(layout::names(cid))
            .arg(&key.id)
            .arg(&key.name)
            .arg(key.created_at.to_string());
        for (field, value) in key_fields(key) {
            inv.arg(field).arg(value);
        }
        let outcome: i64 = self
            .call(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        let refused = match outcome {
            1 => return Ok(()),
            -1 => StoreError::NoSuchClient,
            -2 => StoreError::NameTaken,
            -3 => StoreError::Corrupt("key id already in use".into()),
            _ => StoreError::Corrupt("unexpected create_key reply".into()),
        };
        // The key was not written: withdraw the index (harmless if this fails).
        let cleanup: Result<i64, StoreError> = self
            .call(|mut c| async move { redis::cmd("DEL").arg(index).query_async(&mut c).await })
            .await;
        if let Err(e) = cleanup {
            tracing::warn!(error = %e, "could not remove the index of a key that was not created");
        }
        Err(refused)
    }

    async fn get_key(&self, key_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let Some(client_id) = self.owner_of(key_id, None).await? else {
            return Ok(None);
        };
        let key = layout::key(&client_id, key_id);
        let h: HashMap<String, String> = self
            .call(|mut c| async move { redis::cmd("HGETALL").arg(key).query_async(&mut c).await })
            .await?;
        if h.is_empty() {
            // An index left by a create that failed half-way or a revoke in progress.
            return Ok(None);
        }
        let record = key_from_hash(key_id, &h)?;
        if record.client_id != client_id {
            return Err(corrupt("key client_id"));
        }
        Ok(Some(record))
    }

    async fn list_keys(&self, client_id: &str) -> Result<Vec<KeyRecord>, StoreError> {
        let set = layout::keys(client_id);
        let ids: Vec<String> = self
            .call(|mut c| async move {
                redis::cmd("ZRANGE")
                    .arg(set)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGETALL").arg(layout::key(client_id, id));
        }
        let hashes: Vec<HashMap<String, String>> = self
            .call(|mut c| async move { pipe.query_async(&mut c).await })
            .await?;
        ids.iter()
            .zip(&hashes)
            // Revoked between the two reads.
            .filter(|(_, h)| !h.is_empty())
            .map(|(id, h)| key_from_hash(id, h))
            .collect()
    }

    /// Deletes the key in its client's slot first, then the global index, so
    /// a half-done revoke leaves only an index that points at nothing.
    async fn revoke_key(&self, key_id: &str, owner: Option<&str>) -> Result<bool, StoreError> {
        let Some(client_id) = self.owner_of(key_id, owner).await? else {
            return Ok(false);
        };
        let index = layout::key_index(key_id);
        let mut inv = self.inner.revoke_key.prepare_invoke();
        inv.key(layout::key(&client_id, key_id))
            .key(layout::keys(&client_id))
            .key(layout::names(&client_id))
            .arg(key_id)
            .arg(&client_id);
        let deleted: i64 = self
            .call(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        // The key is gone (or never was): the index must go too. Should this
        // fail, the index points at nothing, which readers treat as no key.
        let cleanup: Result<i64, StoreError> = self
            .call(|mut c| async move { redis::cmd("DEL").arg(index).query_async(&mut c).await })
            .await;
        if let Err(e) = cleanup {
            tracing::warn!(error = %e, "could not remove the index of a revoked key");
        }
        Ok(deleted == 1)
    }

    /// Finds the key's client through the index, then rotates atomically in
    /// the client's slot.
    async fn rotate_key(
        &self,
        key_id: &str,
        owner: Option<&str>,
        new_hash: &str,
        grace: Duration,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let Some(client_id) = self.owner_of(key_id, owner).await? else {
            return Ok(None);
        };
        let mut inv = self.inner.rotate_key.prepare_invoke();
        inv.key(layout::key(&client_id, key_id))
            .arg(&client_id)
            .arg(new_hash)
            .arg(grace.as_millis().to_string())
            .arg(self.now_arg());
        let h: Option<HashMap<String, String>> = self
            .call(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        match h {
            Some(h) => key_from_hash(key_id, &h).map(Some),
            None => Ok(None),
        }
    }

    async fn admit(&self, req: &AdmitRequest<'_>) -> Result<Decision, StoreError> {
        if req.key_id.is_empty() {
            // The script reads an empty key id as "no key check" (usage only).
            return Ok(Decision::new(Verdict::KeyInvalid, None));
        }
        self.inner.group.admit(req).await
    }

    async fn usage(&self, req: &UsageRequest<'_>) -> Result<Decision, StoreError> {
        let deadline = Instant::now() + self.inner.timeout;
        let batch = self
            .run_admit(
                "usage",
                req.client_id,
                req.key,
                None,
                req.defaults,
                &req.policy,
                1,
                None,
                deadline,
            )
            .await
            .map_err(|e| e.error)?;
        Ok(batch.last)
    }

    async fn history(&self, client_id: &str, range: Range) -> Result<Vec<DayCounts>, StoreError> {
        self.read_history(client_id, range).await
    }

    /// Policies: `settle.lua` in mode "refund", in the client's slot.
    fn set_notifier(&self, notifier: Arc<crate::notify::Notifier>) {
        let _ = self.inner.notifier.set(notifier);
    }

    async fn claim_notifications(
        &self,
        only: Option<&crate::notify::Pending>,
    ) -> Result<Vec<crate::notify::Pending>, StoreError> {
        match only {
            Some(p) => {
                self.claim_client(&p.client_id, Some(notify::field(p)))
                    .await
            }
            None => self.sweep_notifications().await,
        }
    }

    async fn finish_notification(&self, p: &crate::notify::Pending) -> Result<(), StoreError> {
        self.remove_notification(p).await
    }

    async fn refund(&self, r: &Refund) -> Result<(), StoreError> {
        let sec = r.at_ms.div_euclid(1000);
        // Billing: the period id and history day of the client's cycle at
        // the admission (the cycle as this process last saw it).
        let cycle = self.inner.cycles.get(&r.client_id);
        let period = cycle.period_at(r.at_ms).start_ms;
        let (day, _, day_end_ms) = cycle.day_at(r.at_ms);
        let days = i64::from(self.inner.history_days.load(Ordering::Relaxed));
        let ttl = (day_end_ms - r.at_ms).div_euclid(1000) + days * 86_400 + 1;
        let mut inv = self.inner.settle.prepare_invoke();
        inv.key(layout::client(&r.client_id))
            .arg("refund")
            .arg(r.units.to_string())
            .arg(sec.to_string())
            .arg(period.to_string())
            .arg("")
            .arg(layout::history_day(&r.client_id, &day.to_string()))
            .arg(ttl.max(1).to_string());
        let _: Vec<i64> = self
            .call(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        Ok(())
    }
}
