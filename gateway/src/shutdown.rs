//! Shutdown through Pingora's graceful path. On SIGTERM the engine starts draining:
//! readiness turns false (so Kubernetes stops sending new work), HTTP/1 responses
//! ask their clients to close and HTTP/2 connections get a GOAWAY, while requests in
//! flight finish. Once none is left, or the drain time is over, Pingora is told to
//! shut down, and `Server::run` returns to `main`, which flushes the access log and
//! the span queue before the process exits. SIGINT stops at once; SIGQUIT is
//! Pingora's graceful upgrade.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};

use crate::engine::Engine;

/// Pingora's shutdown signal, with the engine's drain before a graceful stop.
pub struct Drain {
    /// The engine drained.
    pub engine: Arc<Engine>,
    /// Longest wait for in-flight requests.
    pub max: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for Drain {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            log::error!("signal handlers could not be installed; stopping");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = int.recv() => {
                log::info!("SIGINT: stopping now");
                ShutdownSignal::FastShutdown
            }
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
            _ = term.recv() => {
                tokio::select! {
                    () = self.drain() => ShutdownSignal::GracefulTerminate,
                    _ = int.recv() => ShutdownSignal::FastShutdown,
                }
            }
        }
    }
}

impl Drain {
    /// Waits until no request is in flight, at most `max`.
    async fn drain(&self) {
        self.engine.start_draining();
        log::info!("SIGTERM: draining, waiting up to {:?} for in-flight requests", self.max);
        let deadline = Instant::now() + self.max;
        loop {
            let inflight = self.engine.inflight.load(Ordering::Relaxed);
            if inflight == 0 {
                log::info!("drained; shutting down");
                return;
            }
            if Instant::now() >= deadline {
                log::warn!("drain time over with {inflight} requests in flight; shutting down");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
