//! `many-keys`: Redis's cost per admission with 1,000 clients rotating, the
//! store driven directly (no HTTP), with cross-key batching off
//! (`store.batch_keys = 1`: one `admit.lua` call per admission, pipelined on
//! the connection) and on (64), alternating. 32 concurrent callers (as
//! bench/run.sh's 32 wrk connections), each admitting one key after another
//! in turn, for `TG_SECONDS` (3) per run, `TG_ROUNDS` (3) rounds. Per
//! admission: redis-server's main-thread CPU (`INFO cpu`), `cmdstat_evalsha`
//! µs, script calls, and the server's `read`/`write` system calls (`perf
//! stat` tracepoints, when perf is there). Quoted in
//! bench/results/2026-11-28-pipeline.md.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tollgate::limits::policy::Policy;
use tollgate::limits::{Limits, Verdict};
use tollgate::store::redis::RedisStore;
use tollgate::store::{AdmitRequest, Store, TimeSource};

use super::common::records::{client, key};
use super::common::redis_server::RedisServer;

const CLIENTS: usize = 1000;
const CALLERS: usize = 32;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn info(c: &mut redis::aio::MultiplexedConnection, section: &str) -> String {
    redis::cmd("INFO")
        .arg(section)
        .query_async(c)
        .await
        .expect("INFO")
}

fn field(text: &str, prefix: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| {
            if name.is_empty() {
                l.split(':').nth(1)?.trim().parse().ok()
            } else {
                l.split(&format!("{name}="))
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse()
                    .ok()
            }
        })
        .unwrap_or(0.0)
}

pub async fn run() {
    let seconds = env("TG_SECONDS", 3);
    let rounds = env("TG_ROUNDS", 3);
    let server = RedisServer::start();
    let setup =
        RedisStore::new(&server.url(), Duration::from_secs(10), TimeSource::Store).expect("store");
    for i in 0..CLIENTS {
        let mut c = client(&format!("c{i}"));
        c.per_minute = Some(1_000_000_000);
        c.monthly = Some(1_000_000_000_000);
        setup.create_client(&c).await.expect("client");
        let k = key(&format!("k{i}"), &format!("c{i}"), "bench", &["read"]);
        setup.create_key(&k).await.expect("key");
    }
    let raw = redis::Client::open(server.url()).expect("url");
    let mut raw = raw
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "redis-server, {CLIENTS} clients, {CALLERS} callers, {seconds} s per run; load {load}"
    );
    println!(
        "| round | batch_keys | admissions/s | redis CPU µs per admission | evalsha µs per admission \
         | admissions per script call | redis reads per admission | redis writes per admission |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for round in 1..=rounds {
        for batch_keys in [1usize, 64] {
            let store: Arc<dyn Store> = Arc::new(
                RedisStore::new(&server.url(), Duration::from_secs(10), TimeSource::Store)
                    .expect("store")
                    .with_batch_keys(batch_keys),
            );
            let stop = Arc::new(AtomicBool::new(false));
            let count = Arc::new(AtomicU64::new(0));
            // Warm: connected, scripts loaded.
            admit(&*store, 0).await;
            redis::cmd("CONFIG")
                .arg("RESETSTAT")
                .exec_async(&mut raw)
                .await
                .expect("resetstat");
            let cpu = info(&mut raw, "cpu").await;
            let cpu_before = field(&cpu, "used_cpu_user_main_thread:", "")
                + field(&cpu, "used_cpu_sys_main_thread:", "");
            let perf = std::process::Command::new("perf")
                .args(["stat", "-x,", "-e"])
                .arg("syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_writev")
                .args(["-p", &server.pid().to_string()])
                .stderr(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .ok();
            let callers: Vec<_> = (0..CALLERS)
                .map(|caller| {
                    let (store, stop, count) = (store.clone(), stop.clone(), count.clone());
                    tokio::spawn(async move {
                        let mut i = caller;
                        while !stop.load(Ordering::Relaxed) {
                            admit(&*store, i % CLIENTS).await;
                            count.fetch_add(1, Ordering::Relaxed);
                            i += CALLERS;
                        }
                    })
                })
                .collect();
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            stop.store(true, Ordering::Relaxed);
            for c in callers {
                c.await.expect("caller");
            }
            let (reads, writes) = match perf {
                Some(p) => {
                    let _ = std::process::Command::new("kill")
                        .args(["-INT", &p.id().to_string()])
                        .status();
                    let out = p.wait_with_output().expect("perf");
                    let text = String::from_utf8_lossy(&out.stderr).into_owned();
                    let n = |e: &str| -> f64 {
                        text.lines()
                            .filter(|l| l.contains(e))
                            .filter_map(|l| l.split(',').next()?.parse::<f64>().ok())
                            .sum()
                    };
                    (
                        n("sys_enter_read"),
                        n("sys_enter_write,") + n("sys_enter_writev"),
                    )
                }
                None => (f64::NAN, f64::NAN),
            };
            let n = count.load(Ordering::Relaxed) as f64;
            let cpu = info(&mut raw, "cpu").await;
            let cpu_after = field(&cpu, "used_cpu_user_main_thread:", "")
                + field(&cpu, "used_cpu_sys_main_thread:", "");
            let stats = info(&mut raw, "commandstats").await;
            let calls = field(&stats, "cmdstat_evalsha:", "calls");
            let usec = field(&stats, "cmdstat_evalsha:", "usec");
            println!(
                "| {round} | {batch_keys} | {:.0} | {:.2} | {:.2} | {:.1} | {:.3} | {:.3} |",
                n / seconds as f64,
                (cpu_after - cpu_before) * 1e6 / n,
                usec / n,
                n / calls,
                reads / n,
                writes / n,
            );
        }
    }
}

async fn admit(store: &dyn Store, i: usize) {
    let (client_id, key_id) = (format!("c{i}"), format!("k{i}"));
    let req = AdmitRequest {
        client_id: &client_id,
        key_id: &key_id,
        gen: 1,
        scope: None,
        defaults: Limits {
            per_minute: 1_000_000_000,
            monthly: 1_000_000_000_000,
        },
        policy: Policy::default(),
    };
    let d = store.admit(&req).await.expect("admit");
    assert_eq!(d.verdict, Verdict::Admitted);
}
