//! One conformance suite for every `Store` backend.
//!
//! Each case is an async fn over a [`Fx`]; the `conformance!` macro runs it
//! against `MemoryStore` and against `RedisStore` on a real `redis-server`
//! started for the case, and all cases in turn on a Redis Cluster and on a
//! Redis Cluster over TLS. Time comes from a `ManualClock`, so time-dependent
//! cases are exact on both. Redis-only cases at the end cover failures:
//! a paused server, a killed and restarted one, one that is down at startup,
//! corrupt data and secrets in errors.

#[path = "store_conformance/billing.rs"]
mod billing;
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use billing::*;
use common::records::{self, client};
use common::redis_cluster::RedisCluster;
use common::redis_server::RedisServer;
use common::tls_redis::{Pki, TlsRedisCluster};
use tollgate::clock::{Clock, ManualClock, SystemClock};
use tollgate::limits::policy::{PlanLimits, Plans, Policy};
use tollgate::limits::{Decision, LimitState, Limits, Verdict};
use tollgate::model::{Client, ClientPatch, ClientStatus, KeyRecord, PreviousSecret};
use tollgate::store::memory::MemoryStore;
use tollgate::store::redis::{Access, Bounds, RedisStore, Topology};
use tollgate::store::{
    AdmitRequest, Refund, SharedStore, Store, StoreError, TimeSource, UsageRequest,
};

/// 2026-02-10T10:00:00Z, a whole minute.
const T0: i64 = 1_770_717_600_000;
const T0_S: i64 = T0 / 1000;
/// 2026-03-01T00:00:00Z.
const MAR_1: i64 = 1_772_323_200_000;
const DEFAULTS: Limits = Limits {
    per_minute: 7,
    monthly: 1000,
};
const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// A store under test, a second handle on the same state, and the clock.
struct Fx {
    store: SharedStore,
    /// For Redis a separate `RedisStore` (its own connection) on the same server.
    other: SharedStore,
    clock: Arc<ManualClock>,
    _server: Option<RedisServer>,
}

fn memory() -> Fx {
    let clock = ManualClock::new(T0);
    let store = MemoryStore::new(TimeSource::Clock(clock.clone()));
    Fx {
        store: Arc::new(store.clone()),
        other: Arc::new(store),
        clock,
        _server: None,
    }
}

fn redis() -> Fx {
    let server = RedisServer::start();
    let clock = ManualClock::new(T0);
    let open = || -> SharedStore {
        let time = TimeSource::Clock(clock.clone());
        Arc::new(RedisStore::new(&server.url(), STORE_TIMEOUT, time).unwrap())
    };
    Fx {
        store: open(),
        other: open(),
        clock: clock.clone(),
        _server: Some(server),
    }
}

fn cluster_fx(cluster: &RedisCluster) -> Fx {
    let clock = ManualClock::new(T0);
    let topology = Topology::Cluster {
        urls: cluster.seed_urls(),
    };
    let open = || -> SharedStore {
        let time = TimeSource::Clock(clock.clone());
        let bounds = Bounds {
            timeout: STORE_TIMEOUT,
            max_in_flight: 1024,
        };
        Arc::new(RedisStore::with_topology(&topology, bounds, time).unwrap())
    };
    Fx {
        store: open(),
        other: open(),
        clock: clock.clone(),
        _server: None,
    }
}

/// [`cluster_fx`] over TLS: `rediss://` seeds, the test CA as `store.ca`.
fn tls_cluster_fx(cluster: &TlsRedisCluster, pki: &Pki) -> Fx {
    let clock = ManualClock::new(T0);
    let topology = Topology::Cluster {
        urls: cluster.seed_urls(),
    };
    let access = Access {
        ca: Some(std::fs::read(&pki.ca_file).unwrap()),
        ..Access::default()
    };
    let open = || -> SharedStore {
        let time = TimeSource::Clock(clock.clone());
        let bounds = Bounds {
            timeout: STORE_TIMEOUT,
            max_in_flight: 1024,
        };
        Arc::new(RedisStore::with_access(&topology, &access, bounds, time).unwrap())
    };
    Fx {
        store: open(),
        other: open(),
        clock: clock.clone(),
        _server: None,
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::memory()).await
                }
            )*
        }
        mod redis_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::redis()).await
                }
            )*
        }
        /// One cluster for all cases (start-up takes seconds), emptied between them.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn redis_cluster_store_all_cases() {
            let cluster = RedisCluster::start();
            $(
                eprintln!("cluster case {}", stringify!($case));
                $case(cluster_fx(&cluster)).await;
                cluster.flush_all();
            )*
        }
        /// The same on three primaries with `--tls-cluster yes`, the store
        /// given their TLS ports and the test CA: the nodes `CLUSTER SLOTS`
        /// names to a TLS client are reached over TLS too.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn redis_tls_cluster_store_all_cases() {
            let pki = Pki::new();
            let cluster = TlsRedisCluster::start(&pki);
            $(
                eprintln!("TLS cluster case {}", stringify!($case));
                $case(tls_cluster_fx(&cluster, &pki)).await;
                cluster.flush_all();
            )*
        }
    };
}

conformance!(
    client_create_duplicate_get,
    clients_list_in_id_order,
    client_patch_and_patch_missing,
    key_create_get_list_order,
    key_name_unique_per_client,
    key_needs_a_client,
    key_revoke_with_and_without_owner,
    key_rotation_honours_the_grace_period,
    remaining_counts_down_and_refusal_counts_nothing,
    retry_instant_is_exact,
    window_slides,
    monthly_quota_exhausts_and_rolls_over,
    client_limits_override_defaults,
    suspended_client_is_refused_with_state,
    missing_scope_is_refused_with_state,
    invalid_keys_are_refused_without_state,
    last_used_at_is_written_on_admission_only,
    usage_counts_nothing_and_agrees_with_admit,
    concurrent_admits_admit_exactly_the_limit,
    concurrent_admits_stop_at_the_monthly_quota,
    cycle_boundary_in_utc,
    cycle_boundary_in_los_angeles_across_dst,
    cycle_boundary_in_kolkata,
    cycle_day_31_through_a_leap_february,
    a_cycle_change_carries_used_to_the_new_period_end,
    history_counts_each_local_day,
    history_counts_units_and_refunds,
    plans_resolve_per_limit_and_changes_apply_everywhere,
    plan_numbers_from_the_config_in_force,
    cost_admits_exactly_at_the_boundary,
    cost_against_the_monthly_quota,
    cost_above_the_limit_never_fits,
    concurrent_mixed_costs_never_exceed_the_limit,
    shadow_precedence_and_counting,
    shadowed_batches_count_every_request,
    shadow_never_covers_other_refusals,
    refund_gives_back_both_counters,
    refund_after_the_second_left,
    refund_after_the_month_rolled_over,
);

// ---------------------------------------------------------------- fixtures

/// A key of the conformance cases: scopes `read:things` and `read:api_keys`.
fn key(id: &str, client_id: &str, name: &str) -> KeyRecord {
    records::key(id, client_id, name, &["read:things", "read:api_keys"])
}

/// Client `acme` with the given limits (None: defaults) and key `key_a`.
async fn acme(fx: &Fx, per_minute: Option<u64>, monthly: Option<u64>) {
    let mut c = client("acme");
    c.per_minute = per_minute;
    c.monthly = monthly;
    fx.store.create_client(&c).await.unwrap();
    fx.store
        .create_key(&key("key_a", "acme", "default"))
        .await
        .unwrap();
}

fn req(scope: Option<&str>) -> AdmitRequest<'_> {
    AdmitRequest {
        client_id: "acme",
        key_id: "key_a",
        gen: 1,
        scope,
        defaults: DEFAULTS,
        policy: Policy::default(),
    }
}

async fn admit(store: &SharedStore) -> Decision {
    store.admit(&req(None)).await.unwrap()
}

async fn usage(fx: &Fx) -> LimitState {
    let d = fx
        .store
        .usage(&UsageRequest {
            client_id: "acme",
            key: None,
            defaults: DEFAULTS,
            policy: Policy::default(),
        })
        .await
        .unwrap();
    assert_eq!(d.verdict, Verdict::Admitted);
    d.state.unwrap()
}

fn state(d: &Decision) -> LimitState {
    d.state
        .unwrap_or_else(|| panic!("{:?} should carry a state", d.verdict))
}

fn ids(keys: &[KeyRecord]) -> Vec<&str> {
    keys.iter().map(|k| k.id.as_str()).collect()
}

// ---------------------------------------------------------------- clients

async fn client_create_duplicate_get(fx: Fx) {
    let mut c = client("acme");
    c.per_minute = Some(10);
    fx.store.create_client(&c).await.unwrap();
    assert_eq!(
        fx.store.create_client(&client("acme")).await,
        Err(StoreError::ClientExists)
    );
    assert_eq!(fx.store.get_client("acme").await.unwrap(), Some(c));
    assert_eq!(fx.store.get_client("nope").await.unwrap(), None);
}

async fn clients_list_in_id_order(fx: Fx) {
    assert!(fx.store.list_clients().await.unwrap().is_empty());
    for id in ["zeta", "acme", "m-1", "m_0", "9lives"] {
        fx.store.create_client(&client(id)).await.unwrap();
    }
    let listed: Vec<String> = fx
        .store
        .list_clients()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(listed, ["9lives", "acme", "m-1", "m_0", "zeta"]);
}

async fn client_patch_and_patch_missing(fx: Fx) {
    fx.store.create_client(&client("acme")).await.unwrap();
    let patch = ClientPatch {
        name: Some("Acme Corp".into()),
        status: Some(ClientStatus::Suspended),
        per_minute: Some(30),
        monthly: None,
        plan: None,
        ..Default::default()
    };
    let patched = fx
        .store
        .update_client("acme", &patch)
        .await
        .unwrap()
        .unwrap();
    let expected = Client {
        name: "Acme Corp".into(),
        status: ClientStatus::Suspended,
        per_minute: Some(30),
        ..client("acme")
    };
    assert_eq!(patched, expected);
    assert_eq!(fx.store.get_client("acme").await.unwrap(), Some(expected));

    let empty = fx
        .store
        .update_client("acme", &ClientPatch::default())
        .await
        .unwrap();
    assert_eq!(empty.map(|c| c.per_minute), Some(Some(30)));

    assert_eq!(fx.store.update_client("nope", &patch).await.unwrap(), None);
    assert_eq!(fx.store.get_client("nope").await.unwrap(), None);
    assert_eq!(fx.store.list_clients().await.unwrap().len(), 1);
}

// ---------------------------------------------------------------- keys

async fn key_create_get_list_order(fx: Fx) {
    fx.store.create_client(&client("acme")).await.unwrap();
    let mut k3 = key("key_3", "acme", "third");
    k3.created_at = 300;
    let mut k1 = key("key_1", "acme", "first");
    k1.created_at = 100;
    k1.expires_at = Some(1_900_000_000);
    k1.scopes = vec!["write:api_keys".into()];
    let mut k2b = key("key_2b", "acme", "second b");
    k2b.created_at = 200;
    let mut k2a = key("key_2a", "acme", "second a");
    k2a.created_at = 200;
    for k in [&k3, &k1, &k2b, &k2a] {
        fx.store.create_key(k).await.unwrap();
    }
    assert_eq!(fx.store.get_key("key_1").await.unwrap(), Some(k1.clone()));
    assert_eq!(fx.store.get_key("key_9").await.unwrap(), None);
    let listed = fx.store.list_keys("acme").await.unwrap();
    assert_eq!(ids(&listed), ["key_1", "key_2a", "key_2b", "key_3"]);
    assert_eq!(listed[0], k1);
    assert!(fx.store.list_keys("nope").await.unwrap().is_empty());
}

async fn key_name_unique_per_client(fx: Fx) {
    fx.store.create_client(&client("acme")).await.unwrap();
    fx.store.create_client(&client("beta")).await.unwrap();
    fx.store
        .create_key(&key("key_a", "acme", "ci"))
        .await
        .unwrap();
    assert_eq!(
        fx.store.create_key(&key("key_b", "acme", "ci")).await,
        Err(StoreError::NameTaken)
    );
    assert_eq!(fx.store.get_key("key_b").await.unwrap(), None);
    fx.store
        .create_key(&key("key_c", "beta", "ci"))
        .await
        .unwrap();
    assert_eq!(ids(&fx.store.list_keys("acme").await.unwrap()), ["key_a"]);
    assert_eq!(ids(&fx.store.list_keys("beta").await.unwrap()), ["key_c"]);
}

async fn key_needs_a_client(fx: Fx) {
    assert_eq!(
        fx.store.create_key(&key("key_a", "ghost", "ci")).await,
        Err(StoreError::NoSuchClient)
    );
    assert_eq!(fx.store.get_key("key_a").await.unwrap(), None);
    assert!(!fx.store.revoke_key("key_a", None).await.unwrap());
}

async fn key_revoke_with_and_without_owner(fx: Fx) {
    acme(&fx, None, None).await;
    fx.store.create_client(&client("beta")).await.unwrap();
    fx.store
        .create_key(&key("key_b", "acme", "second"))
        .await
        .unwrap();

    // Another organisation cannot revoke it, and it keeps working.
    assert!(!fx.store.revoke_key("key_a", Some("beta")).await.unwrap());
    assert_eq!(admit(&fx.store).await.verdict, Verdict::Admitted);
    assert!(fx.store.get_key("key_a").await.unwrap().is_some());

    assert!(fx.store.revoke_key("key_a", Some("acme")).await.unwrap());
    assert_eq!(fx.store.get_key("key_a").await.unwrap(), None);
    assert_eq!(ids(&fx.store.list_keys("acme").await.unwrap()), ["key_b"]);
    assert_eq!(
        admit(&fx.store).await,
        Decision::new(Verdict::KeyInvalid, None)
    );
    // Refused everywhere from now on, through any handle.
    assert_eq!(admit(&fx.other).await.verdict, Verdict::KeyInvalid);
    assert!(!fx.store.revoke_key("key_a", Some("acme")).await.unwrap());
    assert!(!fx.store.revoke_key("key_a", None).await.unwrap());

    // The name is free again.
    fx.store
        .create_key(&key("key_c", "acme", "default"))
        .await
        .unwrap();
    // Without an owner (admin).
    assert!(fx.store.revoke_key("key_b", None).await.unwrap());
    assert_eq!(ids(&fx.store.list_keys("acme").await.unwrap()), ["key_c"]);
}

// ---------------------------------------------------------------- admission

async fn key_rotation_honours_the_grace_period(fx: Fx) {
    const NEW: &str = "$2b$04$newnewnewnewnewnewnewnOabcdefghijklmnopqrstuvwxyz01234";
    const THIRD: &str = "$2b$04$thirdthirdthirdthirdtOabcdefghijklmnopqrstuvwxyz01234";
    acme(&fx, None, None).await;
    fx.store.create_client(&client("beta")).await.unwrap();
    let original = fx.store.get_key("key_a").await.unwrap().unwrap();
    let grace = Duration::from_secs(30);
    // Another client's key, or none: nothing happens.
    assert_eq!(
        fx.store
            .rotate_key("key_a", Some("beta"), NEW, grace)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        fx.store
            .rotate_key("key_zz", None, NEW, grace)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        fx.store.get_key("key_a").await.unwrap(),
        Some(original.clone())
    );

    let at = |ms: i64| fx.clock.set_ms(ms);
    let verdict = |gen: u64| {
        let store = fx.other.clone();
        async move {
            let req = AdmitRequest { gen, ..req(None) };
            store.admit(&req).await.unwrap().verdict
        }
    };
    let usage_verdict = |gen: u64| {
        let store = fx.other.clone();
        async move {
            store
                .usage(&UsageRequest {
                    client_id: "acme",
                    key: Some(("key_a", gen)),
                    defaults: DEFAULTS,
                    policy: Policy::default(),
                })
                .await
                .unwrap()
                .verdict
        }
    };

    at(T0 + 250);
    let rotated = fx
        .store
        .rotate_key("key_a", Some("acme"), NEW, grace)
        .await
        .unwrap()
        .unwrap();
    let want = KeyRecord {
        hash: NEW.into(),
        gen: 2,
        previous: Some(PreviousSecret {
            hash: original.hash.clone(),
            gen: 1,
            until_ms: T0 + 30_250,
        }),
        ..original.clone()
    };
    assert_eq!(rotated, want);
    // Every handle sees it at once.
    assert_eq!(fx.other.get_key("key_a").await.unwrap(), Some(want.clone()));
    assert_eq!(fx.other.list_keys("acme").await.unwrap(), [want]);

    // Both secrets work during the grace period, the old one strictly before its end.
    assert_eq!(verdict(2).await, Verdict::Admitted);
    assert_eq!(verdict(1).await, Verdict::Admitted);
    at(T0 + 30_249);
    assert_eq!(verdict(1).await, Verdict::Admitted);
    assert_eq!(usage_verdict(1).await, Verdict::Admitted);
    at(T0 + 30_250);
    assert_eq!(verdict(1).await, Verdict::KeyInvalid);
    assert_eq!(usage_verdict(1).await, Verdict::KeyInvalid);
    assert_eq!(verdict(2).await, Verdict::Admitted);
    assert_eq!(verdict(3).await, Verdict::KeyInvalid);

    // A second rotation with no grace: generation 2 is refused at once, and
    // generation 1 stays refused.
    let again = fx
        .store
        .rotate_key("key_a", None, THIRD, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.gen, 3);
    assert_eq!(
        again.previous,
        Some(PreviousSecret {
            hash: NEW.into(),
            gen: 2,
            until_ms: T0 + 30_250,
        })
    );
    assert_eq!(verdict(2).await, Verdict::KeyInvalid);
    assert_eq!(verdict(1).await, Verdict::KeyInvalid);
    assert_eq!(verdict(3).await, Verdict::Admitted);

    // Expiry still rules, whatever the generation.
    let mut expiring = key("key_e", "acme", "expiring");
    expiring.expires_at = Some(T0_S + 40);
    fx.store.create_key(&expiring).await.unwrap();
    fx.store
        .rotate_key("key_e", None, NEW, Duration::from_secs(3600))
        .await
        .unwrap()
        .unwrap();
    at(T0 + 40_000);
    for gen in [1, 2] {
        let req = AdmitRequest {
            key_id: "key_e",
            gen,
            ..req(None)
        };
        assert_eq!(
            fx.store.admit(&req).await.unwrap().verdict,
            Verdict::KeyInvalid
        );
    }
}

async fn remaining_counts_down_and_refusal_counts_nothing(fx: Fx) {
    acme(&fx, None, None).await; // defaults: 7 per minute
    let mut remaining = Vec::new();
    for i in 0..7 {
        let d = admit(&fx.store).await;
        assert_eq!(d.verdict, Verdict::Admitted);
        let s = state(&d);
        assert_eq!((s.now_ms, s.per_minute, s.monthly), (T0 + i * 10, 7, 1000));
        assert_eq!(s.reset_at, T0_S + 61);
        remaining.push(s.remaining);
        fx.clock.advance_ms(10);
    }
    assert_eq!(remaining, [6, 5, 4, 3, 2, 1, 0]);
    for _ in 0..5 {
        let d = admit(&fx.store).await;
        assert_eq!(d.verdict, Verdict::RateLimited);
        let s = state(&d);
        assert_eq!(s.remaining, 0);
        assert_eq!(s.monthly_used, 7);
        assert_eq!(s.window_retry_at_ms, Some((T0_S + 61) * 1000));
        assert_eq!(s.retry_after_secs(Verdict::RateLimited), Some(61));
    }
    let u = usage(&fx).await;
    assert_eq!((u.remaining, u.monthly_used), (0, 7));
}

async fn retry_instant_is_exact(fx: Fx) {
    acme(&fx, Some(3), None).await;
    for i in 0..3 {
        fx.clock.set_ms(T0 + 500 + i * 1000);
        assert_eq!(admit(&fx.store).await.verdict, Verdict::Admitted);
    }
    fx.clock.set_ms(T0 + 30_250);
    let d = admit(&fx.store).await;
    assert_eq!(d.verdict, Verdict::RateLimited);
    let at = state(&d).window_retry_at_ms.unwrap();
    assert_eq!(at, T0 + 61_000);
    assert_eq!(state(&d).retry_after_secs(d.verdict), Some(31));

    fx.clock.set_ms(at - 1);
    assert_eq!(admit(&fx.store).await.verdict, Verdict::RateLimited);
    fx.clock.set_ms(at);
    let d = admit(&fx.store).await;
    assert_eq!(d.verdict, Verdict::Admitted);
    let s = state(&d);
    // The first bucket left; the second (T0+1.5 s) is now the oldest.
    assert_eq!((s.remaining, s.reset_at), (0, T0_S + 1 + 61));
    assert_eq!(s.window_retry_at_ms, Some((T0_S + 1 + 61) * 1000));
}

async fn window_slides(fx: Fx) {
    acme(&fx, Some(2), None).await;
    assert_eq!(admit(&fx.store).await.verdict, Verdict::Admitted);
    fx.clock.set_ms(T0 + 30_000);
    assert_eq!(admit(&fx.store).await.verdict, Verdict::Admitted);
    fx.clock.set_ms(T0 + 60_999);
    assert_eq!(admit(&fx.store).await.verdict, Verdict::RateLimited);
    // 61 s after the first request it no longer counts.
    fx.clock.set_ms(T0 + 61_000);
    let s = state(&admit(&fx.store).await);
    assert_eq!((s.remaining, s.reset_at), (0, T0_S + 30 + 61));
    // A long idle empties the window entirely.
    fx.clock.set_ms(T0 + 500_250);
    let u = usage(&fx).await;
    assert_eq!((u.remaining, u.reset_at), (2, T0_S + 501));
    assert_eq!(u.window_retry_at_ms, None);
    let s = state(&admit(&fx.store).await);
    assert_eq!((s.remaining, s.reset_at), (1, T0_S + 500 + 61));
    assert_eq!(s.monthly_used, 4);
}

async fn monthly_quota_exhausts_and_rolls_over(fx: Fx) {
    acme(&fx, Some(100), Some(3)).await;
    fx.clock.set_ms(MAR_1 - 10_000);
    for used in 1..=3 {
        let s = state(&admit(&fx.store).await);
        assert_eq!((s.monthly, s.monthly_used), (3, used));
    }
    let d = admit(&fx.store).await;
    assert_eq!(d.verdict, Verdict::QuotaExhausted);
    let s = state(&d);
    assert_eq!((s.monthly_used, s.remaining), (3, 97));
    assert_eq!(s.retry_after_secs(d.verdict), Some(10));

    fx.clock.set_ms(MAR_1 - 1);
    assert_eq!(admit(&fx.store).await.verdict, Verdict::QuotaExhausted);
    fx.clock.set_ms(MAR_1);
    assert_eq!(usage(&fx).await.monthly_used, 0);
    let s = state(&admit(&fx.store).await);
    assert_eq!(
        (s.monthly_used, s.remaining),
        (1, 96),
        "the window spans months"
    );
}

async fn client_limits_override_defaults(fx: Fx) {
    acme(&fx, Some(2), Some(5)).await;
    let s = state(&admit(&fx.store).await);
    assert_eq!((s.per_minute, s.remaining, s.monthly), (2, 1, 5));
    admit(&fx.store).await;
    assert_eq!(admit(&fx.store).await.verdict, Verdict::RateLimited);

    // Raising the limit takes effect on the next request.
    let patch = ClientPatch {
        per_minute: Some(4),
        ..ClientPatch::default()
    };
    fx.store.update_client("acme", &patch).await.unwrap();
    let s = state(&admit(&fx.store).await);
    assert_eq!((s.per_minute, s.remaining, s.monthly_used), (4, 1, 3));

    // A client without limits follows the defaults.
    fx.store.create_client(&client("beta")).await.unwrap();
    fx.store
        .create_key(&key("key_b", "beta", "b"))
        .await
        .unwrap();
    let d = fx
        .store
        .admit(&AdmitRequest {
            client_id: "beta",
            key_id: "key_b",
            ..req(None)
        })
        .await
        .unwrap();
    let s = state(&d);
    assert_eq!((s.per_minute, s.remaining, s.monthly), (7, 6, 1000));
}

async fn suspended_client_is_refused_with_state(fx: Fx) {
    acme(&fx, None, None).await;
    admit(&fx.store).await;
    let suspend = ClientPatch {
        status: Some(ClientStatus::Suspended),
        ..ClientPatch::default()
    };
    fx.store.update_client("acme", &suspend).await.unwrap();
    for _ in 0..3 {
        let d = admit(&fx.other).await;
        assert_eq!(d.verdict, Verdict::ClientSuspended);
        let s = state(&d);
        assert_eq!((s.remaining, s.monthly_used, s.per_minute), (6, 1, 7));
    }
    let with_key = fx
        .store
        .usage(&UsageRequest {
            client_id: "acme",
            key: Some(("key_a", 1)),
            defaults: DEFAULTS,
            policy: Policy::default(),
        })
        .await
        .unwrap();
    assert_eq!(with_key.verdict, Verdict::ClientSuspended);
    assert_eq!(state(&with_key).remaining, 6);
    // The admin's view (no key) still answers.
    assert_eq!(usage(&fx).await.remaining, 6);

    let activate = ClientPatch {
        status: Some(ClientStatus::Active),
        ..ClientPatch::default()
    };
    fx.store.update_client("acme", &activate).await.unwrap();
    let s = state(&admit(&fx.store).await);
    assert_eq!((s.remaining, s.monthly_used), (5, 2));
}

async fn missing_scope_is_refused_with_state(fx: Fx) {
    acme(&fx, None, None).await;
    assert_eq!(
        fx.store
            .admit(&req(Some("read:things")))
            .await
            .unwrap()
            .verdict,
        Verdict::Admitted
    );
    for scope in ["write:things", "read:thing", "read", ""] {
        let d = fx.store.admit(&req(Some(scope))).await.unwrap();
        assert_eq!(d.verdict, Verdict::ScopeDenied, "scope {scope:?}");
        assert_eq!(state(&d).remaining, 6);
        assert_eq!(state(&d).monthly_used, 1);
    }
    let s = state(&fx.store.admit(&req(Some("read:api_keys"))).await.unwrap());
    assert_eq!(s.remaining, 5);
}

async fn invalid_keys_are_refused_without_state(fx: Fx) {
    acme(&fx, None, None).await;
    fx.store.create_client(&client("beta")).await.unwrap();
    let invalid = Decision::new(Verdict::KeyInvalid, None);
    let wrong_gen = AdmitRequest {
        gen: 2,
        ..req(None)
    };
    assert_eq!(fx.store.admit(&wrong_gen).await.unwrap(), invalid);
    let unknown = AdmitRequest {
        key_id: "key_zz",
        ..req(None)
    };
    assert_eq!(fx.store.admit(&unknown).await.unwrap(), invalid);
    let empty = AdmitRequest {
        key_id: "",
        ..req(None)
    };
    assert_eq!(fx.store.admit(&empty).await.unwrap(), invalid);
    // A real key presented for another client.
    let other_client = AdmitRequest {
        client_id: "beta",
        ..req(None)
    };
    assert_eq!(fx.store.admit(&other_client).await.unwrap(), invalid);
    let no_client = AdmitRequest {
        client_id: "ghost",
        ..req(None)
    };
    assert_eq!(fx.store.admit(&no_client).await.unwrap(), invalid);

    // Expiry: valid until the second it names.
    let mut expiring = key("key_e", "acme", "expiring");
    expiring.expires_at = Some(T0_S + 5);
    fx.store.create_key(&expiring).await.unwrap();
    let req_e = AdmitRequest {
        key_id: "key_e",
        ..req(None)
    };
    fx.clock.set_ms(T0 + 4_999);
    assert_eq!(
        fx.store.admit(&req_e).await.unwrap().verdict,
        Verdict::Admitted
    );
    fx.clock.set_ms(T0 + 5_000);
    assert_eq!(fx.store.admit(&req_e).await.unwrap(), invalid);
    let u = fx
        .store
        .usage(&UsageRequest {
            client_id: "acme",
            key: Some(("key_e", 1)),
            defaults: DEFAULTS,
            policy: Policy::default(),
        })
        .await
        .unwrap();
    assert_eq!(u, invalid);

    // Nothing of the above was counted but the one admission.
    assert_eq!(usage(&fx).await.monthly_used, 1);
}

async fn last_used_at_is_written_on_admission_only(fx: Fx) {
    acme(&fx, Some(1), None).await;
    let last_used = || async {
        fx.store
            .get_key("key_a")
            .await
            .unwrap()
            .unwrap()
            .last_used_at
    };
    assert_eq!(last_used().await, None);
    fx.clock.set_ms(T0 + 1_500);
    assert_eq!(admit(&fx.store).await.verdict, Verdict::Admitted);
    assert_eq!(last_used().await, Some(T0_S + 1));
    // Refusals and usage reads do not touch it.
    fx.clock.set_ms(T0 + 9_000);
    assert_eq!(admit(&fx.store).await.verdict, Verdict::RateLimited);
    let _ = fx
        .store
        .usage(&UsageRequest {
            client_id: "acme",
            key: Some(("key_a", 1)),
            defaults: DEFAULTS,
            policy: Policy::default(),
        })
        .await
        .unwrap();
    assert_eq!(last_used().await, Some(T0_S + 1));
    assert_eq!(
        fx.store.list_keys("acme").await.unwrap()[0].last_used_at,
        Some(T0_S + 1)
    );
}

async fn usage_counts_nothing_and_agrees_with_admit(fx: Fx) {
    acme(&fx, None, None).await;
    let before = usage(&fx).await;
    assert_eq!((before.remaining, before.monthly_used), (7, 0));
    assert_eq!(before.reset_at, T0_S);
    let mut last = before;
    for _ in 0..3 {
        last = state(&admit(&fx.store).await);
    }
    for _ in 0..5 {
        let with_key = fx
            .store
            .usage(&UsageRequest {
                client_id: "acme",
                key: Some(("key_a", 1)),
                defaults: DEFAULTS,
                policy: Policy::default(),
            })
            .await
            .unwrap();
        assert_eq!(with_key.verdict, Verdict::Admitted);
        assert_eq!(state(&with_key), last);
        assert_eq!(usage(&fx).await, last);
    }
    let missing = fx
        .store
        .usage(&UsageRequest {
            client_id: "ghost",
            key: None,
            defaults: DEFAULTS,
            policy: Policy::default(),
        })
        .await
        .unwrap();
    assert_eq!(missing, Decision::new(Verdict::ClientMissing, None));
    // Usage of a full window still answers, with the retry instant.
    for _ in 0..4 {
        admit(&fx.store).await;
    }
    let full = usage(&fx).await;
    assert_eq!((full.remaining, full.monthly_used), (0, 7));
    assert_eq!(full.window_retry_at_ms, Some((T0_S + 61) * 1000));
}

async fn concurrent_admits_admit_exactly_the_limit(fx: Fx) {
    concurrent_admits(&fx, (Some(50), None), 200, Verdict::RateLimited).await;
}

async fn concurrent_admits_stop_at_the_monthly_quota(fx: Fx) {
    concurrent_admits(&fx, (Some(1000), Some(30)), 100, Verdict::QuotaExhausted).await;
}

/// `offered` concurrent admissions through two handles (on Redis, two
/// connections, each coalescing its concurrent requests into batches): the
/// smaller limit is admitted exactly, each admitted request reports its own
/// turn (every Remaining and every monthly count exactly once, as if the
/// requests had come one by one) and every other one is refused with `refusal`.
async fn concurrent_admits(
    fx: &Fx,
    limits: (Option<u64>, Option<u64>),
    offered: usize,
    refusal: Verdict,
) {
    let (per_minute, monthly) = limits;
    acme(fx, per_minute, monthly).await;
    let per_minute = per_minute.unwrap();
    let admit_limit = monthly.map_or(per_minute, |m| m.min(per_minute));
    let tasks: Vec<_> = (0..offered)
        .map(|i| {
            let store = if i % 2 == 0 {
                fx.store.clone()
            } else {
                fx.other.clone()
            };
            tokio::spawn(async move { admit(&store).await })
        })
        .collect();
    let (mut remaining, mut used) = (Vec::new(), Vec::new());
    for t in tasks {
        let d = t.await.unwrap();
        let st = state(&d);
        match d.verdict {
            Verdict::Admitted => {
                remaining.push(st.remaining);
                used.push(st.monthly_used);
            }
            v if v == refusal => assert_eq!(st.monthly_used, admit_limit, "{d:?}"),
            v => panic!("unexpected {v:?}"),
        }
    }
    remaining.sort_unstable();
    used.sort_unstable();
    let n = admit_limit;
    assert_eq!(
        remaining,
        ((per_minute - n)..per_minute).collect::<Vec<_>>()
    );
    assert_eq!(used, (1..=n).collect::<Vec<_>>());
    let u = usage(fx).await;
    assert_eq!((u.remaining, u.monthly_used), (per_minute - n, n));
}

// ---------------------------------------------------------------- Redis only

const FAULT_TIMEOUT: Duration = Duration::from_millis(300);
const FAULT_BOUND: Duration = Duration::from_secs(1);

/// Client `acme` and key `key_a` on the server at `url` (set up with a
/// generous timeout), and a store with `timeout` for the test to use.
async fn redis_acme(url: &str, timeout: Duration) -> SharedStore {
    let setup = RedisStore::new(url, STORE_TIMEOUT, TimeSource::Store).unwrap();
    setup.create_client(&client("acme")).await.unwrap();
    setup
        .create_key(&key("key_a", "acme", "default"))
        .await
        .unwrap();
    Arc::new(RedisStore::new(url, timeout, TimeSource::Store).unwrap())
}

fn assert_unavailable<T: std::fmt::Debug>(r: Result<T, StoreError>, started: Instant) {
    assert!(
        matches!(r, Err(StoreError::Unavailable(_))),
        "expected Unavailable, got {r:?}"
    );
    assert!(
        started.elapsed() < FAULT_BOUND,
        "took {:?}",
        started.elapsed()
    );
}

/// Calls `ping` until it succeeds; returns how many calls failed first.
async fn failures_until_ping(store: &SharedStore) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut failures = 0;
    loop {
        match store.ping().await {
            Ok(()) => return failures,
            Err(e) if Instant::now() > deadline => panic!("no recovery: {e}"),
            Err(_) => failures += 1,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_server_times_out_then_recovers() {
    let server = RedisServer::start();
    let store = redis_acme(&server.url(), FAULT_TIMEOUT).await;
    assert_eq!(admit(&store).await.verdict, Verdict::Admitted);

    server.pause();
    let started = Instant::now();
    assert_unavailable(store.admit(&req(None)).await, started);
    let started = Instant::now();
    assert_unavailable(store.ping().await, started);
    server.resume();

    let d = admit(&store).await;
    assert_eq!(d.verdict, Verdict::Admitted);
    // The request that timed out may or may not have been counted; no more.
    assert!(state(&d).monthly_used <= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_server_is_picked_up() {
    let mut server = RedisServer::start();
    let store = redis_acme(&server.url(), FAULT_TIMEOUT).await;
    assert_eq!(admit(&store).await.verdict, Verdict::Admitted);

    server.kill();
    let started = Instant::now();
    assert_unavailable(store.admit(&req(None)).await, started);
    let started = Instant::now();
    assert_unavailable(store.ping().await, started);

    server.restart();
    // The same instance reconnects; the first call may still discover the
    // old connection's death.
    assert!(failures_until_ping(&store).await <= 1);
    // The restarted server is empty (no persistence): the key is gone.
    assert_eq!(admit(&store).await.verdict, Verdict::KeyInvalid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_startup_then_up() {
    let mut server = RedisServer::start();
    server.kill();
    let started = Instant::now();
    let store: SharedStore =
        Arc::new(RedisStore::new(&server.url(), FAULT_TIMEOUT, TimeSource::Store).unwrap());
    // Well under the timeout a connection attempt could take.
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "new() must not connect"
    );
    for _ in 0..3 {
        let started = Instant::now();
        assert_unavailable(store.ping().await, started);
        let started = Instant::now();
        assert_unavailable(store.admit(&req(None)).await, started);
    }
    server.restart();
    assert_eq!(failures_until_ping(&store).await, 0);
    store.create_client(&client("acme")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_time_comes_from_the_server() {
    let server = RedisServer::start();
    let store = redis_acme(&server.url(), STORE_TIMEOUT).await;
    let s = state(&admit(&store).await);
    let skew = (s.now_ms - SystemClock.now_ms()).abs();
    assert!(skew < 5_000, "server time off by {skew} ms");
    let last_used = store.get_key("key_a").await.unwrap().unwrap().last_used_at;
    assert_eq!(last_used, Some(s.now_ms.div_euclid(1000)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_errors_never_show_the_password() {
    let mut server = RedisServer::start();
    let port = server.port();
    server.kill();
    let url = format!("redis://tollgate:hunter2-s3cret@127.0.0.1:{port}/0");
    let store = RedisStore::new(&url, FAULT_TIMEOUT, TimeSource::Store).unwrap();
    assert!(!format!("{store:?}").contains("hunter2"));
    let err = store.ping().await.unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    let bad =
        RedisStore::new("redis://:hunter2@[::1", FAULT_TIMEOUT, TimeSource::Store).unwrap_err();
    assert!(!bad.to_string().contains("hunter2"), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_corrupt_data_is_reported_without_its_value() {
    let server = RedisServer::start();
    let store = redis_acme(&server.url(), STORE_TIMEOUT).await;
    let raw = redis::Client::open(server.url()).unwrap();
    let mut raw = raw.get_multiplexed_async_connection().await.unwrap();
    let set = |key: &str, field: &str, value: &str| {
        redis::cmd("HSET").arg(key).arg(field).arg(value).to_owned()
    };

    set("tg:{c:acme}:client", "per_minute", "lots-of-secret")
        .exec_async(&mut raw)
        .await
        .unwrap();
    let err = store.admit(&req(None)).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(!err.to_string().contains("lots-of-secret"), "{err}");
    let err = store.get_client("acme").await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");

    set("tg:{c:acme}:client", "per_minute", "5")
        .exec_async(&mut raw)
        .await
        .unwrap();
    // The window (kept in the client hash).
    set("tg:{c:acme}:client", "ctr", "12-secret-34")
        .exec_async(&mut raw)
        .await
        .unwrap();
    let err = store.admit(&req(None)).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(!err.to_string().contains("12-secret-34"), "{err}");
    redis::cmd("HDEL")
        .arg("tg:{c:acme}:client")
        .arg("ctr")
        .exec_async(&mut raw)
        .await
        .unwrap();
    // A window still where tollgate kept it until 2026-11, not a hash.
    redis::cmd("SET")
        .arg("tg:{c:acme}:win")
        .arg("not a hash")
        .exec_async(&mut raw)
        .await
        .unwrap();
    let err = store.admit(&req(None)).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");

    set("tg:{c:acme}:key:key_a", "gen", "x")
        .exec_async(&mut raw)
        .await
        .unwrap();
    let err = store.get_key("key_a").await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(!err.to_string().contains("$2b$"), "{err}");
}

/// Pins the documented key layout (docs/rate-limiting.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_key_layout() {
    let server = RedisServer::start();
    let store = redis_acme(&server.url(), STORE_TIMEOUT).await;
    let now_s = state(&admit(&store).await).now_ms.div_euclid(1000);
    let raw = redis::Client::open(server.url()).unwrap();
    let mut raw = raw.get_multiplexed_async_connection().await.unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut raw)
        .await
        .unwrap();
    keys.sort();
    // The admission session's record (exactly-once) is a field of the client hash.
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg("tg:{c:acme}:client")
        .query_async(&mut raw)
        .await
        .unwrap();
    let sessions: Vec<&String> = fields.iter().filter(|f| f.starts_with("s:")).collect();
    assert_eq!(sessions.len(), 1, "{fields:?}");
    assert!(sessions[0][2..].bytes().all(|c| c.is_ascii_hexdigit()));
    // The client reads, lists and patches as before, the record aside.
    let got = store.get_client("acme").await.unwrap().expect("acme");
    assert_eq!(store.list_clients().await.unwrap(), vec![got.clone()]);
    let patch = ClientPatch {
        per_minute: Some(7),
        ..ClientPatch::default()
    };
    let patched = store.update_client("acme", &patch).await.unwrap();
    assert_eq!(patched.expect("acme").per_minute, Some(7));
    assert_eq!(
        keys,
        [
            "tg:clients",
            "tg:keyidx:key_a",
            "tg:{c:acme}:client",
            "tg:{c:acme}:key:key_a",
            "tg:{c:acme}:keys",
            "tg:{c:acme}:names",
        ]
    );
    // The counters are fields of the client hash (admit.lua's header): the
    // window's total, its oldest and newest second, that second's count,
    // the period, `used`; no text `mon` or `used`.
    let w: Vec<u8> = redis::cmd("HGET")
        .arg("tg:{c:acme}:client")
        .arg("ctr")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(w.len(), 48, "{fields:?}");
    let f = |i: usize| f64::from_le_bytes(w[i * 8..i * 8 + 8].try_into().unwrap());
    let second = now_s as f64;
    assert_eq!(
        (f(0), f(1), f(2), f(3), f(5)),
        (1.0, second, second, 1.0, 1.0)
    );
    assert!(f(4) > 1.7e12, "the period's start, Unix ms: {}", f(4));
    assert!(
        !fields.iter().any(|f| f == "used" || f == "mon"),
        "{fields:?}"
    );
}

/// The counters as tollgate kept them until 2026-11-28 (the window in its
/// own hash `tg:{c:<id>}:win`, `mon` and `used` text fields of the client
/// hash) move into the client hash's `ctr` at the client's first call after
/// the upgrade, with their counts; a `used` a process not upgraded yet
/// writes meanwhile is counted in by the next admission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_counters_of_the_old_layout_move_into_the_client_hash() {
    let fx = redis();
    acme(&fx, None, None).await;
    let raw = redis::Client::open(fx._server.as_ref().unwrap().url()).unwrap();
    let mut raw = raw.get_multiplexed_async_connection().await.unwrap();
    let now_s = fx.clock.now_ms().div_euclid(1000);
    // 5 requests 30 s ago and 1 a second ago, as the old admit.lua wrote them.
    let (a, b) = ((now_s - 30).to_string(), (now_s - 1).to_string());
    let _: () = redis::cmd("HSET")
        .arg("tg:{c:acme}:win")
        .arg(&["t", "6", "o", a.as_str(), "n", b.as_str(), a.as_str(), "5"])
        .arg(&[b.as_str(), "1"])
        .query_async(&mut raw)
        .await
        .unwrap();
    let _: () = redis::cmd("HDEL")
        .arg("tg:{c:acme}:client")
        .arg("ctr")
        .query_async(&mut raw)
        .await
        .unwrap();
    // 40 counted this month (its start, Unix ms: T0 is in February 2026).
    let month = "1769904000000";
    let text = |used: &str| {
        redis::cmd("HSET")
            .arg("tg:{c:acme}:client")
            .arg(&["mon", month, "used", used])
            .to_owned()
    };
    text("40").exec_async(&mut raw).await.unwrap();
    // A usage read moves the window (a change of representation only).
    let u = usage(&fx).await;
    assert_eq!(u.remaining, DEFAULTS.per_minute - 6);
    assert_eq!(u.monthly_used, 40);
    let exists: bool = redis::cmd("EXISTS")
        .arg("tg:{c:acme}:win")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(!exists);
    // Room for exactly one more; the 5 leave 31 s after they were counted.
    let d = admit(&fx.store).await;
    assert_eq!(d.verdict, Verdict::Admitted);
    assert_eq!(state(&d).monthly_used, 41);
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg("tg:{c:acme}:client")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(!fields.contains(&"used".to_owned()), "{fields:?}");
    let refused = admit(&fx.store).await;
    assert_eq!(refused.verdict, Verdict::RateLimited);
    assert_eq!(
        state(&refused).window_retry_at_ms,
        Some((now_s + 31) * 1000)
    );
    fx.clock.set_ms((now_s + 31) * 1000);
    // A process of the old version counts 2 meanwhile (it found no text
    // `used`: 0, and wrote 2).
    text("2").exec_async(&mut raw).await.unwrap();
    let d = admit(&fx.store).await;
    assert_eq!(d.verdict, Verdict::Admitted);
    assert_eq!(state(&d).remaining, DEFAULTS.per_minute - 3);
    assert_eq!(state(&d).monthly_used, 44);
    assert_eq!(usage(&fx).await.monthly_used, 44);
}

/// Both backends give the same decision, field for field, on a long random
/// walk through time: bursts, idles across bucket departures, month ends,
/// limit changes, suspensions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_and_memory_agree_on_a_random_walk() {
    use rand::{Rng, SeedableRng};

    let server = RedisServer::start();
    let clock = ManualClock::new(MAR_1 - 3 * 3_600_000);
    let time = || TimeSource::Clock(clock.clone());
    let stores: [SharedStore; 2] = [
        Arc::new(MemoryStore::new(time())),
        Arc::new(RedisStore::new(&server.url(), STORE_TIMEOUT, time()).unwrap()),
    ];
    for s in &stores {
        let mut c = client("acme");
        c.per_minute = Some(5);
        c.monthly = Some(250);
        s.create_client(&c).await.unwrap();
        s.create_key(&key("key_a", "acme", "default"))
            .await
            .unwrap();
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7011_9a7e);
    let mut seen = std::collections::HashMap::new();
    for step in 0..3_000 {
        let jump = match rng.random_range(0..100) {
            0..=59 => rng.random_range(0..1_200),
            60..=94 => rng.random_range(1_000..15_000),
            _ => rng.random_range(55_000..130_000),
        };
        clock.advance_ms(jump);
        let op = rng.random_range(0..100);
        if op == 0 {
            let patch = ClientPatch {
                per_minute: Some(rng.random_range(0..8)),
                status: Some(if rng.random_bool(0.8) {
                    ClientStatus::Active
                } else {
                    ClientStatus::Suspended
                }),
                ..ClientPatch::default()
            };
            for s in &stores {
                s.update_client("acme", &patch).await.unwrap();
            }
            continue;
        }
        let mut answers = Vec::new();
        for s in &stores {
            let d = if op < 85 {
                s.admit(&req(None)).await.unwrap()
            } else {
                s.usage(&UsageRequest {
                    client_id: "acme",
                    key: Some(("key_a", 1)),
                    defaults: DEFAULTS,
                    policy: Policy::default(),
                })
                .await
                .unwrap()
            };
            answers.push(d);
        }
        assert_eq!(answers[0], answers[1], "step {step} at {}", clock.now_ms());
        if op < 85 {
            *seen.entry(format!("{:?}", answers[0].verdict)).or_insert(0) += 1;
        }
    }
    // The walk went through every outcome it can reach.
    for v in [
        "Admitted",
        "RateLimited",
        "QuotaExhausted",
        "ClientSuspended",
    ] {
        assert!(seen.get(v).is_some_and(|&n| n > 10), "{v}: {seen:?}");
    }
}

/// Script calls (`EVALSHA` and `EVAL`) the server has run so far.
async fn script_calls(url: &str) -> u64 {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    common::redis_server::script_calls_in(&info)
}

/// Group commit: while a call for a key is in flight (here held up by a
/// paused server), the key's later requests queue, and go together in the
/// next call. 100 requests cost at most two script calls, and each still
/// gets its own turn's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_concurrent_admissions_of_one_key_share_a_call() {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Poll;

    let server = RedisServer::start();
    let store: SharedStore =
        Arc::new(RedisStore::new(&server.url(), STORE_TIMEOUT, TimeSource::Store).unwrap());
    let limit = 1000;
    let mut acme = client("acme");
    acme.per_minute = Some(limit);
    store.create_client(&acme).await.unwrap();
    store
        .create_key(&key("key_a", "acme", "default"))
        .await
        .unwrap();
    // Loads the script and opens the connection, so the batches below are all
    // the test counts.
    assert_eq!(admit(&store).await.verdict, Verdict::Admitted);
    let before = script_calls(&server.url()).await;

    server.pause();
    let r = req(None);
    let mut pending: Vec<Pin<Box<dyn Future<Output = _> + Send + '_>>> =
        (0..100).map(|_| store.admit(&r)).collect();
    // One poll each: the first starts a call (which hangs on the paused
    // server), the others queue behind it.
    std::future::poll_fn(|cx| {
        for f in pending.iter_mut() {
            assert!(f.as_mut().poll(cx).is_pending());
        }
        Poll::Ready(())
    })
    .await;
    server.resume();
    let mut remaining = Vec::new();
    for f in pending {
        let d = f.await.unwrap();
        assert_eq!(d.verdict, Verdict::Admitted);
        remaining.push(state(&d).remaining);
    }

    let calls = script_calls(&server.url()).await - before;
    assert!(
        (1..=2).contains(&calls),
        "{calls} script calls for 100 requests"
    );
    remaining.sort_unstable();
    assert_eq!(remaining, ((limit - 101)..(limit - 1)).collect::<Vec<_>>());
}

// ---------------------------------------------------------------- policies

/// Plans `free` (per_minute 3, shadow off) and `pro` (monthly 50), `[limits]` shadow `shadow`.
fn plans(shadow: bool) -> Arc<Plans> {
    let mut p = BTreeMap::new();
    p.insert(
        "free".to_owned(),
        PlanLimits {
            per_minute: Some(3),
            monthly: None,
            shadow: Some(false),
        },
    );
    p.insert(
        "pro".to_owned(),
        PlanLimits {
            per_minute: None,
            monthly: Some(50),
            shadow: None,
        },
    );
    Arc::new(Plans::new(p, shadow))
}

fn policy(cost: u64, route_shadow: Option<bool>, plans: &Arc<Plans>) -> Policy {
    Policy {
        cost,
        route_shadow,
        plans: plans.clone(),
    }
}

async fn admit_with(store: &SharedStore, policy: &Policy) -> Decision {
    let req = AdmitRequest {
        policy: policy.clone(),
        ..req(None)
    };
    store.admit(&req).await.unwrap()
}

async fn usage_with(fx: &Fx, plans: &Arc<Plans>) -> Decision {
    fx.store
        .usage(&UsageRequest {
            client_id: "acme",
            key: None,
            defaults: DEFAULTS,
            policy: policy(1, None, plans),
        })
        .await
        .unwrap()
}

async fn set_plan(store: &SharedStore, plan: Option<&str>) {
    let patch = ClientPatch {
        plan: Some(plan.map(str::to_owned)),
        ..ClientPatch::default()
    };
    store.update_client("acme", &patch).await.unwrap().unwrap();
}

/// Own value, else the plan's, else the defaults; a plan change made through
/// one handle (process) applies from the next request of the other.
async fn plans_resolve_per_limit_and_changes_apply_everywhere(fx: Fx) {
    let plans = plans(false);
    let one = policy(1, None, &plans);
    acme(&fx, None, None).await;
    let s = state(&admit_with(&fx.store, &one).await);
    assert_eq!((s.per_minute, s.monthly), (7, 1000), "no plan: [limits]");

    set_plan(&fx.store, Some("free")).await;
    assert_eq!(
        fx.other.get_client("acme").await.unwrap().unwrap().plan,
        Some("free".to_owned())
    );
    let d = admit_with(&fx.other, &one).await;
    let s = state(&d);
    assert_eq!((s.per_minute, s.monthly), (3, 1000), "plan per_minute");
    assert!(!d.policy.plan_unknown);

    set_plan(&fx.other, Some("pro")).await;
    let s = state(&admit_with(&fx.store, &one).await);
    assert_eq!((s.per_minute, s.monthly), (7, 50), "plan monthly");

    // The client's own value wins over its plan's.
    let own = ClientPatch {
        monthly: Some(40),
        ..ClientPatch::default()
    };
    fx.store.update_client("acme", &own).await.unwrap();
    let s = state(&admit_with(&fx.other, &one).await);
    assert_eq!((s.per_minute, s.monthly), (7, 40));

    // A plan the config does not (or no longer) define: [limits], flagged.
    set_plan(&fx.store, Some("gone")).await;
    let d = admit_with(&fx.store, &one).await;
    assert!(d.policy.plan_unknown);
    assert_eq!(state(&d).per_minute, 7);
    let u = usage_with(&fx, &plans).await;
    assert!(u.policy.plan_unknown);

    // Off the plan again.
    set_plan(&fx.other, None).await;
    assert_eq!(
        fx.store.get_client("acme").await.unwrap().unwrap().plan,
        None
    );
    assert!(!admit_with(&fx.store, &one).await.policy.plan_unknown);
}

/// A reload that changes a plan's numbers applies from the next request.
async fn plan_numbers_from_the_config_in_force(fx: Fx) {
    acme(&fx, None, None).await;
    set_plan(&fx.store, Some("free")).await;
    let before = plans(false);
    assert_eq!(
        state(&admit_with(&fx.store, &policy(1, None, &before)).await).per_minute,
        3
    );
    let mut p = BTreeMap::new();
    p.insert(
        "free".to_owned(),
        PlanLimits {
            per_minute: Some(9),
            monthly: Some(99),
            shadow: None,
        },
    );
    let after = Arc::new(Plans::new(p, false));
    let s = state(&admit_with(&fx.other, &policy(1, None, &after)).await);
    assert_eq!((s.per_minute, s.monthly, s.remaining), (9, 99, 7));
    let u = state(&usage_with(&fx, &after).await);
    assert_eq!((u.per_minute, u.monthly, u.monthly_used), (9, 99, 2));
}

/// A request of cost N is admitted with N units left, refused with N-1,
/// and counts N in both limits; the retry instant is when N units fit.
async fn cost_admits_exactly_at_the_boundary(fx: Fx) {
    let plans = plans(false);
    acme(&fx, Some(10), Some(1000)).await;
    let four = policy(4, None, &plans);
    for (i, left) in [(0, 6), (1, 2)] {
        fx.clock.set_ms(T0 + i * 1000);
        let d = admit_with(&fx.store, &four).await;
        assert_eq!(d.verdict, Verdict::Admitted);
        assert_eq!(d.policy.cost, 4);
        assert_eq!(state(&d).remaining, left);
    }
    // 2 units left: a cost of 3 is refused, counting nothing ...
    fx.clock.set_ms(T0 + 2_000);
    let d = admit_with(&fx.store, &policy(3, None, &plans)).await;
    assert_eq!(d.verdict, Verdict::RateLimited);
    let s = state(&d);
    assert_eq!((s.remaining, s.monthly_used), (2, 8));
    // ... until the first bucket (4 units, second T0) leaves.
    assert_eq!(s.window_retry_at_ms, Some(T0 + 61_000));
    // A cost of 2 fits exactly.
    let d = admit_with(&fx.other, &policy(2, None, &plans)).await;
    assert_eq!(d.verdict, Verdict::Admitted);
    let s = state(&d);
    assert_eq!((s.remaining, s.monthly_used), (0, 10));
    assert_eq!(usage(&fx).await.monthly_used, 10);
}

async fn cost_against_the_monthly_quota(fx: Fx) {
    let plans = plans(false);
    acme(&fx, Some(100), Some(10)).await;
    let four = policy(4, None, &plans);
    assert_eq!(
        admit_with(&fx.store, &four).await.verdict,
        Verdict::Admitted
    );
    assert_eq!(
        admit_with(&fx.store, &four).await.verdict,
        Verdict::Admitted
    );
    let d = admit_with(&fx.store, &four).await;
    assert_eq!(d.verdict, Verdict::QuotaExhausted);
    assert_eq!(state(&d).monthly_used, 8);
    let d = admit_with(&fx.store, &policy(2, None, &plans)).await;
    assert_eq!(d.verdict, Verdict::Admitted);
    assert_eq!(state(&d).monthly_used, 10);
}

/// A cost above the per-minute limit is refused with no retry instant
/// (waiting never helps) and counts nothing.
async fn cost_above_the_limit_never_fits(fx: Fx) {
    let plans = plans(false);
    acme(&fx, Some(5), None).await;
    let d = admit_with(&fx.store, &policy(6, None, &plans)).await;
    assert_eq!(d.verdict, Verdict::RateLimited);
    let s = state(&d);
    assert_eq!(
        (s.remaining, s.monthly_used, s.window_retry_at_ms),
        (5, 0, None)
    );
    assert_eq!(d.policy.cost, 6);
}

/// Concurrent requests of mixed costs through two handles (two processes)
/// never count more than the limit, and count exactly what they admitted.
async fn concurrent_mixed_costs_never_exceed_the_limit(fx: Fx) {
    for (limits, cap) in [((Some(50), Some(1000)), 50), ((Some(1000), Some(40)), 40)] {
        let plans = plans(false);
        let _ = fx.store.create_client(&client("acme")).await;
        let patch = ClientPatch {
            per_minute: limits.0,
            monthly: limits.1,
            ..ClientPatch::default()
        };
        fx.store.update_client("acme", &patch).await.unwrap();
        let _ = fx.store.create_key(&key("key_a", "acme", "default")).await;
        let before = usage(&fx).await.monthly_used;
        let tasks: Vec<_> = (0..60u64)
            .map(|i| {
                let store = if i % 2 == 0 {
                    fx.store.clone()
                } else {
                    fx.other.clone()
                };
                let p = policy(1 + i % 3, None, &plans);
                tokio::spawn(async move { (p.cost, admit_with(&store, &p).await) })
            })
            .collect();
        let mut units = 0;
        for t in tasks {
            let (cost, d) = t.await.unwrap();
            if d.verdict == Verdict::Admitted {
                units += cost;
            }
        }
        let used = usage(&fx).await.monthly_used - before;
        assert_eq!(used, units, "counted what was admitted");
        assert!(units <= cap, "{units} units admitted over a limit of {cap}");
        assert!(units + 3 > cap, "stopped early: {units} of {cap}");
        // The next window (and a new month for the quota case) starts afresh.
        fx.clock.set_ms(MAR_1 + 120_000);
    }
}

/// Shadow: the route's setting, else the plan's, else [limits]; a shadowed
/// refusal is admitted, counted, and reports the refusal it would have got.
async fn shadow_precedence_and_counting(fx: Fx) {
    acme(&fx, Some(2), None).await;
    let on = plans(true);
    let off = plans(false);
    // (route, plans, client plan) → shadowed
    type Case<'a> = (Option<bool>, &'a Arc<Plans>, Option<&'a str>, bool);
    let cases: [Case; 6] = [
        (None, &off, None, false),
        (None, &on, None, true),
        (None, &on, Some("free"), false),
        (None, &on, Some("pro"), true),
        (Some(true), &off, Some("free"), true),
        (Some(false), &on, None, false),
    ];
    for (i, (route, plans, plan, shadowed)) in cases.into_iter().enumerate() {
        // Each case in a fresh window: 2 real admissions, then a third.
        fx.clock.set_ms(T0 + i as i64 * 100_000);
        set_plan(&fx.store, plan).await;
        let p = policy(1, route, plans);
        for _ in 0..2 {
            let d = admit_with(&fx.store, &p).await;
            assert_eq!((d.verdict, d.policy.shadow), (Verdict::Admitted, None));
        }
        let used = usage(&fx).await.monthly_used;
        let d = admit_with(&fx.other, &p).await;
        if shadowed {
            assert_eq!(d.verdict, Verdict::Admitted, "case {i}");
            assert_eq!(d.policy.shadow, Some(Verdict::RateLimited), "case {i}");
            let s = state(&d);
            assert_eq!((s.remaining, s.monthly_used), (0, used + 1), "case {i}");
        } else {
            assert_eq!(d.verdict, Verdict::RateLimited, "case {i}");
            assert_eq!(state(&d).monthly_used, used, "case {i}");
        }
    }
    // Over the quota too: the quota's refusal is the one reported.
    let tight = ClientPatch {
        per_minute: Some(100),
        monthly: Some(usage(&fx).await.monthly_used),
        ..ClientPatch::default()
    };
    fx.store.update_client("acme", &tight).await.unwrap();
    let d = admit_with(&fx.store, &policy(1, Some(true), &off)).await;
    assert_eq!(d.verdict, Verdict::Admitted);
    assert_eq!(d.policy.shadow, Some(Verdict::QuotaExhausted));
}

/// Concurrent shadowed requests in one batch: all counted, the ones beyond
/// the limit (and only those) report the refusal.
async fn shadowed_batches_count_every_request(fx: Fx) {
    acme(&fx, Some(3), None).await;
    let p = policy(1, Some(true), &plans(false));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = fx.store.clone();
            let p = p.clone();
            tokio::spawn(async move { admit_with(&store, &p).await })
        })
        .collect();
    let mut shadowed = 0;
    for t in tasks {
        let d = t.await.unwrap();
        assert_eq!(d.verdict, Verdict::Admitted);
        if d.policy.shadow.is_some() {
            shadowed += 1;
            assert_eq!(state(&d).remaining, 0);
        }
    }
    assert_eq!(shadowed, 5);
    assert_eq!(usage(&fx).await.monthly_used, 8);
}

/// Only limits are shadowed: suspension, scope, an invalid or revoked key never.
async fn shadow_never_covers_other_refusals(fx: Fx) {
    acme(&fx, Some(1), None).await;
    let p = policy(1, Some(true), &plans(true));
    let with = |scope: Option<&'static str>, key_id: &'static str, gen: u64| AdmitRequest {
        scope,
        key_id,
        gen,
        policy: p.clone(),
        ..req(None)
    };
    let d = fx
        .store
        .admit(&with(Some("write:things"), "key_a", 1))
        .await
        .unwrap();
    assert_eq!(d.verdict, Verdict::ScopeDenied);
    let d = fx.store.admit(&with(None, "key_a", 2)).await.unwrap();
    assert_eq!(d.verdict, Verdict::KeyInvalid);
    let suspend = ClientPatch {
        status: Some(ClientStatus::Suspended),
        ..ClientPatch::default()
    };
    fx.store.update_client("acme", &suspend).await.unwrap();
    let d = fx.store.admit(&with(None, "key_a", 1)).await.unwrap();
    assert_eq!(d.verdict, Verdict::ClientSuspended);
    assert!(fx.store.revoke_key("key_a", None).await.unwrap());
    let d = fx.store.admit(&with(None, "key_a", 1)).await.unwrap();
    assert_eq!(d.verdict, Verdict::KeyInvalid);
    assert_eq!(usage(&fx).await.monthly_used, 0, "nothing was counted");
}

fn refund_of(d: &Decision) -> Refund {
    Refund {
        client_id: "acme".into(),
        units: d.policy.cost,
        at_ms: state(d).now_ms,
    }
}

/// A refund gives the units back to both counters, in the second and month
/// counted; never below zero.
async fn refund_gives_back_both_counters(fx: Fx) {
    let plans = plans(false);
    acme(&fx, Some(10), None).await;
    let first = admit_with(&fx.store, &policy(4, None, &plans)).await;
    fx.clock.set_ms(T0 + 1_500);
    let second = admit_with(&fx.store, &policy(3, None, &plans)).await;
    assert_eq!(state(&second).remaining, 3);
    fx.other.refund(&refund_of(&first)).await.unwrap();
    let u = usage(&fx).await;
    assert_eq!((u.remaining, u.monthly_used), (7, 3));
    // The oldest bucket went with it: the window resets with the second one.
    assert_eq!(u.reset_at, T0_S + 1 + 61);
    // A refund larger than what is counted stops at zero.
    let mut big = refund_of(&second);
    big.units = 100;
    fx.store.refund(&big).await.unwrap();
    let u = usage(&fx).await;
    assert_eq!((u.remaining, u.monthly_used), (10, 0));
    // Refunding a client that does not exist is harmless.
    big.client_id = "nope".into();
    fx.store.refund(&big).await.unwrap();
}

/// A refund after its second left the window gives back the month only.
async fn refund_after_the_second_left(fx: Fx) {
    acme(&fx, Some(2), None).await;
    let first = admit(&fx.store).await;
    fx.clock.set_ms(T0 + 61_000);
    admit(&fx.store).await;
    admit(&fx.store).await;
    assert_eq!(admit(&fx.store).await.verdict, Verdict::RateLimited);
    fx.store.refund(&refund_of(&first)).await.unwrap();
    let u = usage(&fx).await;
    assert_eq!(
        (u.remaining, u.monthly_used),
        (0, 2),
        "no credit in the window"
    );
    assert_eq!(admit(&fx.store).await.verdict, Verdict::RateLimited);
}

/// A refund after the month rolled over leaves the new month alone (its
/// second, still in the window, is given back).
async fn refund_after_the_month_rolled_over(fx: Fx) {
    acme(&fx, Some(5), Some(100)).await;
    fx.clock.set_ms(MAR_1 - 500);
    let feb = admit(&fx.store).await;
    fx.clock.set_ms(MAR_1 + 500);
    admit(&fx.store).await;
    let u = usage(&fx).await;
    assert_eq!((u.remaining, u.monthly_used), (3, 1));
    fx.store.refund(&refund_of(&feb)).await.unwrap();
    let u = usage(&fx).await;
    assert_eq!(
        (u.remaining, u.monthly_used),
        (4, 1),
        "March keeps its count"
    );
}
