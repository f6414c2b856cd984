//! Gateway resources checked as Istio's webhook checks them (ports, protocols,
//! hosts, TLS settings). Their servers are turned into listeners per proxy by
//! `translate::gateway`, which needs the proxy's namespace to find certificates.

use std::collections::HashSet;
use std::net::IpAddr;

use crate::bundle::Entry;
use crate::diag::Code;
use crate::hosts::{check_server_host, is_label};
use crate::resources::networking::{GatewaySpec, Server, ServerTls};

use super::service_entry::PROTOCOLS;
use super::workload_entry::{check_unix_path, UNIX_PREFIX};
use super::Compiler;

/// TLS modes a Gateway server may declare.
const TLS_MODES: &[&str] = &[
    "PASSTHROUGH",
    "SIMPLE",
    "MUTUAL",
    "AUTO_PASSTHROUGH",
    "ISTIO_MUTUAL",
    "OPTIONAL_MUTUAL",
];

/// TLS versions a server may take (CRD enum).
const TLS_VERSIONS: &[&str] = &["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"];

/// Cipher suites Istio knows (pkg/config/security, `ValidCipherSuites`).
const CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "DES-CBC3-SHA",
];

/// Whether Istio takes `cs` as a cipher suite (security.go, `IsValidCipherSuite`):
/// a known one, `ALL`, or an expression starting with an operator.
fn is_valid_cipher_suite(cs: &str) -> bool {
    cs.is_empty() || cs == "ALL" || !cs.starts_with(|c: char| c.is_alphanumeric()) || CIPHER_SUITES.contains(&cs)
}

impl Compiler<'_> {
    /// A Gateway (validation.go, `ValidateGateway`, `validateServer`,
    /// `validateServerPort`, `validateServerBind`, `validateTLSOptions`; CRD rules).
    pub(super) fn gateway(&mut self, e: &Entry, g: &GatewaySpec) {
        if !is_label(&e.resource.name) {
            self.err(
                e,
                Code::InvalidValue,
                "metadata.name",
                format!(
                    "invalid gateway name {:?}: a Gateway's name is a DNS-1123 label (no dots)",
                    e.resource.name
                ),
            );
        }
        if g.servers.is_empty() {
            self.err(e, Code::Required, "spec.servers", "a Gateway needs at least one server");
        }
        let mut port_names = HashSet::new();
        for (i, s) in g.servers.iter().enumerate() {
            let f = format!("spec.servers[{i}]");
            self.server(e, &f, s);
            let Some(port) = &s.port else { continue };
            let name = port.name.as_deref().unwrap_or("");
            if !name.is_empty() && !port_names.insert(name) {
                self.err(
                    e,
                    Code::Conflict,
                    &format!("{f}.port.name"),
                    format!("port names in servers must be unique: duplicate name {name}"),
                );
            }
            let http = is_http(port.protocol.as_deref().unwrap_or(""));
            if !http && s.tls.as_ref().is_some_and(|t| t.https_redirect) {
                self.warn(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.tls.httpsRedirect"),
                    "tls.httpsRedirect should only be used with http servers",
                );
            }
        }
    }

    fn server(&mut self, e: &Entry, f: &str, s: &Server) {
        if s.hosts.is_empty() {
            self.err(
                e,
                Code::Required,
                &format!("{f}.hosts"),
                "server hosts must not be empty",
            );
        }
        for (hi, h) in s.hosts.iter().enumerate() {
            if let Err(msg) = check_server_host(h) {
                self.err(e, Code::InvalidValue, &format!("{f}.hosts[{hi}]"), msg.to_string());
            }
        }
        let bind = s.bind.as_deref().unwrap_or("");
        let unix = bind.strip_prefix(UNIX_PREFIX);
        if let Some(path) = unix {
            if let Err(err) = check_unix_path(path) {
                self.err(e, Code::InvalidValue, &format!("{f}.bind"), err.to_string());
            }
        } else if !bind.is_empty() && bind.parse::<IpAddr>().is_err() {
            self.err(
                e,
                Code::InvalidValue,
                &format!("{f}.bind"),
                format!("{bind} is not a valid IP"),
            );
        }
        let Some(port) = &s.port else {
            self.err(e, Code::Required, &format!("{f}.port"), "port is required");
            self.tls_options(e, f, s.tls.as_ref());
            return;
        };
        let mut port_ok = true;
        match port.number {
            None if unix.is_none() => {
                port_ok = false;
                self.err(
                    e,
                    Code::Required,
                    &format!("{f}.port.number"),
                    "server port number is required",
                );
            }
            Some(n) if unix.is_some() && n != 0 => {
                port_ok = false;
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.port.number"),
                    "port number must be 0 for a unix domain socket",
                );
            }
            Some(n) if unix.is_none() && !(1..=65535).contains(&n) => {
                port_ok = false;
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.port.number"),
                    format!("port {n} is not in 1-65535"),
                );
            }
            _ => {}
        }
        let proto = port.protocol.as_deref().unwrap_or("");
        if !PROTOCOLS.contains(&proto.to_ascii_uppercase().as_str()) {
            port_ok = false;
            self.err(
                e,
                Code::InvalidValue,
                &format!("{f}.port.protocol"),
                format!("protocol {proto:?} is not one of {}", PROTOCOLS.join(", ")),
            );
        }
        if port.target_port.is_some_and(|t| t > 0) {
            port_ok = false;
            self.err(
                e,
                Code::InvalidValue,
                &format!("{f}.port.targetPort"),
                "targetPort has no impact on Gateways",
            );
        }
        if port.name.as_deref().unwrap_or("").is_empty() {
            port_ok = false;
            self.err(e, Code::Required, &format!("{f}.port.name"), "port name must be set");
        }
        self.tls_options(e, f, s.tls.as_ref());
        if !port_ok {
            return;
        }
        // HTTPS and TLS need TLS settings; others only an HTTP server's redirect.
        let upper = proto.to_ascii_uppercase();
        let tls_protocol = matches!(upper.as_str(), "HTTPS" | "TLS");
        match &s.tls {
            None if tls_protocol => self.err(
                e,
                Code::Required,
                &format!("{f}.tls"),
                format!("{proto} server needs tls settings"),
            ),
            Some(t) if !tls_protocol => {
                // An unset mode is PASSTHROUGH to Istio: an HTTP server may carry
                // tls for httpsRedirect only.
                let passthrough = matches!(t.mode.as_deref(), None | Some("PASSTHROUGH" | "AUTO_PASSTHROUGH"));
                let files = [&t.ca_certificates, &t.private_key, &t.server_certificate]
                    .iter()
                    .any(|x| x.as_deref().is_some_and(|v| !v.is_empty()));
                if !is_http(proto) {
                    self.err(
                        e,
                        Code::Conflict,
                        &format!("{f}.tls"),
                        "server cannot have TLS settings for non HTTPS/TLS ports",
                    );
                } else if !passthrough || files {
                    self.err(
                        e,
                        Code::Conflict,
                        &format!("{f}.tls"),
                        "server cannot have TLS settings for plain text HTTP ports (only httpsRedirect)",
                    );
                }
            }
            _ => {}
        }
    }

    /// A server's TLS settings (validation.go, `validateTLSOptions`; CRD rules).
    fn tls_options(&mut self, e: &Entry, f: &str, tls: Option<&ServerTls>) {
        let Some(tls) = tls else { return };
        let tf = format!("{f}.tls");
        let set = |x: &Option<String>| x.as_deref().is_some_and(|v| !v.is_empty());
        // Unset, Istio reads PASSTHROUGH and Strait SIMPLE (translate::gateway):
        // only what both accept is checked then.
        let mode = tls.mode.as_deref().unwrap_or("");
        if !mode.is_empty() && !TLS_MODES.contains(&mode) {
            self.err(
                e,
                Code::InvalidValue,
                &format!("{tf}.mode"),
                format!("tls.mode {mode:?} is not one of {}", TLS_MODES.join(", ")),
            );
            return;
        }
        for (name, v) in [
            ("minProtocolVersion", &tls.min_protocol_version),
            ("maxProtocolVersion", &tls.max_protocol_version),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !TLS_VERSIONS.contains(v)) {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{tf}.{name}"),
                    format!("{v:?} is not one of {}", TLS_VERSIONS.join(", ")),
                );
            }
        }
        if matches!(tls.min_protocol_version.as_deref(), Some("TLSV1_0" | "TLSV1_1")) && tls.cipher_suites.is_empty() {
            self.warn(
                e,
                Code::InvalidValue,
                &format!("{tf}.minProtocolVersion"),
                "TLS versions below TLSV1_2 need compatible cipherSuites: the defaults no longer include them",
            );
        }
        let unused = [
            ("alpnProtocols", !tls.alpn_protocols.is_empty()),
            ("ecdhCurves", !tls.ecdh_curves.is_empty()),
            ("caCertCredentialName", set(&tls.ca_cert_credential_name)),
            ("insecureSkipVerify", tls.insecure_skip_verify.is_some()),
        ];
        for (name, _) in unused.iter().filter(|(_, on)| *on) {
            self.warn(
                e,
                Code::NotEnforced,
                &format!("{tf}.{name}"),
                format!("tls.{name} is accepted but not enforced by this version of Strait"),
            );
        }
        let mut seen = HashSet::new();
        let invalid: Vec<&str> = tls
            .cipher_suites
            .iter()
            .map(String::as_str)
            .filter(|c| !is_valid_cipher_suite(c))
            .collect();
        let duplicate: Vec<&str> = tls
            .cipher_suites
            .iter()
            .map(String::as_str)
            .filter(|c| is_valid_cipher_suite(c) && !seen.insert(*c))
            .collect();
        if !invalid.is_empty() {
            self.warn(
                e,
                Code::InvalidValue,
                &format!("{tf}.cipherSuites"),
                format!("ignoring invalid cipher suites: {invalid:?}"),
            );
        }
        if !duplicate.is_empty() {
            self.warn(
                e,
                Code::InvalidValue,
                &format!("{tf}.cipherSuites"),
                format!("ignoring duplicate cipher suites: {duplicate:?}"),
            );
        }
        let credential = set(&tls.credential_name);
        let credentials = !tls.credential_names.is_empty();
        let certificates = !tls.tls_certificates.is_empty();
        if mode == "ISTIO_MUTUAL" {
            let given = [
                (set(&tls.server_certificate), "serverCertificate"),
                (set(&tls.private_key), "privateKey"),
                (set(&tls.ca_certificates), "caCertificates"),
                (certificates, "tlsCertificates"),
                (credential, "credentialName"),
                (credentials, "credentialNames"),
            ];
            for (_, name) in given.iter().filter(|(on, _)| *on) {
                self.err(
                    e,
                    Code::Conflict,
                    &format!("{tf}.{name}"),
                    format!("ISTIO_MUTUAL TLS cannot have an associated {name}"),
                );
            }
            return;
        }
        if matches!(mode, "PASSTHROUGH" | "AUTO_PASSTHROUGH")
            && (set(&tls.ca_crl)
                || set(&tls.server_certificate)
                || set(&tls.private_key)
                || set(&tls.ca_certificates)
                || certificates
                || credential
                || credentials)
        {
            self.warn(
                e,
                Code::InvalidValue,
                &tf,
                format!("{mode} mode does not use certificates, they will be ignored"),
            );
        }
        let files = set(&tls.server_certificate) && set(&tls.private_key);
        let sources = [files, credential, credentials, certificates];
        if sources.iter().filter(|x| **x).count() > 1 {
            self.err(
                e,
                Code::Conflict,
                &tf,
                "only one of credentialName, credentialNames, serverCertificate/privateKey and tlsCertificates can be set",
            );
            return;
        }
        let terminating = matches!(mode, "SIMPLE" | "MUTUAL" | "OPTIONAL_MUTUAL");
        if terminating && (credential || credentials) {
            if set(&tls.ca_crl) && credential {
                self.err(
                    e,
                    Code::Conflict,
                    &format!("{tf}.caCrl"),
                    "CRL is not supported with credentialName: put ca.crl in the credential",
                );
            }
            return;
        }
        if terminating {
            if mode != "SIMPLE" && !set(&tls.ca_certificates) {
                self.err(
                    e,
                    Code::Required,
                    &format!("{tf}.caCertificates"),
                    format!("tls.mode {mode} requires a client CA bundle (caCertificates, or a credentialName)"),
                );
            }
            if tls.tls_certificates.len() > 2 {
                self.warn(
                    e,
                    Code::InvalidValue,
                    &format!("{tf}.tlsCertificates"),
                    "at most 2 server certificates are supported",
                );
            }
            if certificates {
                for (i, c) in tls.tls_certificates.iter().enumerate() {
                    for key in ["serverCertificate", "privateKey"] {
                        if c.get(key).and_then(|v| v.as_str()).is_none_or(str::is_empty) {
                            self.err(
                                e,
                                Code::Required,
                                &format!("{tf}.tlsCertificates[{i}].{key}"),
                                format!("tls.mode {mode} requires {key}"),
                            );
                        }
                    }
                }
            } else {
                match (set(&tls.server_certificate), set(&tls.private_key)) {
                    (false, false) => self.err(
                        e,
                        Code::Required,
                        &tf,
                        format!("tls.mode {mode} needs credentialName, or serverCertificate and privateKey"),
                    ),
                    (false, true) => self.err(
                        e,
                        Code::Required,
                        &format!("{tf}.serverCertificate"),
                        format!("tls.mode {mode} requires a server certificate"),
                    ),
                    (true, false) => self.err(
                        e,
                        Code::Required,
                        &format!("{tf}.privateKey"),
                        format!("tls.mode {mode} requires a private key"),
                    ),
                    (true, true) => {}
                }
            }
        }
        if set(&tls.ca_crl) && mode == "SIMPLE" {
            self.err(
                e,
                Code::Conflict,
                &format!("{tf}.caCrl"),
                "CRL is not supported with SIMPLE TLS",
            );
        }
    }
}

/// Whether a protocol carries HTTP (protocol `IsHTTP`).
fn is_http(protocol: &str) -> bool {
    matches!(
        protocol.to_ascii_uppercase().as_str(),
        "HTTP" | "HTTP2" | "HTTP_PROXY" | "GRPC" | "GRPC-WEB"
    )
}
