//! The replay buffer of an HTTP/2 upstream request, and the one judgement of
//! when such a request may be sent again (docs/protocols.md, "GOAWAY and
//! retries").
//!
//! An HTTP/2 upstream may refuse a stream it has not processed: `RST_STREAM`
//! with `REFUSED_STREAM`, or a graceful `GOAWAY` whose last-stream-id is below
//! the stream (RFC 9113 §8.7: neither was processed). Such a request may be
//! sent again, but hyper has by then consumed its body. [`Replay`] keeps the
//! body's frames (reference-counted `Bytes`, no copy) up to
//! [`REPLAY_BUFFER_BYTES`]; a second [`ReplayBody`] plays them back, then
//! goes on reading the client's body where the first left off. A body that
//! grew past the buffer cannot be replayed, and its request is not retried.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use parking_lot::Mutex;

use crate::proxy::limits::{BodyError, LimitedBody};

/// The most request-body bytes kept for a replay: a gRPC unary call or a
/// small JSON body fits; a larger body is streamed unkept, and its request is
/// not retried.
pub const REPLAY_BUFFER_BYTES: usize = 64 * 1024;

/// What one request's bodies share: the client's body, and what of it was kept.
struct Shared {
    inner: LimitedBody<Incoming>,
    /// The data frames read so far, while they fit the buffer.
    kept: Vec<Bytes>,
    kept_len: usize,
    /// A frame was read that the buffer could not keep: no replay.
    overflowed: bool,
    /// The response arrived: nothing more is kept.
    released: bool,
    /// The client's body ended (its trailers, if any, are in `trailers`).
    ended: bool,
    trailers: Option<HeaderMap>,
    /// Which [`ReplayBody`] may read: a superseded one reads nothing.
    epoch: u32,
}

/// A request body that can be played again while it fits the buffer.
#[derive(Clone)]
pub struct Replay {
    shared: Arc<Mutex<Shared>>,
    hint: SizeHint,
    empty: bool,
}

impl Replay {
    pub fn new(inner: LimitedBody<Incoming>) -> Self {
        let hint = inner.size_hint();
        let empty = inner.is_end_stream();
        Replay {
            shared: Arc::new(Mutex::new(Shared {
                inner,
                kept: Vec::new(),
                kept_len: 0,
                overflowed: false,
                released: false,
                ended: false,
                trailers: None,
                epoch: 0,
            })),
            hint,
            empty,
        }
    }

    /// The body for the first attempt.
    pub fn first(&self) -> ReplayBody {
        self.body(0)
    }

    /// The body for a second attempt, the previous one silenced; `None` if
    /// the body outgrew the buffer (or the response already came).
    pub fn again(&self) -> Option<ReplayBody> {
        let mut s = self.shared.lock();
        if s.overflowed || s.released {
            return None;
        }
        s.epoch += 1;
        let epoch = s.epoch;
        drop(s);
        Some(self.body(epoch))
    }

    /// The response arrived: stop keeping frames and free those kept.
    pub fn release(&self) {
        let mut s = self.shared.lock();
        s.released = true;
        s.kept = Vec::new();
        s.kept_len = 0;
    }

    fn body(&self, epoch: u32) -> ReplayBody {
        ReplayBody {
            shared: self.shared.clone(),
            epoch,
            next: 0,
            trailers_sent: false,
            hint: self.hint,
            empty: self.empty,
        }
    }
}

/// One attempt's view of the request body: the kept frames first, then the
/// rest of the client's body.
pub struct ReplayBody {
    shared: Arc<Mutex<Shared>>,
    epoch: u32,
    /// The next kept frame to play, then the count of frames read.
    next: usize,
    trailers_sent: bool,
    hint: SizeHint,
    empty: bool,
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let mut s = this.shared.lock();
        if s.epoch != this.epoch {
            // Superseded by a retry: the refused stream gets nothing more.
            return Poll::Ready(None);
        }
        if this.next < s.kept.len() {
            let data = s.kept[this.next].clone();
            this.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if s.ended {
            if !this.trailers_sent {
                this.trailers_sent = true;
                if let Some(t) = s.trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
            }
            return Poll::Ready(None);
        }
        match Pin::new(&mut s.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    keep(&mut s, data);
                    this.next = s.kept.len();
                } else if let Some(t) = frame.trailers_ref() {
                    s.ended = true;
                    this.trailers_sent = true;
                    if !s.released {
                        s.trailers = Some(t.clone());
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                s.ended = true;
                this.trailers_sent = true;
                Poll::Ready(None)
            }
            // A failed body is not replayed: the error fails the request.
            Poll::Ready(Some(Err(e))) => {
                s.overflowed = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Exact, as hyper reads it after each data frame to mark that frame as
    /// the stream's last: a body that said "more" and then ended would cost
    /// an empty DATA frame, and h2 peers close a connection that receives
    /// more than 100 of those (ENHANCE_YOUR_CALM).
    fn is_end_stream(&self) -> bool {
        if self.empty {
            return true;
        }
        let s = self.shared.lock();
        if s.epoch != self.epoch {
            return true;
        }
        if self.next < s.kept.len() {
            return false;
        }
        match s.ended {
            true => self.trailers_sent || s.trailers.is_none(),
            false => s.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

/// Keeps `data` for a replay while the buffer has room; past it, gives up
/// the replay and frees what was kept.
fn keep(s: &mut Shared, data: &Bytes) {
    if s.overflowed || s.released {
        return;
    }
    if s.kept_len + data.len() > REPLAY_BUFFER_BYTES {
        s.overflowed = true;
        s.kept = Vec::new();
        s.kept_len = 0;
        return;
    }
    s.kept_len += data.len();
    s.kept.push(data.clone());
}

/// Whether `err` says the upstream refused the stream without processing
/// it, so that sending the request again cannot repeat its effect:
/// `RST_STREAM(REFUSED_STREAM)` from the upstream, or the upstream's graceful
/// `GOAWAY` (`NO_ERROR`), which h2 reports only on the streams above its
/// last-stream-id and on streams opened after it. A `GOAWAY` with an error
/// code is not enough: h2 reports it on every stream still open, processed
/// ones included.
pub fn unprocessed(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.is_remote()
                && match h2.reason() {
                    Some(h2::Reason::REFUSED_STREAM) => h2.is_reset(),
                    Some(h2::Reason::NO_ERROR) => h2.is_go_away(),
                    _ => false,
                };
        }
        cur = e.source();
    }
    false
}
