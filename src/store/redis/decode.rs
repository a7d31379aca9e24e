//! Replies and hashes read back from Redis: script replies into decisions,
//! stored hashes into clients and keys (and back into fields), never
//! echoing a stored value in an error.

use super::*;
use crate::limits::cycle::Cycle;

/// Verdict codes of `admit.lua`.
pub(super) const VERDICTS: [Verdict; 7] = [
    Verdict::Admitted,
    Verdict::KeyInvalid,
    Verdict::ClientMissing,
    Verdict::ClientSuspended,
    Verdict::ScopeDenied,
    Verdict::RateLimited,
    Verdict::QuotaExhausted,
];

/// The error code `admit.lua` raises for data it cannot read.
pub(super) const CORRUPT_CODE: &str = "TGCORRUPT";

/// The slots of an `admit.lua` reply: its state replies are one string of
/// little-endian doubles (whole numbers), its short ones (and a session
/// record replayed from before 2026-11-28) an array of integers.
pub(super) fn admit_slots(reply: redis::Value) -> Result<Vec<i64>, StoreError> {
    let bad = || corrupt("admit reply");
    let redis::Value::BulkString(bytes) = reply else {
        return redis::from_redis_value(reply).map_err(|_| bad());
    };
    // Slots 1..=9 are always there (decode_batch); any further ones are read.
    if bytes.len() % 8 != 0 || bytes.len() < 9 * 8 {
        return Err(bad());
    }
    // Exact integers only: admit.lua keeps every number below 2^53.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    let mut slots = Vec::with_capacity(bytes.len() / 8);
    for b in bytes.chunks_exact(8) {
        let mut d = [0; 8];
        d.copy_from_slice(b);
        let v = f64::from_le_bytes(d);
        if v.fract() != 0.0 || v.abs() >= EXACT {
            return Err(bad());
        }
        slots.push(v as i64);
    }
    Ok(slots)
}

/// An `admit.lua` reply; `cycle` is the client's, which the script
/// confirmed, so the period is the one containing the reply's instant.
pub(super) fn decode_batch(reply: &[i64], cycle: &Cycle) -> Result<Batch, StoreError> {
    let bad = || StoreError::Corrupt("unexpected admit reply".into());
    let code = *reply.first().ok_or_else(bad)?;
    let verdict = *usize::try_from(code)
        .ok()
        .and_then(|i| VERDICTS.get(i))
        .ok_or_else(bad)?;
    let u = |n: i64| u64::try_from(n).map_err(|_| bad());
    match (verdict, reply) {
        (Verdict::KeyInvalid | Verdict::ClientMissing, [_]) => Ok(Batch {
            admitted: 0,
            within: 0,
            last: Decision::new(verdict, None),
        }),
        (
            _,
            // Slots 13.. (admit.lua) carry further fields; their readers take them.
            &[_, now_ms, per_minute, remaining, reset_at, monthly, monthly_used, retry_at_ms, admitted, ref rest @ ..],
        ) => Ok(Batch {
            admitted: u(admitted)?,
            within: match rest.get(2) {
                Some(&n) => u(n)? / 2,
                // A reply recorded before policies: nothing was shadowed.
                None => u(admitted)?,
            },
            last: Decision {
                verdict,
                policy: decode_policy(rest)?,
                state: Some(LimitState {
                    now_ms,
                    per_minute: u(per_minute)?,
                    remaining: u(remaining)?,
                    reset_at,
                    monthly: u(monthly)?,
                    monthly_used: u(monthly_used)?,
                    window_retry_at_ms: (retry_at_ms >= 0).then_some(retry_at_ms),
                    period: cycle.period_at(now_ms),
                }),
            },
        }),
        _ => Err(bad()),
    }
}

/// Policies: reply slots 10..12 of `admit.lua` (shadow verdict, cost,
/// within * 2 + plan_unknown); absent in a reply recorded before them.
fn decode_policy(slots: &[i64]) -> Result<PolicyOutcome, StoreError> {
    let bad = || StoreError::Corrupt("unexpected admit reply".into());
    let Some(&[shadow, cost, flags]) = slots.get(..3) else {
        return Ok(PolicyOutcome::default());
    };
    let shadow = match shadow {
        0 => None,
        5 | 6 => VERDICTS.get(shadow as usize).copied(),
        _ => return Err(bad()),
    };
    Ok(PolicyOutcome {
        cost: u64::try_from(cost)
            .ok()
            .filter(|&c| c >= 1)
            .ok_or_else(bad)?,
        shadow,
        plan_unknown: flags & 1 == 1,
    })
}

pub(super) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("unreadable {what}"))
}

pub(super) fn required<'a>(
    h: &'a HashMap<String, String>,
    field: &str,
    what: &str,
) -> Result<&'a str, StoreError> {
    h.get(field)
        .map(String::as_str)
        .ok_or_else(|| corrupt(&format!("{what} {field}")))
}

pub(super) fn parse_num<T: std::str::FromStr>(
    s: &str,
    field: &str,
    what: &str,
) -> Result<T, StoreError> {
    s.parse().map_err(|_| corrupt(&format!("{what} {field}")))
}

/// An optional number: absent or empty is `None`.
pub(super) fn optional_num<T: std::str::FromStr>(
    h: &HashMap<String, String>,
    field: &str,
    what: &str,
) -> Result<Option<T>, StoreError> {
    match h.get(field).map(String::as_str) {
        None | Some("") => Ok(None),
        Some(s) => parse_num(s, field, what).map(Some),
    }
}

/// A hash as Redis returns it, values not yet decoded.
pub(super) type RawHash = HashMap<String, redis::Value>;

/// The text fields of a client hash: its binary fields, the admission
/// sessions (`cf::SESSION_PREFIXES`) and the counters (`cf::COUNTERS`), left out.
pub(super) fn client_text_fields(raw: RawHash) -> Result<HashMap<String, String>, StoreError> {
    raw.into_iter()
        .filter(|(field, _)| {
            !cf::COUNTERS.contains(&field.as_str())
                && !cf::SESSION_PREFIXES.iter().any(|p| field.starts_with(p))
        })
        .map(
            |(field, value)| match redis::from_redis_value::<String>(value) {
                Ok(v) => Ok((field, v)),
                Err(_) => Err(corrupt(&format!("client {field}"))),
            },
        )
        .collect()
}

pub(super) fn client_from_hash(
    id: &str,
    h: &HashMap<String, String>,
) -> Result<Client, StoreError> {
    const WHAT: &str = "client";
    let status = required(h, cf::STATUS, WHAT)?;
    Ok(Client {
        id: id.to_owned(),
        name: h.get(cf::NAME).cloned().unwrap_or_default(),
        status: ClientStatus::parse(status).ok_or_else(|| corrupt("client status"))?,
        per_minute: optional_num(h, cf::PER_MINUTE, WHAT)?,
        monthly: optional_num(h, cf::MONTHLY, WHAT)?,
        plan: h.get(cf::PLAN).filter(|p| !p.is_empty()).cloned(),
        created_at: parse_num(required(h, cf::CREATED_AT, WHAT)?, cf::CREATED_AT, WHAT)?,
        quota_day: optional_num(h, cf::QUOTA_DAY, WHAT)?.unwrap_or(DEFAULT_QUOTA_DAY),
        quota_tz: h
            .get(cf::QUOTA_TZ)
            .cloned()
            .unwrap_or_else(|| DEFAULT_QUOTA_TZ.to_owned()),
    })
}

pub(super) fn client_fields(c: &Client) -> Vec<(&'static str, String)> {
    let mut f = vec![
        (cf::NAME, c.name.clone()),
        (cf::STATUS, c.status.as_str().to_owned()),
        (cf::CREATED_AT, c.created_at.to_string()),
        (cf::QUOTA_DAY, c.quota_day.to_string()),
        (cf::QUOTA_TZ, c.quota_tz.clone()),
    ];
    if let Some(n) = c.per_minute {
        f.push((cf::PER_MINUTE, n.to_string()));
    }
    if let Some(n) = c.monthly {
        f.push((cf::MONTHLY, n.to_string()));
    }
    if let Some(p) = &c.plan {
        f.push((cf::PLAN, p.clone()));
    }
    f
}

pub(super) fn patch_fields(p: &ClientPatch) -> Vec<(&'static str, String)> {
    let mut f = Vec::new();
    if let Some(name) = &p.name {
        f.push((cf::NAME, name.clone()));
    }
    if let Some(status) = p.status {
        f.push((cf::STATUS, status.as_str().to_owned()));
    }
    if let Some(n) = p.per_minute {
        f.push((cf::PER_MINUTE, n.to_string()));
    }
    if let Some(n) = p.monthly {
        f.push((cf::MONTHLY, n.to_string()));
    }
    if let Some(d) = p.quota_day {
        f.push((cf::QUOTA_DAY, d.to_string()));
    }
    if let Some(tz) = &p.quota_tz {
        f.push((cf::QUOTA_TZ, tz.clone()));
    }
    if let Some(plan) = &p.plan {
        // An empty plan field is "no plan" (update_client.lua only sets fields).
        f.push((cf::PLAN, plan.clone().unwrap_or_default()));
    }
    f
}

pub(super) fn key_from_hash(
    id: &str,
    h: &HashMap<String, String>,
) -> Result<KeyRecord, StoreError> {
    const WHAT: &str = "key";
    let text = |field| required(h, field, WHAT).map(str::to_owned);
    Ok(KeyRecord {
        id: id.to_owned(),
        client_id: text(kf::CLIENT_ID)?,
        name: text(kf::NAME)?,
        scopes: required(h, kf::SCOPES, WHAT)?
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        hash: text(kf::HASH)?,
        prefix: text(kf::PREFIX)?,
        gen: parse_num(required(h, kf::GEN, WHAT)?, kf::GEN, WHAT)?,
        created_at: parse_num(required(h, kf::CREATED_AT, WHAT)?, kf::CREATED_AT, WHAT)?,
        expires_at: optional_num(h, kf::EXPIRES_AT, WHAT)?,
        last_used_at: optional_num(h, kf::LAST_USED_AT, WHAT)?,
        previous: match h.get(kf::PREV_HASH) {
            None => None,
            Some(hash) => Some(PreviousSecret {
                hash: hash.clone(),
                gen: parse_num(required(h, kf::PREV_GEN, WHAT)?, kf::PREV_GEN, WHAT)?,
                until_ms: parse_num(
                    required(h, kf::PREV_UNTIL_MS, WHAT)?,
                    kf::PREV_UNTIL_MS,
                    WHAT,
                )?,
            }),
        },
    })
}

pub(super) fn key_fields(k: &KeyRecord) -> Vec<(&'static str, String)> {
    let mut f = vec![
        (kf::CLIENT_ID, k.client_id.clone()),
        (kf::NAME, k.name.clone()),
        (kf::SCOPES, k.scopes.join(" ")),
        (kf::HASH, k.hash.clone()),
        (kf::PREFIX, k.prefix.clone()),
        (kf::GEN, k.gen.to_string()),
        (kf::CREATED_AT, k.created_at.to_string()),
    ];
    if let Some(t) = k.expires_at {
        f.push((kf::EXPIRES_AT, t.to_string()));
    }
    if let Some(t) = k.last_used_at {
        f.push((kf::LAST_USED_AT, t.to_string()));
    }
    if let Some(p) = &k.previous {
        f.push((kf::PREV_HASH, p.hash.clone()));
        f.push((kf::PREV_GEN, p.gen.to_string()));
        f.push((kf::PREV_UNTIL_MS, p.until_ms.to_string()));
    }
    f
}

#[cfg(test)]
mod tests {
    use super::admit_slots;
    use redis::Value;

    fn packed(slots: &[f64]) -> Value {
        Value::BulkString(slots.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    #[test]
    fn admit_slots_reads_packed_doubles_and_arrays() {
        let state = [
            0.0,
            1_764_300_000_500.0,
            100.0,
            99.0,
            1_764_300_061.0,
            1000.0,
            1.0,
            -1.0,
            1.0,
        ];
        let want: Vec<i64> = state.iter().map(|&v| v as i64).collect();
        assert_eq!(admit_slots(packed(&state)).ok(), Some(want));
        assert_eq!(
            admit_slots(Value::Array(vec![Value::Int(1)])).ok(),
            Some(vec![1])
        );
        // Not whole numbers, too few slots, a torn double: corrupt.
        let mut torn = state;
        torn[3] = 0.5;
        assert!(admit_slots(packed(&torn)).is_err());
        assert!(admit_slots(packed(&state[..8])).is_err());
        let Value::BulkString(mut bytes) = packed(&state) else {
            unreachable!()
        };
        bytes.pop();
        assert!(admit_slots(Value::BulkString(bytes)).is_err());
        assert!(admit_slots(packed(&[9.1e15; 9])).is_err());
    }
}
