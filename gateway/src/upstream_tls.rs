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
}

impl CompiledUpstreamTls {
    /// Applies this to a peer about to be connected.
    pub fn apply(&self, peer: &mut HttpPeer) {
        peer.options.ca = self.ca.clone();
        peer.client_cert_key = self.client.clone();
        peer.options.verify_cert = self.verify;
        peer.options.verify_hostname = self.verify;
    }
}

/// Compiles the TLS settings of every cluster, index-aligned with `snapshot.clusters`.
pub fn compile_all(snapshot: &Snapshot) -> Result<Vec<Option<Arc<CompiledUpstreamTls>>>, Vec<Diagnostic>> {
    let mut out = Vec::with_capacity(snapshot.clusters.len());
    let mut diags = Vec::new();
    for cluster in &snapshot.clusters {
        match cluster.policy.tls.as_ref().map(|tls| (tls, compile(tls))) {
            None => out.push(None),
            Some((_, Ok(c))) => out.push(Some(Arc::new(c))),
            Some((tls, Err(e))) => diags.push(tls.anchor.diag(
                Severity::Error,
                Code::InvalidCertificate,
                format!("cluster {}: {e}", cluster.name),
            )),
        }
    }
    if diags.is_empty() {
        Ok(out)
    } else {
        Err(diags)
    }
}

/// DER certificates of a PEM source.
fn certificates(source: &PemSource) -> Result<Vec<Vec<u8>>, PemError> {
    let certs = Pem::read(source)?.parsed_certificates("certificate")?;
    Ok(certs.into_iter().map(|c| c.as_ref().to_vec()).collect())
}

fn compile(tls: &UpstreamTls) -> Result<CompiledUpstreamTls, PemError> {
    let ca = match &tls.ca {
        Some(source) => {
            let roots: Vec<WrappedX509> = certificates(source)?
                .into_iter()
                .map(|der| WrappedX509::new(der, parse_x509))
                .collect();
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
    })
}
