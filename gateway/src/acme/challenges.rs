//! The answers to ACME challenges being validated, read by the listeners: those of
//! this gateway's own orders (shared with other replicas through the store) and those
//! a controller publishes with the configuration (it orders on a cluster).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use rustls::sign::CertifiedKey;
use strait_acme::{Answer, Responder, StoreError};
use strait_config::acme::Answers;

use crate::pem::Pem;

/// The answers to challenges being validated, read by the listeners. They are also
/// written to the store, so that whichever replica the CA reaches can answer for the
/// one that ordered.
#[derive(Debug)]
pub struct Challenges {
    store: PathBuf,
    http: RwLock<HashMap<String, String>>,
    alpn: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    pushed: RwLock<Pushed>,
}

/// A controller's answers, with their TLS-ALPN-01 certificates compiled.
#[derive(Debug, Default)]
struct Pushed {
    answers: Answers,
    alpn: HashMap<String, Arc<CertifiedKey>>,
}

/// Whether `s` can be part of a file name: tokens are base64url, names DNS names.
fn safe(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Challenges {
    /// Challenges shared through `store` (the config folder's `acme/`).
    pub fn new(store: PathBuf) -> Challenges {
        Challenges {
            store,
            http: RwLock::default(),
            alpn: RwLock::default(),
            pushed: RwLock::default(),
        }
    }

    /// Takes the answers of the configuration being applied (a controller's orders).
    /// A certificate that does not load is left out, with a warning: the CA then
    /// fails that one validation, and the controller orders again.
    pub fn set_pushed(&self, answers: &Answers) {
        if self.pushed.read().is_ok_and(|p| p.answers == *answers) {
            return;
        }
        let mut alpn = HashMap::new();
        for (name, pem) in &answers.alpn {
            match challenge_key(&format!("the controller's TLS-ALPN-01 certificate for {name}"), pem) {
                Ok(key) => {
                    alpn.insert(name.clone(), key);
                }
                Err(e) => log::warn!("{e}"),
            }
        }
        if let Ok(mut p) = self.pushed.write() {
            *p = Pushed {
                answers: answers.clone(),
                alpn,
            };
        }
    }

    fn http_file(&self, token: &str) -> PathBuf {
        self.store.join(format!(".challenge-http-{token}"))
    }

    fn alpn_file(&self, name: &str) -> PathBuf {
        self.store.join(format!(".challenge-alpn-{name}.pem"))
    }

    /// The key authorization for an HTTP-01 token.
    pub fn http_response(&self, token: &str) -> Option<String> {
        if let Some(answer) = self.http.read().ok()?.get(token) {
            return Some(answer.clone());
        }
        if let Some(answer) = self.pushed.read().ok()?.answers.http.get(token) {
            return Some(answer.clone());
        }
        // Another replica's order.
        safe(token)
            .then(|| std::fs::read_to_string(self.http_file(token)).ok())
            .flatten()
    }

    /// The TLS-ALPN-01 certificate for a name.
    pub fn alpn_certificate(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = name.to_ascii_lowercase();
        if let Some(cert) = self.alpn.read().ok()?.get(&name) {
            return Some(cert.clone());
        }
        if let Some(cert) = self.pushed.read().ok()?.alpn.get(&name) {
            return Some(cert.clone());
        }
        if !safe(&name) {
            return None;
        }
        let pem = Pem::file(self.alpn_file(&name)).ok()?;
        crate::certs::unchecked_key(&pem, &pem).ok().map(Arc::new)
    }

    fn publish_http(&self, token: &str, answer: &str) -> std::io::Result<()> {
        if safe(token) {
            write_private(&self.http_file(token), answer.as_bytes())?;
        }
        if let Ok(mut m) = self.http.write() {
            m.insert(token.to_string(), answer.to_string());
        }
        Ok(())
    }

    fn publish_alpn(&self, name: &str, pem: &str) -> Result<(), StoreError> {
        let cert = challenge_key(&format!("TLS-ALPN-01 certificate for {name}"), pem)
            .map_err(|e| StoreError(e.to_string()))?;
        if safe(name) {
            write_private(&self.alpn_file(name), pem.as_bytes())?;
        }
        if let Ok(mut m) = self.alpn.write() {
            m.insert(name.to_string(), cert);
        }
        Ok(())
    }
}

/// This gateway's own orders: answered by itself, and by the replicas sharing its
/// store (they read the answers' files).
#[async_trait]
impl Responder for Challenges {
    async fn publish(&self, answers: &[Answer]) -> Result<(), StoreError> {
        for answer in answers {
            match answer {
                Answer::Http {
                    token,
                    key_authorization,
                } => self.publish_http(token, key_authorization)?,
                Answer::TlsAlpn { name, pem } => self.publish_alpn(name, pem)?,
            }
        }
        Ok(())
    }

    async fn withdraw(&self, answers: &[Answer]) {
        for answer in answers {
            match answer {
                Answer::Http { token, .. } => {
                    if let Ok(mut m) = self.http.write() {
                        m.remove(token);
                    }
                    let _ = std::fs::remove_file(self.http_file(token));
                }
                Answer::TlsAlpn { name, .. } => {
                    if let Ok(mut m) = self.alpn.write() {
                        m.remove(name);
                    }
                    let _ = std::fs::remove_file(self.alpn_file(name));
                }
            }
        }
    }
}

/// A TLS-ALPN-01 challenge certificate and its key, one PEM text, as the listeners
/// serve it; `what` names it in errors.
fn challenge_key(what: &str, pem: &str) -> Result<Arc<CertifiedKey>, crate::pem::PemError> {
    let both = Pem {
        name: what.to_string(),
        bytes: pem.as_bytes().to_vec(),
    };
    crate::certs::unchecked_key(&both, &both).map(Arc::new)
}

/// Writes a file readable by its owner only, replacing it in one step.
pub(super) fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A dot file: the config loader skips it while it is being written.
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
