//! Keeps the managed certificates valid: orders what is missing or due, with
//! backoff after failures.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use instant_acme::{Account, CertificateIdentifier};
use strait_config::acme::{Issuer, ManagedCert};

use crate::certificate::{covers, newest, validity};
use crate::order::{self, AcmeError};
use crate::store::{Responder, Store};

/// First retry delay after a failed order; it doubles up to `MAX_BACKOFF`.
const FIRST_RETRY: Duration = Duration::from_secs(5);

const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Called with (issuer, host) for every failed attempt (metrics).
pub type OnFailure = Box<dyn Fn(&str, &str) + Send + Sync>;

/// What the renewer remembers of one certificate.
#[derive(Debug, Default)]
struct Book {
    failures: u32,
    next_try: Option<Instant>,
}

/// Orders and renews certificates from the issuers of the mesh config, keeping them
/// in `store` and proving control through `responder`.
pub struct Renewer {
    issuers: Vec<Issuer>,
    store: Arc<dyn Store>,
    responder: Arc<dyn Responder>,
    on_failure: OnFailure,
    books: HashMap<(String, String), Book>,
    accounts: HashMap<String, Account>,
}

impl Renewer {
    /// A renewer; `on_failure(issuer, host)` is called for every failed attempt
    /// (metrics).
    pub fn new(
        issuers: Vec<Issuer>,
        store: Arc<dyn Store>,
        responder: Arc<dyn Responder>,
        on_failure: OnFailure,
    ) -> Renewer {
        Renewer {
            issuers,
            store,
            responder,
            on_failure,
            books: HashMap::new(),
            accounts: HashMap::new(),
        }
    }

    /// Takes the issuers of a new mesh config.
    pub fn set_issuers(&mut self, issuers: Vec<Issuer>) {
        if issuers != self.issuers {
            self.issuers = issuers;
            self.accounts.clear();
            self.books.clear();
        }
    }

    /// Orders `m`'s certificate if it is missing, does not cover its hosts or is due
    /// for renewal (unless a failure's backoff is still running). `served` is the
    /// leaf (DER) being served for it, if any.
    pub async fn tend(&mut self, m: &ManagedCert, served: Option<Vec<u8>>) {
        let key = (m.namespace.clone(), m.credential_name.clone());
        if self
            .books
            .get(&key)
            .and_then(|b| b.next_try)
            .is_some_and(|t| Instant::now() < t)
        {
            return;
        }
        let Some(issuer) = self.issuers.iter().find(|i| i.name == m.issuer).cloned() else {
            log::warn!(
                "{}: no ACME issuer {:?} in the mesh config's acmeIssuers; serving a self-signed certificate",
                m.source,
                m.issuer
            );
            self.books.entry(key).or_default().next_try = Some(Instant::now() + MAX_BACKOFF);
            return;
        };
        match self.attempt(&issuer, m, served).await {
            Ok(Some(not_after)) => {
                self.books.remove(&key);
                log::info!(
                    "{}: certificate for {:?} issued by {}, valid until {not_after}",
                    m.source,
                    m.hosts,
                    issuer.name
                );
            }
            Ok(None) => {}
            Err(e) => self.failed(&issuer, m, key, e),
        }
    }

    /// Some(expiry) when a certificate was issued, None when none was due.
    async fn attempt(
        &mut self,
        issuer: &Issuer,
        m: &ManagedCert,
        served: Option<Vec<u8>>,
    ) -> Result<Option<String>, AcmeError> {
        let account = match self.accounts.get(&issuer.name) {
            Some(a) => a.clone(),
            None => {
                let a = order::account(issuer, self.store.as_ref()).await?;
                self.accounts.insert(issuer.name.clone(), a.clone());
                a
            }
        };
        let current = newest(served, self.store.stored_leaf(m).await);
        if !due(&account, current.as_deref(), &m.hosts).await {
            return Ok(None);
        }
        let Some(lock) = self.store.lock(m).await? else {
            log::info!("{}: another replica is ordering its certificate", m.source);
            return Ok(None);
        };
        // Another replica may have finished while this one waited for the lock.
        if !due(&account, self.store.stored_leaf(m).await.as_deref(), &m.hosts).await {
            return Ok(None);
        }
        log::info!(
            "{}: ordering a certificate for {:?} from {}",
            m.source,
            m.hosts,
            issuer.name
        );
        let outcome = order::order(&account, issuer, m, self.store.as_ref(), self.responder.as_ref()).await;
        drop(lock);
        if outcome.as_ref().is_err_and(AcmeError::account_gone) {
            // The next try registers a new account.
            self.accounts.remove(&issuer.name);
            self.store.forget_account(&issuer.name).await;
        }
        outcome.map(Some)
    }

    fn failed(&mut self, issuer: &Issuer, m: &ManagedCert, key: (String, String), e: AcmeError) {
        (self.on_failure)(&issuer.name, m.hosts.first().map_or("", String::as_str));
        let book = self.books.entry(key).or_default();
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
