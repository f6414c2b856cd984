//! The per-connection context the connection fronts hand the request path: state
//! kept across the requests of one client connection, reachable from any phase of
//! its requests (each request's task carries its connection's).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::BytesMut;

/// Streams after which the early-reset ratio is judged (Envoy's
/// `overload.premature_reset_total_stream_count`).
const RESET_WINDOW: u32 = 500;

/// The state of one client connection, shared with the tasks of its requests.
#[derive(Debug, Default)]
pub struct ConnState {
    /// Streams that finished.
    closed: AtomicU32,
    /// Streams the client reset before their response completed.
    early_resets: AtomicU32,
    /// An HTTP/1 request's head has been read and its response is not done: the
    /// bytes that arrive now are its body, not the next head.
    in_request: AtomicBool,
    /// Request heads read on the connection so far.
    heads: AtomicU32,
    /// Keep the bytes of each request head (`head`) while it is read.
    keep_heads: AtomicBool,
    /// The bytes read since the current request's head began: the lean path hands
    /// a request it does not serve to Pingora's proxy, which parses them again.
    head: Mutex<BytesMut>,
}

impl ConnState {
    /// Envoy's rule: half of the first `RESET_WINDOW` streams, then half of all.
    pub fn too_many_resets(&self) -> bool {
        let resets = self.early_resets.load(Ordering::Relaxed);
        let closed = self.closed.load(Ordering::Relaxed);
        resets.saturating_mul(2) >= closed.max(RESET_WINDOW)
    }
}

impl ConnState {
    /// Counts a finished request (an HTTP/2 stream).
    pub fn stream_closed(&self) {
        self.closed.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests reset early, and requests finished.
    pub fn resets(&self) -> (u32, u32) {
        (
            self.early_resets.load(Ordering::Relaxed),
            self.closed.load(Ordering::Relaxed),
        )
    }
}

tokio::task_local! {
    static CONNECTION: Arc<ConnState>;
}

/// Runs `f` (a connection, or one request of it) with `state` as its connection's.
pub fn scope<F: std::future::Future>(state: Arc<ConnState>, f: F) -> impl std::future::Future<Output = F::Output> {
    CONNECTION.scope(state, f)
}

impl ConnState {
    /// Whether a request's head has been read and its response is not done yet.
    pub fn in_request(&self) -> bool {
        self.in_request.load(Ordering::Relaxed)
    }

    /// Request heads read so far.
    pub fn heads(&self) -> u32 {
        self.heads.load(Ordering::Relaxed)
    }
}

impl ConnState {
    /// From now on, keeps the bytes of each request head as it is read.
    pub fn keep_heads(&self) {
        self.keep_heads.store(true, Ordering::Relaxed);
    }

    /// Notes bytes read from the client: kept while a head is being read.
    pub(crate) fn note_read(&self, bytes: &[u8]) {
        if self.keep_heads.load(Ordering::Relaxed) && !self.in_request() {
            self.head
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(bytes);
        }
    }

    /// Forgets what was kept: the next bytes read start a new head.
    pub fn clear_head(&self) {
        self.head.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    /// The bytes read since `clear_head`, taken out.
    pub fn take_head(&self) -> BytesMut {
        self.head.lock().unwrap_or_else(PoisonError::into_inner).split()
    }
}

/// Called by the request path once a request's head is read (its deadline is met).
pub fn head_received() {
    let _ = CONNECTION.try_with(|c| {
        c.heads.fetch_add(1, Ordering::Relaxed);
        c.in_request.store(true, Ordering::Relaxed);
    });
}

/// Called by the request path when a request is over: what the client sends next
/// is the next request's head.
pub fn request_done() {
    let _ = CONNECTION.try_with(|c| c.in_request.store(false, Ordering::Relaxed));
}

/// Called by the request path when the client reset the current HTTP/2 stream
/// before its response completed; counts against the stream's connection.
pub fn note_early_reset() {
    let _ = CONNECTION.try_with(|c| c.early_resets.fetch_add(1, Ordering::Relaxed));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(closed: u32, resets: u32) -> ConnState {
        ConnState {
            closed: AtomicU32::new(closed),
            early_resets: AtomicU32::new(resets),
            ..ConnState::default()
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
