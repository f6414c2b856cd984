//! The listeners of a gateway: one per port of the Gateway servers that select its
//! labels, with the certificates of HTTPS servers (from Secrets, files, or ACME) and
//! the routes of the VirtualServices bound to each server.

use std::collections::BTreeMap;

use crate::bundle::Entry;
use crate::compile::server_tls;
use crate::compile::virtual_service::AppliesOn;
use crate::compile::CompiledVirtualService;
use crate::diag::{Anchor, Code, Severity};
use crate::hosts::{fqdn, gateway_ref, intersect, server_host};
use crate::resources::networking::{Server, ServerTls};
use crate::resources::Spec;
use crate::scope::selects;
use crate::snapshot::{Certificate, CertificateSource, Listener, PemSource, Protocol, TlsServer, VirtualHost};

use super::clusters::FoundSecret;
use super::Translator;

impl Translator<'_, '_> {
    pub(super) fn gateways(&mut self) {
        let compiled = self.compiled;
        let gateways = compiled
            .bundle
            .of(|s| match s {
                Spec::Gateway(g) => Some(g),
                _ => None,
            })
            .filter(|(_, g)| selects(&g.selector, self.scope.labels()));
        for (gw_entry, gw) in gateways {
            for (si, server) in gw.servers.iter().enumerate() {
                self.server(gw_entry, si, server, &compiled.virtual_services);
            }
        }
        self.listeners.sort_by_key(|l| l.port);
    }

    fn server(&mut self, gw_entry: &Entry, si: usize, server: &Server, services: &[CompiledVirtualService<'_>]) {
        let field = format!("spec.servers[{si}]");
        let Some(port) = server
            .port
            .as_ref()
            .and_then(|p| p.number)
            .and_then(|n| u16::try_from(n).ok())
        else {
            return; // reported by validation
        };
        let proto = server
            .port
            .as_ref()
            .and_then(|p| p.protocol.as_deref())
            .unwrap_or("")
            .to_ascii_uppercase();
        let mode = server.tls.as_ref().and_then(|t| t.mode.as_deref()).unwrap_or("SIMPLE");
        let protocol = match proto.as_str() {
            "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" => Protocol::Http,
            "HTTPS" => Protocol::Https,
            "TCP" | "MONGO" => Protocol::Tcp,
            "TLS" if mode == "PASSTHROUGH" => Protocol::TlsPassthrough,
            "TLS" => {
                self.diags.push(gw_entry.diag(
                    Severity::Warning,
                    Code::NotEnforced,
                    &format!("{field}.tls.mode"),
                    format!("TLS servers with tls.mode {mode} are not served by this version of Strait (PASSTHROUGH is); server skipped"),
                ));
                return;
            }
            other => {
                self.diags.push(gw_entry.diag(
                    Severity::Warning,
                    Code::NotEnforced,
                    &format!("{field}.port.protocol"),
                    format!("{other} servers are not served by this version of Strait; server skipped"),
                ));
                return;
            }
        };
        if protocol == Protocol::Https && !matches!(mode, "SIMPLE" | "MUTUAL" | "OPTIONAL_MUTUAL") {
            self.diags.push(gw_entry.diag(
                Severity::Warning,
                Code::NotEnforced,
                &format!("{field}.tls.mode"),
                format!("tls.mode {mode} is not served at a gateway by this version of Strait (SIMPLE, MUTUAL and OPTIONAL_MUTUAL are); server skipped"),
            ));
            return;
        }
        let li = match self.listeners.iter().position(|l| l.port == port) {
            Some(i) if self.listeners[i].protocol != protocol => {
                self.diags.push(gw_entry.diag(
                    Severity::Error,
                    Code::Conflict,
                    &format!("{field}.port"),
                    format!(
                        "port {port} is declared with two protocols ({:?} and {protocol:?})",
                        self.listeners[i].protocol
                    ),
                ));
                return;
            }
            Some(i) => i,
            None => {
                self.listeners.push(Listener::new(port, protocol));
                self.listeners.len() - 1
            }
        };
        let gw_ns = gw_entry.resource.namespace.as_str();
        let source = format!("Gateway {gw_ns}/{} servers[{si}]", gw_entry.resource.name);
        let tls_server = if protocol == Protocol::Https {
            let Some(cert) = self.certificate(gw_entry, &field, server) else {
                return;
            };
            let mut settings = server_tls::Compiled::default();
            if let Some(tls) = &server.tls {
                settings = self.server_tls(gw_entry, &field, mode, tls);
                if tls.credential_names.len() > 1 || !tls.tls_certificates.is_empty() {
                    self.diags.push(gw_entry.diag(
                        Severity::Warning,
                        Code::NotEnforced,
                        &format!("{field}.tls"),
                        "only the first certificate of credentialNames (or credentialName) is served; tlsCertificates are not used",
                    ));
                }
            }
            let hosts: Vec<String> = server
                .hosts
                .iter()
                .map(|h| server_host(h, gw_ns).1.to_ascii_lowercase())
                .collect();
            let listener = &mut self.listeners[li];
            let index = listener.tls_servers.len();
            for h in &hosts {
                listener.sni.insert(h, index);
            }
            listener.tls_servers.push(TlsServer {
                hosts,
                certificate: cert,
                source: source.clone(),
                client_auth: settings.client_auth,
                min_version: settings.min_version,
                max_version: settings.max_version,
                cipher_suites: settings.cipher_suites,
            });
            Some(index)
        } else {
            None
        };
        let https_redirect = protocol == Protocol::Http && server.tls.as_ref().is_some_and(|t| t.https_redirect);

        for compiled_vs in services {
            let (vs_entry, vs) = (compiled_vs.entry, compiled_vs.spec);
            let vs_ns = vs_entry.resource.namespace.as_str();
            let bound = vs
                .gateways
                .iter()
                .filter_map(|g| gateway_ref(g, vs_ns))
                .any(|(ns, name)| ns == gw_ns && name == gw_entry.resource.name);
            if !bound {
                continue;
            }
            let mut domains = Vec::new();
            for vs_host in &vs.hosts {
                for s_host in &server.hosts {
                    let (allowed_ns, s_host) = server_host(s_host, gw_ns);
                    if allowed_ns.is_some_and(|ns| ns != vs_ns) {
                        continue;
                    }
                    if let Some(d) = intersect(&fqdn(vs_host, vs_ns), s_host) {
                        if !domains.contains(&d) {
                            domains.push(d);
                        }
                    }
                }
            }
            if domains.is_empty() {
                continue;
            }
            if matches!(protocol, Protocol::Tcp | Protocol::TlsPassthrough) {
                let tls = protocol == Protocol::TlsPassthrough;
                let on = |a: &AppliesOn| a.gateway(gw_ns, &gw_entry.resource.name);
                let routes = self.l4_routes(compiled_vs, &on, port, tls);
                self.listeners[li].l4_routes.extend(routes);
                continue;
            }
            let on = |a: &AppliesOn| a.gateway(gw_ns, &gw_entry.resource.name);
            let routes = self.routes(compiled_vs, &on, port);
            for domain in domains {
                let listener = &mut self.listeners[li];
                let vi = match listener.virtual_hosts.iter().position(|v| v.domain == domain) {
                    Some(i) => i,
                    None => {
                        listener.hosts.insert(&domain, listener.virtual_hosts.len());
                        listener.virtual_hosts.push(VirtualHost {
                            domain,
                            tls_server,
                            https_redirect,
                            routes: Vec::new(),
                        });
                        listener.virtual_hosts.len() - 1
                    }
                };
                listener.virtual_hosts[vi].routes.extend(routes.iter().cloned());
            }
        }
    }

    /// Client certificates, versions and suites of an HTTPS server; problems become
    /// diagnostics on its `tls` fields.
    fn server_tls(&mut self, gw_entry: &Entry, field: &str, mode: &str, tls: &ServerTls) -> server_tls::Compiled {
        let ns = gw_entry.resource.namespace.clone();
        let credential = tls
            .credential_name
            .as_deref()
            .or(tls.credential_names.first().map(String::as_str));
        let own = credential.and_then(|n| Some((n.to_string(), self.find_secret(&ns, n, &[])?)));
        let cacert = credential.and_then(|n| {
            let name = format!("{n}-cacert");
            Some((name.clone(), self.find_secret(&ns, &name, &[])?))
        });
        fn named(found: &Option<(String, FoundSecret)>) -> Option<(String, &BTreeMap<String, Vec<u8>>)> {
            found
                .as_ref()
                .map(|(name, f)| (format!("{}/{name}", f.namespace), &f.keys))
        }
        let keys = server_tls::CredentialKeys {
            own: named(&own),
            cacert: named(&cacert),
        };
        let (mut compiled, problems) = server_tls::compile(mode, tls, &keys);
        if let Some(auth) = compiled.client_auth.as_mut() {
            let from = match auth.ca {
                PemSource::Inline { .. } => "credentialName",
                PemSource::File { .. } => "caCertificates",
            };
            auth.anchor = gw_entry.anchor(&format!("{field}.tls.{from}"));
        }
        for p in problems {
            let (severity, code) = if p.error {
                (Severity::Error, Code::InvalidValue)
            } else {
                (Severity::Warning, Code::NotEnforced)
            };
            self.diags
                .push(gw_entry.diag(severity, code, &format!("{field}.tls.{}", p.field), p.message));
        }
        compiled
    }

    fn certificate(&mut self, gw_entry: &Entry, field: &str, server: &Server) -> Option<usize> {
        let tls = server.tls.as_ref()?;
        let credential = crate::acme::credential(server);
        let managed = self.acme_managed(gw_entry, field, server);
        let (key, source, from) = if let Some(name) = credential {
            let found = self.secret(&gw_entry.resource.namespace, name);
            let found = match (found, managed) {
                (Some(f), _) => Some(f),
                (None, Some(hosts)) => {
                    self.diags.push(gw_entry.diag(
                        Severity::Note,
                        Code::NotEnforced,
                        &format!("{field}.tls.credentialName"),
                        format!(
                            "no certificate in Secret {name} yet: a self-signed one is served until ACME issues it"
                        ),
                    ));
                    let key = format!("self-signed {}/{name}", gw_entry.resource.namespace);
                    let anchor = gw_entry.anchor(&format!("{field}.tls.credentialName"));
                    return Some(self.add_certificate(key, CertificateSource::SelfSigned { hosts }, anchor));
                }
                (None, None) => None,
            };
            let (cert_pem, key_pem, secret_ns) = found.or_else(|| {
                // As in Istio, a missing Secret takes down only this server, not the config.
                self.diags.push(gw_entry.diag(
                    Severity::Warning,
                    Code::ReferenceNotFound,
                    &format!("{field}.tls.credentialName"),
                    format!(
                        "no kubernetes.io/tls Secret {name} in namespace {} or {}; server skipped",
                        gw_entry.resource.namespace,
                        self.scope.namespace()
                    ),
                ));
                None
            })?;
            (
                format!("secret {secret_ns}/{name}"),
                CertificateSource::Inline { cert_pem, key_pem },
                "credentialName",
            )
        } else {
            let (cert, key) = (tls.server_certificate.clone()?, tls.private_key.clone()?);
            (
                format!("file {cert}"),
                CertificateSource::Files { cert, key },
                "serverCertificate",
            )
        };
        let anchor = gw_entry.anchor(&format!("{field}.tls.{from}"));
        Some(self.add_certificate(key, source, anchor))
    }

    /// The certificate `key` names, added on first use (servers share one).
    pub(super) fn add_certificate(&mut self, key: String, source: CertificateSource, anchor: Anchor) -> usize {
        if let Some(i) = self.cert_index.get(&key) {
            return *i;
        }
        self.certificates.push(Certificate {
            name: key.clone(),
            source,
            anchor,
        });
        self.cert_index.insert(key, self.certificates.len() - 1);
        self.certificates.len() - 1
    }

    /// For a server of a Gateway annotated `strait.io/acme`, records the certificate
    /// to order and returns the names it covers.
    fn acme_managed(&mut self, gw_entry: &Entry, field: &str, server: &Server) -> Option<Vec<String>> {
        match crate::acme::requested(gw_entry, field, server)? {
            Ok(managed) => {
                let hosts = managed.hosts.clone();
                crate::acme::merge(&mut self.acme, managed);
                Some(hosts)
            }
            Err(refusal) => {
                self.diags.push(gw_entry.diag(
                    Severity::Error,
                    refusal.code,
                    &format!("{field}.{}", refusal.field),
                    refusal.message,
                ));
                None
            }
        }
    }

    /// PEM certificate and key of a TLS Secret, looked up in `ns` then in the proxy's namespace.
    fn secret(&self, ns: &str, name: &str) -> Option<(Vec<u8>, Vec<u8>, String)> {
        let mut found = self.find_secret(ns, name, &["tls.crt", "tls.key"])?;
        Some((
            found.keys.remove("tls.crt")?,
            found.keys.remove("tls.key")?,
            found.namespace,
        ))
    }
}
