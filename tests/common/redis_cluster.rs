//! Real multi-process Redis topologies for one test, stopped on drop:
//! a six-node Redis Cluster (three primaries, one replica each) and a
//! Sentinel set-up (a primary, a replica, three sentinels), all on free
//! loopback ports. Every wait polls a readiness condition with a deadline;
//! administration goes through `redis-cli`.
#![allow(dead_code)]

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);

/// One `redis-server` process (a cluster node, a replica or a sentinel).
#[derive(Debug)]
struct Node {
    port: u16,
    child: Option<Child>,
}

impl Node {
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port that is free, and (for cluster nodes) whose bus port +10000 is too.
fn free_port(with_bus: bool) -> u16 {
    for _ in 0..100 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind 127.0.0.1:0");
        if !with_bus {
            return port;
        }
        if port < 55_000 && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair");
}

/// Starts `redis-server` with `args` on a free port and waits for `PING`.
fn spawn(dir: &Path, with_bus: bool, args: impl Fn(u16) -> Vec<String>) -> Node {
    for _ in 0..10 {
        let port = free_port(with_bus);
        let log = std::fs::File::create(dir.join(format!("redis-{port}.log"))).expect("log file");
        let mut child = Command::new("redis-server")
            .args(args(port))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-server (apt-get install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break; // port taken meanwhile: try another
            }
            if cli(port, &["PING"]).as_deref() == Some("PONG") {
                return Node {
                    port,
                    child: Some(child),
                };
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("redis-server did not start");
}

/// `redis-cli -p port args…`; the trimmed output, `None` when it failed.
pub fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!text.starts_with("Could not connect") && !text.starts_with("ERR")).then_some(text)
}

/// Polls `cond` until it holds; panics with `what` after the deadline.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn base_args(port: u16) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

// ---------------------------------------------------------------- Cluster

/// Six nodes, three primaries with one replica each, all slots covered.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        let nodes: Vec<Node> = (0..6)
            .map(|_| {
                spawn(dir.path(), true, |port| {
                    let mut a = base_args(port);
                    a.extend(
                        [
                            "--cluster-enabled",
                            "yes",
                            "--cluster-config-file",
                            &format!("nodes-{port}.conf"),
                            "--cluster-node-timeout",
                            "2000",
                        ]
                        .iter()
                        .map(|s| s.to_string()),
                    );
                    a
                })
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let status = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli --cluster create");
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster = RedisCluster { nodes, _dir: dir };
        cluster.wait_healthy();
        cluster
    }

    /// Every live node says `cluster_state:ok` and every replica's link is up.
    pub fn wait_healthy(&self) {
        for n in self.nodes.iter().filter(|n| n.child.is_some()) {
            wait_for("cluster_state:ok", || {
                cli(n.port, &["CLUSTER", "INFO"]).is_some_and(|i| i.contains("cluster_state:ok"))
            });
            wait_for("replication link", || {
                cli(n.port, &["INFO", "replication"]).is_some_and(|i| {
                    i.contains("role:master") || i.contains("master_link_status:up")
                })
            });
        }
    }

    pub fn seed_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}/", n.port))
            .collect()
    }

    /// The ports of the current primaries.
    pub fn primaries(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .filter(|n| cli(n.port, &["ROLE"]).is_some_and(|r| r.lines().next() == Some("master")))
            .map(|n| n.port)
            .collect()
    }

    /// Empties every primary (between test cases).
    pub fn flush_all(&self) {
        for p in self.primaries() {
            assert_eq!(cli(p, &["FLUSHALL"]).as_deref(), Some("OK"));
        }
    }

    /// The primary holding `key`'s slot, and one of its replicas.
    /// Waits until the node asked knows both (gossip may lag `cluster_state:ok`).
    pub fn owner_of(&self, key: &str) -> (u16, u16) {
        let mut found = None;
        wait_for("a primary and its replica for the slot", || {
            found = self.primary_of(key).and_then(|(id, port, nodes)| {
                nodes
                    .lines()
                    .map(|l| l.split_whitespace().collect::<Vec<_>>())
                    .find(|f| f.len() > 3 && f[3] == id && !f[2].contains("fail"))
                    .map(|f| (port, port_of(f[1])))
            });
            found.is_some()
        });
        found.expect("found")
    }

    /// The id and port of the primary holding `key`'s slot as a live node
    /// sees it, with that node's `CLUSTER NODES`.
    fn primary_of(&self, key: &str) -> Option<(String, u16, String)> {
        let live = self.nodes.iter().find(|n| n.child.is_some())?;
        let slot: u16 = cli(live.port, &["CLUSTER", "KEYSLOT", key])?.parse().ok()?;
        let nodes = cli(live.port, &["CLUSTER", "NODES"])?;
        // <id> <ip:port@bus> <flags> <master-id> <ping> <pong> <epoch> <state> <slots…>
        for line in nodes.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let owns = f.iter().skip(8).any(|r| match r.split_once('-') {
                Some((a, b)) => {
                    a.parse::<u16>().is_ok_and(|a| a <= slot)
                        && b.parse::<u16>().is_ok_and(|b| slot <= b)
                }
                None => r.parse::<u16>() == Ok(slot),
            });
            if owns && f.len() > 2 && f[2].contains("master") && !f[2].contains("fail") {
                return Some((f[0].to_owned(), port_of(f[1]), nodes.clone()));
            }
        }
        None
    }

    /// Promotes the replica of `key`'s primary with `CLUSTER FAILOVER` and
    /// waits until the whole cluster agrees. Returns (old, new) primary ports.
    pub fn failover_slot_of(&self, key: &str) -> (u16, u16) {
        let (old, new) = self.owner_of(key);
        assert_eq!(cli(new, &["CLUSTER", "FAILOVER"]).as_deref(), Some("OK"));
        wait_for("replica promoted", || {
            cli(new, &["ROLE"]).is_some_and(|r| r.lines().next() == Some("master"))
                && cli(old, &["ROLE"]).is_some_and(|r| r.lines().next() == Some("slave"))
        });
        wait_for("cluster agrees on the new primary", || {
            self.primary_of(key).is_some_and(|(_, p, _)| p == new)
        });
        self.wait_healthy();
        (old, new)
    }

    /// Kills (SIGKILL) the primary of `key`'s slot and waits until its
    /// replica has taken over. Returns (old, new) primary ports.
    pub fn kill_primary_of(&mut self, key: &str) -> (u16, u16) {
        let (old, new) = self.owner_of(key);
        self.nodes
            .iter_mut()
            .find(|n| n.port == old)
            .expect("the primary's process")
            .kill();
        wait_for("replica promoted after kill", || {
            cli(new, &["ROLE"]).is_some_and(|r| r.lines().next() == Some("master"))
        });
        self.wait_healthy();
        (old, new)
    }
}

fn port_of(addr: &str) -> u16 {
    // "127.0.0.1:7000@17000" (and newer ",hostname" suffixes)
    addr.split(['@', ','])
        .next()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("node address")
}

// ---------------------------------------------------------------- Sentinel

pub const MASTER_NAME: &str = "tgmaster";

/// A primary, a replica and three sentinels watching them.
#[derive(Debug)]
pub struct RedisSentinel {
    data: Vec<Node>,
    sentinels: Vec<Node>,
    dir: tempfile::TempDir,
}

impl RedisSentinel {
    pub fn start() -> RedisSentinel {
        Self::start_monitoring(|port| port)
    }

    /// Like [`Self::start`], but the sentinels monitor the primary at the
    /// port `monitor` returns for the primary's own port (e.g. a proxy's).
    pub fn start_monitoring(monitor: impl FnOnce(u16) -> u16) -> RedisSentinel {
        let dir = tempfile::tempdir().expect("temporary directory");
        let primary = spawn(dir.path(), false, base_args);
        let p = primary.port;
        let replica = spawn(dir.path(), false, |port| {
            let mut a = base_args(port);
            a.extend(["--replicaof".into(), "127.0.0.1".into(), p.to_string()]);
            a
        });
        wait_for("replica in sync", || {
            cli(replica.port, &["INFO", "replication"])
                .is_some_and(|i| i.contains("master_link_status:up"))
        });
        let p = monitor(p);
        let sentinels: Vec<Node> = (0..3)
            .map(|_| {
                let d = dir.path().to_owned();
                spawn(dir.path(), false, move |port| {
                    let conf = d.join(format!("sentinel-{port}.conf"));
                    std::fs::write(
                        &conf,
                        format!(
                            "port {port}\nbind 127.0.0.1\ndaemonize no\n\
                             sentinel monitor {MASTER_NAME} 127.0.0.1 {p} 2\n\
                             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                             sentinel failover-timeout {MASTER_NAME} 10000\n"
                        ),
                    )
                    .expect("sentinel.conf");
                    vec![conf.display().to_string(), "--sentinel".into()]
                })
            })
            .collect();
        let s = RedisSentinel {
            data: vec![primary, replica],
            sentinels,
            dir,
        };
        for n in &s.sentinels {
            wait_for("sentinel sees the replica and its peers", || {
                let replicas = cli(n.port, &["SENTINEL", "REPLICAS", MASTER_NAME]);
                let peers = cli(n.port, &["SENTINEL", "SENTINELS", MASTER_NAME]);
                replicas.is_some_and(|r| r.contains("slave"))
                    && peers.is_some_and(|p| p.matches("sentinel").count() >= 2)
            });
        }
        s
    }

    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}/", n.port))
            .collect()
    }

    /// The port the sentinels name as primary.
    pub fn primary_port(&self) -> u16 {
        let addr = cli(
            self.sentinels[0].port,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
        )
        .expect("get-master-addr-by-name");
        addr.lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
            .expect("a port")
    }

    /// `SENTINEL FAILOVER`, then waits until the sentinels name the other
    /// node and it is a primary. Returns (old, new) primary ports.
    pub fn failover(&self) -> (u16, u16) {
        let old = self.primary_port();
        let new = self
            .data
            .iter()
            .map(|n| n.port)
            .find(|&p| p != old)
            .expect("the replica");
        assert_eq!(
            cli(
                self.sentinels[0].port,
                &["SENTINEL", "FAILOVER", MASTER_NAME]
            )
            .as_deref(),
            Some("OK")
        );
        wait_for("sentinels name the new primary", || {
            self.sentinels.iter().all(|s| {
                cli(
                    s.port,
                    &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
                )
                .is_some_and(|a| a.lines().nth(1) == Some(new.to_string().as_str()))
            })
        });
        wait_for("new primary", || {
            cli(new, &["ROLE"]).is_some_and(|r| r.lines().next() == Some("master"))
        });
        (old, new)
    }
}
