//! One ACME account per issuer, and one order: proven, finalized, stored.

use std::time::Duration;

use base64::Engine as _;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, ExternalAccountKey, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use strait_config::acme::{Challenge, Issuer, ManagedCert};

use crate::certificate::{alpn_certificate, first_certificate, validity};
use crate::store::{Answer, Responder, Store, StoreError};

/// How long the CA is given to validate, and then to issue.
const CA_TIMEOUT: Duration = Duration::from_secs(90);

/// Why an order failed.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The CA refused or failed.
    #[error("{0}")]
    Acme(#[from] instant_acme::Error),
    /// The CA said to slow down.
    #[error("rate limited by the CA: {0}")]
    RateLimited(String),
    /// The store or the responder failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// Anything else (a challenge the CA does not offer, a failed validation...).
    #[error("{0}")]
    Other(String),
}

impl AcmeError {
    /// The CA forgot the account (a reset test CA, a deactivated account).
    pub(crate) fn account_gone(&self) -> bool {
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

fn other(e: impl std::fmt::Display) -> AcmeError {
    AcmeError::Other(e.to_string())
}

/// The issuer's account, created on first use and kept in the store.
pub(crate) async fn account(issuer: &Issuer, store: &dyn Store) -> Result<Account, AcmeError> {
    let builder = || match &issuer.ca_certificates {
        Some(root) => Account::builder_with_root(root),
        None => Account::builder(),
    };
    if let Some(text) = store.account(&issuer.name).await? {
        let credentials: AccountCredentials =
            serde_json::from_str(&text).map_err(|e| other(format!("the stored account of {}: {e}", issuer.name)))?;
        return Ok(builder()?.from_credentials(credentials).await?);
    }
    let contact = issuer.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let eab = match &issuer.eab {
        Some((id, hmac)) => {
            let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(hmac.trim_end_matches('='))
                .map_err(|_| other("externalAccountBinding.hmacKey is not base64url"))?;
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
    let text = serde_json::to_string(&credentials).map_err(other)?;
    store.save_account(&issuer.name, &text).await?;
    log::info!("ACME account created with {} ({})", issuer.name, account.id());
    Ok(account)
}

/// Orders, proves, finalizes and stores one certificate; returns its expiry.
pub(crate) async fn order(
    account: &Account,
    issuer: &Issuer,
    m: &ManagedCert,
    store: &dyn Store,
    responder: &dyn Responder,
) -> Result<String, AcmeError> {
    let identifiers: Vec<Identifier> = m.hosts.iter().map(|h| Identifier::Dns(h.clone())).collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(rate_limit)?;
    let kind = match issuer.challenge {
        Challenge::Http01 => ChallengeType::Http01,
        Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
    };
    // Every answer is published before the CA is told to look at any: a responder
    // that must reach other machines then waits once, not once per name.
    let mut answers = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(AcmeError::Other(format!("authorization is {other:?}"))),
        }
        let challenge = authz
            .challenge(kind.clone())
            .ok_or_else(|| AcmeError::Other(format!("the CA does not offer {kind:?}")))?;
        let key_authorization = challenge.key_authorization();
        answers.push(match kind {
            ChallengeType::TlsAlpn01 => {
                let name = challenge.identifier().to_string().to_ascii_lowercase();
                let pem = alpn_certificate(&name, key_authorization.digest().as_ref()).map_err(other)?;
                Answer::TlsAlpn { name, pem }
            }
            _ => Answer::Http {
                token: challenge.token.clone(),
                key_authorization: key_authorization.as_str().to_string(),
            },
        });
    }
    let proven = async {
        responder.publish(&answers).await?;
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            if authz.status != AuthorizationStatus::Pending {
                continue;
            }
            if let Some(mut challenge) = authz.challenge(kind.clone()) {
                challenge.set_ready().await?;
            }
        }
        Ok::<_, AcmeError>(order.poll_ready(&RetryPolicy::new().timeout(CA_TIMEOUT)).await?)
    }
    .await;
    responder.withdraw(&answers).await;
    match proven? {
        OrderStatus::Ready => {}
        status => return Err(AcmeError::Other(format!("validation failed: the order is {status:?}"))),
    }
    let key = rcgen::KeyPair::generate().map_err(other)?;
    let csr = rcgen::CertificateParams::new(m.hosts.clone())
        .and_then(|p| p.serialize_request(&key))
        .map_err(other)?;
    order.finalize_csr(csr.der()).await.map_err(rate_limit)?;
    let chain = order.poll_certificate(&RetryPolicy::new().timeout(CA_TIMEOUT)).await?;
    let leaf = first_certificate(chain.as_bytes()).ok_or_else(|| other("the CA sent no certificate"))?;
    let not_after = validity(&leaf).map_or_else(|| "?".to_string(), |(_, end)| format!("{end} (unix)"));
    store.save_certificate(m, &chain, &key.serialize_pem()).await?;
    Ok(not_after)
}
