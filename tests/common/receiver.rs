//! A real notification receiver (docs/billing.md "Notifications") on a free
//! loopback port: plain HTTP/1.1 over TCP, written by hand so it can also
//! misbehave. Every request is recorded (headers, body, how it was answered)
//! and answered according to the queued [`Answer`]s, then the default one.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `status` with an empty body.
    Status(u16),
    /// `302 Found` to another URL on the receiver.
    Redirect,
    /// Bytes that are not HTTP, then close.
    Garbage,
    /// Never answers (the connection stays open).
    Hang,
}

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub answer: Answer,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("notification body is JSON")
    }
}

#[derive(Default)]
struct State {
    queued: VecDeque<Answer>,
    default: Option<Answer>,
    log: Vec<Received>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Answers `200` unless told otherwise.
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state: Arc<Mutex<State>> = Arc::default();
        let changed = Arc::new(Notify::new());
        let (s, c) = (state.clone(), changed.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(serve(stream, s.clone(), c.clone()));
            }
        });
        Receiver {
            addr,
            state,
            changed,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks/tollgate", self.addr)
    }

    /// The next requests get these answers, in order.
    pub fn queue(&self, answers: &[Answer]) {
        self.state
            .lock()
            .expect("state")
            .queued
            .extend(answers.iter().copied());
    }

    /// The answer once the queue is empty (`200` unless set).
    pub fn set_default(&self, answer: Answer) {
        self.state.lock().expect("state").default = Some(answer);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().expect("state").log.clone()
    }

    /// Those answered 2xx.
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| matches!(r.answer, Answer::Status(s) if (200..300).contains(&s)))
            .collect()
    }

    /// Waits (up to `within`) until `n` requests were answered 2xx; returns
    /// the count then.
    pub async fn wait_accepted(&self, n: usize, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.changed.notified();
            let got = self.accepted().len();
            if got >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.accepted().len();
            }
        }
    }

    /// Waits (up to `within`) until `n` requests arrived at all.
    pub async fn wait_received(&self, n: usize, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.changed.notified();
            let got = self.received().len();
            if got >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.received().len();
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, state: Arc<Mutex<State>>, changed: Arc<Notify>) {
    loop {
        let Some((headers, body)) = read_request(&mut stream).await else {
            return;
        };
        let answer = {
            let mut s = state.lock().expect("state");
            let a = s
                .queued
                .pop_front()
                .or(s.default)
                .unwrap_or(Answer::Status(200));
            s.log.push(Received {
                headers,
                body,
                answer: a,
            });
            a
        };
        changed.notify_waiters();
        let out: &[u8] = match answer {
            Answer::Status(code) => {
                let text = format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\n\r\n");
                if stream.write_all(text.as_bytes()).await.is_err() {
                    return;
                }
                continue;
            }
            Answer::Redirect => {
                b"HTTP/1.1 302 Found\r\nlocation: /elsewhere\r\ncontent-length: 0\r\n\r\n"
            }
            Answer::Garbage => b"this is not HTTP at all\r\n\r\n\x00\x01\x02",
            Answer::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
        };
        let _ = stream.write_all(out).await;
        if answer == Answer::Garbage {
            return;
        }
    }
}

/// One request: its headers and body (by `content-length`); `None` at EOF.
async fn read_request(stream: &mut TcpStream) -> Option<(Vec<(String, String)>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[end + 4..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Some((headers, body))
}
