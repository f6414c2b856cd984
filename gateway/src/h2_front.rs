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
//! `conn::note_early_reset`; each stream's task carries its connection's state.

use std::sync::Arc;
use std::time::Duration;

use pingora::apps::HttpServerApp;
use pingora::protocols::http::v2::server::{handshake, H2Accept, HttpSession};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Digest, Stream};
use pingora::server::ShutdownWatch;

use crate::conn::{self, ConnState};

/// Streams Pingora rejects as malformed before the connection is closed (Pingora's
/// own budget, which its public accept function does not carry across calls).
const MAX_MALFORMED: u32 = 32;

/// How long a connection being closed may take to flush its GOAWAY.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves an HTTP/2 connection (after TLS with ALPN h2, or h2c with prior knowledge);
/// after `max_requests` streams (0: no limit) the client is asked to go elsewhere.
/// A change of `draining` to true asks the client to go elsewhere (graceful GOAWAY).
pub async fn serve<A>(
    app: &Arc<A>,
    stream: Stream,
    shutdown: &ShutdownWatch,
    mut draining: tokio::sync::watch::Receiver<bool>,
    max_requests: u32,
) where
    A: HttpServerApp + Send + Sync + 'static,
{
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
    let mut conn = match handshake(stream, app.h2_options()).await {
        Ok(c) => c,
        Err(e) => return log::debug!("HTTP/2 handshake with {peer} failed: {e}"),
    };
    let counters = Arc::new(ConnState::default());
    let mut shutdown_watch = shutdown.clone();
    let mut closing = false;
    let mut accepted: u32 = 0;
    let mut malformed: u32 = 0;
    loop {
        let next = if closing {
            HttpSession::from_h2_conn(&mut conn, digest.clone()).await
        } else {
            tokio::select! {
                biased;
                _ = shutdown_watch.changed() => {
                    conn.graceful_shutdown();
                    closing = true;
                    continue;
                }
                Ok(_) = draining.wait_for(|d| *d) => {
                    conn.graceful_shutdown();
                    closing = true;
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
            let (resets, closed) = counters.resets();
            log::warn!(
                "HTTP/2 connection from {peer} closed with ENHANCE_YOUR_CALM: {resets} of {closed} streams reset early by the client"
            );
            drop(session);
            return close(conn, h2::Reason::ENHANCE_YOUR_CALM).await;
        }
        accepted = accepted.saturating_add(1);
        if !closing && max_requests > 0 && accepted >= max_requests {
            // This stream is served; the client opens a new connection for the next.
            conn.graceful_shutdown();
            closing = true;
        }
        let app = app.clone();
        let shutdown = shutdown.clone();
        let state = counters.clone();
        tokio::spawn(conn::scope(counters.clone(), async move {
            app.process_new_http(ServerSession::new_http2(session), &shutdown).await;
            state.stream_closed();
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
