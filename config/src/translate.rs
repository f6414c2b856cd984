//! Translation: a validated bundle and the scope of one proxy (its role and
//! labels) become that proxy's `Snapshot`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use base64::Engine as _;
use http::{HeaderName, HeaderValue};
use regex::{Regex, RegexBuilder};

use crate::bundle::{Bundle, Entry};
use crate::claims::ClaimPath;
use crate::cluster_policy;
use crate::diag::{has_errors, Code, Diagnostic, Severity};
use crate::hosts::{fqdn, gateway_ref, intersect, server_host};
use crate::policy::route_policy;
use crate::ratelimit::RateLimit;
use crate::registry::{selects, Registry, ResolveError};
use crate::resources::networking::{
    ClientTlsSettings, Destination, GatewaySpec, HeaderOperations, Headers, HttpMatchRequest, HttpRoute, L4Match,
    Labels, Server, ServerTls, StringMatch, VirtualServiceSpec,
};
use crate::resources::Spec;
use crate::server_tls;
use crate::snapshot::{
    Action, Certificate, CertificateSource, ClaimMatch, Cluster, DirectResponse, ExtAuthz, Forward, HeaderMatch,
    HeaderOps, L4Route, Listener, Mirror, PemSource, Protocol, Redirect, RegexRewrite, RequestMatch, Rewrite, Route,
    Snapshot, StrMatch, TlsServer, UpstreamTls, VirtualHost, WeightedCluster,
};

/// How a VirtualService header match names a JWT claim.
pub const CLAIM_KEY: &str = "@request.auth.claims";

/// The claim path of an `@request.auth.claims.<name>` (or `[name]`) header key.
pub fn claim_key(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(CLAIM_KEY)?;
    Some(rest.strip_prefix('.').unwrap_or(rest))
}

/// The role a proxy plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Edge (ingress) or egress gateway: listeners from Gateway servers.
    Gateway,
}

/// Who the snapshot is for.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Role.
    pub role: Role,
    /// The proxy's workload labels (Gateway `selector`s are matched against them).
    pub labels: Labels,
    /// The proxy's namespace (where Secrets are looked up after the Gateway's own).
    pub namespace: String,
    /// The mesh's outbound traffic policy.
    pub outbound: crate::mesh::OutboundMode,
    /// The mesh's external authorizers (`extensionProviders` with `envoyExtAuthzHttp`).
    pub ext_authz: Vec<crate::ext_authz::Provider>,
}

/// Builds the snapshot for `scope`. Errors reject the bundle; warnings are returned
/// beside the snapshot.
pub fn translate(bundle: &Bundle, scope: &Scope, version: u64) -> Result<(Snapshot, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut t = Translator {
        bundle,
        scope,
        registry: Registry::new(bundle),
        diags: Vec::new(),
        listeners: Vec::new(),
        clusters: Vec::new(),
        cluster_index: HashMap::new(),
        certificates: Vec::new(),
        cert_index: HashMap::new(),
        regexes: HashMap::new(),
        rate_limits: rate_limits(bundle),
        acme: Vec::new(),
    };
    match scope.role {
        Role::Gateway => t.gateways(),
    }
    let mut ext_authz: Vec<ExtAuthz> = Vec::new();
    let (authz, authz_diags) = crate::authz::for_scope(bundle, scope, |entry, name| {
        if let Some(i) = ext_authz.iter().position(|e| e.provider.name == name) {
            return Some(i);
        }
        let provider = scope.ext_authz.iter().find(|p| p.name == name)?;
        // `[<namespace>/]<hostname>`: a short name is in the policy's namespace.
        let (ns, host) = provider
            .service
            .split_once('/')
            .unwrap_or((entry.resource.namespace.as_str(), provider.service.as_str()));
        let cluster = t.cluster(
            entry,
            "spec.provider",
            &fqdn(host, ns),
            Some(i64::from(provider.port)),
            None,
            0,
        );
        ext_authz.push(ExtAuthz {
            provider: provider.clone(),
            cluster,
        });
        Some(ext_authz.len() - 1)
    });
    t.diags.extend(authz_diags);
    let (jwt, jwt_diags) = crate::jwt::for_scope(bundle, scope);
    t.diags.extend(jwt_diags);
    if has_errors(&t.diags) {
        return Err(t.diags);
    }
    let snapshot = Snapshot {
        version,
        sources: bundle.files.clone(),
        listeners: t.listeners,
        clusters: t.clusters,
        certificates: t.certificates,
        authz,
        jwt,
        ext_authz,
        acme: t.acme,
    };
    Ok((snapshot, t.diags))
}

struct Translator<'a> {
    bundle: &'a Bundle,
    scope: &'a Scope,
    registry: Registry,
    diags: Vec<Diagnostic>,
    listeners: Vec<Listener>,
    clusters: Vec<Cluster>,
    cluster_index: HashMap<String, usize>,
    certificates: Vec<Certificate>,
    cert_index: HashMap<String, usize>,
    /// Compiled regexes by (pattern, case-insensitive): a compiled regex costs
    /// kilobytes, and large tables repeat the same patterns.
    regexes: HashMap<(String, bool), Arc<Regex>>,
    /// RateLimits: (namespace, VirtualService, rule names or all, the limit).
    rate_limits: Vec<(String, String, Vec<String>, Arc<RateLimit>)>,
    /// Certificates to obtain with ACME.
    acme: Vec<crate::acme::ManagedCert>,
}

/// The bundle's RateLimits, compiled (validation has reported the invalid ones).
fn rate_limits(bundle: &Bundle) -> Vec<(String, String, Vec<String>, Arc<RateLimit>)> {
    bundle
        .of(|s| match s {
            Spec::RateLimit(r) => Some(r),
            _ => None,
        })
        .filter_map(|(e, r)| {
            let id = format!("{}/{}", e.resource.namespace, e.resource.name);
            let limit = crate::ratelimit::compile(id, r).ok()?;
            Some((
                e.resource.namespace.clone(),
                r.virtual_service.clone(),
                r.routes.clone(),
                limit,
            ))
        })
        .collect()
}

impl<'a> Translator<'a> {
    fn gateways(&mut self) {
        let gateways: Vec<(&Entry, &GatewaySpec)> = self
            .bundle
            .of(|s| match s {
                Spec::Gateway(g) => Some(g),
                _ => None,
            })
            .filter(|(_, g)| selects(&g.selector, &self.scope.labels))
            .collect();
        let services: Vec<(&Entry, &VirtualServiceSpec)> = self
            .bundle
            .of(|s| match s {
                Spec::VirtualService(v) => Some(v),
                _ => None,
            })
            .collect();
        for (gw_entry, gw) in gateways {
            for (si, server) in gw.servers.iter().enumerate() {
                self.server(gw_entry, si, server, &services);
            }
        }
        self.listeners.sort_by_key(|l| l.port);
    }

    fn server(&mut self, gw_entry: &Entry, si: usize, server: &Server, services: &[(&Entry, &VirtualServiceSpec)]) {
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
                self.listeners.push(Listener {
                    port,
                    protocol,
                    tls_servers: Vec::new(),
                    sni: Default::default(),
                    virtual_hosts: Vec::new(),
                    hosts: Default::default(),
                    l4_routes: Vec::new(),
                });
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

        for (vs_entry, vs) in services {
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
                let routes = self.l4_routes(vs_entry, vs, gw_ns, &gw_entry.resource.name, port, tls);
                self.listeners[li].l4_routes.extend(routes);
                continue;
            }
            let routes = self.routes(vs_entry, vs, gw_ns, &gw_entry.resource.name, port);
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
        let (compiled, problems) = server_tls::compile(mode, tls, &keys);
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
        let credential = tls
            .credential_name
            .as_deref()
            .or(tls.credential_names.first().map(String::as_str));
        let managed = self.acme_managed(gw_entry, field, server, credential);
        let (key, source) = if let Some(name) = credential {
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
                    return Some(self.add_certificate(key, CertificateSource::SelfSigned { hosts }));
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
                        gw_entry.resource.namespace, self.scope.namespace
                    ),
                ));
                None
            })?;
            (
                format!("secret {secret_ns}/{name}"),
                CertificateSource::Inline { cert_pem, key_pem },
            )
        } else {
            let (cert, key) = (tls.server_certificate.clone()?, tls.private_key.clone()?);
            (format!("file {cert}"), CertificateSource::Files { cert, key })
        };
        Some(self.add_certificate(key, source))
    }

    fn add_certificate(&mut self, key: String, source: CertificateSource) -> usize {
        if let Some(i) = self.cert_index.get(&key) {
            return *i;
        }
        self.certificates.push(Certificate {
            name: key.clone(),
            source,
        });
        self.cert_index.insert(key, self.certificates.len() - 1);
        self.certificates.len() - 1
    }

    /// For a server of a Gateway annotated `strait.io/acme`, records the certificate
    /// to order and returns the names it covers.
    fn acme_managed(
        &mut self,
        gw_entry: &Entry,
        field: &str,
        server: &Server,
        credential: Option<&str>,
    ) -> Option<Vec<String>> {
        let issuer = gw_entry.resource.metadata.annotations.get(crate::acme::ANNOTATION)?;
        let Some(credential) = credential else {
            self.diags.push(gw_entry.diag(
                Severity::Error,
                Code::Required,
                &format!("{field}.tls.credentialName"),
                format!(
                    "{}: the server needs a credentialName, the Secret the issued certificate is kept in",
                    crate::acme::ANNOTATION
                ),
            ));
            return None;
        };
        let ns = gw_entry.resource.namespace.as_str();
        let hosts: Vec<String> = server
            .hosts
            .iter()
            .map(|h| server_host(h, ns).1.to_ascii_lowercase())
            .collect();
        if let Some(wild) = hosts.iter().find(|h| h.contains('*')) {
            self.diags.push(gw_entry.diag(
                Severity::Error,
                Code::InvalidValue,
                &format!("{field}.hosts"),
                format!(
                    "{}: {wild} cannot be proven with HTTP-01 or TLS-ALPN-01; list exact names",
                    crate::acme::ANNOTATION
                ),
            ));
            return None;
        }
        let managed = crate::acme::ManagedCert {
            issuer: issuer.clone(),
            namespace: ns.to_string(),
            credential_name: credential.to_string(),
            hosts: hosts.clone(),
            source: format!("Gateway {ns}/{} {field}", gw_entry.resource.name),
        };
        match self
            .acme
            .iter_mut()
            .find(|m| m.namespace == ns && m.credential_name == credential)
        {
            // Servers sharing a credential share one certificate covering all their names.
            Some(existing) => {
                for h in &hosts {
                    if !existing.hosts.contains(h) {
                        existing.hosts.push(h.clone());
                    }
                }
            }
            None => self.acme.push(managed),
        }
        Some(hosts)
    }

    /// DestinationRule `tls` for a cluster: SIMPLE and MUTUAL originate TLS; DISABLE
    /// (and ISTIO_MUTUAL, the sidecar's, which validation flags) leave it plain.
    fn upstream_tls(&mut self, entry: &Entry, field: &str, host: &str, tls: &ClientTlsSettings) -> Option<UpstreamTls> {
        let mode = tls.mode.as_deref().unwrap_or("DISABLE");
        if !matches!(mode, "SIMPLE" | "MUTUAL") {
            return None;
        }
        let file = |p: &Option<String>| p.as_ref().map(|path| PemSource::File { path: path.clone() });
        let mut ca = file(&tls.ca_certificates);
        let mut client = match (file(&tls.client_certificate), file(&tls.private_key)) {
            (Some(c), Some(k)) => Some((c, k)),
            _ => None,
        };
        if let Some(name) = &tls.credential_name {
            let ns = self.scope.namespace.clone();
            match self.find_secret(&ns, name, &[]) {
                Some(found) => {
                    let inline = |key: &str| {
                        found.keys.get(key).map(|pem| PemSource::Inline {
                            name: format!("secret {}/{name} {key}", found.namespace),
                            pem: pem.clone(),
                        })
                    };
                    ca = inline("ca.crt").or(ca);
                    if let (Some(c), Some(k)) = (inline("tls.crt"), inline("tls.key")) {
                        client = Some((c, k));
                    }
                }
                None => self.diags.push(entry.diag(
                    Severity::Error,
                    Code::ReferenceNotFound,
                    &format!("{field}.host"),
                    format!(
                        "the DestinationRule for {host} names credentialName {name}, which is not a Secret in namespace {ns}"
                    ),
                )),
            }
        }
        if mode == "MUTUAL" && client.is_none() {
            self.diags.push(entry.diag(
                Severity::Error,
                Code::Required,
                &format!("{field}.host"),
                format!(
                    "the DestinationRule for {host} has tls.mode MUTUAL without a client certificate (clientCertificate and privateKey, or credentialName)"
                ),
            ));
        }
        Some(UpstreamTls {
            sni: tls.sni.clone().unwrap_or_else(|| host.to_string()),
            ca,
            client,
            insecure_skip_verify: tls.insecure_skip_verify.unwrap_or(false),
        })
    }

    /// The Secret `name` in `ns`, else in the proxy's namespace: the first of them that
    /// has every key in `needed`, with all its keys decoded.
    fn find_secret(&self, ns: &str, name: &str, needed: &[&str]) -> Option<FoundSecret> {
        [ns, self.scope.namespace.as_str()].iter().find_map(|ns| {
            let (entry, body) = self
                .bundle
                .of(|s| match s {
                    Spec::Secret(b) => Some(b),
                    _ => None,
                })
                .find(|(e, _)| e.resource.namespace == *ns && e.resource.name == name)?;
            let keys: BTreeMap<String, Vec<u8>> = body
                .string_data
                .keys()
                .chain(body.data.keys())
                .filter_map(|k| Some((k.clone(), secret_value(body, k)?)))
                .collect();
            needed.iter().all(|k| keys.contains_key(*k)).then(|| FoundSecret {
                namespace: entry.resource.namespace.clone(),
                keys,
            })
        })
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

    fn routes(&mut self, entry: &Entry, vs: &VirtualServiceSpec, gw_ns: &str, gw_name: &str, port: u16) -> Vec<Route> {
        let vs_ns = entry.resource.namespace.as_str();
        let mut routes = Vec::new();
        for (ri, rule) in vs.http.iter().enumerate() {
            let field = format!("spec.http[{ri}]");
            let mut matches = Vec::new();
            for (mi, m) in rule.matches.iter().enumerate() {
                let for_this_gateway = m.gateways.is_empty()
                    || m.gateways
                        .iter()
                        .filter_map(|g| gateway_ref(g, vs_ns))
                        .any(|(ns, n)| ns == gw_ns && n == gw_name);
                if !for_this_gateway {
                    continue;
                }
                if let Some(c) = self.request_match(entry, &format!("{field}.match[{mi}]"), m) {
                    matches.push(c);
                }
            }
            if !rule.matches.is_empty() && matches.is_empty() {
                continue;
            }
            let Some(action) = self.action(entry, &field, rule, vs_ns, port) else {
                continue;
            };
            let (request_headers, response_headers) =
                self.header_ops(entry, &format!("{field}.headers"), rule.headers.as_ref());
            // Validation has reported any error in the policy; this bundle got here without one.
            let mut regexes = std::mem::take(&mut self.regexes);
            let mut policy = route_policy(rule, &mut |re| intern_regex(&mut regexes, re, false)).unwrap_or_default();
            self.regexes = regexes;
            policy.rate_limit = self.rate_limit_for(vs_ns, &entry.resource.name, rule.name.as_deref());
            routes.push(Route {
                name: rule.name.clone(),
                source: format!("VirtualService {vs_ns}/{} http[{ri}]", entry.resource.name),
                matches,
                action,
                request_headers,
                response_headers,
                policy,
            });
        }
        routes
    }

    /// The RateLimit on rule `rule` of VirtualService `ns/vs`, if any (the first one).
    fn rate_limit_for(&self, ns: &str, vs: &str, rule: Option<&str>) -> Option<Arc<RateLimit>> {
        self.rate_limits
            .iter()
            .find(|(n, v, routes, _)| {
                n == ns && v == vs && (routes.is_empty() || rule.is_some_and(|r| routes.iter().any(|x| x == r)))
            })
            .map(|(_, _, _, l)| l.clone())
    }

    /// A VirtualService's `tcp` (or, for TLS passthrough, `tls`) routes on one gateway port.
    fn l4_routes(
        &mut self,
        entry: &Entry,
        vs: &VirtualServiceSpec,
        gw_ns: &str,
        gw_name: &str,
        port: u16,
        tls: bool,
    ) -> Vec<L4Route> {
        let vs_ns = entry.resource.namespace.as_str();
        let (kind, rules) = if tls { ("tls", &vs.tls) } else { ("tcp", &vs.tcp) };
        let mut out = Vec::new();
        for (ri, rule) in rules.iter().enumerate() {
            let (matches, route) = (&rule.matches, &rule.route);
            let field = format!("spec.{kind}[{ri}]");
            let applicable: Vec<&L4Match> = matches
                .iter()
                .filter(|m| m.port.is_none_or(|p| p == i64::from(port)))
                .filter(|m| {
                    m.gateways.is_empty()
                        || m.gateways
                            .iter()
                            .filter_map(|g| gateway_ref(g, vs_ns))
                            .any(|(ns, n)| ns == gw_ns && n == gw_name)
                })
                .collect();
            if !matches.is_empty() && applicable.is_empty() {
                continue;
            }
            let mut sni_hosts: Vec<String> = applicable
                .iter()
                .flat_map(|m| m.sni_hosts.iter().map(|h| h.to_ascii_lowercase()))
                .collect();
            sni_hosts.dedup();
            let dests = route.iter().map(|d| (d.destination.as_ref(), d.weight, None)).collect();
            let destinations = self.weighted(entry, &field, vs_ns, port, dests);
            let total_weight = self.total_weight(entry, &field, &destinations);
            out.push(L4Route {
                source: format!("VirtualService {vs_ns}/{} {kind}[{ri}]", entry.resource.name),
                sni_hosts,
                destinations,
                total_weight,
            });
        }
        out
    }

    fn request_match(&mut self, entry: &Entry, field: &str, m: &HttpMatchRequest) -> Option<RequestMatch> {
        Some(RequestMatch {
            uri: self.str_match(entry, &format!("{field}.uri"), m.uri.as_ref(), m.ignore_uri_case),
            ignore_uri_case: m.ignore_uri_case,
            scheme: self.str_match(entry, &format!("{field}.scheme"), m.scheme.as_ref(), false),
            method: self.str_match(entry, &format!("{field}.method"), m.method.as_ref(), false),
            authority: self.str_match(entry, &format!("{field}.authority"), m.authority.as_ref(), false),
            headers: self.header_matches(entry, &format!("{field}.headers"), &m.headers),
            without_headers: self.header_matches(entry, &format!("{field}.withoutHeaders"), &m.without_headers),
            claims: self.claim_matches(entry, &format!("{field}.headers"), &m.headers),
            without_claims: self.claim_matches(entry, &format!("{field}.withoutHeaders"), &m.without_headers),
            query_params: m
                .query_params
                .iter()
                .filter_map(|(k, v)| {
                    Some((
                        k.clone(),
                        self.str_match(entry, &format!("{field}.queryParams.{k}"), Some(v), false)?,
                    ))
                })
                .collect(),
            port: m.port.and_then(|p| u16::try_from(p).ok()),
        })
    }

    fn header_matches(
        &mut self,
        entry: &Entry,
        field: &str,
        map: &std::collections::BTreeMap<String, StringMatch>,
    ) -> Vec<HeaderMatch> {
        map.iter()
            .filter(|(k, _)| !k.starts_with(CLAIM_KEY))
            .filter_map(|(k, v)| {
                let name = HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).ok()?;
                Some(HeaderMatch {
                    name,
                    matcher: self.str_match(entry, &format!("{field}.{k}"), Some(v), false)?,
                })
            })
            .collect()
    }

    /// The `@request.auth.claims.<name>` keys of a header map (validation checked
    /// their names).
    fn claim_matches(
        &mut self,
        entry: &Entry,
        field: &str,
        map: &std::collections::BTreeMap<String, StringMatch>,
    ) -> Vec<ClaimMatch> {
        map.iter()
            .filter_map(|(k, v)| {
                let claim = ClaimPath::parse(claim_key(k)?).ok()?;
                Some(ClaimMatch {
                    claim,
                    matcher: self.str_match(entry, &format!("{field}.{k}"), Some(v), false)?,
                })
            })
            .collect()
    }

    fn str_match(
        &mut self,
        entry: &Entry,
        field: &str,
        m: Option<&StringMatch>,
        ignore_case: bool,
    ) -> Option<StrMatch> {
        let m = m?;
        Some(match (&m.exact, &m.prefix, &m.regex) {
            (Some(e), _, _) => StrMatch::Exact(e.clone()),
            (_, Some(p), _) => StrMatch::Prefix(p.clone()),
            (_, _, Some(r)) => StrMatch::Regex(self.regex(entry, &format!("{field}.regex"), r, ignore_case)?),
            _ => StrMatch::Present,
        })
    }

    fn regex(&mut self, entry: &Entry, field: &str, re: &str, ignore_case: bool) -> Option<Arc<Regex>> {
        match intern_regex(&mut self.regexes, re, ignore_case) {
            Ok(r) => Some(r),
            Err(e) => {
                self.diags
                    .push(entry.diag(Severity::Error, Code::InvalidRegex, field, e));
                None
            }
        }
    }

    fn action(&mut self, entry: &Entry, field: &str, rule: &HttpRoute, vs_ns: &str, port: u16) -> Option<Action> {
        if let Some(r) = &rule.redirect {
            let derive = r.derive_port.as_deref() == Some("FROM_REQUEST_PORT");
            return Some(Action::Redirect(Redirect {
                uri: r.uri.clone(),
                authority: r.authority.clone(),
                scheme: r.scheme.clone(),
                port: r.port.and_then(|p| u16::try_from(p).ok()),
                port_from_request: derive,
                code: r.redirect_code.and_then(|c| u16::try_from(c).ok()).unwrap_or(301),
            }));
        }
        if let Some(d) = &rule.direct_response {
            let body = d.body.as_ref().map_or(Ok(Vec::new()), |b| match (&b.string, &b.bytes) {
                (Some(s), _) => Ok(s.clone().into_bytes()),
                (_, Some(b64)) => base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|e| e.to_string()),
                _ => Ok(Vec::new()),
            });
            return match body {
                Ok(body) => Some(Action::DirectResponse(DirectResponse {
                    status: d.status.and_then(|s| u16::try_from(s).ok()).unwrap_or(200),
                    body: Arc::from(body),
                })),
                Err(e) => {
                    self.diags.push(entry.diag(
                        Severity::Error,
                        Code::InvalidValue,
                        &format!("{field}.directResponse.body.bytes"),
                        format!("invalid base64: {e}"),
                    ));
                    None
                }
            };
        }
        // Istio: `mirror` with `mirrorPercentage` (or the old `mirrorPercent`), all
        // requests when neither is set; `mirrors` each with its own percentage.
        let single_mirror = rule.mirror.as_ref().map(|d| {
            let percent = rule
                .mirror_percentage
                .as_ref()
                .and_then(|p| p.value)
                .or(rule.mirror_percent.map(|p| p as f64))
                .unwrap_or(100.0);
            (format!("{field}.mirror"), d, percent)
        });
        let listed = rule.mirrors.iter().enumerate().map(|(i, m)| {
            let percent = m.percentage.as_ref().and_then(|p| p.value).unwrap_or(100.0);
            (format!("{field}.mirrors[{i}].destination"), &m.destination, percent)
        });
        let mut mirrors = Vec::new();
        for (mfield, dest, percent) in single_mirror.into_iter().chain(listed) {
            let cluster = self.destination_cluster(entry, &mfield, dest, vs_ns, port);
            if self.clusters.get(cluster).is_some_and(|c| c.policy.tls.is_some()) {
                self.diags.push(entry.diag(
                    Severity::Warning,
                    Code::NotEnforced,
                    &mfield,
                    "mirroring to a destination with upstream TLS is not supported by this version of Strait; no copies are sent",
                ));
                continue;
            }
            mirrors.push(Mirror { cluster, percent });
        }
        let dests = rule
            .route
            .iter()
            .map(|d| (d.destination.as_ref(), d.weight, d.headers.as_ref()))
            .collect();
        let destinations = self.weighted(entry, field, vs_ns, port, dests);
        let rewrite = rule.rewrite.as_ref().map(|r| Rewrite {
            uri: r.uri.clone(),
            uri_regex: r.uri_regex_rewrite.as_ref().and_then(|rr| {
                let pattern = self.regex(
                    entry,
                    &format!("{field}.rewrite.uriRegexRewrite.match"),
                    rr.pattern.as_deref().unwrap_or(""),
                    false,
                )?;
                Some(RegexRewrite {
                    pattern,
                    replacement: re2_replacement(rr.rewrite.as_deref().unwrap_or("")),
                })
            }),
            authority: r.authority.clone(),
        });
        let total_weight = self.total_weight(entry, field, &destinations);
        Some(Action::Forward(Forward {
            destinations,
            total_weight,
            rewrite,
            mirrors,
        }))
    }

    /// A route's weighted destinations, in rule order: a single destination weighs
    /// 100 when it gives no weight; zero weights are left out.
    fn weighted(
        &mut self,
        entry: &Entry,
        field: &str,
        vs_ns: &str,
        port: u16,
        dests: Vec<(Option<&Destination>, Option<i64>, Option<&Headers>)>,
    ) -> Vec<WeightedCluster> {
        let single = dests.len() == 1;
        let mut out = Vec::new();
        for (di, (dest, weight, headers)) in dests.into_iter().enumerate() {
            let dfield = format!("{field}.route[{di}]");
            let Some(dest) = dest else { continue };
            let weight = match weight.map_or(Ok(if single { 100 } else { 0 }), route_weight) {
                Ok(w) => w,
                Err(e) => {
                    let at = format!("{dfield}.weight");
                    self.diags.push(entry.diag(Severity::Error, Code::InvalidValue, &at, e));
                    continue;
                }
            };
            if weight == 0 && !single {
                continue;
            }
            let cluster = self.destination_cluster(entry, &format!("{dfield}.destination"), dest, vs_ns, port);
            let (request_headers, response_headers) = self.header_ops(entry, &format!("{dfield}.headers"), headers);
            out.push(WeightedCluster {
                cluster,
                weight,
                request_headers,
                response_headers,
            });
        }
        out
    }

    /// The sum of a route's weights; an error (and 0) when it passes `u32::MAX`.
    fn total_weight(&mut self, entry: &Entry, field: &str, destinations: &[WeightedCluster]) -> u32 {
        total_weight(destinations.iter().map(|d| d.weight)).unwrap_or_else(|| {
            let at = format!("{field}.route");
            self.diags
                .push(entry.diag(Severity::Error, Code::InvalidValue, &at, TOTAL_WEIGHT_TOO_LARGE));
            0
        })
    }

    /// The cluster of a destination named in a resource of namespace `vs_ns`.
    fn destination_cluster(&mut self, entry: &Entry, field: &str, dest: &Destination, vs_ns: &str, port: u16) -> usize {
        self.cluster(
            entry,
            field,
            &fqdn(&dest.host, vs_ns),
            dest.port.as_ref().and_then(|p| p.number),
            dest.subset.as_deref(),
            port,
        )
    }

    fn cluster(
        &mut self,
        entry: &Entry,
        field: &str,
        host: &str,
        port: Option<i64>,
        subset: Option<&str>,
        listener_port: u16,
    ) -> usize {
        let port = port.and_then(|p| u16::try_from(p).ok());
        let blackhole = self.scope.outbound == crate::mesh::OutboundMode::RegistryOnly;
        let mut unknown = false;
        let (port, endpoints) = match self.registry.resolve(host, port, subset) {
            Ok(r) => r,
            Err(e) => {
                let severity = match e {
                    ResolveError::HostNotFound(_) => Severity::Warning,
                    ResolveError::PortNotFound { .. } => Severity::Error,
                };
                let answer = if blackhole {
                    "requests to it get 502 (outboundTrafficPolicy REGISTRY_ONLY)"
                } else {
                    "requests to it get 503"
                };
                self.diags.push(entry.diag(
                    severity,
                    Code::ReferenceNotFound,
                    &format!("{field}.host"),
                    format!("{e}; {answer}"),
                ));
                unknown = true;
                (port.unwrap_or(listener_port), Vec::new())
            }
        };
        let name = format!("outbound|{port}|{}|{host}", subset.unwrap_or(""));
        if let Some(i) = self.cluster_index.get(&name) {
            return *i;
        }
        let (top, sub) = self.registry.traffic_policies(host, subset);
        let effective = cluster_policy::effective(top, sub, port);
        // Validation has reported any error in the policies; none reached here.
        let mut policy = cluster_policy::compile(&effective, &endpoints).unwrap_or_default();
        if let Some(tls) = &effective.tls {
            policy.tls = self.upstream_tls(entry, field, host, tls);
        }
        // HTTP/2 upstream for ports declared HTTP2 or gRPC, as Istio does; for HTTP
        // ports when the DestinationRule asks (h2UpgradePolicy: UPGRADE).
        if matches!(
            self.registry.port_protocol(host, port),
            Some("HTTP2" | "GRPC" | "GRPC-WEB")
        ) {
            policy.h2_upstream = true;
        }
        self.clusters.push(Cluster {
            name: name.clone(),
            host: host.to_string(),
            port,
            subset: subset.map(str::to_string),
            endpoints,
            policy,
            blackhole: blackhole && unknown,
            next: Default::default(),
        });
        self.cluster_index.insert(name, self.clusters.len() - 1);
        self.clusters.len() - 1
    }

    fn header_ops(&mut self, entry: &Entry, field: &str, headers: Option<&Headers>) -> (HeaderOps, HeaderOps) {
        let Some(h) = headers else { return Default::default() };
        (
            self.ops(entry, &format!("{field}.request"), h.request.as_ref()),
            self.ops(entry, &format!("{field}.response"), h.response.as_ref()),
        )
    }

    fn ops(&mut self, entry: &Entry, field: &str, ops: Option<&HeaderOperations>) -> HeaderOps {
        let Some(ops) = ops else { return HeaderOps::default() };
        let mut out = HeaderOps::default();
        let mut pair = |kind: &str, k: &str, v: &str| -> Option<(HeaderName, HeaderValue)> {
            match (
                HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()),
                HeaderValue::from_str(v),
            ) {
                (Ok(n), Ok(v)) => Some((n, v)),
                _ => {
                    self.diags.push(entry.diag(
                        Severity::Error,
                        Code::InvalidValue,
                        &format!("{field}.{kind}.{k}"),
                        "not a valid header name or value",
                    ));
                    None
                }
            }
        };
        out.set = ops.set.iter().filter_map(|(k, v)| pair("set", k, v)).collect();
        out.add = ops.add.iter().filter_map(|(k, v)| pair("add", k, v)).collect();
        out.remove = ops
            .remove
            .iter()
            .filter_map(|k| HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).ok())
            .collect();
        out
    }
}

/// A Secret found for a reference, with its keys decoded.
struct FoundSecret {
    namespace: String,
    keys: BTreeMap<String, Vec<u8>>,
}

/// A route destination's weight: Istio's weights are int32 and not negative.
pub fn route_weight(w: i64) -> Result<u32, String> {
    if w < 0 {
        return Err("weight must not be negative".into());
    }
    i32::try_from(w)
        .ok()
        .and_then(|w| u32::try_from(w).ok())
        .ok_or_else(|| format!("weight {w} is more than 2147483647 (Istio's weights are int32)"))
}

/// The sum of a route's weights, taken in u64 so that it cannot wrap; `None` when it
/// passes the u32 a destination is picked with.
pub fn total_weight(weights: impl IntoIterator<Item = u32>) -> Option<u32> {
    u32::try_from(weights.into_iter().map(u64::from).sum::<u64>()).ok()
}

/// Why a route's weights cannot be picked from, when their sum passes `u32::MAX`.
pub const TOTAL_WEIGHT_TOO_LARGE: &str =
    "the weights of this route add up to more than 4294967295; weights are relative: scale them down";

/// The value of a Secret key from `stringData` or base64 `data`.
pub fn secret_value(body: &crate::resources::kube::SecretBody, key: &str) -> Option<Vec<u8>> {
    if let Some(v) = body.string_data.get(key) {
        return Some(v.clone().into_bytes());
    }
    let v = body.data.get(key)?;
    let compact: String = v.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(compact).ok()
}

/// A compiled regex, shared with every earlier use of the same pattern.
fn intern_regex(
    regexes: &mut HashMap<(String, bool), Arc<Regex>>,
    re: &str,
    ignore_case: bool,
) -> Result<Arc<Regex>, String> {
    let key = (re.to_string(), ignore_case);
    if let Some(r) = regexes.get(&key) {
        return Ok(r.clone());
    }
    let r = Arc::new(compile_full_match(re, ignore_case)?);
    regexes.insert(key, r.clone());
    Ok(r)
}

/// Compiles an RE2-style regex that must match the whole value, as Envoy's safe_regex does.
pub fn compile_full_match(re: &str, ignore_case: bool) -> Result<Regex, String> {
    RegexBuilder::new(&format!("^(?:{re})$"))
        .case_insensitive(ignore_case)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("invalid regex {re:?}: {}", e.to_string().lines().last().unwrap_or("")))
}

/// RE2/Envoy substitutions use `\1`; the regex crate uses `${1}`.
fn re2_replacement(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some(d)) if d.is_ascii_digit() => {
                out.push_str(&format!("${{{d}}}"));
                chars.next();
            }
            ('$', _) => out.push_str("$$"),
            _ => out.push(c),
        }
    }
    out
}
