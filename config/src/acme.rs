//! Certificates from ACME, configured the Istio way: a Gateway annotated
//! `strait.io/acme: <issuer>` has the certificates of its HTTPS servers issued by that
//! issuer (declared in the mesh config under `acmeIssuers`) and kept in the Secret
//! its `credentialName` names. Until that Secret exists, the server answers with a
//! self-signed certificate.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

/// The Gateway annotation that asks for ACME certificates.
pub const ANNOTATION: &str = "strait.io/acme";

/// How an issuer proves control of a name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum Challenge {
    /// A token served on the gateway's HTTP port (80).
    #[default]
    #[serde(rename = "HTTP-01")]
    Http01,
    /// A special certificate served on the gateway's HTTPS port (443).
    #[serde(rename = "TLS-ALPN-01")]
    TlsAlpn01,
}

/// An ACME certificate authority and the account to use with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issuer {
    /// Name Gateways use in the annotation.
    pub name: String,
    /// Directory URL, e.g. `https://acme-v02.api.letsencrypt.org/directory`.
    pub directory: String,
    /// Contact address for the account.
    pub email: Option<String>,
    /// External account binding: key id and base64url HMAC key (ZeroSSL, some private CAs).
    #[serde(skip)]
    pub eab: Option<(String, String)>,
    /// Roots the CA's own HTTPS server is checked against (private CAs, Pebble);
    /// the system's when absent.
    pub ca_certificates: Option<PathBuf>,
    /// The challenge used.
    pub challenge: Challenge,
}

/// A certificate the gateway has ordered for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManagedCert {
    /// Issuer name (from the annotation).
    pub issuer: String,
    /// Namespace of the Secret holding it.
    pub namespace: String,
    /// The Secret's name (the server's `credentialName`).
    pub credential_name: String,
    /// Names it covers (the server's hosts).
    pub hosts: Vec<String>,
    /// The Gateway server asking for it.
    pub source: String,
}

/// File name of the Secret holding a managed certificate in a config folder's store.
pub fn secret_file(namespace: &str, credential_name: &str) -> String {
    format!("{namespace}.{credential_name}.yaml")
}

/// A `kubernetes.io/tls` Secret with `cert_pem` and `key_pem`, as YAML.
pub fn secret_yaml(namespace: &str, name: &str, cert_pem: &str, key_pem: &str) -> String {
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "# Issued by ACME for Strait; renewed automatically.\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  annotations: {{{ANNOTATION}-managed: \"true\"}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(cert_pem),
        indent(key_pem)
    )
}

/// Parses one `acmeIssuers` entry; errors are (field under it, message).
pub fn parse_issuer(v: &Value) -> Result<Issuer, (String, String)> {
    let text = |field: &str| v.get(field).and_then(Value::as_str).map(str::to_string);
    let name = text("name")
        .filter(|n| !n.is_empty())
        .ok_or(("name".to_string(), "the issuer needs a name".to_string()))?;
    let directory = text("directory").ok_or(("directory".to_string(), "the directory URL is required".to_string()))?;
    match directory.parse::<http::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("https" | "http")) && u.host().is_some() => {}
        _ => return Err(("directory".into(), format!("{directory:?} is not an http(s) URL"))),
    }
    let challenge = match text("challenge").as_deref() {
        None | Some("HTTP-01") => Challenge::Http01,
        Some("TLS-ALPN-01") => Challenge::TlsAlpn01,
        Some(other) => {
            return Err((
                "challenge".into(),
                format!("{other:?} is not HTTP-01 or TLS-ALPN-01 (DNS-01 is not supported)"),
            ))
        }
    };
    let eab = match v.get("externalAccountBinding") {
        None => None,
        Some(e) => {
            let key_id = e.get("keyId").and_then(Value::as_str);
            let hmac = e.get("hmacKey").and_then(Value::as_str);
            match (key_id, hmac) {
                (Some(k), Some(h)) => Some((k.to_string(), h.to_string())),
                _ => {
                    return Err((
                        "externalAccountBinding".into(),
                        "keyId and hmacKey are both required".into(),
                    ))
                }
            }
        }
    };
    Ok(Issuer {
        name,
        directory,
        email: text("email"),
        eab,
        ca_certificates: text("caCertificates").map(PathBuf::from),
        challenge,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn issuers() {
        let i = parse_issuer(&json!({"name": "le", "directory": "https://acme.example/dir", "email": "ops@example.com",
                                     "challenge": "TLS-ALPN-01", "externalAccountBinding": {"keyId": "k", "hmacKey": "aGk"}}))
        .expect("valid");
        assert_eq!(i.challenge, Challenge::TlsAlpn01);
        assert_eq!(i.eab, Some(("k".into(), "aGk".into())));
        let field = |v: Value| parse_issuer(&v).err().map(|e| e.0);
        assert_eq!(field(json!({"directory": "https://a/b"})), Some("name".into()));
        assert_eq!(
            field(json!({"name": "x", "directory": "ftp://a"})),
            Some("directory".into())
        );
        assert_eq!(
            field(json!({"name": "x", "directory": "https://a/", "challenge": "DNS-01"})),
            Some("challenge".into())
        );
        assert!(secret_yaml("default", "app", "CERT\n", "KEY\n").contains("  tls.crt: |\n    CERT\n"));
    }
}
