//! `flood`: the wrong-secret flood of tests/key_security.rs with the
//! failure budget set out of reach, so every wrong secret costs a bcrypt
//! verification (cost 10, Redis store): the figure the throttle is compared
//! with in docs/key-security.md. Checks that all 1,000 were refused with 401.

use serde_json::json;

use super::common::admin::{create_client, create_key};
use super::common::env::Env;
use super::common::flood::flood;
use super::common::Backend;

pub async fn run() {
    let env = Env::setup(Backend::Redis)
        .auth("bcrypt_cost = 10\nmax_failures_per_minute = 60000")
        .start()
        .await;
    create_client(
        &env.http,
        &env.tg,
        "acme",
        json!({"per_minute": 1_000_000, "monthly": 1_000_000_000}),
    )
    .await;
    let (key_id, valid) = create_key(&env.http, &env.tg, "acme", &["read:charge_points"]).await;
    let f = flood(&env, &key_id, &valid).await;
    f.report("Redis store, bcrypt cost 10, throttle out of reach");
    assert_eq!(f.count(401), 1000);
}
