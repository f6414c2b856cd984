//! The CA's signing key and certificates, and the certificates it issues: workload
//! certificates (one SPIFFE ID) and the controller's own TLS certificate.
//!
//! An `Authority` is made from PEM only, whether the PEM was generated a moment
//! ago (`generate_root`), read back from `istio-ca-secret`, or plugged in by the
//! operator (`cacerts`): one path checks them all. The check is what a TLS peer
//! will do with the chains it is sent: the key belongs to the signing certificate,
//! that certificate is a CA, each certificate is signed by the next, and the chain
//! ends at a root of `root-cert.pem`.

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::SecureRandom;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;

use super::der::{sequence, tlv};
use super::keys;

/// How far back a new certificate's notBefore is set, for peers whose clocks are
/// behind the controller's.
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// How long a root Strait generates lives (Istio's self-signed root: 10 years).
pub const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The subjectAltName extension's OID.
const SUBJECT_ALT_NAME: &[u64] = &[2, 5, 29, 17];

/// Why a CA cannot be made from its PEM, or cannot sign.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A certificate PEM holds no certificate or a malformed one.
    #[error("{what}: {reason}")]
    Certificate {
        /// Which file (`ca-cert.pem`, ...).
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The private key cannot be used.
    #[error("ca-key.pem: {0}")]
    Key(#[from] keys::Error),
    /// The certificates do not form a chain the CA can sign under.
    #[error("{0}")]
    Chain(String),
    /// rcgen failed to build or sign a certificate.
    #[error("cannot sign: {0}")]
    Sign(#[from] rcgen::Error),
}

/// A CA that signs.
pub struct Authority {
    /// The signing certificate's parameters (as rcgen takes an issuer), signed by
    /// the signing key only to give rcgen the `Certificate` it asks for.
    issuer: rcgen::Certificate,
    key: KeyPair,
    /// From the signing certificate to the root, one PEM each.
    chain: Vec<String>,
    /// Every root of `root-cert.pem` (or the self-signed root): what peers trust.
    roots_pem: String,
    /// When the first certificate of the chain expires: no certificate issued
    /// outlives it.
    expires: OffsetDateTime,
    /// When the chain's root expires.
    root_expires: OffsetDateTime,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("chain", &self.chain.len())
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// A new self-signed root: (certificate PEM, PKCS#8 key PEM), ECDSA P-256.
pub fn generate_root() -> Result<(String, String), Error> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "Strait");
    params
        .distinguished_name
        .push(DnType::CommonName, "Strait mesh root CA");
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - BACKDATE;
    params.not_after = now + ROOT_TTL;
    params.serial_number = Some(serial()?);
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A random positive 128-bit serial number (rcgen's default derives it from the
/// public key, which a renewal with the same key would repeat).
fn serial() -> Result<SerialNumber, Error> {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Chain("no randomness for a serial number".into()))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// The DER certificates of `pem`, in order.
fn ders(what: &'static str, pem: &str) -> Result<Vec<Vec<u8>>, Error> {
    let certs = strait_push::tls::certificates(pem).map_err(|e| Error::Certificate {
        what,
        reason: e.to_string(),
    })?;
    Ok(certs.into_iter().map(|c| c.to_vec()).collect())
}

fn parse<'a>(what: &'static str, der: &'a [u8]) -> Result<X509Certificate<'a>, Error> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| Error::Certificate {
            what,
            reason: e.to_string(),
        })
}

/// `der` as one PEM block.
pub(crate) fn pem(der: &[u8]) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out + "-----END CERTIFICATE-----\n"
}

fn is_self_signed(cert: &X509Certificate<'_>) -> bool {
    cert.subject().as_raw() == cert.issuer().as_raw() && cert.verify_signature(None).is_ok()
}

fn signs(issuer: &X509Certificate<'_>, cert: &X509Certificate<'_>) -> bool {
    issuer.subject().as_raw() == cert.issuer().as_raw() && cert.verify_signature(Some(issuer.public_key())).is_ok()
}

fn subject(cert: &X509Certificate<'_>) -> String {
    cert.subject().to_string()
}

impl Authority {
    /// The CA of `ca_cert` (its first certificate signs) and `ca_key`. `cert_chain`
    /// is the chain from `ca_cert` up (Istio's `cert-chain.pem`; empty: `ca_cert`
    /// alone) and `root_cert` the roots (`root-cert.pem`; empty: the chain ends
    /// at a self-signed root).
    pub fn from_pem(ca_cert: &str, ca_key: &str, cert_chain: &str, root_cert: &str) -> Result<Authority, Error> {
        let signing = ders("ca-cert.pem", ca_cert)?
            .into_iter()
            .next()
            .ok_or(Error::Certificate {
                what: "ca-cert.pem",
                reason: "no CERTIFICATE block".into(),
            })?;
        let key = keys::key_pair(ca_key)?;
        let mut chain = ders("cert-chain.pem", cert_chain)?;
        if chain.first() != Some(&signing) {
            chain.insert(0, signing.clone());
        }
        let roots = ders("root-cert.pem", root_cert)?;
        let parsed: Vec<X509Certificate<'_>> = chain
            .iter()
            .map(|der| parse("cert-chain.pem", der))
            .collect::<Result<_, _>>()?;
        let parsed_roots: Vec<X509Certificate<'_>> = roots
            .iter()
            .map(|der| parse("root-cert.pem", der))
            .collect::<Result<_, _>>()?;
        let ca = &parsed[0];
        if ca.public_key().raw != key.public_key_der().as_slice() {
            return Err(Error::Chain(format!(
                "ca-key.pem is not the key of ca-cert.pem ({})",
                subject(ca)
            )));
        }
        let is_ca = ca.basic_constraints().ok().flatten().is_some_and(|b| b.value.ca);
        let may_sign = ca.key_usage().ok().flatten().is_none_or(|k| k.value.key_cert_sign());
        if !is_ca || !may_sign {
            return Err(Error::Chain(format!(
                "ca-cert.pem ({}) is not a CA certificate (basicConstraints CA:TRUE and keyCertSign)",
                subject(ca)
            )));
        }
        for pair in parsed.windows(2) {
            if !signs(&pair[1], &pair[0]) {
                return Err(Error::Chain(format!(
                    "cert-chain.pem: {} is not signed by the certificate after it ({})",
                    subject(&pair[0]),
                    subject(&pair[1])
                )));
            }
        }
        let top = &parsed[parsed.len() - 1];
        // The chain ends at the root: the top itself when it is one of the roots (or
        // self-signed with no root-cert.pem), else the root that signed it.
        let top_der = &chain[chain.len() - 1];
        let root_index = roots.iter().position(|r| r == top_der);
        let (root_der, roots_pem) = match root_index {
            Some(i) => (None, roots[i].clone()),
            None if roots.is_empty() && is_self_signed(top) => (None, top_der.clone()),
            None => {
                let i = parsed_roots.iter().position(|r| signs(r, top)).ok_or_else(|| {
                    Error::Chain(format!(
                        "no root of root-cert.pem signed {} (issuer {})",
                        subject(top),
                        top.issuer()
                    ))
                })?;
                (Some(roots[i].clone()), roots[i].clone())
            }
        };
        let root_expires = parse("root-cert.pem", &roots_pem)?.validity().not_after.to_datetime();
        let roots_pem = if roots.is_empty() {
            pem(&roots_pem)
        } else {
            roots.iter().map(|der| pem(der)).collect()
        };
        let expires = parsed
            .iter()
            .map(|c| c.validity().not_after.to_datetime())
            .chain([root_expires])
            .min()
            .unwrap_or(root_expires);
        let mut chain_pem: Vec<String> = chain.iter().map(|der| pem(der)).collect();
        chain_pem.extend(root_der.as_deref().map(pem));
        let issuer = CertificateParams::from_ca_cert_der(&signing.clone().into())?.self_signed(&key)?;
        let authority = Authority {
            issuer,
            key,
            chain: chain_pem,
            roots_pem,
            expires,
            root_expires,
        };
        authority.check_issuer_name(ca)?;
        Ok(authority)
    }

    /// rcgen writes the issuer's name from its parsed attributes; a name it cannot
    /// reproduce byte for byte (repeated attributes, say) would give certificates
    /// whose issuer no peer matches to the CA. Refused here rather than then.
    fn check_issuer_name(&self, ca: &X509Certificate<'_>) -> Result<(), Error> {
        let probe = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let der = self.issue(
            &probe,
            vec![SanType::DnsName(rcgen::Ia5String::try_from("probe.invalid")?)],
            Duration::from_secs(60),
        )?;
        let cert = parse("a probe certificate", &der)?;
        if cert.issuer().as_raw() != ca.subject().as_raw() || cert.verify_signature(Some(ca.public_key())).is_err() {
            return Err(Error::Chain(format!(
                "the subject of ca-cert.pem ({}) cannot be written back exactly as an issuer name",
                subject(ca)
            )));
        }
        Ok(())
    }

    /// The roots peers are to trust (`root-cert.pem`), PEM.
    pub fn roots_pem(&self) -> &str {
        &self.roots_pem
    }

    /// The chain from the signing certificate to the root, one PEM each.
    pub fn chain(&self) -> &[String] {
        &self.chain
    }

    /// When the chain's first certificate expires (no certificate issued outlives it).
    pub fn expires(&self) -> OffsetDateTime {
        self.expires
    }

    /// When the root expires.
    pub fn root_expires(&self) -> OffsetDateTime {
        self.root_expires
    }

    /// A workload certificate for `public_key` naming `spiffe_id` only, valid from a
    /// little before now for `ttl` (at most until the CA expires): the chain, leaf
    /// first, root last, one PEM each.
    pub fn sign_workload(
        &self,
        public_key: &impl rcgen::PublicKeyData,
        spiffe_id: &str,
        ttl: Duration,
    ) -> Result<Vec<String>, Error> {
        let uri = spiffe_id.as_bytes();
        // GeneralNames with one uniformResourceIdentifier ([6] IA5String).
        let names = sequence(&[&tlv(0x86, uri)]);
        let mut san = CustomExtension::from_oid_content(SUBJECT_ALT_NAME, names);
        // The subject is empty, so the names must be critical (RFC 5280 4.2.1.6).
        san.set_criticality(true);
        let der = self.issue_with(public_key, Vec::new(), vec![san], ttl, true)?;
        Ok(self.with_chain(&der))
    }

    /// The controller's serving certificate for `key`, naming `dns` and `ips`.
    pub fn sign_server(
        &self,
        key: &KeyPair,
        dns: &[String],
        ips: &[IpAddr],
        ttl: Duration,
    ) -> Result<Vec<String>, Error> {
        let mut names = Vec::new();
        for name in dns {
            names.push(SanType::DnsName(rcgen::Ia5String::try_from(name.as_str())?));
        }
        names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let der = self.issue(key, names, ttl)?;
        Ok(self.with_chain(&der))
    }

    fn with_chain(&self, leaf: &[u8]) -> Vec<String> {
        let mut chain = vec![pem(leaf)];
        chain.extend(self.chain.iter().cloned());
        chain
    }

    /// A server certificate with `names` (subject: the first of them).
    fn issue(&self, key: &impl rcgen::PublicKeyData, names: Vec<SanType>, ttl: Duration) -> Result<Vec<u8>, Error> {
        self.issue_with(key, names, Vec::new(), ttl, false)
    }

    fn issue_with(
        &self,
        public_key: &impl rcgen::PublicKeyData,
        names: Vec<SanType>,
        extensions: Vec<CustomExtension>,
        ttl: Duration,
        client_auth: bool,
    ) -> Result<Vec<u8>, Error> {
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if let Some(SanType::DnsName(first)) = names.first() {
            params.distinguished_name.push(DnType::CommonName, first.as_str());
        }
        params.subject_alt_names = names;
        params.custom_extensions = extensions;
        params.not_before = now - BACKDATE;
        params.not_after = (now + ttl).min(self.expires);
        params.serial_number = Some(serial()?);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if client_auth {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        Ok(params.signed_by(public_key, &self.issuer, &self.key)?.der().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intermediate(root: &Authority) -> (String, String) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::OrganizationName, "Test");
        params.distinguished_name.push(DnType::CommonName, "Test intermediate");
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params.not_before = now - BACKDATE;
        params.not_after = now + Duration::from_secs(3600 * 24 * 30);
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &root.issuer, &root.key).expect("signed");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_generated_root_reads_back_and_signs_a_workload() {
        let (cert, key) = generate_root().expect("a root");
        let ca = Authority::from_pem(&cert, &key, "", "").expect("an authority");
        assert_eq!(ca.chain(), std::slice::from_ref(&cert));
        assert_eq!(ca.roots_pem(), cert);
        let workload = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let chain = ca
            .sign_workload(&workload, "spiffe://cluster.local/ns/a/sa/b", Duration::from_secs(3600))
            .expect("signed");
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1], cert);
        let der = strait_push::tls::certificates(&chain[0]).expect("PEM").remove(0);
        let (_, leaf) = x509_parser::parse_x509_certificate(&der).expect("X.509");
        let san = leaf.subject_alternative_name().expect("parsed").expect("a SAN");
        assert!(san.critical);
        assert_eq!(
            san.value.general_names,
            [x509_parser::extensions::GeneralName::URI(
                "spiffe://cluster.local/ns/a/sa/b"
            )]
        );
        assert!(leaf.subject().as_raw().len() <= 2, "an empty subject");
        let ttl = leaf.validity().not_after.timestamp() - OffsetDateTime::now_utc().unix_timestamp();
        assert!((3590..=3600).contains(&ttl), "{ttl}");
        assert!(!leaf.is_ca());
    }

    #[test]
    fn an_intermediate_chains_to_its_root_and_mismatches_are_refused() {
        let (root_cert, root_key) = generate_root().expect("a root");
        let root = Authority::from_pem(&root_cert, &root_key, "", "").expect("root");
        let (mid_cert, mid_key) = intermediate(&root);
        // Istio's layout: cert-chain.pem is the intermediate then the root.
        let ca = Authority::from_pem(&mid_cert, &mid_key, &format!("{mid_cert}{root_cert}"), &root_cert)
            .expect("plugged in");
        assert_eq!(ca.chain(), [mid_cert.clone(), root_cert.clone()]);
        // Without the root in cert-chain.pem, it is added from root-cert.pem.
        let ca = Authority::from_pem(&mid_cert, &mid_key, "", &root_cert).expect("plugged in");
        assert_eq!(ca.chain(), [mid_cert.clone(), root_cert.clone()]);
        assert!(ca.expires() < ca.root_expires());

        let (other_cert, other_key) = generate_root().expect("another root");
        let wrong_key = Authority::from_pem(&mid_cert, &other_key, "", &root_cert).expect_err("wrong key");
        assert!(wrong_key.to_string().contains("not the key"), "{wrong_key}");
        let wrong_root = Authority::from_pem(&mid_cert, &mid_key, "", &other_cert).expect_err("wrong root");
        assert!(wrong_root.to_string().contains("no root"), "{wrong_root}");
        let no_root = Authority::from_pem(&mid_cert, &mid_key, "", "").expect_err("no root");
        assert!(no_root.to_string().contains("no root"), "{no_root}");
        let broken_chain = Authority::from_pem(&mid_cert, &mid_key, &format!("{mid_cert}{other_cert}"), &root_cert)
            .expect_err("broken chain");
        assert!(broken_chain.to_string().contains("not signed by"), "{broken_chain}");
    }

    #[test]
    fn a_leaf_is_not_a_ca() {
        let (root_cert, root_key) = generate_root().expect("a root");
        let root = Authority::from_pem(&root_cert, &root_key, "", "").expect("root");
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let leaf = root
            .sign_server(&key, &["x.example".into()], &[], Duration::from_secs(60))
            .expect("signed");
        let refused = Authority::from_pem(&leaf[0], &key.serialize_pem(), "", &root_cert).expect_err("a leaf");
        assert!(refused.to_string().contains("not a CA"), "{refused}");
    }
}
