//! HTTP/2 connections: Pingora's accept loop, with the per-connection limits an
//! edge needs and Pingora lacks.
//!
//! - Early resets (CVE-2023-44487 as attackers run it): a client that opens streams
//!   and resets them after the gateway has accepted and forwarded them costs an
//!   upstream request each, and the h2 crate's own limit only counts streams reset
//!   before they were accepted. Like Envoy, a connection whose client reset at least
//!   half of its first 500 streams before their responses completed (or half of all
//!   its streams, past 500) is closed with GOAWAY ENHANCE_YOUR_CALM.
//! - Requests per connection (nginx's `keepalive_requests`, 1,000): past the limit
//!   the client gets a graceful GOAWAY and opens a new connection.
//!
//! The request path marks a stream as reset early from its `logging` phase through
//! `note_early_reset`; the stream's task carries its connection's counters.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pingora::apps::HttpServerApp;
use pingora::protocols::http::v2::server::{handshake, H2Accept, HttpSession};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Digest, Stream};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;

use crate::proxy::Gateway;

/// Streams after which the early-reset ratio is judged (Envoy's
/// `overload.premature_reset_total_stream_count`).
const RESET_WINDOW: u32 = 500;

/// Streams Pingora rejects as malformed before the connection is closed (Pingora's
/// own budget, which its public accept function does not carry across calls).
const MAX_MALFORMED: u32 = 32;

/// How long a connection being closed may take to flush its GOAWAY.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The counters of one connection, shared with its streams' tasks.
#[derive(Debug, Default)]
struct Counters {
    /// Streams that finished.
    closed: AtomicU32,
    /// Streams the client reset before their response completed.
    early_resets: AtomicU32,
}

impl Counters {
    /// Envoy's rule: half of the first `RESET_WINDOW` streams, then half of all.
    fn too_many_resets(&self) -> bool {
        let resets = self.early_resets.load(Ordering::Relaxed);
        let closed = self.closed.load(Ordering::Relaxed);
        resets.saturating_mul(2) >= closed.max(RESET_WINDOW)
    }
}

tokio::task_local! {
    static CONNECTION: Arc<Counters>;
}

/// Called by the request path when the client reset the current HTTP/2 stream
/// before its response completed; counts against the stream's connection.
pub fn note_early_reset() {
    let _ = CONNECTION.try_with(|c| c.early_resets.fetch_add(1, Ordering::Relaxed));
}

/// Serves an HTTP/2 connection (after TLS with ALPN h2, or h2c with prior knowledge);
/// after `max_requests` streams (0: no limit) the client is asked to go elsewhere.
pub async fn serve(proxy: &Arc<HttpProxy<Gateway>>, stream: Stream, shutdown: &ShutdownWatch, max_requests: u32) {
    let digest = Arc::new(Digest {
        ssl_digest: stream.get_ssl_digest(),
        timing_digest: stream.get_timing_digest(),
        proxy_digest: stream.get_proxy_digest(),
        socket_digest: stream.get_socket_digest(),
    });
    let peer = digest
        .socket_digest
        .as_ref()
        .and_then(|d| d.peer_addr())
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut conn = match handshake(stream, proxy.h2_options()).await {
        Ok(c) => c,
        Err(e) => return log::debug!("HTTP/2 handshake with {peer} failed: {e}"),
    };
    let counters = Arc::new(Counters::default());
    let mut shutdown_watch = shutdown.clone();
    let mut draining = false;
    let mut accepted: u32 = 0;
    let mut malformed: u32 = 0;
    loop {
        let next = if draining {
            HttpSession::from_h2_conn(&mut conn, digest.clone()).await
        } else {
            tokio::select! {
                biased;
                _ = shutdown_watch.changed() => {
                    conn.graceful_shutdown();
                    draining = true;
                    continue;
                }
                next = HttpSession::from_h2_conn(&mut conn, digest.clone()) => next,
            }
        };
        let session = match next {
            Ok(Some(H2Accept::Session(session))) => session,
            Ok(Some(H2Accept::Rejected)) => {
                malformed += 1;
                if malformed >= MAX_MALFORMED {
                    log::info!("HTTP/2 connection from {peer} closed: {malformed} malformed streams");
                    return close(conn, h2::Reason::PROTOCOL_ERROR).await;
                }
                continue;
            }
            Ok(None) => return,
            Err(e) => return log::debug!("HTTP/2 connection from {peer} ended: {e}"),
        };
        if counters.too_many_resets() {
            let resets = counters.early_resets.load(Ordering::Relaxed);
            log::warn!(
                "HTTP/2 connection from {peer} closed with ENHANCE_YOUR_CALM: {resets} of {} streams reset early by the client",
                counters.closed.load(Ordering::Relaxed)
            );
            drop(session);
            return close(conn, h2::Reason::ENHANCE_YOUR_CALM).await;
        }
        accepted = accepted.saturating_add(1);
        if !draining && max_requests > 0 && accepted >= max_requests {
            // This stream is served; the client opens a new connection for the next.
            conn.graceful_shutdown();
            draining = true;
        }
        let proxy = proxy.clone();
        let shutdown = shutdown.clone();
        let stream_counters = counters.clone();
        tokio::spawn(CONNECTION.scope(counters.clone(), async move {
            proxy
                .process_new_http(ServerSession::new_http2(session), &shutdown)
                .await;
            stream_counters.closed.fetch_add(1, Ordering::Relaxed);
        }));
    }
}

/// Sends GOAWAY with `reason`, then keeps the socket open for `CLOSE_GRACE`: closing
/// it while the client's next frames sit unread makes the kernel answer with a
/// reset, which can destroy the GOAWAY before the client reads it.
async fn close(mut conn: h2::server::Connection<Stream, bytes::Bytes>, reason: h2::Reason) {
    conn.abrupt_shutdown(reason);
    let flush = async {
        // Accepting drives the connection; streams still arriving are dropped (reset).
        while let Ok(Some(_)) = conn.accept().await.transpose() {}
        std::future::pending::<()>().await
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, flush).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(closed: u32, resets: u32) -> Counters {
        Counters {
            closed: AtomicU32::new(closed),
            early_resets: AtomicU32::new(resets),
        }
    }

    #[test]
    fn half_of_the_first_window_closes() {
        assert!(!counters(10, 10).too_many_resets(), "a few resets are normal");
        assert!(!counters(400, 249).too_many_resets());
        assert!(counters(400, 250).too_many_resets());
        assert!(counters(250, 250).too_many_resets());
    }

    #[test]
    fn past_the_window_half_of_all_closes() {
        assert!(!counters(10_000, 4_999).too_many_resets());
        assert!(counters(10_000, 5_000).too_many_resets());
        assert!(
            !counters(1_000, 300).too_many_resets(),
            "a browser cancelling some requests"
        );
    }
}
