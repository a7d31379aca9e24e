//! A real upstream HTTP server for integration tests, on a free loopback port.
//!
//! Every request is recorded (method, target, headers, body length) and
//! answered with a JSON echo, after streaming the request body through
//! without holding it. Special paths:
//! - `/stream/<bytes>`: answers with a streamed body of that many bytes;
//! - `/slow/<ms>`: waits that long before answering;
//! - `/status/<code>`: answers with that status.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query as received.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
}

impl Recorded {
    /// All values of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.header_all(name).into_iter().next()
    }
}

pub struct Upstream {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let log: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let log2 = log.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let log = log2.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(req, log.clone()));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream { addr, log, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().expect("log").clone()
    }

    pub fn count(&self) -> usize {
        self.log.lock().expect("log").len()
    }

    pub fn last(&self) -> Recorded {
        self.requests()
            .pop()
            .expect("the upstream received no request")
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    req: Request<Incoming>,
    log: Arc<Mutex<Vec<Recorded>>>,
) -> Result<Response<Body>, Infallible> {
    let (parts, mut body) = req.into_parts();
    let mut body_len = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    body_len += d.len() as u64;
                }
            }
            Err(_) => break,
        }
    }
    let rec = Recorded {
        method: parts.method.to_string(),
        target: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body_len,
    };
    log.lock().expect("log").push(rec.clone());
    let path = parts.uri.path();
    if let Some(n) = path
        .strip_prefix("/stream/")
        .and_then(|n| n.parse::<u64>().ok())
    {
        return Ok(Response::new(streamed(n)));
    }
    if let Some(ms) = path
        .strip_prefix("/slow/")
        .and_then(|n| n.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let echo = serde_json::json!({
        "method": rec.method,
        "target": rec.target,
        "body_len": rec.body_len,
    });
    let mut resp = Response::new(http_body_util::Full::new(Bytes::from(echo.to_string())).boxed());
    if let Some(code) = path
        .strip_prefix("/status/")
        .and_then(|n| n.parse::<u16>().ok())
        .and_then(|n| hyper::StatusCode::from_u16(n).ok())
    {
        *resp.status_mut() = code;
    }
    resp.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("static header"),
    );
    resp.headers_mut()
        .insert("x-upstream", "yes".parse().expect("static header"));
    Ok(resp)
}

/// A body of `n` bytes produced 64 KiB at a time.
fn streamed(n: u64) -> Body {
    const CHUNK: u64 = 64 * 1024;
    let chunk = Bytes::from(vec![b'x'; CHUNK as usize]);
    let stream = futures_util::stream::unfold(n, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let take = left.min(CHUNK);
            Some((
                Ok::<_, Infallible>(Frame::data(chunk.slice(..take as usize))),
                left - take,
            ))
        }
    });
    StreamBody::new(stream).boxed()
}
