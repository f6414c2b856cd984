//! TLS origination towards upstreams (DestinationRule `tls` SIMPLE and MUTUAL):
//! the trusted roots and client certificate of each cluster, read and checked
//! before a swap so that a bad file rejects the configuration instead of failing
//! connections later.

use std::sync::Arc;

use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::{parse_x509, CertKey, WrappedX509};
use strait_config::snapshot::{PemSource, UpstreamTls};
use strait_config::{Code, Diagnostic, Severity, Snapshot};

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
        match cluster.policy.tls.as_ref().map(compile) {
            None => out.push(None),
            Some(Ok(c)) => out.push(Some(Arc::new(c))),
            Some(Err(message)) => diags.push(Diagnostic {
                severity: Severity::Error,
                code: Code::InvalidCertificate,
                file: cluster.name.clone(),
                position: Default::default(),
                resource: None,
                field: Some("trafficPolicy.tls".into()),
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

/// The name and bytes of a PEM, from the bundle or read from its file.
pub(crate) fn read_pem(source: &PemSource) -> Result<(String, Vec<u8>), String> {
    match source {
        PemSource::Inline { name, pem } => Ok((name.clone(), pem.clone())),
        PemSource::File { path } => std::fs::read(path)
            .map(|pem| (path.clone(), pem))
            .map_err(|e| format!("cannot read {path}: {e}")),
    }
}

/// DER certificates of a PEM, each checked to parse (Pingora's wrapper panics on bad DER).
fn certificates(source: &PemSource) -> Result<Vec<Vec<u8>>, String> {
    let (name, pem) = read_pem(source)?;
    let ders: Vec<Vec<u8>> = rustls_pemfile::certs(&mut pem.as_slice())
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{name}: bad certificate PEM: {e}"))?;
    if ders.is_empty() {
        return Err(format!("{name}: no certificate in PEM"));
    }
    for der in &ders {
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("{name}: unreadable certificate: {e}"))?;
    }
    Ok(ders)
}

fn compile(tls: &UpstreamTls) -> Result<CompiledUpstreamTls, String> {
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
            let (name, pem) = read_pem(key)?;
            let key = rustls_pemfile::private_key(&mut pem.as_slice())
                .map_err(|e| format!("{name}: bad private key PEM: {e}"))?
                .ok_or_else(|| format!("{name}: no private key in PEM"))?;
            rustls::crypto::ring::sign::any_supported_type(&key)
                .map_err(|e| format!("{name}: unusable private key: {e}"))?;
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
