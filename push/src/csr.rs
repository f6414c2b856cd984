//! A workload's key and certificate signing request: a new ECDSA P-256 key (what
//! Istio's agent makes by default) and a PKCS#10 request naming one SPIFFE ID as a
//! subjectAltName URI and nothing else, ready for `CaClient::sign`.

/// Why a key or a request cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SPIFFE ID is not `spiffe://<trust domain>/<path>` in ASCII.
    #[error("invalid SPIFFE ID {0:?}: expected spiffe://<trust domain>/ns/<namespace>/sa/<service account>")]
    SpiffeId(String),
    /// rcgen failed (key generation or encoding).
    #[error("cannot make the key or the request: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// A new private key and a CSR for it.
#[derive(Clone)]
pub struct WorkloadCsr {
    /// The private key, PKCS#8 PEM (`PRIVATE KEY`).
    pub key_pem: String,
    /// The request, PEM (`CERTIFICATE REQUEST`).
    pub csr_pem: String,
}

impl std::fmt::Debug for WorkloadCsr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("WorkloadCsr")
            .field("csr_pem", &self.csr_pem)
            .finish_non_exhaustive()
    }
}

/// The SPIFFE ID Istio gives a Kubernetes service account:
/// `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// A new ECDSA P-256 key and a CSR for `spiffe_id` (the only name it asks for; the
/// subject is empty, as Istio's agent leaves it).
pub fn workload_csr(spiffe_id: &str) -> Result<WorkloadCsr, Error> {
    let valid = spiffe_id
        .strip_prefix("spiffe://")
        .is_some_and(|rest| rest.contains('/') && !rest.starts_with('/'));
    if !valid {
        return Err(Error::SpiffeId(spiffe_id.into()));
    }
    let uri = rcgen::Ia5String::try_from(spiffe_id).map_err(|_| Error::SpiffeId(spiffe_id.into()))?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![rcgen::SanType::URI(uri)];
    let csr = params.serialize_request(&key)?;
    Ok(WorkloadCsr {
        key_pem: key.serialize_pem(),
        csr_pem: csr.pem()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_names_the_spiffe_id() {
        let id = spiffe_id("cluster.local", "shop", "web");
        assert_eq!(id, "spiffe://cluster.local/ns/shop/sa/web");
        let made = workload_csr(&id).expect("a CSR");
        assert!(made.csr_pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        assert!(made.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let parsed = rcgen::KeyPair::from_pem(&made.key_pem).expect("the key reads back");
        assert_eq!(parsed.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
        // The request carries the URI as text (DER IA5String), and no subject name.
        let der = rustls_pemfile::csr(&mut made.csr_pem.as_bytes())
            .expect("PEM")
            .expect("a CSR block");
        let bytes = der.as_ref();
        assert!(bytes.windows(id.len()).any(|w| w == id.as_bytes()));
        assert!(!format!("{made:?}").contains("PRIVATE"));
    }

    #[test]
    fn a_malformed_spiffe_id_is_refused() {
        for id in [
            "",
            "cluster.local/ns/a/sa/b",
            "spiffe://",
            "spiffe:///ns/a",
            "spiffe://td/ns/é/sa/b",
        ] {
            assert!(matches!(workload_csr(id), Err(Error::SpiffeId(_))), "{id}");
        }
    }
}
