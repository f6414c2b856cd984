//! Orders and renews the managed certificates of the running configuration, kept as
//! Secret files in the ACME store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use strait_acme::{first_certificate, Lock, Renewer, Store, StoreError};
use strait_config::acme::{secret_file, secret_yaml, Issuer, ManagedCert};

use super::challenges::write_private;
use crate::engine::Engine;
use crate::runtime::Runtime;

/// A lock older than this was left by a replica that died while ordering.
const STALE_LOCK: Duration = Duration::from_secs(600);

/// Keeps the managed certificates of the running configuration valid.
pub struct AcmeManager {
    /// Engine state (the snapshot's `acme` list, the challenge answers).
    pub shared: Arc<Engine>,
    /// Issuers from the mesh config.
    pub issuers: Vec<Issuer>,
    /// Where certificates, account keys and locks are kept.
    pub store: PathBuf,
    /// How often certificates are looked at.
    pub every: Duration,
}

#[async_trait]
impl BackgroundService for AcmeManager {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let shared = self.shared.clone();
        let mut renewer = Renewer::new(
            self.issuers.clone(),
            Arc::new(FileStore(self.store.clone())),
            self.shared.challenges.clone(),
            Box::new(move |issuer, host| shared.acme_failed(issuer, host)),
        );
        loop {
            let runtime = self.shared.current();
            for m in &runtime.snapshot.acme {
                renewer.tend(m, current_leaf(&runtime, m)).await;
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(self.every) => {}
            }
        }
    }
}

/// The ACME store: a folder read with the configuration, shared by replicas.
struct FileStore(PathBuf);

impl FileStore {
    fn account_file(&self, issuer: &str) -> PathBuf {
        self.0.join(format!(".account-{issuer}.json"))
    }
}

#[async_trait]
impl Store for FileStore {
    async fn account(&self, issuer: &str) -> Result<Option<String>, StoreError> {
        match std::fs::read_to_string(self.account_file(issuer)) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError(format!("{}: {e}", self.account_file(issuer).display()))),
        }
    }

    async fn save_account(&self, issuer: &str, credentials: &str) -> Result<(), StoreError> {
        std::fs::create_dir_all(&self.0)?;
        Ok(write_private(&self.account_file(issuer), credentials.as_bytes())?)
    }

    async fn forget_account(&self, issuer: &str) {
        let _ = std::fs::remove_file(self.account_file(issuer));
    }

    async fn stored_leaf(&self, m: &ManagedCert) -> Option<Vec<u8>> {
        stored_leaf(&self.0, m)
    }

    async fn save_certificate(&self, m: &ManagedCert, chain_pem: &str, key_pem: &str) -> Result<(), StoreError> {
        std::fs::create_dir_all(&self.0)?;
        let file = self.0.join(secret_file(&m.namespace, &m.credential_name));
        let yaml = secret_yaml(&m.namespace, &m.credential_name, chain_pem, key_pem);
        Ok(write_private(&file, yaml.as_bytes())?)
    }

    async fn lock(&self, m: &ManagedCert) -> Result<Option<Lock>, StoreError> {
        Ok(StoreLock::take(&self.0, m)?.map(|l| Box::new(l) as Lock))
    }
}

/// A lock file in the store: one replica orders a given certificate at a time.
struct StoreLock(PathBuf);

impl StoreLock {
    fn take(store: &Path, m: &ManagedCert) -> std::io::Result<Option<StoreLock>> {
        std::fs::create_dir_all(store)?;
        let path = store.join(format!(".lock-{}.{}", m.namespace, m.credential_name));
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    use std::io::Write;
                    writeln!(f, "{}", std::process::id())?;
                    return Ok(Some(StoreLock(path)));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let age = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok());
                    if age.is_some_and(|a| a > STALE_LOCK) {
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The leaf the running configuration serves for `m` (from its Secret).
fn current_leaf(runtime: &Runtime, m: &ManagedCert) -> Option<Vec<u8>> {
    let suffix = format!("/{}", m.credential_name);
    let index = runtime
        .snapshot
        .certificates
        .iter()
        .position(|c| c.name.starts_with("secret ") && c.name.ends_with(&suffix))?;
    runtime.certs.get(index)?.key.cert.first().map(|c| c.as_ref().to_vec())
}

/// The leaf in the store's Secret file for `m` (written by this or another replica,
/// perhaps not loaded yet).
fn stored_leaf(store: &Path, m: &ManagedCert) -> Option<Vec<u8>> {
    let text = std::fs::read_to_string(store.join(secret_file(&m.namespace, &m.credential_name))).ok()?;
    // The store's own format: PEM lines indented under `tls.crt: |`.
    let pem: String = text
        .lines()
        .skip_while(|l| l.trim() != "tls.crt: |")
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(|l| format!("{}\n", l.trim()))
        .collect();
    first_certificate(pem.as_bytes())
}
