//! What the renewer reads of certificates, and the TLS-ALPN-01 challenge certificate.

/// The first certificate (DER) of a PEM chain.
pub fn first_certificate(pem: &[u8]) -> Option<Vec<u8>> {
    rustls_pemfile::certs(&mut &pem[..])
        .next()
        .and_then(Result::ok)
        .map(|c| c.as_ref().to_vec())
}

/// (notBefore, notAfter) of a certificate (DER), as seconds since the epoch.
pub fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some((
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    ))
}

/// The DNS names among a certificate's subjectAltNames, lowercase.
pub fn dns_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    cert.subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a certificate (DER) names every one of `hosts`.
pub(crate) fn covers(der: &[u8], hosts: &[String]) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    let names = dns_names(&cert);
    hosts.iter().all(|h| names.contains(h))
}

/// Of two certificates (DER), the one that expires last.
pub(crate) fn newest(a: Option<Vec<u8>>, b: Option<Vec<u8>>) -> Option<Vec<u8>> {
    let end = |c: &Vec<u8>| validity(c).map_or(0, |(_, e)| e);
    match (a, b) {
        (Some(a), Some(b)) => Some(if end(&b) > end(&a) { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// The TLS-ALPN-01 certificate for `name` (RFC 8737): self-signed, with the
/// acmeIdentifier extension holding the key authorization's digest; certificate and
/// key as one PEM text.
pub fn alpn_certificate(name: &str, digest: &[u8]) -> Result<String, rcgen::Error> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key)?;
    Ok(format!("{}{}", cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(names: &[&str]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .and_then(|p| p.self_signed(&key))
            .expect("cert");
        first_certificate(cert.pem().as_bytes()).expect("der")
    }

    #[test]
    fn a_certificate_covers_only_the_names_it_lists() {
        let der = issued(&["app.example.com", "API.example.com"]);
        let hosts = |h: &[&str]| h.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(covers(&der, &hosts(&["app.example.com", "api.example.com"])));
        assert!(!covers(&der, &hosts(&["app.example.com", "www.example.com"])));
        assert!(!covers(b"not a certificate", &hosts(&["app.example.com"])));
    }

    #[test]
    fn the_challenge_certificate_names_the_host_and_carries_its_key() {
        let pem = alpn_certificate("app.example.com", &[7; 32]).expect("made");
        assert!(pem.contains("BEGIN CERTIFICATE") && pem.contains("PRIVATE KEY"));
        let der = first_certificate(pem.as_bytes()).expect("der");
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parsed");
        assert_eq!(dns_names(&cert), ["app.example.com"]);
        // id-pe-acmeIdentifier (RFC 8737), critical.
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier");
        assert!(ext.critical);
    }
}
