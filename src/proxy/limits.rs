//! Framing limits of the public request path, owned here so that every
//! listener setting about hostile input is enforced in one place:
//!
//! - [`check_head`] looks at a request's head before anything else does
//!   (before the key is verified, before anything is counted): `CONNECT`,
//!   upgrades tollgate will not honour, header names that other servers read
//!   as `Content-Length` / `Transfer-Encoding`, and a declared body above
//!   `server.max_body_bytes`;
//! - [`LimitedBody`] wraps a request body on its way upstream and fails it
//!   when it grows past the maximum or pauses longer than
//!   `server.body_read_timeout_ms`, which aborts the upstream request; the
//!   forwarder then finds the [`BodyError`] in the client's error and answers
//!   413, 408 or 400 instead of blaming the upstream.
//!
//! It does no I/O; the body wrapper's only side effect is its timer.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, UPGRADE};
use http::{HeaderMap, Method, Request};
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::error::ApiError;
use crate::settings::LiveServer;

/// Header names that mean `Content-Length` or `Transfer-Encoding` to a server
/// that reads `_` as `-` (PortSwigger's "header name obfuscation").
const FRAMING_ALIASES: [&str; 2] = ["content_length", "transfer_encoding"];

/// Refuses what must never reach the upstream, judging the head alone.
pub fn check_head<B>(cfg: &LiveServer, req: &Request<B>) -> Result<(), ApiError> {
    if req.method() == Method::CONNECT {
        return Err(ApiError::MethodNotAllowed {
            message: "tollgate does not open tunnels: CONNECT is not allowed.".into(),
            allow: "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
        });
    }
    let headers = req.headers();
    if let Some(name) = headers.keys().find(|k| is_framing_alias(k.as_str())) {
        return Err(ApiError::BadRequest(format!(
            "The header \"{name}\" is refused: it looks like a framing header."
        )));
    }
    if is_websocket_upgrade(headers) && !cfg.websocket {
        return Err(ApiError::NotImplemented(
            "WebSocket upgrades are not enabled on this listener.".into(),
        ));
    }
    if let (Some(max), Some(len)) = (cfg.max_body_bytes, declared_length(headers)) {
        if len > max {
            return Err(too_large(max));
        }
    }
    Ok(())
}

fn is_framing_alias(name: &str) -> bool {
    name.contains('_')
        && FRAMING_ALIASES
            .iter()
            .any(|alias| alias.eq_ignore_ascii_case(name))
}

/// `Upgrade: websocket` (among the offered protocols).
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
}

/// The `Content-Length` hyper has already validated (one value, digits only).
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn too_large(max: u64) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "The request body is larger than the {max} bytes this listener accepts."
    ))
}

/// Why a request body was cut off on its way upstream.
#[derive(Debug)]
pub enum BodyError {
    /// The body grew past `server.max_body_bytes`.
    TooLarge(u64),
    /// The client paused longer than `server.body_read_timeout_ms`.
    Timeout(Duration),
    /// The client's framing broke (a bad chunk, a reset, a stream error).
    Client(hyper::Error),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::TooLarge(max) => write!(f, "request body larger than {max} bytes"),
            BodyError::Timeout(d) => write!(f, "request body paused for more than {d:?}"),
            BodyError::Client(e) => write!(f, "request body failed: {e}"),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::Client(e) => Some(e),
            _ => None,
        }
    }
}

impl BodyError {
    /// The answer to the client when its body made the forward fail.
    pub fn to_api_error(&self) -> ApiError {
        match self {
            BodyError::TooLarge(max) => too_large(*max),
            BodyError::Timeout(_) => ApiError::RequestTimeout(
                "The request body stopped arriving: it paused for too long.".into(),
            ),
            BodyError::Client(_) => {
                ApiError::BadRequest("The request body is malformed or was cut off.".into())
            }
        }
    }

    /// The `BodyError` somewhere in `err`'s chain of sources, if any.
    pub fn find<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyError> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = cur {
            if let Some(b) = e.downcast_ref::<BodyError>() {
                return Some(b);
            }
            cur = e.source();
        }
        None
    }
}

/// A request body with a size limit and an idle timeout.
///
/// The timer runs only while the consumer (the upstream connection) waits
/// for the client: a body held back by a slow upstream does not time out.
pub struct LimitedBody<B> {
    inner: B,
    seen: u64,
    max: Option<u64>,
    timeout: Duration,
    /// Made at the first wait: a body that never keeps the consumer waiting
    /// (most requests: none at all, or already read with the head) costs
    /// no timer.
    sleep: Option<Pin<Box<Sleep>>>,
    /// The consumer is waiting for the next frame (the timer is armed).
    waiting: bool,
    failed: bool,
}

impl<B> LimitedBody<B> {
    pub fn new(inner: B, max: Option<u64>, timeout: Duration) -> Self {
        LimitedBody {
            inner,
            seen: 0,
            max,
            timeout,
            sleep: None,
            waiting: false,
            failed: false,
        }
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes, Error = hyper::Error> + Unpin,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        let fail = |this: &mut Self, e: BodyError| {
            this.failed = true;
            Poll::Ready(Some(Err(e)))
        };
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting = false;
                if let Some(data) = frame.data_ref() {
                    this.seen = this.seen.saturating_add(data.len() as u64);
                    if let Some(max) = this.max.filter(|&m| this.seen > m) {
                        return fail(this, BodyError::TooLarge(max));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => fail(this, BodyError::Client(e)),
            Poll::Ready(None) => {
                this.waiting = false;
                Poll::Ready(None)
            }
            Poll::Pending => {
                if !this.waiting {
                    // The wait starts now: the timer is armed (made, the
                    // first time) for one idle timeout from here.
                    this.waiting = true;
                    let deadline = Instant::now() + this.timeout;
                    match &mut this.sleep {
                        Some(sleep) => sleep.as_mut().reset(deadline),
                        None => this.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                if let Some(sleep) = &mut this.sleep {
                    if sleep.as_mut().poll(cx).is_ready() {
                        let timeout = this.timeout;
                        return fail(this, BodyError::Timeout(timeout));
                    }
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn cfg(max: Option<u64>, websocket: bool) -> LiveServer {
        LiveServer {
            drain_timeout: Duration::from_secs(1),
            body_read_timeout: Duration::from_secs(1),
            max_body_bytes: max,
            websocket,
        }
    }

    fn req(method: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri("/x");
        for (k, v) in headers {
            b = b.header(*k, HeaderValue::from_str(v).unwrap());
        }
        b.body(()).unwrap()
    }

    #[test]
    fn heads_are_judged() {
        // method, headers, max_body_bytes, websocket, refusal status
        type Case<'a> = (
            &'a str,
            &'a [(&'a str, &'a str)],
            Option<u64>,
            bool,
            Option<u16>,
        );
        let table: Vec<Case> = vec![
            ("GET", &[], None, false, None),
            ("CONNECT", &[], None, false, Some(405)),
            ("POST", &[("content_length", "5")], None, false, Some(400)),
            (
                "POST",
                &[("Transfer_Encoding", "chunked")],
                None,
                false,
                Some(400),
            ),
            ("GET", &[("x_custom_header", "1")], None, false, None),
            ("GET", &[("upgrade", "websocket")], None, false, Some(501)),
            (
                "GET",
                &[("upgrade", "foo, WebSocket")],
                None,
                false,
                Some(501),
            ),
            ("GET", &[("upgrade", "websocket")], None, true, None),
            ("GET", &[("upgrade", "h2c")], None, false, None),
            ("POST", &[("content-length", "10")], Some(10), false, None),
            (
                "POST",
                &[("content-length", "11")],
                Some(10),
                false,
                Some(413),
            ),
            ("POST", &[("content-length", "11")], None, false, None),
        ];
        for (method, headers, max, ws, want) in table {
            let got = check_head(&cfg(max, ws), &req(method, headers))
                .err()
                .map(|e| e.status().as_u16());
            assert_eq!(got, want, "{method} {headers:?} max={max:?} ws={ws}");
        }
    }

    #[test]
    fn body_errors_map_to_client_statuses() {
        assert_eq!(BodyError::TooLarge(5).to_api_error().status(), 413);
        assert_eq!(
            BodyError::Timeout(Duration::from_secs(1))
                .to_api_error()
                .status(),
            408
        );
    }

    #[tokio::test]
    async fn the_limit_cuts_a_body_off() {
        use http_body_util::{BodyExt, StreamBody};
        let frames = futures_util::stream::iter(
            [b"12345".as_slice(), b"67890", b"x"]
                .map(|b| Ok::<_, hyper::Error>(Frame::data(Bytes::from_static(b)))),
        );
        let body = LimitedBody::new(StreamBody::new(frames), Some(10), Duration::from_secs(5));
        let Err(err) = body.collect().await else {
            panic!("an 11-byte body passed a 10-byte limit")
        };
        assert!(matches!(err, BodyError::TooLarge(10)), "{err}");
    }

    #[tokio::test]
    async fn a_stalled_body_times_out() {
        use http_body_util::{BodyExt, StreamBody};
        let frames = futures_util::stream::pending::<Result<Frame<Bytes>, hyper::Error>>();
        let body = LimitedBody::new(StreamBody::new(frames), None, Duration::from_millis(50));
        let Err(err) = body.collect().await else {
            panic!("a stalled body ended")
        };
        assert!(matches!(err, BodyError::Timeout(_)), "{err}");
    }
}
