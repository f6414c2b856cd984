//! Gateway server TLS beyond the certificate, as Istio's ServerTLSSettings define it:
//! client certificates (MUTUAL, OPTIONAL_MUTUAL) with their roots and CRL, protocol
//! versions, and TLS 1.2 cipher suites (Envoy's OpenSSL-style names).

use std::collections::BTreeMap;

use crate::diag::Anchor;
use crate::resources::networking::ServerTls;
use crate::snapshot::{ClientAuth, PemSource, TlsVersion};

/// Secret keys found for a server's `credentialName`: its own Secret and the
/// `<name>-cacert` one Istio also reads roots from.
#[derive(Debug, Default)]
pub struct CredentialKeys<'a> {
    /// `namespace/name` of the credential Secret, and its keys.
    pub own: Option<(String, &'a BTreeMap<String, Vec<u8>>)>,
    /// `namespace/name-cacert`, and its keys.
    pub cacert: Option<(String, &'a BTreeMap<String, Vec<u8>>)>,
}

/// The compiled settings.
#[derive(Debug, Default)]
pub struct Compiled {
    /// Client certificate checking.
    pub client_auth: Option<ClientAuth>,
    /// Oldest version.
    pub min_version: Option<TlsVersion>,
    /// Newest version.
    pub max_version: Option<TlsVersion>,
    /// TLS 1.2 suites, IANA names.
    pub cipher_suites: Vec<String>,
}

/// A problem, with the field under `tls`.
#[derive(Debug, PartialEq, Eq)]
pub struct Problem {
    /// Field under the server's `tls`.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
    /// Whether the configuration is refused (else a not-enforced warning).
    pub error: bool,
}

/// Envoy's (OpenSSL) name of a TLS 1.2 suite -> the IANA name rustls reports, for the
/// suites rustls offers.
const SUITES: &[(&str, &str)] = &[
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ),
    ("ECDHE-RSA-AES128-GCM-SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    ),
    ("ECDHE-RSA-AES256-GCM-SHA384", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
];

/// Why a `minProtocolVersion` or `maxProtocolVersion` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum TlsVersionError {
    /// TLS 1.0 or 1.1 as the newest version: nothing could be negotiated.
    #[error("TLS 1.0 and 1.1 are not served (rustls has TLS 1.2 and 1.3 only)")]
    Unserved,
    /// Not one of Istio's names.
    #[error("{0:?} is not a TLS version (TLS_AUTO, TLSV1_0, TLSV1_1, TLSV1_2, TLSV1_3)")]
    Unknown(String),
}

fn version(text: Option<&str>, bound: &str) -> Result<Option<TlsVersion>, TlsVersionError> {
    match text.unwrap_or("TLS_AUTO") {
        "TLS_AUTO" => Ok(None),
        // rustls serves nothing older than 1.2, so an older minimum changes nothing.
        "TLSV1_0" | "TLSV1_1" if bound == "min" => Ok(None),
        "TLSV1_0" | "TLSV1_1" => Err(TlsVersionError::Unserved),
        "TLSV1_2" => Ok(Some(TlsVersion::Tls12)),
        "TLSV1_3" => Ok(Some(TlsVersion::Tls13)),
        other => Err(TlsVersionError::Unknown(other.to_string())),
    }
}

fn secret_pem(keys: &Option<(String, &BTreeMap<String, Vec<u8>>)>, key: &str) -> Option<PemSource> {
    let (name, map) = keys.as_ref()?;
    map.get(key).map(|pem| PemSource::Inline {
        name: format!("secret {name} {key}"),
        pem: pem.clone(),
    })
}

/// Compiles a server's settings for `mode` (MUTUAL, OPTIONAL_MUTUAL or SIMPLE).
pub fn compile(mode: &str, tls: &ServerTls, keys: &CredentialKeys<'_>) -> (Compiled, Vec<Problem>) {
    let mut out = Compiled::default();
    let mut problems = Vec::new();
    let mut problem = |field, message: String, error| problems.push(Problem { field, message, error });
    match version(tls.min_protocol_version.as_deref(), "min") {
        Ok(v) => out.min_version = v,
        Err(e) => problem("minProtocolVersion", e.to_string(), true),
    }
    match version(tls.max_protocol_version.as_deref(), "max") {
        Ok(v) => out.max_version = v,
        Err(e) => problem("maxProtocolVersion", e.to_string(), true),
    }
    if let (Some(min), Some(max)) = (out.min_version, out.max_version) {
        if min > max {
            problem(
                "maxProtocolVersion",
                "maxProtocolVersion is older than minProtocolVersion".into(),
                true,
            );
        }
    }
    let mut unknown = Vec::new();
    for name in &tls.cipher_suites {
        match SUITES.iter().find(|(envoy, iana)| envoy == name || iana == name) {
            Some((_, iana)) => out.cipher_suites.push((*iana).to_string()),
            None => unknown.push(name.as_str()),
        }
    }
    if !unknown.is_empty() {
        let known: Vec<&str> = SUITES.iter().map(|(e, _)| *e).collect();
        let none_left = out.cipher_suites.is_empty();
        problem(
            "cipherSuites",
            format!(
                "{unknown:?} {} not offered by Strait (rustls); it offers {known:?}{}",
                if unknown.len() == 1 { "is" } else { "are" },
                if none_left {
                    ""
                } else {
                    ", and the others listed are used"
                }
            ),
            none_left,
        );
    }
    if !tls.verify_certificate_spki.is_empty() || !tls.verify_certificate_hash.is_empty() {
        problem(
            "verifyCertificateSpki",
            "verifyCertificateSpki and verifyCertificateHash are not enforced by this version of Strait".into(),
            false,
        );
    }
    if matches!(mode, "MUTUAL" | "OPTIONAL_MUTUAL") {
        // Istio reads roots from the credential Secret (`ca.crt`), then from its
        // `-cacert` companion, then from the file.
        let ca = secret_pem(&keys.own, "ca.crt")
            .or_else(|| secret_pem(&keys.cacert, "cacert"))
            .or_else(|| secret_pem(&keys.cacert, "ca.crt"))
            .or_else(|| tls.ca_certificates.clone().map(|path| PemSource::File { path }));
        let crl = secret_pem(&keys.own, "ca.crl")
            .or_else(|| secret_pem(&keys.cacert, "ca.crl"))
            .or_else(|| tls.ca_crl.clone().map(|path| PemSource::File { path }));
        match ca {
            Some(ca) => {
                out.client_auth = Some(ClientAuth {
                    required: mode == "MUTUAL",
                    ca,
                    crl,
                    subject_alt_names: tls.subject_alt_names.clone(),
                    // Placed by the translation, which knows the resource.
                    anchor: Anchor::default(),
                })
            }
            None => problem(
                "caCertificates",
                format!(
                    "tls.mode {mode} needs the roots of client certificates: caCertificates, or ca.crt in the credentialName Secret (or in <credentialName>-cacert)"
                ),
                true,
            ),
        }
    }
    (out, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(yaml: serde_json::Value) -> ServerTls {
        serde_json::from_value(yaml).expect("tls")
    }

    #[test]
    fn versions_suites_and_roots() {
        let (c, p) = compile(
            "MUTUAL",
            &tls(serde_json::json!({
                "minProtocolVersion": "TLSV1_3", "cipherSuites": ["ECDHE-RSA-AES128-GCM-SHA256", "AES128-SHA"],
                "caCertificates": "/etc/ca.pem", "subjectAltNames": ["spiffe://x/ns/a/sa/b"]
            })),
            &CredentialKeys::default(),
        );
        assert_eq!(c.min_version, Some(TlsVersion::Tls13));
        assert_eq!(c.cipher_suites, ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]);
        assert_eq!(p.len(), 1, "AES128-SHA draws a warning");
        assert!(!p[0].error);
        let auth = c.client_auth.expect("client auth");
        assert!(auth.required);
        assert!(matches!(auth.ca, PemSource::File { ref path } if path == "/etc/ca.pem"));

        let mut secret = BTreeMap::new();
        secret.insert("ca.crt".to_string(), b"PEM".to_vec());
        let keys = CredentialKeys {
            own: Some(("default/cred".into(), &secret)),
            cacert: None,
        };
        let (c, p) = compile(
            "OPTIONAL_MUTUAL",
            &tls(serde_json::json!({"caCertificates": "/f"})),
            &keys,
        );
        assert!(p.is_empty());
        let auth = c.client_auth.expect("client auth");
        assert!(!auth.required);
        assert!(matches!(auth.ca, PemSource::Inline { ref name, .. } if name == "secret default/cred ca.crt"));

        let (_, p) = compile(
            "MUTUAL",
            &tls(serde_json::json!({"maxProtocolVersion": "TLSV1_1", "cipherSuites": ["RC4"]})),
            &CredentialKeys::default(),
        );
        let fields: Vec<_> = p.iter().filter(|p| p.error).map(|p| p.field).collect();
        assert_eq!(fields, ["maxProtocolVersion", "cipherSuites", "caCertificates"]);
        assert_eq!(
            p[0].message,
            "TLS 1.0 and 1.1 are not served (rustls has TLS 1.2 and 1.3 only)"
        );
    }

    #[test]
    fn protocol_versions() {
        assert_eq!(version(None, "max"), Ok(None));
        assert_eq!(
            version(Some("TLSV1_0"), "min"),
            Ok(None),
            "older minimums change nothing"
        );
        assert_eq!(version(Some("TLSV1_1"), "max"), Err(TlsVersionError::Unserved));
        assert_eq!(
            version(Some("TLSV1.2"), "min"),
            Err(TlsVersionError::Unknown("TLSV1.2".into()))
        );
        assert_eq!(
            TlsVersionError::Unknown("TLSV1.2".into()).to_string(),
            "\"TLSV1.2\" is not a TLS version (TLS_AUTO, TLSV1_0, TLSV1_1, TLSV1_2, TLSV1_3)"
        );
    }
}
