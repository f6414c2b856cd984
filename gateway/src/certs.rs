//! Server certificates: compiled from the snapshot's PEM (Secrets or files) into
//! rustls keys before a swap (the TLS front selects them per SNI name).

use std::sync::Arc;

use rustls::sign::CertifiedKey;
use strait_config::snapshot::CertificateSource;
use strait_config::{Code, Diagnostic, Severity, Snapshot};

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
        match compile(&cert.source) {
            Ok(key) => out.push(CompiledCert {
                name: cert.name.clone(),
                key: Arc::new(key),
            }),
            Err(message) => diags.push(Diagnostic {
                severity: Severity::Error,
                code: Code::InvalidCertificate,
                file: cert.name.clone(),
                position: Default::default(),
                resource: None,
                field: None,
                message,
            }),
        }
    }
    if diags.is_empty() {
        Ok(out)
    } else {
        Err(diags)
    }
}

fn compile(source: &CertificateSource) -> Result<CertifiedKey, String> {
    let (cert_pem, key_pem) = match source {
        CertificateSource::Inline { cert_pem, key_pem } => (cert_pem.clone(), key_pem.clone()),
        CertificateSource::Files { cert, key } => (
            std::fs::read(cert).map_err(|e| format!("cannot read {cert}: {e}"))?,
            std::fs::read(key).map_err(|e| format!("cannot read {key}: {e}"))?,
        ),
        CertificateSource::SelfSigned { hosts } => self_signed(hosts)?,
    };
    certified_key(&cert_pem, &key_pem)
}

/// A certificate chain and key, from PEM, checked to belong together.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let certified = unchecked_key(cert_pem, key_pem)?;
    certified
        .keys_match()
        .map_err(|e| format!("certificate and key do not match: {e}"))?;
    Ok(certified)
}

/// A certificate chain and key from PEM, not checked against each other: the check
/// parses the certificate, which refuses critical extensions it does not know, such
/// as TLS-ALPN-01's acmeIdentifier.
pub fn unchecked_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let chain: Vec<_> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad certificate PEM: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate in PEM".into());
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| format!("bad private key PEM: {e}"))?
        .ok_or("no private key in PEM")?;
    let signer =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| format!("unusable private key: {e}"))?;
    Ok(CertifiedKey::new(chain, signer))
}

/// A throwaway self-signed certificate and key (PEM) for `hosts`.
pub fn self_signed(hosts: &[String]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::new(hosts.to_vec()).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Strait self-signed (waiting for ACME)");
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok((cert.pem().into_bytes(), key.serialize_pem().into_bytes()))
}
