//! `flood`: the wrong-secret flood of tests/key_security.rs with the
//! failure budget set out of reach, so every wrong secret costs a bcrypt
//! verification (cost 10, Redis store): the figure the throttle is compared
//! with in docs/key-security.md. Checks that all 1,000 were refused with 401.

use super::common::flood::{flood, flood_target};
use super::common::Backend;

pub async fn run() {
    let (env, key_id, valid) = flood_target(Backend::Redis, 60_000).await;
    let f = flood(&env, &key_id, &valid).await;
    f.report("Redis store, bcrypt cost 10, throttle out of reach");
    assert_eq!(f.count(401), 1000);
}
