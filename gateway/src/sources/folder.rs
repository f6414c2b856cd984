//! The folder source: configuration read from a folder (and the ACME store, where
//! issued certificates are kept as TLS Secrets), built with the one pipeline and
//! applied to the engine; the folders are watched, and a change is applied once
//! the writing is over. A folder that does not build leaves the running
//! configuration serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use log::error;
use notify::{EventKind, RecursiveMode, Watcher as _};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use strait_config::{load_dir, Built, Code, Diagnostic, Loaded, Scope, Severity};

use crate::engine::Engine;

/// The folders to read of `dirs`: the first (the configuration folder) always;
/// the others (the ACME store) when they exist and are not inside one already read.
fn folders(dirs: &[PathBuf]) -> Vec<&PathBuf> {
    let mut out: Vec<&PathBuf> = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let inside = |d: &PathBuf| match (dir.canonicalize(), d.canonicalize()) {
            (Ok(a), Ok(b)) => a.starts_with(b),
            _ => dir.starts_with(d),
        };
        if i == 0 || (dir.is_dir() && !out.iter().any(|d| inside(d))) {
            out.push(dir);
        }
    }
    out
}

/// Reads `dirs` into one bundle: the first is the configuration folder; the others
/// (the ACME store) add what they hold.
pub fn load(dirs: &[PathBuf]) -> Result<Loaded, Vec<Diagnostic>> {
    let mut all = Loaded::default();
    for dir in folders(dirs) {
        let loaded = load_dir(dir).map_err(|e| vec![folder_diag(dir, &e.to_string())])?;
        all.bundle.entries.extend(loaded.bundle.entries);
        all.bundle.files.extend(loaded.bundle.files);
        all.diagnostics.extend(loaded.diagnostics);
    }
    Ok(all)
}

/// Loads `dirs` and builds the snapshot for `scope`.
pub fn build(dirs: &[PathBuf], scope: &Scope) -> Result<Built, Vec<Diagnostic>> {
    let loaded = load(dirs)?;
    log::debug!(
        "building from {} resources in {:?}",
        loaded.bundle.entries.len(),
        loaded.bundle.files
    );
    strait_config::build(&loaded, scope, 0)
}

/// What `--check` prints: every diagnostic of a full build, certificates included.
pub fn check(dirs: &[PathBuf], scope: &Scope) -> Vec<Diagnostic> {
    let built = match build(dirs, scope) {
        Ok(b) => b,
        Err(diags) => return diags,
    };
    let store = crate::jwks::JwksStore::new(Duration::from_secs(3600));
    match crate::runtime::Runtime::compile(built, None, &store) {
        Ok(runtime) => runtime.warnings.to_vec(),
        Err(diags) => diags,
    }
}

fn folder_diag(dir: &Path, message: &str) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        code: Code::Io,
        file: dir.display().to_string(),
        position: Default::default(),
        resource: None,
        field: None,
        message: message.to_string(),
    }
}

/// Watches the folders and applies each change.
pub struct FolderSource {
    /// The engine configured.
    pub engine: Arc<Engine>,
    /// The configuration folder, then the ACME store.
    pub dirs: Vec<PathBuf>,
    /// Quiet time after the last change before building (editors write in bursts).
    pub debounce: Duration,
}

#[async_trait]
impl BackgroundService for FolderSource {
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
            Err(e) => return error!("cannot watch the config folder: {e}; reloads are off"),
        };
        for dir in folders(&self.dirs) {
            if let Err(e) = watcher.watch(dir, RecursiveMode::Recursive) {
                error!("cannot watch {}: {e}; changes there are not applied", dir.display());
            }
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
                    let built = loop {
                        tokio::time::sleep(self.debounce).await;
                        if drained(&mut rx) {
                            continue;
                        }
                        settle_empty_files(&self.dirs, EMPTY_FILE_GRACE).await;
                        // inotify events can arrive after the build that raced them;
                        // sizes and mtimes cannot.
                        let before = fingerprint(&self.dirs);
                        let built = build(&self.dirs, &self.engine.scope);
                        if !drained(&mut rx) && fingerprint(&self.dirs) == before {
                            break built;
                        }
                    };
                    // The engine logs the outcome.
                    let _ = self.engine.apply(built);
                }
            }
        }
    }
}

/// How long an empty config file may stay empty before it is taken as emptied on purpose.
const EMPTY_FILE_GRACE: Duration = Duration::from_secs(1);

/// Writers truncate a file before writing it, so an empty config file is most likely
/// half-written: wait (up to `grace`) until no config file is empty.
async fn settle_empty_files(dirs: &[PathBuf], grace: Duration) {
    let deadline = Instant::now() + grace;
    while has_empty_config_file(dirs) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn has_empty_config_file(dirs: &[PathBuf]) -> bool {
    fingerprint(dirs).iter().any(|(_, len, _)| *len == 0)
}

/// Size and modification time of every config file under `dirs`, as the loader sees them.
fn fingerprint(dirs: &[PathBuf]) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut out = Vec::new();
    let mut stack = dirs.to_vec();
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

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: default}\ntype: kubernetes.io/tls\nstringData: {tls.crt: x, tls.key: y}\n";

    #[test]
    fn the_acme_store_is_read_once_wherever_it_is() {
        let config = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(config.path().join("acme")).expect("mkdir");
        std::fs::write(config.path().join("acme/s.yaml"), SECRET).expect("write");
        std::fs::write(outside.path().join("s.yaml"), SECRET).expect("write");
        let count = |dirs: &[PathBuf]| load(dirs).expect("loads").bundle.entries.len();
        // Inside the configuration folder: read with it, not a second time.
        assert_eq!(count(&[config.path().into(), config.path().join("acme")]), 1);
        // Outside: added to what the folder holds.
        std::fs::remove_file(config.path().join("acme/s.yaml")).expect("rm");
        assert_eq!(count(&[config.path().into(), outside.path().into()]), 1);
        // Not there yet: nothing to add.
        assert_eq!(count(&[config.path().into(), outside.path().join("missing")]), 0);
    }
}
