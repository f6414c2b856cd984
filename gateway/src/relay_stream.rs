//! A boxed Pingora stream behind a concrete type. Pingora's TLS acceptor wants its
//! traits on a concrete stream, which the boxed stream only has through a wrapper;
//! and client connections need two behaviours Pingora's stream lacks: writing out
//! what the TLS layer queued while only reading (`flush_on_idle_read`), and a
//! deadline for a whole request head (`with_head_deadline`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream, TimingDigest,
    UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::conn::ConnState;

/// A stream that passes everything through to the boxed stream it holds.
#[derive(Debug)]
pub struct RelayStream {
    inner: Stream,
    /// When a read finds nothing to read, flush what the inner stream holds.
    flush_on_idle_read: bool,
    /// The deadline of the request head being read, on HTTP/1 connections.
    head: Option<HeadDeadline>,
}

/// Envoy's `request_headers_timeout`: from the first byte of a request's head, the
/// client has `limit` to send all of it. Pingora only times each read, so a client
/// trickling a byte at a time would hold the connection (and a worker's attention)
/// forever: slowloris.
#[derive(Debug)]
struct HeadDeadline {
    conn: Arc<ConnState>,
    limit: Duration,
    /// When the first byte of the head being read came, with the count of heads
    /// read before it; cleared once that head is read.
    started: Option<(Instant, u32)>,
    /// Wakes a read that waits past the deadline. Made only when a read has to wait
    /// in the middle of a head: a head that arrives in one read (nearly every one)
    /// costs a clock read, not a timer.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl HeadDeadline {
    /// Whether the head being read has run out of time; notes the head's first
    /// byte, and arms the timer while a read waits for the rest.
    fn expired(&mut self, cx: &mut Context<'_>, read_something: bool, waiting: bool) -> bool {
        if self.conn.in_request() {
            self.clear();
            return false;
        }
        // The head it was started for was read (while no read was polled here).
        let heads = self.conn.heads();
        if self.started.is_some_and(|(_, of)| of != heads) {
            self.clear();
        }
        let Some((start, _)) = self.started else {
            if read_something {
                self.started = Some((Instant::now(), heads));
            }
            return false;
        };
        // A limit too large to add never runs out.
        let Some(deadline) = start.checked_add(self.limit) else {
            return false;
        };
        if waiting {
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
            timer.as_mut().poll(cx).is_ready()
        } else {
            Instant::now() >= deadline
        }
    }

    fn clear(&mut self) {
        self.started = None;
        self.timer = None;
    }
}

impl RelayStream {
    /// A plain pass-through, to hand a boxed stream to a TLS acceptor.
    pub fn plain(inner: Stream) -> RelayStream {
        RelayStream {
            inner,
            flush_on_idle_read: false,
            head: None,
        }
    }

    /// For an established TLS connection: rustls answers some records it reads
    /// (a TLS 1.2 renegotiation attempt gets a `no_renegotiation` alert, a TLS 1.3
    /// KeyUpdate request its KeyUpdate) by queueing a record, which only goes out on
    /// the next write. A server that is waiting for the client's next request
    /// writes nothing, so the client would wait for an answer until the connection
    /// times out. Flushing whenever a read has to wait sends such records at once,
    /// as OpenSSL-based servers do; with nothing queued the flush writes nothing.
    pub fn flush_on_idle_read(inner: Stream) -> RelayStream {
        RelayStream {
            inner,
            flush_on_idle_read: true,
            head: None,
        }
    }

    /// For an HTTP/1 client connection whose state is `conn`: each request head must
    /// arrive within `limit` of its first byte, or the connection ends.
    pub fn with_head_deadline(inner: Stream, conn: Arc<ConnState>, limit: Duration) -> RelayStream {
        RelayStream {
            inner,
            flush_on_idle_read: false,
            head: Some(HeadDeadline {
                conn,
                limit,
                started: None,
                timer: None,
            }),
        }
    }
}

impl AsyncRead for RelayStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if read.is_pending() && self.flush_on_idle_read {
            // An error here will show again on the next read or write.
            if let Poll::Ready(Err(e)) = Pin::new(&mut self.inner).poll_flush(cx) {
                log::debug!("flushing while waiting to read: {e}");
            }
        }
        let this = &mut *self;
        if let Some(head) = this.head.as_mut() {
            let read_something = matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before;
            if read_something {
                head.conn.note_read(&buf.filled()[before..]);
            }
            if head.expired(cx, read_something, read.is_pending()) {
                // The connection ends without an answer, as with a silent client.
                let limit = head.limit;
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("request head not complete within {limit:?}"),
                )));
            }
        }
        read
    }
}

impl AsyncWrite for RelayStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for RelayStream {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.inner).await
    }
}

impl UniqueID for RelayStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for RelayStream {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for RelayStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for RelayStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for RelayStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for RelayStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
