//! The listener application: Pingora's HTTP proxy, with a request-header timeout
//! on HTTP/1 connections (Pingora would wait 60 s per read).

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;

use crate::client_auth::TlsInfo;
use crate::conn::{self, ConnState};
use crate::engine::{ConnectionGuard, Engine};
use crate::h2_front;
use crate::lean_path::{Front, LeanPath};
use crate::proxy::Gateway;
use crate::relay_stream::RelayStream;
use crate::tls_front::TlsFront;

/// Serves one listener.
pub struct EdgeApp {
    /// The proxy.
    pub proxy: Arc<HttpProxy<Gateway>>,
    /// Seconds a client may stay silent while sending request headers, and idle
    /// between requests, before the connection is closed.
    pub header_timeout_secs: u64,
    /// For HTTPS listeners: the TLS handshake.
    pub tls: Option<TlsFront>,
    /// Engine state (for the connection count).
    pub shared: Arc<Engine>,
    /// Requests one connection may carry (0: no limit); then HTTP/1 clients get
    /// `Connection: close` and HTTP/2 clients a GOAWAY.
    pub max_requests_per_connection: u32,
    /// The lean HTTP/1 path (None: every request takes Pingora's proxy).
    pub lean: Option<LeanPath>,
}

impl EdgeApp {
    /// Sets up the session of a request: for the connection's first, the keep-alive
    /// timeout and the requests left; for later ones, no keep-alive once draining.
    fn configure(&self, session: &mut ServerSession, first: bool, shutdown: &ShutdownWatch) {
        if first {
            // Pingora applies the keep-alive timeout to every read of a request's
            // head; the head as a whole has its deadline in the stream (`RelayStream`).
            session.set_keepalive(if *shutdown.borrow() || self.shared.is_draining() {
                None
            } else {
                Some(self.header_timeout_secs)
            });
            if self.max_requests_per_connection > 0 {
                session.set_keepalive_reuses_remaining(Some(self.max_requests_per_connection - 1));
            }
        } else if self.shared.is_draining() {
            // The response asks the client to close; its next request goes elsewhere.
            session.set_keepalive(None);
        }
    }

    /// The requests of an HTTP/1 connection, one after the other while it is kept alive.
    async fn serve_http1(self: &Arc<Self>, stream: Stream, conn: &ConnState, shutdown: &ShutdownWatch) {
        if let Some(lean) = &self.lean {
            let configure = |session: &mut ServerSession, first: bool| self.configure(session, first, shutdown);
            let front = Front {
                proxy: &self.proxy,
                lean,
                conn,
                configure: &configure,
            };
            return front.serve(stream, shutdown).await;
        }
        let mut session = ServerSession::new_http1(stream);
        self.configure(&mut session, true, shutdown);
        let mut result = self.proxy.process_new_http(session, shutdown).await;
        while let Some((stream, settings)) = result.map(|r| r.consume()) {
            let mut session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            self.configure(&mut session, false, shutdown);
            result = self.proxy.process_new_http(session, shutdown).await;
        }
    }
}

#[async_trait]
impl ServerApp for EdgeApp {
    async fn process_new(self: &Arc<Self>, mut stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let _open = ConnectionGuard::new(&self.shared);
        // One deadline for the TLS handshake, the first bytes and the request head.
        let head_timeout = std::time::Duration::from_secs(self.header_timeout_secs);
        if let Some(front) = &self.tls {
            stream = tokio::time::timeout(head_timeout, front.accept(stream))
                .await
                .ok()
                .flatten()?;
        }
        if let Some(digest) = stream.get_ssl_digest() {
            if let Some(reason) = digest.extension.get::<TlsInfo>().and_then(|i| i.refused.as_deref()) {
                // The handshake passed the listener's checks but not its server's.
                log::info!("TLS connection refused: {reason}");
                return None;
            }
        }
        let h2 = if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            true
        } else if stream.get_ssl_digest().is_none() {
            // HTTP/2 with prior knowledge (gRPC clients over plain TCP) starts with
            // "PRI"; no HTTP/1 method does, and every HTTP/1 request is longer than 3 bytes.
            let mut start = [0u8; 3];
            match tokio::time::timeout(head_timeout, stream.try_peek(&mut start)).await {
                Ok(Ok(read)) => read && &start == b"PRI",
                Ok(Err(_)) | Err(_) => return None,
            }
        } else {
            false
        };
        if h2 {
            h2_front::serve(
                &self.proxy,
                stream,
                shutdown,
                self.shared.draining_signal(),
                self.max_requests_per_connection,
            )
            .await;
            return None;
        }
        let state = Arc::new(ConnState::default());
        let stream: Stream = Box::new(RelayStream::with_head_deadline(stream, state.clone(), head_timeout));
        conn::scope(state.clone(), self.serve_http1(stream, &state, shutdown)).await;
        None
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(self.proxy.as_ref()).await;
    }
}
