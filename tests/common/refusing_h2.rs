//! An h2c upstream (the `h2` crate's server, the HTTP/2 implementation
//! under hyper) that refuses a stream unprocessed the first time it sees its
//! `x-refuse-once` value: it reads the request's whole body, then resets the
//! stream with `REFUSED_STREAM` (RFC 9113 §8.7: not processed), and keeps
//! the connection open. Every other request is answered 200 with its body
//! echoed and its `x-refuse-once` value in `x-seen-token`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::net::TcpListener;

/// What the upstream saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub connections: AtomicUsize,
    /// Connections that ended (the client closed or went away).
    pub closed: AtomicUsize,
    /// Streams reset with `REFUSED_STREAM`.
    pub refused: AtomicUsize,
    /// Streams answered 200.
    pub answered: AtomicUsize,
    /// The `x-refuse-once` values refused so far.
    tokens: Mutex<HashSet<String>>,
}

pub struct RefusingH2 {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl RefusingH2 {
    pub async fn start() -> RefusingH2 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Seen::default());
        let s = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                s.connections.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(stream).await else {
                        return;
                    };
                    while let Some(Ok((req, respond))) = conn.accept().await {
                        tokio::spawn(answer(req, respond, s.clone()));
                    }
                    s.closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        RefusingH2 { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RefusingH2 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    seen: Arc<Seen>,
) {
    let token = req
        .headers()
        .get("x-refuse-once")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let refuse = match &token {
        Some(t) => seen.tokens.lock().expect("tokens").insert(t.clone()),
        None => false,
    };
    let mut body = req.into_body();
    let mut got = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { return };
        let _ = body.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    if refuse {
        seen.refused.fetch_add(1, Ordering::SeqCst);
        respond.send_reset(h2::Reason::REFUSED_STREAM);
        return;
    }
    seen.answered.fetch_add(1, Ordering::SeqCst);
    let resp = http::Response::builder()
        .status(200)
        .header("x-seen-token", token.unwrap_or_default())
        .body(())
        .expect("response");
    let Ok(mut send) = respond.send_response(resp, false) else {
        return;
    };
    let _ = send.send_data(got.freeze(), true);
}
