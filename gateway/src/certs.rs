//! Server certificates: compiled from the snapshot's PEM (Secrets or files) into
//! rustls keys before a swap, selected per SNI name during the handshake, and the
//! SNI remembered on the connection so requests can be checked against it (421).

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use strait_config::snapshot::CertificateSource;
use strait_config::{Code, Diagnostic, Severity, Snapshot};

use crate::client_auth::PeerIdentity;
use crate::state::Shared;

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

/// Picks the certificate for a TLS listener by SNI, from the current snapshot.
#[derive(Debug)]
pub struct SniResolver {
    /// Engine state.
    pub shared: Arc<Shared>,
    /// The listener's Gateway port.
    pub port: u16,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let runtime = self.shared.current();
        let listener = runtime.snapshot.listener(self.port)?;
        // Without SNI (clients connecting by IP) the first server's certificate answers.
        let server = match hello.server_name() {
            Some(name) => strait_config::router::with_host(name, |h| listener.sni.lookup(h))?,
            None => 0,
        };
        let cert = listener.tls_servers.get(server)?.certificate;
        runtime.certs.get(cert).map(|c| c.key.clone())
    }
}

/// What the handshake told us, kept on the connection's TLS digest.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// The SNI name the client sent, lowercase.
    pub sni: Option<String>,
    /// The client, when it presented a certificate its server accepts.
    pub peer: Option<PeerIdentity>,
    /// Why the connection may not be used (closed before any request is read).
    pub refused: Option<String>,
}

/// Checks each handshake against its server and stores the outcome as `TlsInfo`.
#[derive(Debug)]
pub struct HandshakeInfo {
    /// Engine state.
    pub shared: Arc<Shared>,
    /// The listener's Gateway port.
    pub port: u16,
}

#[async_trait]
impl TlsAccept for HandshakeInfo {
    async fn handshake_complete_callback(&self, tls: &TlsRef) -> Option<Arc<dyn Any + Send + Sync>> {
        Some(Arc::new(crate::client_auth::inspect(
            &self.shared.current(),
            self.port,
            tls,
        )))
    }
}
