//! ACME certificates for Gateways annotated `strait.io/acme` (see
//! `strait_config::acme`): accounts, orders proven with HTTP-01 or TLS-ALPN-01,
//! renewal at two thirds of the lifetime or inside the window the CA suggests (ACME
//! Renewal Information), and backoff after failures (an hour after a rate-limit
//! answer).
//!
//! Where certificates and accounts are kept (`Store`) and how challenge answers reach
//! the listeners the CA calls (`Responder`) belong to whoever runs the `Renewer`: the
//! gateway keeps files in its ACME store and answers itself; the controller keeps
//! Kubernetes Secrets and publishes the answers to every gateway.

mod certificate;
mod order;
mod renewer;
mod store;

pub use certificate::{alpn_certificate, dns_names, first_certificate, validity};
pub use order::AcmeError;
pub use renewer::{OnFailure, Renewer};
pub use store::{Answer, Lock, Responder, Store, StoreError};
