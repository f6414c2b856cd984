//! What the renewer needs from whoever runs it: somewhere to keep accounts and
//! certificates, and a way to put challenge answers where the CA will look.

use async_trait::async_trait;
use strait_config::acme::ManagedCert;

/// A store or responder failure, as its owner words it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> StoreError {
        StoreError(e.to_string())
    }
}

/// Held while one certificate is ordered; dropping it lets others order.
pub type Lock = Box<dyn Send>;

/// Where accounts and issued certificates are kept.
#[async_trait]
pub trait Store: Send + Sync {
    /// The account credentials (instant-acme's JSON) kept for `issuer`, if any.
    async fn account(&self, issuer: &str) -> Result<Option<String>, StoreError>;
    /// Keeps the credentials of a new account with `issuer`.
    async fn save_account(&self, issuer: &str, credentials: &str) -> Result<(), StoreError>;
    /// Forgets the account (the CA no longer knows it).
    async fn forget_account(&self, issuer: &str);
    /// The leaf (DER) of the certificate kept for `m`, perhaps not served yet.
    async fn stored_leaf(&self, m: &ManagedCert) -> Option<Vec<u8>>;
    /// Keeps a newly issued certificate (chain and key, PEM) where the gateways
    /// serving `m` will load it.
    async fn save_certificate(&self, m: &ManagedCert, chain_pem: &str, key_pem: &str) -> Result<(), StoreError>;
    /// The right to order `m`'s certificate now; None while another replica holds it.
    async fn lock(&self, m: &ManagedCert) -> Result<Option<Lock>, StoreError>;
}

/// The answer to one challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// HTTP-01: `key_authorization` served at `/.well-known/acme-challenge/<token>`.
    Http {
        /// The challenge's token.
        token: String,
        /// What the CA expects to read.
        key_authorization: String,
    },
    /// TLS-ALPN-01: a handshake for `name` offering `acme-tls/1` gets this certificate.
    TlsAlpn {
        /// The name being proven.
        name: String,
        /// The challenge certificate and its key, PEM.
        pem: String,
    },
}

/// Puts challenge answers where the CA will look for them.
#[async_trait]
pub trait Responder: Send + Sync {
    /// Publishes `answers`; when it returns, the listeners the CA calls must be
    /// able to give them.
    async fn publish(&self, answers: &[Answer]) -> Result<(), StoreError>;
    /// Withdraws answers whose validation is over.
    async fn withdraw(&self, answers: &[Answer]);
}
