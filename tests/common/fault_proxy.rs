//! A fault-injecting TCP proxy in front of one Redis server, for the
//! exactly-once tests.
//!
//! `FaultProxy::start(redis)` listens on a free loopback port and forwards
//! every connection to `redis`, both ways, byte for byte. It reads the RESP
//! it forwards (commands one way, replies the other, counted per
//! connection) so that it can lose exactly one reply: after
//! [`FaultProxy::drop_reply`], the reply to a chosen command that matches a
//! needle (by default the admission `EVALSHA`, whose mode argument is
//! `admit`) is not forwarded once Redis has answered it successfully —
//! the command ran — and the client's connection is closed instead. With
//! [`FaultProxy::stay_down_after_drop`] it then also closes every other
//! connection and refuses new ones until [`FaultProxy::come_back`].
//!
//! A connection that carries anything other than RESP (a replica's RDB
//! transfer) is forwarded raw and never faulted.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// The mode argument of an admission call, as it appears in the command.
pub const ADMIT_NEEDLE: &[u8] = b"\r\n$5\r\nadmit\r\n";

pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: AbortHandle,
}

#[derive(Default)]
struct Shared {
    target: Option<SocketAddr>,
    /// `Some(k)`: let `k` matching commands through, then lose the reply to the next.
    plan: Mutex<Option<u64>>,
    needle: Mutex<Vec<u8>>,
    stay_down: AtomicBool,
    down: AtomicBool,
    dropped: AtomicU64,
    /// The arguments of the commands whose replies were lost.
    dropped_commands: Mutex<Vec<Vec<String>>>,
    conns: Mutex<Vec<AbortHandle>>,
}

impl FaultProxy {
    /// Starts forwarding to `target`. Needs a Tokio runtime (call it from a
    /// Tokio test, in or out of an async fn).
    pub fn start(target: SocketAddr) -> FaultProxy {
        let std_listener =
            std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("local addr");
        let listener = TcpListener::from_std(std_listener).expect("tokio listener");
        let shared = Arc::new(Shared {
            target: Some(target),
            needle: Mutex::new(ADMIT_NEEDLE.to_vec()),
            ..Shared::default()
        });
        let s = shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if s.down.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let task = tokio::spawn(serve(client, s.clone()));
                let mut conns = s.conns.lock().unwrap();
                conns.retain(|c| !c.is_finished());
                conns.push(task.abort_handle());
            }
        })
        .abort_handle();
        FaultProxy {
            addr,
            shared,
            accept,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.addr.port())
    }

    /// Loses the reply to the next matching command (after `skip` more
    /// matching ones have gone through) once Redis answered it without error.
    pub fn drop_reply(&self, skip: u64) {
        *self.shared.plan.lock().unwrap() = Some(skip);
    }

    /// After the next lost reply, close every connection and refuse new ones.
    pub fn stay_down_after_drop(&self) {
        self.shared.stay_down.store(true, Ordering::SeqCst);
    }

    /// Accept connections again (after [`Self::stay_down_after_drop`]).
    pub fn come_back(&self) {
        self.shared.stay_down.store(false, Ordering::SeqCst);
        self.shared.down.store(false, Ordering::SeqCst);
    }

    pub fn is_down(&self) -> bool {
        self.shared.down.load(Ordering::SeqCst)
    }

    /// Whether a planned drop is still waiting for its command.
    pub fn armed(&self) -> bool {
        self.shared.plan.lock().unwrap().is_some()
    }

    /// Replies lost so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::SeqCst)
    }

    /// The arguments of each command whose reply was lost, in order.
    pub fn dropped_commands(&self) -> Vec<Vec<String>> {
        self.shared.dropped_commands.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for c in self.shared.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

/// Forwards one connection until either side closes it, or a fault does.
async fn serve(client: TcpStream, shared: Arc<Shared>) {
    let Some(target) = shared.target else { return };
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    // Index (in this connection's command order) of the reply to lose.
    let doomed = Arc::new(AtomicU64::new(u64::MAX));
    let raw = Arc::new(AtomicBool::new(false));

    let (d, r, s) = (doomed.clone(), raw.clone(), shared.clone());
    let upstream = tokio::spawn(async move {
        let mut pending = Vec::new();
        let mut index = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if !r.load(Ordering::SeqCst) {
                pending.extend_from_slice(&buf[..n]);
                loop {
                    match command_len(&pending) {
                        Ok(Some(len)) => {
                            let cmd: Vec<u8> = pending.drain(..len).collect();
                            if matches(&s, &cmd) {
                                d.store(index, Ordering::SeqCst);
                            }
                            index += 1;
                        }
                        Ok(None) => break,
                        Err(()) => {
                            r.store(true, Ordering::SeqCst);
                            break;
                        }
                    }
                }
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });

    let mut pending: Vec<u8> = Vec::new();
    let mut index = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    'conn: loop {
        let n = match sr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if raw.load(Ordering::SeqCst) {
            pending.extend_from_slice(&buf[..n]);
            if cw.write_all(&pending).await.is_err() {
                break;
            }
            pending.clear();
            continue;
        }
        pending.extend_from_slice(&buf[..n]);
        let mut done = 0;
        loop {
            match reply_len(&pending[done..]) {
                Ok(Some(len)) => {
                    if index == doomed.load(Ordering::SeqCst) {
                        if pending[done] == b'-' {
                            // An error reply: the command did not run. Aim
                            // at the next matching command instead.
                            doomed.store(u64::MAX, Ordering::SeqCst);
                            shared.plan.lock().unwrap().get_or_insert(0);
                        } else {
                            // The command ran: forward what came before its
                            // reply, then lose the reply and the connection.
                            let _ = cw.write_all(&pending[..done]).await;
                            shared.dropped.fetch_add(1, Ordering::SeqCst);
                            if shared.stay_down.load(Ordering::SeqCst) {
                                shared.down.store(true, Ordering::SeqCst);
                                for c in shared.conns.lock().unwrap().iter() {
                                    c.abort();
                                }
                            }
                            break 'conn;
                        }
                    }
                    index += 1;
                    done += len;
                }
                Ok(None) => break,
                Err(()) => {
                    raw.store(true, Ordering::SeqCst);
                    done = pending.len();
                    break;
                }
            }
        }
        if cw.write_all(&pending[..done]).await.is_err() {
            break;
        }
        pending.drain(..done);
    }
    upstream.abort();
    // Dropping both halves closes the client's connection.
}

/// Whether `cmd` is the command whose reply is to be lost (and, if so,
/// disarms the plan and records the command).
fn matches(shared: &Shared, cmd: &[u8]) -> bool {
    let needle = shared.needle.lock().unwrap().clone();
    if !cmd.windows(needle.len()).any(|w| w == needle.as_slice()) {
        return false;
    }
    let mut plan = shared.plan.lock().unwrap();
    match *plan {
        None => false,
        Some(0) => {
            *plan = None;
            shared.dropped_commands.lock().unwrap().push(args(cmd));
            true
        }
        Some(k) => {
            *plan = Some(k - 1);
            false
        }
    }
}

/// The bulk strings of a command, as text.
fn args(cmd: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = match line(cmd) {
        Some(l) => &cmd[l..],
        None => return out,
    };
    while let Some(l) = line(rest) {
        let len: usize = std::str::from_utf8(&rest[1..l - 2])
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let end = (l + len).min(rest.len());
        out.push(String::from_utf8_lossy(&rest[l..end]).into_owned());
        rest = &rest[(end + 2).min(rest.len())..];
    }
    out
}

/// Length of the line at the start of `buf`, CRLF included.
fn line(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n").map(|p| p + 2)
}

fn header_num(buf: &[u8], l: usize) -> Result<i64, ()> {
    std::str::from_utf8(&buf[1..l - 2])
        .ok()
        .and_then(|n| n.parse().ok())
        .ok_or(())
}

/// Length of the complete RESP2 value at the start of `buf`; `None` when
/// incomplete; `Err` when it is not RESP2.
fn reply_len(buf: &[u8]) -> Result<Option<usize>, ()> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let Some(l) = line(buf) else {
        return Ok(None);
    };
    match kind {
        b'+' | b'-' | b':' => Ok(Some(l)),
        b'$' => {
            let n = header_num(buf, l)?;
            if n < 0 {
                return Ok(Some(l));
            }
            let end = l + n as usize + 2;
            if buf.len() < end {
                return Ok(None);
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Err(());
            }
            Ok(Some(end))
        }
        b'*' => {
            let n = header_num(buf, l)?;
            let mut at = l;
            for _ in 0..n.max(0) {
                match reply_len(&buf[at..])? {
                    Some(len) => at += len,
                    None => return Ok(None),
                }
            }
            Ok(Some(at))
        }
        _ => Err(()),
    }
}

/// Length of the complete command at the start of `buf` (a RESP array, or
/// an inline command up to its newline).
fn command_len(buf: &[u8]) -> Result<Option<usize>, ()> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => reply_len(buf),
        Some(c) if c.is_ascii_alphabetic() => {
            Ok(buf.iter().position(|&b| b == b'\n').map(|p| p + 1))
        }
        Some(_) => Err(()),
    }
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
