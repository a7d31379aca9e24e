//! Real multi-process Redis topologies for one test, stopped on drop:
//! a six-node Redis Cluster (three primaries, one replica each) and a
//! Sentinel set-up (a primary, a replica, three sentinels), all on free
//! loopback ports. Every wait polls a readiness condition with a deadline;
//! administration goes through `redis-cli`.
#![allow(dead_code)]

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);
/// How long one `redis-server` may take to answer after it starts.
const READY_DEADLINE: Duration = Duration::from_secs(10);

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
pub fn free_port(with_bus: bool) -> u16 {
    for _ in 0..100 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind 127.0.0.1:0");
        if !with_bus
            || (port < 55_000 && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 10_000)).is_ok())
        {
            return port;
        }
    }
    panic!("no free port pair");
}

/// Starts `redis-server` with `args(ports)` in `dir` on ports from `pick`
/// (its stdout to `log(ports)`), and waits until `ready(ports)`; when the
/// process exits first (a port was taken meanwhile) or is not ready within
/// 10 s, tries other ports, ten times at most. `what` names it in the panic.
pub fn spawn_ready<P: Copy>(
    dir: &Path,
    what: &str,
    pick: impl Fn() -> P,
    log: impl Fn(P) -> PathBuf,
    args: impl Fn(P) -> Vec<String>,
    ready: impl Fn(P) -> bool,
) -> (Child, P) {
    let mut last = String::new();
    for _ in 0..10 {
        let ports = pick();
        let log_path = log(ports);
        let log_file = std::fs::File::create(&log_path).expect("log file");
        let mut child = Command::new("redis-server")
            .args(args(ports))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-server (apt-get install redis-server)");
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                last = format!(
                    "exited with {status}: {}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
                break; // a port was taken meanwhile: try others
            }
            if ready(ports) {
                return (child, ports);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                last = "not ready in time".into();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("{what} did not start: {last}");
}

/// Starts `redis-server` with `args` on a free port and waits for `PING`.
fn spawn(dir: &Path, with_bus: bool, args: impl Fn(u16) -> Vec<String>) -> Node {
    let (child, port) = spawn_ready(
        dir,
        "redis-server",
        || free_port(with_bus),
        |port| dir.join(format!("redis-{port}.log")),
        args,
        |port| cli(port, &["PING"]).as_deref() == Some("PONG"),
    );
    Node {
        port,
        child: Some(child),
    }
}

/// `redis-cli -p port args…`; the trimmed output, `None` when it failed.
pub fn cli(port: u16, args: &[&str]) -> Option<String> {
    cli_tls(port, None, args)
}

/// [`cli`], over TLS verified with `ca` when given.
pub fn cli_tls(port: u16, ca: Option<&Path>, args: &[&str]) -> Option<String> {
    let mut cmd = Command::new("redis-cli");
    if let Some(ca) = ca {
        cmd.args(["--tls", "--cacert"]).arg(ca);
    }
    let out = cmd
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

/// The arguments every test server gets: loopback, no persistence, foreground.
pub fn base_args(port: u16) -> Vec<String> {
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

/// The arguments that make a node on `port` a cluster node.
pub fn cluster_args(port: u16) -> Vec<String> {
    [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        &format!("nodes-{port}.conf"),
        "--cluster-node-timeout",
        "2000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `redis-cli --cluster create` over the nodes on `ports` (plain ports),
/// with `replicas` replicas per primary; waits until each says
/// `cluster_state:ok`.
pub fn create_cluster(ports: &[u16], replicas: u32) {
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let status = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&addrs)
        .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("redis-cli --cluster create");
    assert!(status.success(), "redis-cli --cluster create failed");
    for &port in ports {
        wait_for("cluster_state:ok", || {
            cli(port, &["CLUSTER", "INFO"]).is_some_and(|i| i.contains("cluster_state:ok"))
        });
    }
}

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
                    a.extend(cluster_args(port));
                    a
                })
            })
            .collect();
        let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
        create_cluster(&ports, 1);
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

/// How a helper talks to a sentinel: `(port, args)` → trimmed output.
pub type SentinelCli<'a> = &'a dyn Fn(u16, &[&str]) -> Option<String>;

/// A sentinel config's `sentinel` lines: watch `master` at 127.0.0.1:`port`,
/// quorum 2, down after 1 s, failover timeout 10 s.
pub fn sentinel_monitor(master: &str, port: u16) -> String {
    format!(
        "sentinel monitor {master} 127.0.0.1 {port} 2\n\
         sentinel down-after-milliseconds {master} 1000\n\
         sentinel failover-timeout {master} 10000\n"
    )
}

/// Waits until every sentinel on `ports` sees `master`'s replica and two peers.
pub fn wait_sentinels_ready(ports: &[u16], master: &str, cli: SentinelCli) {
    for &port in ports {
        wait_for("sentinel sees the replica and its peers", || {
            let replicas = cli(port, &["SENTINEL", "REPLICAS", master]);
            let peers = cli(port, &["SENTINEL", "SENTINELS", master]);
            replicas.is_some_and(|r| r.contains("slave"))
                && peers.is_some_and(|p| p.matches("sentinel").count() >= 2)
        });
    }
}

/// The port the sentinel on `port` names as `master`'s primary.
pub fn named_primary(port: u16, master: &str, cli: SentinelCli) -> u16 {
    let addr = cli(port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", master])
        .expect("get-master-addr-by-name");
    addr.lines()
        .nth(1)
        .and_then(|p| p.trim().parse().ok())
        .expect("a port")
}

/// `SENTINEL FAILOVER` through the first of `ports`, then waits until every
/// sentinel names `new` as primary and the node (administered on
/// `new_admin`) says it is one.
pub fn sentinel_failover(ports: &[u16], master: &str, new: u16, new_admin: u16, cli: SentinelCli) {
    assert_eq!(
        cli(ports[0], &["SENTINEL", "FAILOVER", master]).as_deref(),
        Some("OK")
    );
    wait_for("sentinels name the new primary", || {
        ports.iter().all(|&s| {
            cli(s, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", master])
                .is_some_and(|a| a.lines().nth(1) == Some(new.to_string().as_str()))
        })
    });
    wait_for("new primary", || {
        self::cli(new_admin, &["ROLE"]).is_some_and(|r| r.lines().next() == Some("master"))
    });
}

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
                            "port {port}\nbind 127.0.0.1\ndaemonize no\n{}",
                            sentinel_monitor(MASTER_NAME, p)
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
        let ports: Vec<u16> = s.sentinels.iter().map(|n| n.port).collect();
        wait_sentinels_ready(&ports, MASTER_NAME, &cli);
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
        named_primary(self.sentinels[0].port, MASTER_NAME, &cli)
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
        let ports: Vec<u16> = self.sentinels.iter().map(|n| n.port).collect();
        sentinel_failover(&ports, MASTER_NAME, new, new, &cli);
        (old, new)
    }
}
