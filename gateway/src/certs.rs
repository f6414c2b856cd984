//! Server certificates: compiled from the snapshot's PEM (Secrets or files) into
//! rustls keys before a swap (the TLS front selects them per SNI name).

use std::sync::Arc;
use std::time::Duration;

use rustls::sign::CertifiedKey;
use strait_config::snapshot::CertificateSource;
use strait_config::{Code, Diagnostic, Severity, Snapshot};

use crate::pem::{Pem, PemError};

/// A certificate ready for handshakes.
#[derive(Debug, Clone)]
pub struct CompiledCert {
    /// The snapshot's name for it.
    pub name: String,
    /// Chain and signing key.
    pub key: Arc<CertifiedKey>,
}

/// Compiles every certificate of `snapshot`; any failure rejects the configuration.
pub fn compile_certificates(snapshot: &Snapshot) -> Result<Vec<CompiledCert>, Vec<Diagnostic>> {
    let mut out = Vec::new();
    let mut diags = Vec::new();
    for cert in &snapshot.certificates {
        match compile(&cert.name, &cert.source) {
            Ok(key) => out.push(CompiledCert {
                name: cert.name.clone(),
                key: Arc::new(key),
            }),
            Err(e) => diags.push(
                cert.anchor
                    .diag(Severity::Error, Code::InvalidCertificate, e.to_string()),
            ),
        }
    }
    if diags.is_empty() {
        Ok(out)
    } else {
        Err(diags)
    }
}

fn compile(name: &str, source: &CertificateSource) -> Result<CertifiedKey, PemError> {
    let (cert, key) = match source {
        CertificateSource::Inline { cert_pem, key_pem } => (
            Pem {
                name: format!("{name} tls.crt"),
                bytes: cert_pem.clone(),
            },
            Pem {
                name: format!("{name} tls.key"),
                bytes: key_pem.clone(),
            },
        ),
        CertificateSource::Files { cert, key } => (Pem::file(cert)?, Pem::file(key)?),
        CertificateSource::SelfSigned { hosts } => {
            let (cert_pem, key_pem) = self_signed(hosts)?;
            let pem = |bytes| Pem {
                name: name.to_string(),
                bytes,
            };
            (pem(cert_pem), pem(key_pem))
        }
    };
    certified_key(&cert, &key)
}

/// A certificate chain and key, checked to belong together.
pub fn certified_key(cert: &Pem, key: &Pem) -> Result<CertifiedKey, PemError> {
    let certified = unchecked_key(cert, key)?;
    certified.keys_match().map_err(|source| PemError::Mismatch {
        name: cert.name.clone(),
        source,
    })?;
    Ok(certified)
}

/// A certificate chain and key, not checked against each other: the check parses the
/// certificate, which refuses critical extensions it does not know, such as
/// TLS-ALPN-01's acmeIdentifier.
pub fn unchecked_key(cert: &Pem, key: &Pem) -> Result<CertifiedKey, PemError> {
    let chain = cert.certificates("certificate")?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key.private_key()?)
        .map_err(|e| key.unusable("private key", e))?;
    Ok(CertifiedKey::new(chain, signer))
}

/// How long a stand-in certificate is valid. A day, as Caddy's and Traefik's
/// stand-ins are short-lived: an ACME order that stays stuck shows in
/// `strait_certificate_expiry_timestamp_seconds` as a certificate about to expire,
/// instead of hiding behind one valid for centuries. Each reload makes a new one.
pub const STAND_IN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A throwaway self-signed certificate and key (PEM) for `hosts`, valid for
/// `STAND_IN_LIFETIME` from now (and from an hour ago, for clocks a little behind).
pub fn self_signed(hosts: &[String]) -> Result<(Vec<u8>, Vec<u8>), PemError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(hosts.to_vec())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Strait self-signed (waiting for ACME)");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + STAND_IN_LIFETIME;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem().into_bytes(), key.serialize_pem().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stand_in_lives_a_day() {
        let (cert, _key) = self_signed(&["app.example.com".to_string()]).expect("a stand-in");
        let (_, pem) = x509_parser::pem::parse_x509_pem(&cert).expect("PEM");
        let parsed = pem.parse_x509().expect("a certificate");
        let validity = parsed.validity();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let ends = validity.not_after.timestamp() - now;
        // A day from now, give or take the test's own seconds.
        assert!((86_000..=86_400).contains(&ends), "valid for {ends} s more");
        assert!(validity.not_before.timestamp() <= now - 3_500);
    }
}
