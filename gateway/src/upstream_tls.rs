//! TLS origination towards upstreams (DestinationRule `tls` SIMPLE and MUTUAL):
//! the trusted roots and client certificate of each cluster, read and checked
//! before a swap so that a bad file rejects the configuration instead of failing
//! connections later.

use std::sync::Arc;

use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::{parse_x509, CertKey, WrappedX509};
use strait_config::snapshot::{PemSource, UpstreamTls};
use strait_config::{Code, Diagnostic, Severity, Snapshot};

use crate::pem::{Pem, PemError};

/// One cluster's TLS material.
#[derive(Debug)]
pub struct CompiledUpstreamTls {
    /// Server name sent and verified.
    pub sni: String,
    /// Trusted roots (the system's when None).
    pub ca: Option<Arc<[WrappedX509]>>,
    /// Client certificate and key for MUTUAL.
    pub client: Option<Arc<CertKey>>,
    /// Verify the server's certificate and name.
    pub verify: bool,
    /// The SHA-256 of each trusted certificate, when every one of them is a
    /// self-signed server certificate that also says it is a CA (`openssl req
    /// -x509`'s default) and names the SNI: the server must present one of them.
    /// rustls refuses such a leaf (`CaUsedAsEndEntity`) where curl, OpenSSL and
    /// Envoy accept a leaf that is itself a trust anchor, so the chain check is
    /// replaced by this exact match after the handshake (the names were checked
    /// when the configuration was compiled).
    pub pinned: Option<Arc<[Vec<u8>]>>,
}

impl CompiledUpstreamTls {
    /// Applies this to a peer about to be connected.
    pub fn apply(&self, peer: &mut HttpPeer) {
        peer.options.ca = self.ca.clone();
        peer.client_cert_key = self.client.clone();
        // Pinned servers are checked by `accepts` once connected.
        let verify = self.verify && self.pinned.is_none();
        peer.options.verify_cert = verify;
        peer.options.verify_hostname = verify;
    }

    /// Whether the server certificate of a connection (its SHA-256, as Pingora's
    /// digest has it) is acceptable: always, unless the roots are pinned server
    /// certificates and it is none of them.
    pub fn accepts(&self, server_cert_sha256: &[u8]) -> bool {
        match &self.pinned {
            Some(pins) if self.verify => pins.iter().any(|p| p.as_slice() == server_cert_sha256),
            _ => true,
        }
    }
}

/// The TLS settings of every cluster, index-aligned with `snapshot.clusters`.
pub type Compiled = Vec<Option<Arc<CompiledUpstreamTls>>>;

/// Compiles the TLS settings of every cluster; with them, warnings (CA files that
/// hold the server's own certificate).
pub fn compile_all(snapshot: &Snapshot) -> Result<(Compiled, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut out = Vec::with_capacity(snapshot.clusters.len());
    let mut diags = Vec::new();
    let mut warnings = Vec::new();
    for cluster in &snapshot.clusters {
        match cluster.policy.tls.as_ref().map(|tls| (tls, compile(tls))) {
            None => out.push(None),
            Some((tls, Ok(c))) => {
                if c.pinned.is_some() {
                    warnings.push(tls.anchor.diag(
                        Severity::Warning,
                        Code::InvalidCertificate,
                        format!(
                            "cluster {}: caCertificates holds the server's own self-signed certificate marked as a CA (as `openssl req -x509` makes it); the server must present exactly that certificate",
                            cluster.name
                        ),
                    ));
                }
                out.push(Some(Arc::new(c)));
            }
            Some((tls, Err(e))) => diags.push(tls.anchor.diag(
                Severity::Error,
                Code::InvalidCertificate,
                format!("cluster {}: {e}", cluster.name),
            )),
        }
    }
    if diags.is_empty() {
        Ok((out, warnings))
    } else {
        Err(diags)
    }
}

/// Whether `der` is a self-signed certificate that says it is a CA and names
/// `sni` (a SAN DNS name, `*.` wildcards for one label, else its CN).
fn own_server_certificate(der: &[u8], sni: &str) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    // Self-issued is enough: the server must present this very certificate.
    let self_signed = cert.subject() == cert.issuer();
    let ca = cert.basic_constraints().ok().flatten().is_some_and(|b| b.value.ca);
    let sni = sni.to_ascii_lowercase();
    let matches = |name: &str| {
        let name = name.to_ascii_lowercase();
        match name.strip_prefix("*.") {
            Some(suffix) => sni.split_once('.').is_some_and(|(_, rest)| rest == suffix),
            None => name == sni,
        }
    };
    let sans = crate::pem::dns_names(&cert);
    let named = if sans.is_empty() {
        cert.subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .any(matches)
    } else {
        sans.iter().any(|n| matches(n))
    };
    self_signed && ca && named
}

/// DER certificates of a PEM source.
fn certificates(source: &PemSource) -> Result<Vec<Vec<u8>>, PemError> {
    let certs = Pem::read(source)?.parsed_certificates("certificate")?;
    Ok(certs.into_iter().map(|c| c.as_ref().to_vec()).collect())
}

fn compile(tls: &UpstreamTls) -> Result<CompiledUpstreamTls, PemError> {
    let mut pinned = None;
    let ca = match &tls.ca {
        Some(source) => {
            let ders = certificates(source)?;
            if !ders.is_empty() && ders.iter().all(|d| own_server_certificate(d, &tls.sni)) {
                let pins: Vec<Vec<u8>> = ders
                    .iter()
                    .map(|d| ring::digest::digest(&ring::digest::SHA256, d).as_ref().to_vec())
                    .collect();
                pinned = Some(Arc::from(pins));
            }
            let roots: Vec<WrappedX509> = ders.into_iter().map(|der| WrappedX509::new(der, parse_x509)).collect();
            Some(Arc::from(roots))
        }
        None => None,
    };
    let client = match &tls.client {
        Some((cert, key)) => {
            let chain = certificates(cert)?;
            let key_pem = Pem::read(key)?;
            let key = key_pem.private_key()?;
            rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| key_pem.unusable("private key", e))?;
            Some(Arc::new(CertKey::new(chain, key.secret_der().to_vec())))
        }
        None => None,
    };
    Ok(CompiledUpstreamTls {
        sni: tls.sni.clone(),
        ca,
        client,
        verify: !tls.insecure_skip_verify,
        pinned,
    })
}
