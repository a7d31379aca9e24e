//! `exactly-once-cost`: what exactly-once costs Redis. `INFO commandstats`
//! µs (and the main thread's CPU) per admission call of `admit.lua` without
//! a session (the script as it was before exactly-once, bar one `if`) and
//! with one (the record written in the same `HSET` as the monthly counter),
//! alternating: 16 clients (`TG_CLIENTS`), each with one key and one session
//! (as one tollgate store has per key), 80,000 admissions per run from 16
//! concurrent callers pipelined on one connection, every call admitted.
//! `TG_ADMIT_LUA=file` measures a variant of the script, `TG_BASELINE_LUA=file`
//! sets the script of the runs without a session, `TG_ROUNDS=n` the number
//! of A/B rounds (4 by default). Quoted in docs/rate-limiting.md.
//!
//! `TG_BILLING=1` compares two scripts instead, both with a session and
//! both given the billing arguments (KEYS[4], ARGV[13..23]: the UTC month,
//! today's history key) that a script before billing cycles ignores: A is
//! `TG_BASELINE_LUA`, B the script; quoted in docs/billing.md.

use std::time::{Duration, Instant};

use tollgate::clock::Clock as _;

use super::common::redis_server::RedisServer;

pub async fn run() {
    // TG_CLIENTS: how many clients (80,000 admissions per run in all).
    let clients: u64 = std::env::var("TG_CLIENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(16);
    let calls: u64 = 80_000 / clients.max(1);
    // At most 16 callers at once, each taking its share of the clients.
    let callers = clients.min(16);
    let server = RedisServer::start();
    // The machine is shared: give Redis the CPU first, for A and B alike
    // (only possible as root; the numbers are noisier without).
    let reniced = std::process::Command::new("renice")
        .args(["-n", "-10", "-p", &server.pid().to_string()])
        .output()
        .is_ok_and(|o| o.status.success());
    println!("redis-server reniced to -10: {reniced}");
    let client = redis::Client::open(server.url()).expect("url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    // A loaded machine may stall a reply beyond the default timeout.
    c.set_response_timeout(Duration::from_secs(60));
    for i in 0..clients {
        let _: () = redis::cmd("HSET")
            .arg(format!("tg:{{c:c{i}}}:client"))
            .arg(&["status", "active", "created_at", "0"])
            .query_async(&mut c)
            .await
            .expect("client");
        let _: () = redis::cmd("HSET")
            .arg(format!("tg:{{c:c{i}}}:key:k1"))
            .arg(&["client_id", &format!("c{i}"), "gen", "1", "scopes", "read"])
            .query_async(&mut c)
            .await
            .expect("key");
    }
    let source = match std::env::var("TG_ADMIT_LUA") {
        Ok(path) => std::fs::read_to_string(path).expect("TG_ADMIT_LUA"),
        Err(_) => include_str!("../../src/store/admit.lua").to_owned(),
    };
    let script = redis::Script::new(&source);
    // TG_BASELINE_LUA: the script of the runs without a session (e.g. the
    // admit.lua from before exactly-once), to compare before and after.
    let baseline = match std::env::var("TG_BASELINE_LUA") {
        Ok(path) => redis::Script::new(&std::fs::read_to_string(path).expect("TG_BASELINE_LUA")),
        Err(_) => script.clone(),
    };
    let rounds: u32 = std::env::var("TG_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(4);
    let billing = std::env::var("TG_BILLING").is_ok_and(|v| v == "1");
    let mut seq = 0u64;
    for round in 1..=rounds {
        for with_session in [false, true] {
            let use_session = with_session || billing;
            let _: () = redis::cmd("CONFIG")
                .arg("RESETSTAT")
                .query_async(&mut c)
                .await
                .expect("resetstat");
            let cpu_before = redis_cpu(&mut c).await;
            let started = Instant::now();
            let tasks: Vec<_> = (0..callers)
                .map(|caller| {
                    let script = if with_session { &script } else { &baseline };
                    let (mut c, script) = (c.clone(), script.clone());
                    let first = seq;
                    let cycle = billing_args();
                    tokio::spawn(async move {
                        for n in 0..calls {
                            for i in (caller..clients).step_by(callers as usize) {
                                let id = format!("c{i}");
                                let mut inv = script.prepare_invoke();
                                inv.key(format!("tg:{{c:{id}}}:client"))
                                    .key(format!("tg:{{c:{id}}}:key:k1"))
                                    .key(format!("tg:{{c:{id}}}:win"))
                                    .arg(&["admit", &id, "k1", "1", ""])
                                    .arg("1000000000")
                                    .arg("1000000000000")
                                    .arg("")
                                    .arg(1);
                                if use_session {
                                    let session = format!("{:016x}{i:016x}", 7);
                                    inv.arg(format!("s:{session}"))
                                        .arg(first + n + 1)
                                        .arg(format!("r:{session}"));
                                }
                                if billing {
                                    inv.key(format!("tg:{{c:{id}}}:h:{}", cycle.0));
                                    inv.arg(&["", "", "", "", "1", "UTC"]).arg(&cycle.1);
                                }
                                let reply: Vec<i64> =
                                    inv.invoke_async(&mut c).await.expect("admit");
                                assert_eq!(reply[0], 0, "{reply:?}");
                            }
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("task");
            }
            seq += calls;
            let cpu = redis_cpu(&mut c).await - cpu_before;
            let stats: String = redis::cmd("INFO")
                .arg("commandstats")
                .query_async(&mut c)
                .await
                .expect("info");
            let line = stats
                .lines()
                .find(|l| l.starts_with("cmdstat_evalsha"))
                .unwrap_or("")
                .to_owned();
            println!(
                "round {round} {}: {line} cpu_per_call={:.2} ({:?})",
                match (billing, with_session) {
                    (true, false) => "A (baseline)",
                    (true, true) => "B (script)",
                    (false, true) => "with session",
                    (false, false) => "plain",
                },
                cpu * 1e6 / (clients * calls) as f64,
                started.elapsed()
            );
        }
    }
}

/// Today's UTC date and ARGV[19..23] for the UTC month (the day ranges
/// made wide: the script checks Redis `TIME` against them).
fn billing_args() -> (String, Vec<String>) {
    let now_ms = tollgate::clock::SystemClock.now_ms();
    let cycle = tollgate::limits::cycle::Cycle::utc_month();
    let p = cycle.period_at(now_ms);
    let (day, start, end) = cycle.day_at(now_ms);
    let args = [p.start_ms, p.end_ms, start, end, 400].map(|n| n.to_string());
    (day.to_string(), args.to_vec())
}

/// Seconds of CPU the Redis main thread has used (`INFO cpu`).
async fn redis_cpu(c: &mut redis::aio::MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(c)
        .await
        .expect("info cpu");
    info.lines()
        .filter(|l| {
            l.starts_with("used_cpu_user_main_thread:")
                || l.starts_with("used_cpu_sys_main_thread:")
        })
        .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
        .sum()
}
