//! The CA's metrics on the controller's metrics port, with istiod's names (its
//! Citadel server's) so its dashboards and alerts read them, and one of Strait's
//! own: every refusal by reason.

use prometheus::{Gauge, IntCounter, IntCounterVec, Opts, Registry};

/// Refusal reasons, as `strait_ca_refused_total`'s `reason` label gives them.
pub mod reason {
    /// No token, or one the API server did not authenticate.
    pub const TOKEN: &str = "token";
    /// The CSR asks for an identity other than the caller's.
    pub const IDENTITY: &str = "identity";
    /// The CSR is unreadable, or its signature does not verify.
    pub const CSR: &str = "csr";
    /// The controller cannot answer now (the API server is unreachable, the mesh
    /// config not read yet).
    pub const UNAVAILABLE: &str = "unavailable";
    /// Signing failed.
    pub const INTERNAL: &str = "internal";
    /// Every reason, for the families to show them at zero.
    pub const ALL: [&str; 5] = [TOKEN, IDENTITY, CSR, UNAVAILABLE, INTERNAL];
}

/// The CA's metric families.
#[derive(Debug, Clone)]
pub struct CaMetrics {
    /// `citadel_server_csr_count`: requests received.
    pub requests: IntCounter,
    /// `citadel_server_success_cert_issuance_count`: certificates signed.
    pub issued: IntCounter,
    /// `citadel_server_authentication_failure_count`: callers not authenticated.
    pub authentication_failures: IntCounter,
    /// `citadel_server_csr_parsing_err_count`: CSRs that could not be read.
    pub csr_errors: IntCounter,
    /// `citadel_server_id_extraction_err_count`: CSRs naming no identity, and tokens
    /// that are not a service account's.
    pub identity_errors: IntCounter,
    /// `citadel_server_csr_sign_err_count`: signing failures.
    pub sign_errors: IntCounter,
    /// `citadel_server_root_cert_expiry_timestamp`: when the root expires (Unix s).
    pub root_expiry: Gauge,
    /// `citadel_server_cert_chain_expiry_timestamp`: when the signing chain expires.
    pub chain_expiry: Gauge,
    /// `strait_ca_refused_total{reason}`: requests refused, by reason.
    pub refused: IntCounterVec,
}

impl CaMetrics {
    /// The families, registered in `registry` (the controller's).
    pub fn register(registry: &Registry) -> prometheus::Result<CaMetrics> {
        let counter = |name: &str, help: &str| IntCounter::new(name, help);
        let metrics = CaMetrics {
            requests: counter("citadel_server_csr_count", "Certificate signing requests received.")?,
            issued: counter(
                "citadel_server_success_cert_issuance_count",
                "Workload certificates signed.",
            )?,
            authentication_failures: counter(
                "citadel_server_authentication_failure_count",
                "Requests whose caller was not authenticated (no token, or a token the API server refused).",
            )?,
            csr_errors: counter(
                "citadel_server_csr_parsing_err_count",
                "CSRs that could not be read or whose signature does not verify.",
            )?,
            identity_errors: counter(
                "citadel_server_id_extraction_err_count",
                "CSRs naming no identity, and tokens that are not a service account's.",
            )?,
            sign_errors: counter("citadel_server_csr_sign_err_count", "Signing failures.")?,
            root_expiry: Gauge::new(
                "citadel_server_root_cert_expiry_timestamp",
                "When the CA's root certificate expires (Unix seconds).",
            )?,
            chain_expiry: Gauge::new(
                "citadel_server_cert_chain_expiry_timestamp",
                "When the CA's signing certificate chain expires (Unix seconds).",
            )?,
            refused: IntCounterVec::new(
                Opts::new("strait_ca_refused_total", "Certificate requests refused, by reason."),
                &["reason"],
            )?,
        };
        for family in [
            &metrics.requests,
            &metrics.issued,
            &metrics.authentication_failures,
            &metrics.csr_errors,
            &metrics.identity_errors,
            &metrics.sign_errors,
        ] {
            registry.register(Box::new(family.clone()))?;
        }
        registry.register(Box::new(metrics.root_expiry.clone()))?;
        registry.register(Box::new(metrics.chain_expiry.clone()))?;
        registry.register(Box::new(metrics.refused.clone()))?;
        for reason in reason::ALL {
            metrics.refused.with_label_values(&[reason]);
        }
        Ok(metrics)
    }
}
