//! Certificate signing requests as the CA reads them: PEM, signed by the key they
//! carry (so the caller holds that key), and the names they ask for. Nothing else
//! of a request is used: the CA sets every field of what it signs.

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

/// Why a request is unusable.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not a PEM `CERTIFICATE REQUEST`.
    #[error("the CSR is not a PEM CERTIFICATE REQUEST")]
    NotPem,
    /// Not a PKCS#10 request.
    #[error("the CSR is malformed: {0}")]
    Malformed(String),
    /// Its signature does not verify with its own key.
    #[error("the CSR's signature does not verify with its public key")]
    Signature,
    /// A key the CA cannot put in a certificate.
    #[error("the CSR's public key is of an unsupported type (ECDSA P-256/P-384, RSA and Ed25519 are)")]
    Key,
}

/// What a request asks for.
#[derive(Debug)]
pub struct Request {
    /// Its public key, as the certificate will carry it.
    pub public_key: rcgen::SubjectPublicKeyInfo,
    /// The subjectAltNames it asks for, written `URI:...`, `DNS:...`, `IP:...`,
    /// `email:...` (`other` for any other kind).
    pub names: Vec<String>,
}

/// Reads and checks the PEM request `pem`.
pub fn parse(pem: &str) -> Result<Request, Error> {
    let der = rustls_pemfile::csr(&mut pem.as_bytes())
        .ok()
        .flatten()
        .ok_or(Error::NotPem)?;
    let (_, csr) = X509CertificationRequest::from_der(der.as_ref()).map_err(|e| Error::Malformed(e.to_string()))?;
    csr.verify_signature().map_err(|_| Error::Signature)?;
    let info = &csr.certification_request_info;
    let public_key = rcgen::SubjectPublicKeyInfo::from_der(info.subject_pki.raw).map_err(|_| Error::Key)?;
    let mut names = Vec::new();
    for extension in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = extension {
            names.extend(san.general_names.iter().map(name));
        }
    }
    Ok(Request { public_key, names })
}

fn name(general: &GeneralName<'_>) -> String {
    match general {
        GeneralName::URI(uri) => format!("URI:{uri}"),
        GeneralName::DNSName(dns) => format!("DNS:{dns}"),
        GeneralName::RFC822Name(email) => format!("email:{email}"),
        GeneralName::IPAddress(bytes) => match <[u8; 4]>::try_from(*bytes) {
            Ok(v4) => format!("IP:{}", std::net::Ipv4Addr::from(v4)),
            Err(_) => match <[u8; 16]>::try_from(*bytes) {
                Ok(v6) => format!("IP:{}", std::net::Ipv6Addr::from(v6)),
                Err(_) => "IP:?".into(),
            },
        },
        _ => "other".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reads_its_names_and_a_tampered_one_is_refused() {
        let made = strait_push::csr::workload_csr("spiffe://cluster.local/ns/a/sa/b").expect("CSR");
        let request = parse(&made.csr_pem).expect("parsed");
        assert_eq!(request.names, ["URI:spiffe://cluster.local/ns/a/sa/b"]);

        // The same request with `sa/b` changed to `sa/c`: the signature no longer holds.
        let der = rustls_pemfile::csr(&mut made.csr_pem.as_bytes())
            .expect("PEM")
            .expect("a block");
        let mut bytes = der.as_ref().to_vec();
        let at = bytes
            .windows(4)
            .position(|w| w == b"sa/b")
            .expect("the name in the DER");
        bytes[at + 3] = b'c';
        let tampered = pem_of(&bytes);
        assert!(matches!(parse(&tampered), Err(Error::Signature)));
        assert!(matches!(parse("garbage"), Err(Error::NotPem)));
        assert!(matches!(
            parse(&pem_of(b"\x30\x03\x02\x01\x00")),
            Err(Error::Malformed(_))
        ));
    }

    fn pem_of(der: &[u8]) -> String {
        crate::ca::authority::pem(der).replace("CERTIFICATE", "CERTIFICATE REQUEST")
    }
}
