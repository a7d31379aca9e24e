//! Measurements that print figures for the docs rather than check behaviour
//! (they were `#[ignore]`d tests): each starts real components (the
//! tollgate binary, `redis-server`, a Redis Cluster) through tests/common.
//! Run one by name, in release mode with `cargo bench`, or quicker to build
//! in debug mode with `cargo test`:
//!
//! ```sh
//! cargo bench --bench measure -- flood             # wrong-secret flood, no throttle
//! cargo bench --bench measure -- admit-script      # admit script cost, window memory
//! cargo bench --bench measure -- admit-throughput  # redis-benchmark of admit.lua
//! cargo bench --bench measure -- exactly-once-cost # admit.lua with/without a session
//! cargo bench --bench measure -- many-keys         # 1,000 keys, batching off/on
//! cargo test --bench measure -- admit-script       # the same, debug build
//! ```
//!
//! With no name (as `cargo bench` and `cargo test --all-targets` run it) it
//! lists them and starts nothing.

#[path = "../../tests/common/mod.rs"]
mod common;

mod admit_script;
mod admit_throughput;
mod exactly_once_cost;
mod flood;
mod many_keys;

const MEASUREMENTS: [(&str, &str); 5] = [
    (
        "flood",
        "wrong-secret flood with the throttle out of reach (docs/key-security.md)",
    ),
    (
        "admit-script",
        "admit script cost and window memory on one Redis (docs/rate-limiting.md)",
    ),
    (
        "admit-throughput",
        "admit.lua under redis-benchmark, one Redis and a cluster (docs/scaling.md)",
    ),
    (
        "exactly-once-cost",
        "admit.lua with and without a session, A/B rounds (docs/rate-limiting.md)",
    ),
    (
        "many-keys",
        "Redis cost per admission, 1,000 keys, cross-key batching off/on (bench/results)",
    ),
];

fn main() {
    let names: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if names.is_empty() {
        println!("measurements (cargo bench --bench measure -- NAME):");
        for (name, what) in MEASUREMENTS {
            println!("  {name:<18} {what}");
        }
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    for name in names {
        match name.as_str() {
            "flood" => runtime.block_on(flood::run()),
            "admit-script" => runtime.block_on(admit_script::run()),
            "admit-throughput" => runtime.block_on(admit_throughput::run()),
            "exactly-once-cost" => runtime.block_on(exactly_once_cost::run()),
            "many-keys" => runtime.block_on(many_keys::run()),
            other => {
                eprintln!("no measurement {other:?}; run with no name for the list");
                std::process::exit(2);
            }
        }
    }
}
