//! Idle upstream connections of the lean HTTP/1 path, by peer. A connection is
//! looked at before it is handed out again: one the upstream closed (or wrote to)
//! while it sat idle is dropped, so a request never goes out on a dead connection
//! when a live one or a new one would do. Unlike Pingora's pool, releasing a
//! connection spawns nothing; one sweeper per pool closes what expired.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use pingora::protocols::Stream;
use tokio::io::{AsyncRead, ReadBuf};

/// How long a connection may stay idle when its cluster sets no `idleTimeout`.
const DEFAULT_IDLE: Duration = Duration::from_secs(60);
/// Idle connections kept per peer; more are closed as they come back.
const MAX_PER_PEER: usize = 256;
/// How often the sweeper closes expired and dead connections.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

struct Idle {
    stream: Stream,
    until: Instant,
}

/// The keys are hashes already (`Peer::reuse_hash`): hashing them again is waste.
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type ByPeer = HashMap<u64, Vec<Idle>, std::hash::BuildHasherDefault<KeyHasher>>;

/// Idle connections by `Peer::reuse_hash`.
#[derive(Default)]
pub struct IdlePool {
    idle: Mutex<ByPeer>,
    sweeping: AtomicBool,
}

impl std::fmt::Debug for IdlePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdlePool").field("peers", &self.lock().len()).finish()
    }
}

impl IdlePool {
    fn lock(&self) -> std::sync::MutexGuard<'_, ByPeer> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A live idle connection to the peer `key`, the most recently used first.
    pub fn take(&self, key: u64) -> Option<Stream> {
        let now = Instant::now();
        loop {
            // Popped under the lock, looked at outside it.
            let mut idle = self.lock().get_mut(&key)?.pop()?;
            if idle.until > now && still_open(&mut idle.stream) {
                return Some(idle.stream);
            }
        }
    }

    /// Keeps `stream` for the next request to the peer `key`, for `idle_timeout`
    /// (the cluster's; a default when it sets none).
    pub fn put(self: &Arc<Self>, key: u64, stream: Stream, idle_timeout: Option<Duration>) {
        let until = Instant::now() + idle_timeout.unwrap_or(DEFAULT_IDLE);
        {
            let mut idle = self.lock();
            let list = idle.entry(key).or_default();
            if list.len() >= MAX_PER_PEER {
                return;
            }
            list.push(Idle { stream, until });
        }
        if !self.sweeping.swap(true, Ordering::Relaxed) {
            tokio::spawn(sweep(Arc::downgrade(self)));
        }
    }

    /// Idle connections held now.
    pub fn len(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// Whether no connection is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes what expired or what the upstream closed.
    fn sweep_once(&self) {
        let now = Instant::now();
        let mut idle = self.lock();
        idle.retain(|_, list| {
            list.retain_mut(|i| i.until > now && still_open(&mut i.stream));
            !list.is_empty()
        });
    }
}

async fn sweep(pool: Weak<IdlePool>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(pool) = pool.upgrade() else { return };
        pool.sweep_once();
    }
}

/// Whether an idle connection is still good to send a request on: nothing to read
/// (a read would wait). End of stream, an error, or bytes the upstream sent
/// unasked all mean it is not.
fn still_open(stream: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(Waker::noop());
    matches!(Pin::new(stream).poll_read(&mut cx, &mut buf), Poll::Pending)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    async fn pair() -> (Stream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let stream: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(client));
        (stream, server)
    }

    #[tokio::test]
    async fn a_live_connection_comes_back_a_closed_or_chatty_one_does_not() {
        let pool = Arc::new(IdlePool::default());
        let (live, _live_server) = pair().await;
        let (closed, closed_server) = pair().await;
        let (chatty, mut chatty_server) = pair().await;
        pool.put(1, live, None);
        pool.put(2, closed, None);
        pool.put(3, chatty, None);
        drop(closed_server);
        chatty_server
            .write_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.take(2).is_none(), "closed by the upstream while idle");
        assert!(pool.take(3).is_none(), "the upstream wrote while idle");
        assert!(pool.take(1).is_some(), "still open");
        assert!(pool.take(1).is_none(), "taken once");
    }

    #[tokio::test]
    async fn expired_connections_are_not_handed_out() {
        let pool = Arc::new(IdlePool::default());
        let (stream, _server) = pair().await;
        pool.put(1, stream, Some(Duration::from_millis(10)));
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(pool.take(1).is_none());
        assert!(pool.is_empty());
    }
}
