//! Certificates from ACME, configured the Istio way: a Gateway annotated
//! `strait.io/acme: <issuer>` has the certificates of its HTTPS servers issued by that
//! issuer (declared in the mesh config under `acmeIssuers`) and kept in the Secret
//! its `credentialName` names. Until that Secret exists, the server answers with a
//! self-signed certificate.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

use crate::bundle::{Bundle, Entry};
use crate::diag::Code;
use crate::hosts::server_host;
use crate::resources::kube::secret_value;
use crate::resources::networking::Server;
use crate::resources::Spec;

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

/// Why a server of an annotated Gateway gets no ACME certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The field under the server (`tls.credentialName`, `hosts`).
    pub field: &'static str,
    /// The diagnostic's code.
    pub code: Code,
    /// What is wrong.
    pub message: String,
}

/// The Secret a server's certificate is kept in (`credentialName`, or the first of
/// `credentialNames`).
pub fn credential(server: &Server) -> Option<&str> {
    let tls = server.tls.as_ref()?;
    tls.credential_name
        .as_deref()
        .or(tls.credential_names.first().map(String::as_str))
}

/// The certificate an HTTPS server of `gateway` asks to have ordered: None when the
/// Gateway is not annotated `strait.io/acme`. `field` names the server in `source`.
pub fn requested(gateway: &Entry, field: &str, server: &Server) -> Option<Result<ManagedCert, Refusal>> {
    let issuer = gateway.resource.metadata.annotations.get(ANNOTATION)?;
    let Some(credential) = credential(server) else {
        return Some(Err(Refusal {
            field: "tls.credentialName",
            code: Code::Required,
            message: format!(
                "{ANNOTATION}: the server needs a credentialName, the Secret the issued certificate is kept in"
            ),
        }));
    };
    let ns = gateway.resource.namespace.as_str();
    let hosts: Vec<String> = server
        .hosts
        .iter()
        .map(|h| server_host(h, ns).1.to_ascii_lowercase())
        .collect();
    if let Some(wild) = hosts.iter().find(|h| h.contains('*')) {
        return Some(Err(Refusal {
            field: "hosts",
            code: Code::InvalidValue,
            message: format!("{ANNOTATION}: {wild} cannot be proven with HTTP-01 or TLS-ALPN-01; list exact names"),
        }));
    }
    Some(Ok(ManagedCert {
        issuer: issuer.clone(),
        namespace: ns.to_string(),
        credential_name: credential.to_string(),
        hosts,
        source: format!("Gateway {ns}/{} {field}", gateway.resource.name),
    }))
}

/// Adds `m` to `list`; servers sharing a credential share one certificate covering
/// all their names.
pub fn merge(list: &mut Vec<ManagedCert>, m: ManagedCert) {
    match list
        .iter_mut()
        .find(|e| e.namespace == m.namespace && e.credential_name == m.credential_name)
    {
        Some(existing) => {
            for h in m.hosts {
                if !existing.hosts.contains(&h) {
                    existing.hosts.push(h);
                }
            }
        }
        None => list.push(m),
    }
}

/// Every certificate the HTTPS servers of `bundle`'s annotated Gateways ask for,
/// whichever proxies they select: what a controller orders for the whole cluster.
/// Servers that cannot have one are left out (analysis reports them).
pub fn requested_in(bundle: &Bundle) -> Vec<ManagedCert> {
    let mut list = Vec::new();
    for (entry, gateway) in bundle.of(|s| match s {
        Spec::Gateway(g) => Some(g),
        _ => None,
    }) {
        for (si, server) in gateway.servers.iter().enumerate() {
            let https = server
                .port
                .as_ref()
                .and_then(|p| p.protocol.as_deref())
                .is_some_and(|p| p.eq_ignore_ascii_case("HTTPS"));
            if let Some(Ok(m)) = https
                .then(|| requested(entry, &format!("spec.servers[{si}]"), server))
                .flatten()
            {
                merge(&mut list, m);
            }
        }
    }
    list
}

/// The Secret (in the root namespace) where a controller publishes the answers to the
/// challenges it is being asked, so that every gateway answers them whichever
/// controller replica it follows.
pub const CHALLENGES_SECRET: &str = "strait-acme-challenges";

/// The type of that Secret; Secrets of other types are not read for answers.
pub const CHALLENGES_SECRET_TYPE: &str = "strait.io/acme-challenges";

/// Key prefix of an HTTP-01 answer in the challenges Secret (then the token).
pub const HTTP01_KEY: &str = "http01.";

/// Key prefix of a TLS-ALPN-01 answer (then the name; the value is the challenge
/// certificate and its key, PEM).
pub const TLS_ALPN01_KEY: &str = "tlsalpn01.";

/// Answers to pending challenges published by a controller.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Answers {
    /// HTTP-01: key authorization by token.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub http: BTreeMap<String, String>,
    /// TLS-ALPN-01: challenge certificate and key (PEM) by name; not shown in
    /// configuration dumps.
    #[serde(skip)]
    pub alpn: BTreeMap<String, String>,
}

impl Answers {
    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.http.is_empty() && self.alpn.is_empty()
    }
}

/// The answers in `bundle`'s challenges Secret; only the one in `root_namespace` (the
/// mesh's, where the controller runs) is trusted: an answer lets whoever wrote it
/// obtain a certificate for the name.
pub fn answers_in(bundle: &Bundle, root_namespace: &str) -> Answers {
    let mut answers = Answers::default();
    let secrets = bundle.of(|s| match s {
        Spec::Secret(b) => Some(b),
        _ => None,
    });
    for (entry, body) in secrets {
        if entry.resource.namespace != root_namespace
            || entry.resource.name != CHALLENGES_SECRET
            || body.secret_type.as_deref() != Some(CHALLENGES_SECRET_TYPE)
        {
            continue;
        }
        for key in body.data.keys().chain(body.string_data.keys()) {
            let Some(value) = secret_value(body, key).and_then(|v| String::from_utf8(v).ok()) else {
                continue;
            };
            if let Some(token) = key.strip_prefix(HTTP01_KEY) {
                answers.http.insert(token.to_string(), value);
            } else if let Some(name) = key.strip_prefix(TLS_ALPN01_KEY) {
                answers.alpn.insert(name.to_ascii_lowercase(), value);
            }
        }
    }
    answers
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

    fn bundle(yaml: &str) -> Bundle {
        let mut loaded = crate::Loaded::default();
        crate::bundle::load_text(&mut loaded, "test.yaml", yaml);
        loaded.bundle
    }

    #[test]
    fn answers_come_from_the_root_namespace_secret_of_its_type_only() {
        let secret = |ns: &str, kind: &str| {
            format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: {CHALLENGES_SECRET}, namespace: {ns}}}\ntype: {kind}\nstringData: {{http01.tok-1: tok-1.thumb, tlsalpn01.App.example.com: PEM, other: x}}\n")
        };
        let a = answers_in(&bundle(&secret("istio-system", CHALLENGES_SECRET_TYPE)), "istio-system");
        assert_eq!(a.http.get("tok-1").map(String::as_str), Some("tok-1.thumb"));
        assert_eq!(a.alpn.get("app.example.com").map(String::as_str), Some("PEM"));
        assert_eq!(a.http.len() + a.alpn.len(), 2);
        assert!(answers_in(&bundle(&secret("shop", CHALLENGES_SECRET_TYPE)), "istio-system").is_empty());
        assert!(answers_in(&bundle(&secret("istio-system", "Opaque")), "istio-system").is_empty());
    }

    #[test]
    fn a_cluster_orders_what_every_annotated_gateway_asks() {
        let gateway = |name: &str, selector: &str, hosts: &str, credential: &str| {
            format!("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: edge, annotations: {{strait.io/acme: le}}}}\nspec:\n  selector: {{app: {selector}}}\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: [other.example.com]\n  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: {hosts}\n    tls: {{mode: SIMPLE, credentialName: {credential}}}\n")
        };
        let yaml = [
            gateway("a", "one", "[app.example.com]", "app-tls"),
            gateway("b", "two", "[api.example.com, 'edge/www.example.com']", "app-tls"),
            gateway("c", "two", "['*.example.com']", "wild-tls"),
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: plain, namespace: edge}\nspec:\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [plain.example.com]\n    tls: {mode: SIMPLE, credentialName: plain}\n".to_string(),
        ]
        .join("---\n");
        let list = requested_in(&bundle(&yaml));
        assert_eq!(list.len(), 1, "{list:?}");
        assert_eq!(list[0].credential_name, "app-tls");
        assert_eq!(list[0].hosts, ["app.example.com", "api.example.com", "www.example.com"]);
        assert_eq!(list[0].source, "Gateway edge/a spec.servers[1]");
    }
}
