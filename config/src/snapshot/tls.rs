//! TLS settings of the snapshot: the gateway's server certificates and client
//! certificate checks, and TLS origination towards upstreams.

use serde::Serialize;

use crate::diag::Anchor;

/// An HTTPS server block: its SNI names and certificate.
#[derive(Debug, Serialize)]
pub struct TlsServer {
    /// Hosts (lowercase, `*.` wildcards allowed).
    pub hosts: Vec<String>,
    /// Index into `Snapshot::certificates`.
    pub certificate: usize,
    /// The Gateway server it came from.
    pub source: String,
    /// Client certificate checking (tls.mode MUTUAL or OPTIONAL_MUTUAL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_auth: Option<ClientAuth>,
    /// Oldest TLS version accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_version: Option<TlsVersion>,
    /// Newest TLS version accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_version: Option<TlsVersion>,
    /// TLS 1.2 cipher suites accepted, by IANA name; empty accepts all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
}

/// How a Gateway server checks client certificates.
#[derive(Debug, Clone, Serialize)]
pub struct ClientAuth {
    /// MUTUAL (a certificate is required) rather than OPTIONAL_MUTUAL.
    pub required: bool,
    /// Roots client certificates must chain to.
    pub ca: PemSource,
    /// Revoked certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crl: Option<PemSource>,
    /// Accepted subject alternative names of the client (empty: any).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// Where the roots were configured, for the engine's diagnostics.
    #[serde(skip)]
    pub anchor: Anchor,
}

/// A TLS protocol version the gateway serves (rustls has no older ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum TlsVersion {
    /// TLS 1.2.
    #[serde(rename = "TLSV1_2")]
    Tls12,
    /// TLS 1.3.
    #[serde(rename = "TLSV1_3")]
    Tls13,
}

/// Where a certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum CertificateSource {
    /// PEM held in a Secret of the bundle (private key never serialized).
    Inline {
        /// Certificate chain PEM.
        #[serde(skip)]
        cert_pem: Vec<u8>,
        /// Private key PEM.
        #[serde(skip)]
        key_pem: Vec<u8>,
    },
    /// PEM files read by the engine.
    Files {
        /// Certificate chain path.
        cert: String,
        /// Private key path.
        key: String,
    },
    /// A certificate made up by the engine for `hosts`, served until ACME issues one.
    #[serde(rename = "self-signed")]
    SelfSigned {
        /// Names it covers.
        hosts: Vec<String>,
    },
}

/// A server certificate.
#[derive(Debug, Clone, Serialize)]
pub struct Certificate {
    /// e.g. `secret default/app-example-com-tls` or `file /etc/certs/tls.crt`.
    pub name: String,
    /// Where it comes from.
    pub source: CertificateSource,
    /// Where it was configured, for the engine's diagnostics.
    #[serde(skip)]
    pub anchor: Anchor,
}

/// TLS origination towards a cluster's endpoints.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamTls {
    /// Server name sent and verified (the DestinationRule's `sni`, else the service host).
    pub sni: String,
    /// Trusted roots (the system's when None).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PemSource>,
    /// Client certificate chain and key for MUTUAL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<(PemSource, PemSource)>,
    /// Skip verifying the server (`insecureSkipVerify`).
    pub insecure_skip_verify: bool,
    /// Where it was configured, for the engine's diagnostics.
    #[serde(skip)]
    pub anchor: Anchor,
}

/// PEM from a Secret of the bundle or from a file read by the engine.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum PemSource {
    /// Held in the bundle (a Secret key); never serialized.
    Inline {
        /// e.g. `secret default/client-cert ca.crt`.
        name: String,
        /// The PEM.
        #[serde(skip)]
        pem: Vec<u8>,
    },
    /// A file path.
    File {
        /// Path.
        path: String,
    },
}
