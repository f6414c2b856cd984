//! Client certificates at the gateway (Gateway `tls.mode` MUTUAL and OPTIONAL_MUTUAL)
//! and the per-server TLS limits (versions, TLS 1.2 suites).
//!
//! The listener reads the ClientHello first (`tls_front`): when its SNI selects a
//! server that checks client certificates, the handshake runs with that server's own
//! verifier (its roots and CRL; a certificate required for MUTUAL), as Envoy's
//! per-SNI filter chains do. Pingora fixes a listener's protocol versions and suites,
//! so right after the handshake `inspect` checks those against the server's settings,
//! and the subject names of the certificate; a connection that fails there is closed
//! before any request is read.

use std::sync::Arc;

use http::HeaderValue;
use pingora::protocols::tls::TlsRef;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use strait_config::snapshot::{ClientAuth, PemSource, TlsVersion};
use strait_config::{Code, Diagnostic, Severity, Snapshot};

use crate::pem::{Pem, PemError};

/// One server's compiled client-certificate check.
#[derive(Debug)]
pub struct ServerAuth {
    verifier: Arc<dyn ClientCertVerifier>,
    required: bool,
    subject_alt_names: Vec<String>,
}

/// Client authentication of a snapshot.
#[derive(Debug, Default)]
pub struct ClientAuthTable {
    /// By listener index, then TLS server index.
    servers: Vec<Vec<Option<Arc<ServerAuth>>>>,
}

/// The client a verified certificate names.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    /// Istio's principal: the SPIFFE ID without `spiffe://`, else the first URI or DNS
    /// subject name, else the subject's common name.
    pub principal: String,
    /// `x-forwarded-client-cert` for the upstream, as Envoy's SANITIZE_SET writes it.
    pub xfcc: Option<HeaderValue>,
}

fn roots_into(store: &mut RootCertStore, source: &PemSource) -> Result<(), PemError> {
    let pem = Pem::read(source)?;
    for cert in pem.certificates("CA certificate")? {
        store.add(cert).map_err(|e| pem.unusable("CA certificate", e))?;
    }
    Ok(())
}

fn verifier(auth: &ClientAuth) -> Result<Arc<dyn ClientCertVerifier>, PemError> {
    let mut roots = RootCertStore::empty();
    roots_into(&mut roots, &auth.ca)?;
    let revoked = match &auth.crl {
        Some(crl) => Pem::read(crl)?.crls()?,
        None => Vec::new(),
    };
    Ok(
        WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .with_crls(revoked)
        // Envoy checks the leaf against the CRL; the CRL need not cover intermediates.
        .only_check_end_entity_revocation()
        .allow_unknown_revocation_status()
        // Whether a certificate is required is `ServerVerifier`'s decision.
        .allow_unauthenticated()
        .build()?,
    )
}

/// Compiles the client-certificate checks of `snapshot`; a bad CA or CRL rejects it.
pub fn compile(snapshot: &Snapshot) -> Result<ClientAuthTable, Vec<Diagnostic>> {
    let mut table = ClientAuthTable::default();
    let mut diags = Vec::new();
    for listener in &snapshot.listeners {
        let mut servers = Vec::with_capacity(listener.tls_servers.len());
        for server in &listener.tls_servers {
            let compiled = match &server.client_auth {
                None => None,
                Some(auth) => match verifier(auth) {
                    Ok(v) => Some(Arc::new(ServerAuth {
                        verifier: v,
                        required: auth.required,
                        subject_alt_names: auth.subject_alt_names.clone(),
                    })),
                    Err(e) => {
                        diags.push(
                            auth.anchor
                                .diag(Severity::Error, Code::InvalidCertificate, e.to_string()),
                        );
                        None
                    }
                },
            };
            servers.push(compiled);
        }
        table.servers.push(servers);
    }
    if diags.is_empty() {
        Ok(table)
    } else {
        Err(diags)
    }
}

impl ClientAuthTable {
    /// The client-certificate check of a listener's TLS server, if it has one.
    pub fn server(&self, listener: usize, server: usize) -> Option<Arc<ServerAuth>> {
        self.servers.get(listener)?.get(server)?.clone()
    }
}

/// The client verifier of one server, used when the ClientHello's SNI selects it: the
/// handshake then checks the certificate against that server's own roots and
/// requires one for MUTUAL, as Envoy's per-SNI filter chains do.
#[derive(Debug)]
pub struct ServerVerifier(pub Arc<ServerAuth>);

impl ClientCertVerifier for ServerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.verifier.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0.verifier.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verifier.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verifier.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.verifier.supported_verify_schemes()
    }
}

/// The names a certificate carries.
#[derive(Debug, Default)]
struct CertNames {
    uris: Vec<String>,
    dns: Vec<String>,
    subject: String,
    common_name: Option<String>,
}

fn names(der: &[u8]) -> Option<CertNames> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut out = CertNames {
        subject: cert.subject().to_string(),
        common_name: cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string),
        ..CertNames::default()
    };
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::URI(u) => out.uris.push(u.to_string()),
                x509_parser::extensions::GeneralName::DNSName(d) => out.dns.push(d.to_string()),
                _ => {}
            }
        }
    }
    Some(out)
}

/// The identity a client certificate (DER) names, already verified by the caller,
/// for a proxy whose own certificate names `by` (its SPIFFE ID): its
/// `x-forwarded-client-cert` starts with `By=`, as Envoy writes it when the proxy's
/// certificate has a URI name (Istio's sidecars).
pub fn peer_identity(der: &[u8], by: &str) -> Option<PeerIdentity> {
    identity(der, names(der)?, Some(by))
}

fn identity(der: &[u8], names: CertNames, by: Option<&str>) -> Option<PeerIdentity> {
    let principal = names
        .uris
        .iter()
        .find_map(|u| u.strip_prefix("spiffe://"))
        .map(str::to_string)
        .or_else(|| names.uris.first().cloned())
        .or_else(|| names.dns.first().cloned())
        .or(names.common_name)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let hash: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let mut xfcc = by.map(|b| format!("By={b};")).unwrap_or_default();
    xfcc.push_str(&format!(
        "Hash={hash};Subject=\"{}\"",
        names.subject.replace('"', "\\\"")
    ));
    for u in &names.uris {
        xfcc.push_str(&format!(";URI={u}"));
    }
    for d in &names.dns {
        xfcc.push_str(&format!(";DNS={d}"));
    }
    Some(PeerIdentity {
        principal,
        xfcc: HeaderValue::from_str(&xfcc).ok(),
    })
}

fn version_of(name: &str) -> Option<TlsVersion> {
    match name {
        "TLSv1_2" => Some(TlsVersion::Tls12),
        "TLSv1_3" => Some(TlsVersion::Tls13),
        _ => None,
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

/// Checks a finished handshake on the listener of `port` against the server its SNI
/// selected.
pub fn inspect(snapshot: &Snapshot, table: &ClientAuthTable, port: u16, tls: &TlsRef) -> TlsInfo {
    let sni = tls.server_name().map(str::to_ascii_lowercase);
    let mut info = TlsInfo {
        sni,
        peer: None,
        refused: None,
    };
    let Some((li, listener)) = snapshot.listeners.iter().enumerate().find(|(_, l)| l.port == port) else {
        return info;
    };
    let server_index = match &info.sni {
        Some(name) => strait_config::router::with_host(name, |h| listener.sni.lookup(h)),
        None => Some(0),
    };
    let Some((si, server)) = server_index.and_then(|i| Some((i, listener.tls_servers.get(i)?))) else {
        return info;
    };
    let version = tls.version().and_then(version_of);
    if version
        .is_some_and(|v| server.min_version.is_some_and(|min| v < min) || server.max_version.is_some_and(|max| v > max))
    {
        info.refused = Some(format!(
            "{} is outside the server's protocol versions",
            tls.version().unwrap_or("")
        ));
        return info;
    }
    if version == Some(TlsVersion::Tls12) && !server.cipher_suites.is_empty() {
        let suite = tls.current_cipher_name().unwrap_or("");
        if !server.cipher_suites.iter().any(|s| s == suite) {
            info.refused = Some(format!("cipher suite {suite} is not in the server's cipherSuites"));
            return info;
        }
    }
    let Some(auth) = table.servers.get(li).and_then(|s| s.get(si)).and_then(Option::as_ref) else {
        return info;
    };
    let chain = tls.peer_cert_chain_der().unwrap_or(&[]);
    let Some((leaf, intermediates)) = chain.split_first() else {
        if auth.required {
            info.refused = Some("client certificate required".into());
        }
        return info;
    };
    if let Err(e) = auth.verifier.verify_client_cert(leaf, intermediates, UnixTime::now()) {
        info.refused = Some(format!("client certificate not accepted for this host: {e}"));
        return info;
    }
    let cert_names = names(leaf).unwrap_or_default();
    if !auth.subject_alt_names.is_empty()
        && !cert_names
            .uris
            .iter()
            .chain(cert_names.dns.iter())
            .any(|n| auth.subject_alt_names.contains(n))
    {
        info.refused = Some("client certificate names none of the server's subjectAltNames".into());
        return info;
    }
    let Some(peer) = identity(leaf, cert_names, None) else {
        info.refused = Some("client certificate names no identity".into());
        return info;
    };
    info.peer = Some(peer);
    info
}
