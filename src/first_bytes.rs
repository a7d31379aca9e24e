//! The deadline a new connection has to say which protocol it speaks.
//!
//! hyper-util's protocol detection reads until the bytes either differ from
//! the HTTP/2 preface or complete it, with no timer of its own, and hyper's
//! `header_read_timeout` only starts once HTTP/1.1 has been chosen: a client
//! that connects and sends nothing (or half the preface) would hold its
//! connection forever. [`FirstBytes`] fails the read with `TimedOut` when
//! the deadline passes before detection is over, then gets out of the way.
//! It owns nothing but that timer and the first 24 bytes it has seen.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// What an HTTP/2 prior-knowledge client sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An I/O stream whose reads fail once `deadline` passes, until the bytes
/// read so far tell HTTP/1.1 from HTTP/2.
pub struct FirstBytes<S> {
    io: S,
    /// `None` once the protocol is known.
    deadline: Option<Pin<Box<Sleep>>>,
    /// How many bytes of the preface have matched so far.
    matched: usize,
}

impl<S> FirstBytes<S> {
    pub fn new(io: S, deadline: Duration) -> Self {
        FirstBytes {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(deadline))),
            matched: 0,
        }
    }

    /// Notes newly read bytes; ends the deadline once they decide the protocol.
    fn observe(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.matched == H2_PREFACE.len() || H2_PREFACE[self.matched] != b {
                self.deadline = None;
                return;
            }
            self.matched += 1;
        }
        if self.matched == H2_PREFACE.len() {
            self.deadline = None;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstBytes<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        match polled {
            Poll::Ready(Ok(())) if this.deadline.is_some() => {
                let new = buf.filled()[before..].to_vec();
                this.observe(&new);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = match &mut this.deadline {
                    Some(d) => d.as_mut().poll(cx).is_ready(),
                    None => false,
                };
                if expired {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request arrived in time on a new connection",
                    )));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstBytes<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn silence_times_out() {
        let (client, server) = tokio::io::duplex(64);
        let mut s = FirstBytes::new(server, Duration::from_millis(50));
        let mut buf = [0u8; 8];
        let err = s.read(&mut buf).await.expect_err("timed out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(client);
    }

    #[tokio::test]
    async fn half_a_preface_times_out() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut s = FirstBytes::new(server, Duration::from_millis(50));
        client.write_all(&H2_PREFACE[..10]).await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(s.read(&mut buf).await.unwrap(), 10);
        let err = s.read(&mut buf).await.expect_err("timed out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_decided_protocol_ends_the_deadline() {
        for first in [&b"GET / HTTP/1.1\r\n"[..], &b"POST"[..], H2_PREFACE] {
            let (mut client, server) = tokio::io::duplex(64);
            let mut s = FirstBytes::new(server, Duration::from_millis(30));
            client.write_all(first).await.unwrap();
            let mut buf = [0u8; 64];
            assert_eq!(s.read(&mut buf).await.unwrap(), first.len());
            tokio::time::sleep(Duration::from_millis(60)).await;
            client.write_all(b"x").await.unwrap();
            assert_eq!(s.read(&mut buf).await.unwrap(), 1, "{first:?}");
        }
    }
}
