//! Background services: the config folder watcher (debounced reload, keeping the
//! last good configuration on errors) and the SIGTERM drain.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use log::{error, info, warn};
use notify::{EventKind, RecursiveMode, Watcher as _};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::state::Shared;

/// Watches the config folder and reloads on change.
pub struct Watcher {
    /// Engine state.
    pub shared: Arc<Shared>,
    /// Quiet time after the last change before reloading (editors write in bursts).
    pub debounce: Duration,
}

fn ports(shared: &Shared) -> BTreeSet<u16> {
    shared.current().snapshot.listeners.iter().map(|l| l.port).collect()
}

impl Watcher {
    /// Applies a prepared configuration and logs the outcome.
    fn apply(&self, prepared: Result<crate::state::Runtime, Vec<strait_config::Diagnostic>>) {
        let before = ports(&self.shared);
        match self.shared.commit(prepared) {
            Ok(version) => {
                let runtime = self.shared.current();
                info!(
                    "config version {version} accepted ({} warnings)",
                    runtime.warnings.len()
                );
                for d in &runtime.warnings {
                    warn!("{d}");
                }
                let after = ports(&self.shared);
                if after != before {
                    warn!("listener ports changed from {before:?} to {after:?}: listeners are fixed at start, restart to apply");
                }
            }
            Err(diags) => {
                let running = self.shared.current().snapshot.version;
                error!("config rejected, still serving version {running}:");
                for d in diags.iter().filter(|d| d.is_error()) {
                    error!("{d}");
                }
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Watcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let handler = move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res {
                log::debug!("watch event {:?} {:?}", ev.kind, ev.paths);
                if !matches!(ev.kind, EventKind::Access(_)) {
                    let _ = tx.send(());
                }
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => return error!("cannot watch config folder: {e}; reloads are off"),
        };
        if let Err(e) = watcher.watch(&self.shared.config_dir, RecursiveMode::Recursive) {
            return error!(
                "cannot watch {}: {e}; reloads are off",
                self.shared.config_dir.display()
            );
        }
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                got = rx.recv() => {
                    if got.is_none() {
                        return;
                    }
                    // Wait until changes stop for `debounce`, then build; a change while
                    // building means we may have read a half-written file: start over.
                    let prepared = loop {
                        tokio::time::sleep(self.debounce).await;
                        if drained(&mut rx) {
                            continue;
                        }
                        let dir = &self.shared.config_dir;
                        settle_empty_files(dir, EMPTY_FILE_GRACE).await;
                        // inotify events can arrive after the build that raced them;
                        // sizes and mtimes cannot.
                        let before = fingerprint(dir);
                        let prepared = self.shared.prepare();
                        if !drained(&mut rx) && fingerprint(dir) == before {
                            break prepared;
                        }
                    };
                    self.apply(prepared);
                }
            }
        }
    }
}

/// How long an empty config file may stay empty before it is taken as emptied on purpose.
const EMPTY_FILE_GRACE: Duration = Duration::from_secs(1);

/// Writers truncate a file before writing it, so an empty config file is most likely
/// half-written: wait (up to `grace`) until no config file is empty.
async fn settle_empty_files(dir: &std::path::Path, grace: Duration) {
    let deadline = Instant::now() + grace;
    while has_empty_config_file(dir) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn has_empty_config_file(dir: &std::path::Path) -> bool {
    fingerprint(dir).iter().any(|(_, len, _)| *len == 0)
}

/// Size and modification time of every config file under `dir`, as the loader sees them.
fn fingerprint(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if matches!(path.extension().and_then(|x| x.to_str()), Some("yaml" | "yml" | "json")) {
                if let Ok(m) = std::fs::metadata(&path) {
                    out.push((path, m.len(), m.modified().ok()));
                }
            }
        }
    }
    out.sort();
    out
}

/// Empties the channel; true if anything was in it.
fn drained(rx: &mut tokio::sync::mpsc::UnboundedReceiver<()>) -> bool {
    let mut any = false;
    while rx.try_recv().is_ok() {
        any = true;
    }
    any
}

/// On SIGTERM: readiness turns false, listeners stop accepting (Pingora), and the
/// process exits as soon as in-flight requests are done, or after `max`.
pub struct Drain {
    /// Engine state.
    pub shared: Arc<Shared>,
    /// Longest wait for in-flight requests.
    pub max: Duration,
}

#[async_trait]
impl BackgroundService for Drain {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
        self.shared.draining.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + self.max;
        info!("draining: waiting up to {:?} for in-flight requests", self.max);
        loop {
            let inflight = self.shared.inflight.load(Ordering::Relaxed);
            if inflight == 0 {
                info!("drained; exiting");
                std::process::exit(0);
            }
            if Instant::now() >= deadline {
                warn!("drain time over with {inflight} requests in flight; exiting");
                std::process::exit(0);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
