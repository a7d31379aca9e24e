//! A misbehaving upstream for integration tests: a raw TCP server on a free
//! loopback port that answers the first request it receives with scripted
//! bytes (a body longer than its `Content-Length`, a response with both
//! `Content-Length` and `Transfer-Encoding`, an unsolicited `101`, a reset in
//! the middle of a body...) and every later request with a well-formed
//! `200` whose body names the request (`ok:<n>`, `n` counting from 1).
//!
//! Every request is recorded with the index of the TCP connection it came
//! on, so a test can tell whether tollgate reused a pooled connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the upstream does after writing the scripted bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Keep the connection open and answer further requests on it.
    KeepOpen,
    /// Close the connection with a TCP reset (`SO_LINGER` 0).
    Reset,
    /// Echo every byte that follows back (a tunnel after a `101`).
    Echo,
}

#[derive(Debug, Clone)]
pub struct RawRecord {
    /// 0 for the first connection accepted, 1 for the next...
    pub conn: usize,
    /// The request line, e.g. `GET /x HTTP/1.1`.
    pub line: String,
}

pub struct RawUpstream {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<RawRecord>>>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    log: Arc<Mutex<Vec<RawRecord>>>,
    script: Vec<u8>,
    after: After,
}

impl RawUpstream {
    /// Answers the first request with `script`, then does `after`.
    pub async fn start(script: &[u8], after: After) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind raw upstream");
        let addr = listener.local_addr().expect("raw upstream addr");
        let log: Arc<Mutex<Vec<RawRecord>>> = Arc::default();
        let shared = Arc::new(Shared {
            log: log.clone(),
            script: script.to_vec(),
            after,
        });
        let task = tokio::spawn(async move {
            let mut conn = 0;
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(serve(stream, conn, shared.clone()));
                conn += 1;
            }
        });
        RawUpstream { addr, log, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<RawRecord> {
        self.log.lock().expect("log").clone()
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, conn: usize, shared: Arc<Shared>) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let Some((line, consumed)) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        buf.drain(..consumed);
        let n = {
            let mut log = shared.log.lock().expect("log");
            log.push(RawRecord { conn, line });
            log.len()
        };
        if n == 1 {
            if stream.write_all(&shared.script).await.is_err() {
                return;
            }
            match shared.after {
                After::KeepOpen => {}
                After::Reset => {
                    let _ = stream.set_zero_linger();
                    return;
                }
                After::Echo => {
                    let _ = stream.write_all(&buf).await;
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    return;
                }
            }
        } else {
            let body = format!("ok:{n}");
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n\r\n{body}",
                body.len()
            );
            if stream.write_all(resp.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

/// Reads one request (head plus a `Content-Length` or chunked body) from
/// `buf`, reading more as needed; answers its request line and length.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, usize)> {
    loop {
        if let Some(done) = parse_request(buf) {
            return Some(done);
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn parse_request(buf: &[u8]) -> Option<(String, usize)> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default().to_owned();
    let mut length = 0usize;
    let mut chunked = false;
    for h in lines {
        let Some((k, v)) = h.split_once(':') else {
            continue;
        };
        if k.eq_ignore_ascii_case("content-length") {
            length = v.trim().parse().ok()?;
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v.to_ascii_lowercase().contains("chunked");
        }
    }
    if chunked {
        // Walk the chunks: size line, data, CRLF ... up to the last chunk and its CRLF.
        let mut at = head_end;
        loop {
            let eol = buf[at..].windows(2).position(|w| w == b"\r\n")? + at;
            let size_text = String::from_utf8_lossy(&buf[at..eol]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            at = eol + 2;
            if size == 0 {
                let end = buf[at..].windows(2).position(|w| w == b"\r\n")? + at + 2;
                return Some((line, end));
            }
            if buf.len() < at + size + 2 {
                return None;
            }
            at += size + 2;
        }
    }
    if buf.len() < head_end + length {
        return None;
    }
    Some((line, head_end + length))
}
