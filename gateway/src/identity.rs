//! The proxy's workload identity in the mesh: its SPIFFE certificate and key, and the
//! mesh's roots that the certificates of its peers chain to. A sidecar always has
//! one; a gateway has one when it joins the mesh. It is replaced whole when the
//! certificate is rotated: connections already open keep the one they started with,
//! new handshakes (both ways) take the new one.
//!
//! Where it comes from is the caller's: the controller's CA (`strait-sidecar`) or a
//! folder with Istio's file-mounted layout (`cert-chain.pem`, `key.pem`,
//! `root-cert.pem`), read by `load_dir`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use pingora::utils::tls::{parse_x509, CertKey, WrappedX509};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::pem::{Pem, PemError};

/// The files of Istio's file-mounted certificates (`/etc/certs`).
pub const CHAIN_FILE: &str = "cert-chain.pem";
/// The key beside `CHAIN_FILE`.
pub const KEY_FILE: &str = "key.pem";
/// The mesh's roots beside `CHAIN_FILE`.
pub const ROOT_FILE: &str = "root-cert.pem";

/// Why an identity could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file could not be read or parsed.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// The chain is empty or the leaf unreadable.
    #[error("{0}")]
    Certificate(String),
    /// The key does not fit rustls.
    #[error("private key: {0}")]
    Key(String),
}

/// One certificate of the workload, ready for both directions of TLS.
pub struct WorkloadCert {
    /// `spiffe://<trust domain>/ns/<ns>/sa/<sa>`, from the leaf.
    pub spiffe_id: String,
    /// When the leaf was issued and when it expires.
    pub not_before: SystemTime,
    /// When the leaf expires.
    pub not_after: SystemTime,
    /// The chain (leaf first), DER.
    pub chain: Vec<CertificateDer<'static>>,
    /// The mesh's roots, DER.
    pub roots: Vec<CertificateDer<'static>>,
    /// For the server side (inbound).
    pub server: Arc<CertifiedKey>,
    /// For Pingora's connector (outbound): client certificate and key.
    pub client: Arc<CertKey>,
    /// For Pingora's connector: the roots servers must chain to.
    pub client_roots: Arc<[WrappedX509]>,
}

impl std::fmt::Debug for WorkloadCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadCert")
            .field("spiffe_id", &self.spiffe_id)
            .field("not_after", &self.not_after)
            .finish()
    }
}

impl WorkloadCert {
    /// From PEM text: the chain (leaf first), its key and the mesh's roots.
    pub fn from_pem(chain: Pem, key: Pem, roots: Pem) -> Result<WorkloadCert, IdentityError> {
        let chain = chain.certificates("certificate")?;
        let roots = roots.certificates("root certificate")?;
        let key: PrivateKeyDer<'static> = key.private_key()?;
        let leaf = chain
            .first()
            .ok_or_else(|| IdentityError::Certificate("the certificate chain is empty".into()))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| IdentityError::Certificate(format!("the leaf certificate: {e}")))?;
        let spiffe_id = parsed
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value.general_names.iter().find_map(|n| match n {
                    x509_parser::extensions::GeneralName::URI(u) if u.starts_with("spiffe://") => Some(u.to_string()),
                    _ => None,
                })
            })
            .ok_or_else(|| IdentityError::Certificate("the leaf certificate has no spiffe:// URI".into()))?;
        let epoch = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
        let not_before = epoch(parsed.validity().not_before.timestamp());
        let not_after = epoch(parsed.validity().not_after.timestamp());
        let signer =
            rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| IdentityError::Key(e.to_string()))?;
        let server = Arc::new(CertifiedKey::new(chain.clone(), signer));
        let client = Arc::new(CertKey::new(
            chain.iter().map(|c| c.as_ref().to_vec()).collect(),
            key.secret_der().to_vec(),
        ));
        let client_roots: Arc<[WrappedX509]> = roots
            .iter()
            .map(|r| WrappedX509::new(r.as_ref().to_vec(), parse_x509))
            .collect();
        Ok(WorkloadCert {
            spiffe_id,
            not_before,
            not_after,
            chain,
            roots,
            server,
            client,
            client_roots,
        })
    }

    /// Reads Istio's file-mounted layout from `dir`.
    pub fn load_dir(dir: &Path) -> Result<WorkloadCert, IdentityError> {
        WorkloadCert::from_pem(
            Pem::file(dir.join(CHAIN_FILE))?,
            Pem::file(dir.join(KEY_FILE))?,
            Pem::file(dir.join(ROOT_FILE))?,
        )
    }

    /// When to renew: half-way through its life, as Istio's agent does.
    pub fn renew_at(&self) -> SystemTime {
        let life = self.not_after.duration_since(self.not_before).unwrap_or_default();
        self.not_before + life / 2
    }

    /// The principal Istio's policies name it by: the SPIFFE ID without `spiffe://`.
    pub fn principal(&self) -> &str {
        self.spiffe_id.strip_prefix("spiffe://").unwrap_or(&self.spiffe_id)
    }
}

/// The proxy's current identity, swapped whole on rotation.
#[derive(Debug, Default)]
pub struct Identity {
    current: ArcSwapOption<WorkloadCert>,
    /// Bumped on every change, so that what was built from an identity is rebuilt.
    generation: std::sync::atomic::AtomicU64,
}

impl Identity {
    /// The certificate in use, if any.
    pub fn current(&self) -> Option<Arc<WorkloadCert>> {
        self.current.load_full()
    }

    /// Takes `cert` for every new handshake.
    pub fn set(&self, cert: WorkloadCert) {
        log::info!(
            "workload certificate for {} valid until {}",
            cert.spiffe_id,
            crate::rfc3339::millis(cert.not_after)
        );
        self.current.store(Some(Arc::new(cert)));
        self.generation.fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// Changes so far (0: never set).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Keeps the engine's identity to what a folder of Istio's file-mounted layout holds
/// (a Secret or a cert-manager CSI volume mounted as `/etc/certs`): read at start,
/// then looked at every `every` and taken again when the chain changed.
pub struct IdentityFiles {
    /// The identity it sets (an engine's).
    pub identity: Arc<Identity>,
    /// The folder.
    pub dir: std::path::PathBuf,
    /// Time between looks.
    pub every: Duration,
}

impl IdentityFiles {
    /// Loads the folder now; the chain's bytes, to tell a change later.
    pub fn load(&self) -> Result<Vec<u8>, IdentityError> {
        let cert = WorkloadCert::load_dir(&self.dir)?;
        let chain = std::fs::read(self.dir.join(CHAIN_FILE)).unwrap_or_default();
        self.identity.set(cert);
        Ok(chain)
    }
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for IdentityFiles {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut seen = std::fs::read(self.dir.join(CHAIN_FILE)).unwrap_or_default();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(self.every) => {}
            }
            let now = std::fs::read(self.dir.join(CHAIN_FILE)).unwrap_or_default();
            if now == seen {
                continue;
            }
            match self.load() {
                Ok(chain) => seen = chain,
                // The files are written one by one: the next look sees them whole.
                Err(e) => log::warn!("workload certificate in {}: {e}", self.dir.display()),
            }
        }
    }
}

/// Keeps the engine's identity signed by the controller's CA (Istio's
/// `IstioCertificateService`, port 15012): a new key and CSR for the workload's
/// SPIFFE ID, sent with its service account token (read afresh each time: the
/// kubelet rotates projected tokens); renewed at half life, retried with backoff.
pub struct CaIdentity {
    /// The identity it sets.
    pub identity: Arc<Identity>,
    /// The CA: `HOST:PORT` of the controller's TLS port.
    pub address: String,
    /// The root its certificate chains to (the mesh's), PEM.
    pub root_pem: String,
    /// The name its certificate is checked for.
    pub server_name: String,
    /// `spiffe://<trust domain>/ns/<ns>/sa/<sa>`.
    pub spiffe_id: String,
    /// The service account token file (a projected token, audience `istio-ca`).
    pub token_file: std::path::PathBuf,
    /// Validity asked for.
    pub ttl: Duration,
}

/// Why a certificate could not be had from the CA.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The token file.
    #[error("service account token {path}: {source}")]
    Token {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The key or CSR.
    #[error(transparent)]
    Csr(#[from] strait_push::csr::Error),
    /// The CA refused or could not be reached.
    #[error("the CA: {0}")]
    Ca(#[from] strait_push::ca_client::Error),
    /// What it signed is unusable.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// No connection to the CA.
    #[error(transparent)]
    Connect(#[from] strait_push::tls::Error),
}

impl CaIdentity {
    /// One certificate from the CA, set as the identity.
    pub async fn renew(&self, channel: &tonic::transport::Channel) -> Result<(), CaError> {
        let token = std::fs::read_to_string(&self.token_file).map_err(|source| CaError::Token {
            path: self.token_file.display().to_string(),
            source,
        })?;
        let csr = strait_push::csr::workload_csr(&self.spiffe_id)?;
        let client = strait_push::ca_client::CaClient::from_channel(channel.clone());
        let chain = client.sign(token.trim(), &csr.csr_pem, self.ttl).await?;
        // The leaf and intermediates are presented; the last one is the root.
        let (root, presented) = match chain.split_last() {
            Some((root, rest)) if !rest.is_empty() => (root.clone(), rest.concat()),
            _ => (String::new(), chain.concat()),
        };
        let cert = WorkloadCert::from_pem(
            Pem {
                name: "certificate chain from the CA".into(),
                bytes: presented.into_bytes(),
            },
            Pem {
                name: "workload key".into(),
                bytes: csr.key_pem.into_bytes(),
            },
            Pem {
                name: "root from the CA".into(),
                bytes: root.into_bytes(),
            },
        )?;
        self.identity.set(cert);
        Ok(())
    }
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for CaIdentity {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut backoff = Duration::from_secs(1);
        let mut channel = None;
        loop {
            let outcome = match &channel {
                Some(c) => self.renew(c).await,
                None => match strait_push::tls::connect(&self.address, &self.root_pem, &self.server_name).await {
                    Ok(c) => {
                        let outcome = self.renew(&c).await;
                        channel = Some(c);
                        outcome
                    }
                    Err(e) => Err(e.into()),
                },
            };
            let wait = match outcome {
                Ok(()) => {
                    backoff = Duration::from_secs(1);
                    self.identity
                        .current()
                        .and_then(|c| c.renew_at().duration_since(SystemTime::now()).ok())
                        .unwrap_or(Duration::from_secs(60))
                }
                Err(e) => {
                    log::warn!(
                        "workload certificate for {}: {e}; retrying in {backoff:?}",
                        self.spiffe_id
                    );
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    wait
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
