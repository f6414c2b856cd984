//! Gateway resources checked as Istio's webhook checks them (ports, protocols,
//! hosts, TLS settings). Their servers are turned into listeners per proxy by
//! `translate::gateway`, which needs the proxy's namespace to find certificates.

use crate::bundle::Entry;
use crate::diag::Code;
use crate::hosts::check_server_host;
use crate::resources::networking::GatewaySpec;

use super::Compiler;

/// Protocols a Gateway server may declare.
const PROTOCOLS: &[&str] = &["HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "TCP", "TLS"];
/// TLS modes a Gateway server may declare.
const TLS_MODES: &[&str] = &[
    "PASSTHROUGH",
    "SIMPLE",
    "MUTUAL",
    "AUTO_PASSTHROUGH",
    "ISTIO_MUTUAL",
    "OPTIONAL_MUTUAL",
];

impl Compiler<'_> {
    pub(super) fn gateway(&mut self, e: &Entry, g: &GatewaySpec) {
        if g.servers.is_empty() {
            self.err(e, Code::Required, "spec.servers", "a Gateway needs at least one server");
        }
        for (i, s) in g.servers.iter().enumerate() {
            let f = format!("spec.servers[{i}]");
            match s.port.as_ref().and_then(|p| p.number) {
                None => self.err(
                    e,
                    Code::Required,
                    &format!("{f}.port.number"),
                    "server port number is required",
                ),
                Some(n) if !(1..=65535).contains(&n) => self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.port.number"),
                    format!("port {n} is not in 1-65535"),
                ),
                _ => {}
            }
            let proto = s.port.as_ref().and_then(|p| p.protocol.as_deref()).unwrap_or("");
            if !PROTOCOLS.contains(&proto.to_ascii_uppercase().as_str()) {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.port.protocol"),
                    format!("protocol {proto:?} is not one of {}", PROTOCOLS.join(", ")),
                );
            }
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
            let https = matches!(proto.to_ascii_uppercase().as_str(), "HTTPS" | "TLS");
            match (&s.tls, https) {
                (None, true) => self.err(
                    e,
                    Code::Required,
                    &format!("{f}.tls"),
                    format!("{proto} server needs tls settings"),
                ),
                (Some(tls), true) => {
                    let mode = tls.mode.as_deref().unwrap_or("SIMPLE");
                    if !TLS_MODES.contains(&mode) {
                        self.err(
                            e,
                            Code::InvalidValue,
                            &format!("{f}.tls.mode"),
                            format!("tls.mode {mode:?} is not one of {}", TLS_MODES.join(", ")),
                        );
                    }
                    let has_cred = tls.credential_name.is_some()
                        || !tls.credential_names.is_empty()
                        || !tls.tls_certificates.is_empty();
                    let has_files = tls.server_certificate.is_some() && tls.private_key.is_some();
                    if matches!(mode, "SIMPLE" | "MUTUAL" | "OPTIONAL_MUTUAL") && !has_cred && !has_files {
                        self.err(
                            e,
                            Code::Required,
                            &format!("{f}.tls"),
                            format!("tls.mode {mode} needs credentialName, or serverCertificate and privateKey"),
                        );
                    }
                    if has_cred && (tls.server_certificate.is_some() || tls.private_key.is_some()) {
                        self.err(
                            e,
                            Code::Conflict,
                            &format!("{f}.tls"),
                            "credentialName cannot be combined with serverCertificate/privateKey",
                        );
                    }
                }
                _ => {}
            }
        }
    }
}
