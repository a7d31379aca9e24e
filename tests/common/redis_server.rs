//! A real `redis-server` for one test: started on a free port, stopped on drop.
//!
//! `RedisServer::start()` picks a port by binding `127.0.0.1:0` and releasing
//! it, starts `redis-server` there without persistence, in a temporary
//! directory, and returns once the server answers `PING` (retrying with a new
//! port if another process took the port in between). The server can be
//! paused (`SIGSTOP`), resumed, killed (`SIGKILL`) and restarted on the same
//! port, to test failure behaviour.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = "redis-server";
/// How long a starting server may take to answer `PING`.
const READY_DEADLINE: Duration = Duration::from_secs(10);
/// Attempts at finding a port nobody else takes first.
const PORT_ATTEMPTS: usize = 10;

#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    pub fn start() -> RedisServer {
        if let Err(e) = Command::new(BINARY)
            .arg("--version")
            .stdout(Stdio::null())
            .status()
        {
            panic!("cannot run `{BINARY}` ({e}): install it, e.g. `apt-get install redis-server`");
        }
        let dir = tempfile::tempdir().expect("temporary directory for redis-server");
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            match spawn(port, dir.path()) {
                Ok(child) => {
                    return RedisServer {
                        port,
                        child: Some(child),
                        dir,
                    }
                }
                Err(e) => last_error = e,
            }
        }
        panic!("redis-server did not start after {PORT_ATTEMPTS} attempts: {last_error}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The server's process id. Panics when it is not running.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("redis-server is not running")
            .id()
    }

    /// Freezes the server (`SIGSTOP`): connections stay open, nothing answers.
    pub fn pause(&self) {
        signal("-STOP", self.pid());
    }

    /// Thaws a paused server (`SIGCONT`).
    pub fn resume(&self) {
        signal("-CONT", self.pid());
    }

    /// Kills the server (`SIGKILL`) and waits for it to exit. Its data is lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs, then starts a new, empty one on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            match spawn(self.port, self.dir.path()) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(e) if Instant::now() > deadline => {
                    panic!("redis-server did not restart on port {}: {e}", self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL also ends a paused server.
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

fn signal(sig: &str, pid: u32) {
    let _ = Command::new("kill").arg(sig).arg(pid.to_string()).status();
}

/// Starts `redis-server` on `port` and waits for `PING`; `Err` when it exits
/// (e.g. the port was taken) or does not answer in time.
fn spawn(port: u16, dir: &Path) -> Result<Child, String> {
    let log_path = dir.join(format!("redis-{port}.log"));
    let log = std::fs::File::create(&log_path).map_err(|e| format!("log file: {e}"))?;
    let mut child = Command::new(BINARY)
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {BINARY}: {e}"))?;
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("exited with {status}: {}", last_lines(&log, 5)));
        }
        if ping(port) {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("no PONG on port {port} within {READY_DEADLINE:?}"));
        }
        // Poll: the readiness check itself is what is awaited.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether a server on `port` answers `PING` within 200 ms.
fn ping(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Counter `i` of a client hash's `ctr` field (admit.lua's header:
/// little-endian doubles, 0 the window's total, 5 the quota's `used`); 0
/// when the field is absent.
#[allow(dead_code)]
pub fn counter(ctr: Option<&[u8]>, i: usize) -> u64 {
    ctr.and_then(|b| b.get(i * 8..i * 8 + 8)).map_or(0, |b| {
        f64::from_le_bytes(b.try_into().unwrap_or_default()) as u64
    })
}

/// An `admit.lua` reply as its integer slots: a state reply is one string
/// of little-endian doubles (admit.lua's header), a short one an array.
#[allow(dead_code)]
pub fn admit_slots(reply: redis::Value) -> Vec<i64> {
    match reply {
        redis::Value::BulkString(b) => b
            .chunks_exact(8)
            .map(|d| f64::from_le_bytes(d.try_into().expect("8 bytes")) as i64)
            .collect(),
        other => redis::from_redis_value(other).expect("an array of integers"),
    }
}

/// Script calls (`EVALSHA` and `EVAL`) counted in an `INFO commandstats` text.
pub fn script_calls_in(commandstats: &str) -> u64 {
    commandstats
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}
