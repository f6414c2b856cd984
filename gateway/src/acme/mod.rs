//! ACME certificates for Gateways annotated `strait.io/acme` (see
//! `strait_config::acme`): ordered from the issuer named in the annotation, proven with
//! HTTP-01 (answered by the HTTP listeners) or TLS-ALPN-01 (answered by the HTTPS
//! listeners), and stored as a TLS Secret file in the ACME store (`--acme-store`),
//! which the folder source reads with the configuration: new handshakes get the
//! new certificate, open connections keep theirs.
//!
//! A certificate is renewed at two thirds of its lifetime (or inside the renewal
//! window the CA suggests, where it offers ACME Renewal Information); a failure keeps
//! the current certificate serving, is logged, and is retried with backoff (an hour
//! after a rate-limit answer). Replicas sharing the store take turns through a lock
//! file, and one that finds a fresh certificate already stored does not order again.

mod challenges;
mod manager;

pub use challenges::Challenges;
pub use manager::{AcmeError, AcmeManager};

/// Path prefix of HTTP-01 validation requests.
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";
