//! `admit-throughput`: the admission script's throughput on one Redis and
//! on the three primaries of a cluster, driven by `redis-benchmark` (EVALSHA
//! of `admit.lua`, 32 connections per benchmark, each benchmark on one
//! client); the figures of docs/scaling.md. Checks that every call was
//! admitted and counted.

use std::time::Duration;

use tollgate::store::redis::{Bounds, RedisStore, Topology};
use tollgate::store::{Store, TimeSource};

use super::common::records::{client, key};
use super::common::redis_cluster::{cli, RedisCluster};
use super::common::redis_server::RedisServer;

/// Client `id` with limits never reached and its key `k{id}`.
async fn setup(store: &RedisStore, id: &str) {
    let mut c = client(id);
    c.per_minute = Some(1_000_000_000);
    c.monthly = Some(1_000_000_000_000);
    store.create_client(&c).await.unwrap();
    let k = key(&format!("k{id}"), id, "bench", &["read:charge_points"]);
    store.create_key(&k).await.unwrap();
}

pub async fn run() {
    const N: &str = "200000";
    let script = include_str!("../../src/store/admit.lua");
    fn bench(port: u16, sha: &str, id: &str) -> std::process::Child {
        let (c, k, w) = (
            format!("tg:{{c:{id}}}:client"),
            format!("tg:{{c:{id}}}:key:k{id}"),
            format!("tg:{{c:{id}}}:win"),
        );
        std::process::Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-n", N, "-c", "32", "-q"])
            .args(["EVALSHA", sha, "3", &c, &k, &w])
            .args(["admit", id, &format!("k{id}"), "1", "", "1000000000"])
            .args(["1000000000000", ""])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("redis-benchmark")
    }
    fn rps(child: std::process::Child) -> f64 {
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // "EVALSHA ...: 51234.57 requests per second, p50=0.311 msec"
        let line = text
            .split(['\r', '\n'])
            .rfind(|l| l.contains("requests per second"))
            .unwrap_or_else(|| panic!("no result in {text:?}"))
            .to_owned();
        let before = line.split(" requests per second").next().unwrap();
        eprintln!("  {}", line.trim());
        before.rsplit(' ').next().unwrap().parse().unwrap()
    }
    let bounds = Bounds {
        timeout: Duration::from_secs(2),
        max_in_flight: 1024,
    };

    // One server.
    let server = RedisServer::start();
    let one = RedisStore::new(&server.url(), Duration::from_secs(2), TimeSource::Store).unwrap();
    setup(&one, "b0").await;
    let sha = cli(server.port(), &["SCRIPT", "LOAD", script]).unwrap();
    eprintln!("one redis-server, one client:");
    let single = rps(bench(server.port(), &sha, "b0"));
    // Every call admitted and counted.
    let used = cli(server.port(), &["HGET", "tg:{c:b0}:client", "used"]);
    assert_eq!(used.as_deref(), Some(N));

    // A cluster: three clients whose slots are on three different primaries.
    let cluster = RedisCluster::start();
    let topo = Topology::Cluster {
        urls: cluster.seed_urls(),
    };
    let store = RedisStore::with_topology(&topo, bounds, TimeSource::Store).unwrap();
    let mut chosen: Vec<(u16, String)> = Vec::new();
    for i in 0..100 {
        let id = format!("b{i}");
        let (primary, _) = cluster.owner_of(&format!("tg:{{c:{id}}}:win"));
        if chosen.iter().all(|(p, _)| *p != primary) {
            setup(&store, &id).await;
            chosen.push((primary, id));
        }
        if chosen.len() == 3 {
            break;
        }
    }
    let mut shas = Vec::new();
    for (p, _) in &chosen {
        shas.push(cli(*p, &["SCRIPT", "LOAD", script]).unwrap());
    }
    eprintln!("cluster, one primary, one client:");
    let one_primary = rps(bench(chosen[0].0, &shas[0], &chosen[0].1));
    eprintln!("cluster, three primaries at once, one client each:");
    let children: Vec<_> = chosen
        .iter()
        .zip(&shas)
        .map(|((p, id), sha)| bench(*p, sha, id))
        .collect();
    let total: f64 = children.into_iter().map(rps).sum();
    for (p, id) in &chosen {
        let used = cli(*p, &["HGET", &format!("tg:{{c:{id}}}:client"), "used"]);
        let expected = if id == &chosen[0].1 { 400_000 } else { 200_000 };
        assert_eq!(used.and_then(|u| u.parse().ok()), Some(expected));
    }
    eprintln!(
        "admit/s: one server {single:.0}; cluster one primary {one_primary:.0}; \
         cluster three primaries together {total:.0}"
    );
}
