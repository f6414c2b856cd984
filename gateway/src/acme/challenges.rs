//! The answers to ACME challenges being validated, read by the listeners and shared
//! with other replicas through the store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::sign::CertifiedKey;

use crate::pem::Pem;

/// The answers to challenges being validated, read by the listeners. They are also
/// written to the store, so that whichever replica the CA reaches can answer for the
/// one that ordered.
#[derive(Debug)]
pub struct Challenges {
    store: PathBuf,
    http: RwLock<HashMap<String, String>>,
    alpn: RwLock<HashMap<String, Arc<CertifiedKey>>>,
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
        if !safe(&name) {
            return None;
        }
        let pem = Pem::file(self.alpn_file(&name)).ok()?;
        crate::certs::unchecked_key(&pem, &pem).ok().map(Arc::new)
    }

    pub(super) fn publish_http(&self, token: String, answer: String) -> std::io::Result<()> {
        if safe(&token) {
            write_private(&self.http_file(&token), answer.as_bytes())?;
        }
        if let Ok(mut m) = self.http.write() {
            m.insert(token, answer);
        }
        Ok(())
    }

    pub(super) fn publish_alpn(&self, name: String, cert: (Arc<CertifiedKey>, String)) -> std::io::Result<()> {
        if safe(&name) {
            write_private(&self.alpn_file(&name), cert.1.as_bytes())?;
        }
        if let Ok(mut m) = self.alpn.write() {
            m.insert(name, cert.0);
        }
        Ok(())
    }

    pub(super) fn withdraw(&self, tokens: &[String], names: &[String]) {
        if let Ok(mut m) = self.http.write() {
            for t in tokens {
                m.remove(t);
                let _ = std::fs::remove_file(self.http_file(t));
            }
        }
        if let Ok(mut m) = self.alpn.write() {
            for n in names {
                m.remove(n);
                let _ = std::fs::remove_file(self.alpn_file(n));
            }
        }
    }
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
