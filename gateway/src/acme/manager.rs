//! Orders and renews the managed certificates of the running configuration.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType, ExternalAccountKey,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rustls::sign::CertifiedKey;
use strait_config::acme::{secret_file, secret_yaml, Challenge, Issuer, ManagedCert};

use super::challenges::write_private;
use crate::engine::Engine;
use crate::pem::Pem;
use crate::runtime::Runtime;

/// First retry delay after a failed order; it doubles up to `MAX_BACKOFF`.
const FIRST_RETRY: Duration = Duration::from_secs(5);

const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// A lock older than this was left by a replica that died while ordering.
const STALE_LOCK: Duration = Duration::from_secs(600);

/// Why an order failed.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The CA refused or failed.
    #[error("{0}")]
    Acme(#[from] instant_acme::Error),
    /// The CA said to slow down.
    #[error("rate limited by the CA: {0}")]
    RateLimited(String),
    /// The store could not be written.
    #[error("store: {0}")]
    Store(#[from] std::io::Error),
    /// Anything else (a challenge the CA does not offer, a failed validation...).
    #[error("{0}")]
    Other(String),
}

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

/// What the manager remembers of one certificate.
#[derive(Debug, Default)]
struct Book {
    failures: u32,
    next_try: Option<Instant>,
}

#[async_trait]
impl BackgroundService for AcmeManager {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut books: HashMap<(String, String), Book> = HashMap::new();
        let mut accounts: HashMap<String, Account> = HashMap::new();
        loop {
            let runtime = self.shared.current();
            for m in &runtime.snapshot.acme {
                let book = books
                    .entry((m.namespace.clone(), m.credential_name.clone()))
                    .or_default();
                self.tend(&runtime, m, book, &mut accounts).await;
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(self.every) => {}
            }
        }
    }
}

impl AcmeManager {
    async fn tend(&self, runtime: &Runtime, m: &ManagedCert, book: &mut Book, accounts: &mut HashMap<String, Account>) {
        if book.next_try.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let Some(issuer) = self.issuers.iter().find(|i| i.name == m.issuer) else {
            log::warn!(
                "{}: no ACME issuer {:?} in the mesh config's acmeIssuers; serving a self-signed certificate",
                m.source,
                m.issuer
            );
            book.next_try = Some(Instant::now() + MAX_BACKOFF);
            return;
        };
        let account = match accounts.get(&issuer.name) {
            Some(a) => a.clone(),
            None => match self.account(issuer).await {
                Ok(a) => {
                    accounts.insert(issuer.name.clone(), a.clone());
                    a
                }
                Err(e) => return self.failed(issuer, m, book, e),
            },
        };
        let current = newest(current_leaf(runtime, m), stored_leaf(&self.store, m));
        if !due(&account, current.as_deref(), &m.hosts).await {
            return;
        }
        let lock = match StoreLock::take(&self.store, m) {
            Ok(Some(lock)) => lock,
            Ok(None) => return log::info!("{}: another replica is ordering its certificate", m.source),
            Err(e) => return self.failed(issuer, m, book, e.into()),
        };
        // Another replica may have finished while this one waited for the lock.
        if !due(&account, stored_leaf(&self.store, m).as_deref(), &m.hosts).await {
            return;
        }
        log::info!(
            "{}: ordering a certificate for {:?} from {}",
            m.source,
            m.hosts,
            issuer.name
        );
        let outcome = self.order(&account, issuer, m).await;
        drop(lock);
        match outcome {
            Ok(not_after) => {
                *book = Book::default();
                log::info!(
                    "{}: certificate for {:?} issued by {}, valid until {not_after}",
                    m.source,
                    m.hosts,
                    issuer.name
                );
            }
            Err(e) => {
                if e.account_gone() {
                    // The CA forgot the account (a reset test CA, a deactivated
                    // account): the next try registers a new one.
                    accounts.remove(&issuer.name);
                    let _ = std::fs::remove_file(self.account_file(issuer));
                }
                self.failed(issuer, m, book, e)
            }
        }
    }

    fn account_file(&self, issuer: &Issuer) -> PathBuf {
        self.store.join(format!(".account-{}.json", issuer.name))
    }

    fn failed(&self, issuer: &Issuer, m: &ManagedCert, book: &mut Book, e: AcmeError) {
        self.shared
            .acme_failed(&issuer.name, m.hosts.first().map_or("", String::as_str));
        book.failures = book.failures.saturating_add(1);
        let delay = match e {
            AcmeError::RateLimited(_) => MAX_BACKOFF,
            _ => FIRST_RETRY
                .saturating_mul(1 << book.failures.min(16).saturating_sub(1))
                .min(MAX_BACKOFF),
        };
        book.next_try = Some(Instant::now() + delay);
        log::warn!(
            "{}: ACME certificate for {:?} not obtained from issuer {} ({}) ({} failures in a row): {e}; the current certificate keeps serving; next try in {}s",
            m.source,
            m.hosts,
            issuer.name,
            issuer.directory,
            book.failures,
            delay.as_secs()
        );
    }

    /// The issuer's account, created on first use and kept in the store.
    async fn account(&self, issuer: &Issuer) -> Result<Account, AcmeError> {
        let builder = || match &issuer.ca_certificates {
            Some(root) => Account::builder_with_root(root),
            None => Account::builder(),
        };
        let path = self.account_file(issuer);
        if let Ok(text) = std::fs::read_to_string(&path) {
            let credentials: AccountCredentials =
                serde_json::from_str(&text).map_err(|e| AcmeError::Other(format!("{}: {e}", path.display())))?;
            return Ok(builder()?.from_credentials(credentials).await?);
        }
        let contact = issuer.email.as_ref().map(|e| format!("mailto:{e}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let eab = match &issuer.eab {
            Some((id, hmac)) => {
                let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(hmac.trim_end_matches('='))
                    .map_err(|_| AcmeError::Other("externalAccountBinding.hmacKey is not base64url".into()))?;
                Some(ExternalAccountKey::new(id.clone(), &key))
            }
            None => None,
        };
        let new = NewAccount {
            contact: &contacts,
            terms_of_service_agreed: true,
            only_return_existing: false,
        };
        let (account, credentials) = builder()?.create(&new, issuer.directory.clone(), eab.as_ref()).await?;
        std::fs::create_dir_all(&self.store)?;
        let text = serde_json::to_string(&credentials).map_err(|e| AcmeError::Other(e.to_string()))?;
        write_private(&path, text.as_bytes())?;
        log::info!("ACME account created with {} ({})", issuer.name, account.id());
        Ok(account)
    }

    /// Orders, proves, finalizes and stores one certificate; returns its expiry.
    async fn order(&self, account: &Account, issuer: &Issuer, m: &ManagedCert) -> Result<String, AcmeError> {
        let identifiers: Vec<Identifier> = m.hosts.iter().map(|h| Identifier::Dns(h.clone())).collect();
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(rate_limit)?;
        let kind = match issuer.challenge {
            Challenge::Http01 => ChallengeType::Http01,
            Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        };
        let challenges = &self.shared.challenges;
        let (mut tokens, mut names) = (Vec::new(), Vec::new());
        let proven = async {
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz?;
                match authz.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    other => return Err(AcmeError::Other(format!("authorization is {other:?}"))),
                }
                let mut challenge = authz
                    .challenge(kind.clone())
                    .ok_or_else(|| AcmeError::Other(format!("the CA does not offer {kind:?}")))?;
                let answer = challenge.key_authorization();
                let name = challenge.identifier().to_string();
                match kind {
                    ChallengeType::TlsAlpn01 => {
                        names.push(name.clone());
                        challenges.publish_alpn(name.clone(), alpn_certificate(&name, answer.digest().as_ref())?)?;
                    }
                    _ => {
                        tokens.push(challenge.token.clone());
                        challenges.publish_http(challenge.token.clone(), answer.as_str().to_string())?;
                    }
                }
                challenge.set_ready().await?;
            }
            let retry = RetryPolicy::new().timeout(Duration::from_secs(90));
            Ok::<_, AcmeError>(order.poll_ready(&retry).await?)
        }
        .await;
        challenges.withdraw(&tokens, &names);
        match proven? {
            OrderStatus::Ready => {}
            status => return Err(AcmeError::Other(format!("validation failed: the order is {status:?}"))),
        }
        let key = rcgen::KeyPair::generate().map_err(|e| AcmeError::Other(e.to_string()))?;
        let csr = rcgen::CertificateParams::new(m.hosts.clone())
            .and_then(|p| p.serialize_request(&key))
            .map_err(|e| AcmeError::Other(e.to_string()))?;
        order.finalize_csr(csr.der()).await.map_err(rate_limit)?;
        let chain = order
            .poll_certificate(&RetryPolicy::new().timeout(Duration::from_secs(90)))
            .await?;
        let leaf =
            first_certificate(chain.as_bytes()).ok_or_else(|| AcmeError::Other("the CA sent no certificate".into()))?;
        let not_after = validity(&leaf).map_or_else(|| "?".to_string(), |(_, end)| format!("{end} (unix)"));
        std::fs::create_dir_all(&self.store)?;
        let file = self.store.join(secret_file(&m.namespace, &m.credential_name));
        let yaml = secret_yaml(&m.namespace, &m.credential_name, &chain, &key.serialize_pem());
        write_private(&file, yaml.as_bytes())?;
        Ok(not_after)
    }
}

impl AcmeError {
    fn account_gone(&self) -> bool {
        matches!(self, AcmeError::Acme(instant_acme::Error::Api(p))
            if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:accountDoesNotExist"))
    }
}

/// Rate-limit answers get their own backoff.
fn rate_limit(e: instant_acme::Error) -> AcmeError {
    match &e {
        instant_acme::Error::Api(p) if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:rateLimited") => {
            AcmeError::RateLimited(e.to_string())
        }
        _ => AcmeError::Acme(e),
    }
}

/// The TLS-ALPN-01 certificate for `name`: self-signed, with the acmeIdentifier
/// extension holding the key authorization's digest (RFC 8737); also as PEM (chain
/// and key) for the store.
fn alpn_certificate(name: &str, digest: &[u8]) -> Result<(Arc<CertifiedKey>, String), AcmeError> {
    let other = |e: rcgen::Error| AcmeError::Other(e.to_string());
    let key = rcgen::KeyPair::generate().map_err(other)?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(other)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(other)?;
    let pem = format!("{}{}", cert.pem(), key.serialize_pem());
    let both = Pem {
        name: format!("TLS-ALPN-01 certificate for {name}"),
        bytes: pem.clone().into_bytes(),
    };
    let certified = crate::certs::unchecked_key(&both, &both).map_err(|e| AcmeError::Other(e.to_string()))?;
    Ok((Arc::new(certified), pem))
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

fn first_certificate(pem: &[u8]) -> Option<Vec<u8>> {
    rustls_pemfile::certs(&mut &pem[..])
        .next()
        .and_then(Result::ok)
        .map(|c| c.as_ref().to_vec())
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

fn newest(a: Option<Vec<u8>>, b: Option<Vec<u8>>) -> Option<Vec<u8>> {
    let end = |c: &Vec<u8>| validity(c).map_or(0, |(_, e)| e);
    match (a, b) {
        (Some(a), Some(b)) => Some(if end(&b) > end(&a) { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// (notBefore, notAfter) as seconds since the epoch.
fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some((
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    ))
}

fn covers(der: &[u8], hosts: &[String]) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    let names = crate::pem::dns_names(&cert);
    hosts.iter().all(|h| names.contains(h))
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Whether `leaf` (the certificate being served, if any) should be replaced now:
/// missing, not covering the hosts, or inside its renewal window (the CA's ARI
/// window where offered, else the last third of its lifetime).
async fn due(account: &Account, leaf: Option<&[u8]>, hosts: &[String]) -> bool {
    let Some(leaf) = leaf else { return true };
    if !covers(leaf, hosts) {
        return true;
    }
    let Some((start, end)) = validity(leaf) else {
        return true;
    };
    let now = now_secs();
    if let Some(window_start) = ari_window_start(account, leaf).await {
        return now >= window_start;
    }
    now >= start + (end - start) * 2 / 3
}

/// The start of the renewal window the CA suggests, if it offers ARI (RFC 9773).
async fn ari_window_start(account: &Account, leaf: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let aki = cert.extensions().iter().find_map(|e| match e.parsed_extension() {
        x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| k.0),
        _ => None,
    })?;
    let id = CertificateIdentifier::new(aki.into(), cert.raw_serial().into());
    let (info, _) = account.renewal_info(&id).await.ok()?;
    Some(info.suggested_window.start.unix_timestamp())
}
