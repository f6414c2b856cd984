//! ACME certificates for Gateways annotated `strait.io/acme` (see
//! `strait_config::acme`): ordered from the issuer named in the annotation, proven with
//! HTTP-01 (answered by the HTTP listeners) or TLS-ALPN-01 (answered by the HTTPS
//! listeners), and stored as a TLS Secret file in the ACME store (`--acme-store`),
//! which the folder source reads with the configuration: new handshakes get the
//! new certificate, open connections keep theirs.
//!
//! The protocol, renewal and backoff are `strait_acme`'s; this module keeps the
//! certificates and accounts in the store and answers the challenges. Replicas
//! sharing the store take turns through a lock file, and one that finds a fresh
//! certificate already stored does not order again. With a controller, the
//! controller orders and the gateway answers the challenges it publishes.

mod challenges;
mod manager;

pub use challenges::Challenges;
pub use manager::AcmeManager;

/// Path prefix of HTTP-01 validation requests.
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";
