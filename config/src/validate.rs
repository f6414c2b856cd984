//! Validation of a bundle: per-resource checks as Istio's webhook does them,
//! and cross-resource checks (references, duplicates) as `istioctl analyze` does.

use std::collections::{HashMap, HashSet};

use crate::bundle::{Bundle, Entry};
use crate::diag::{Code, Diagnostic, Severity};
use crate::hosts::{
    check_server_host, check_service_host, check_virtual_service_host, check_wildcard_domain, fqdn, gateway_ref,
};
use crate::registry::Registry;
use crate::resources::kube::SecretBody;
use crate::resources::networking::{
    DestinationRuleSpec, GatewaySpec, HttpRoute, L4RouteSpec, ServiceEntrySpec, StringMatch, TrafficPolicy,
    VirtualServiceSpec,
};
use crate::resources::Spec;
use crate::translate::{compile_full_match, secret_value};

/// All findings about `bundle`.
pub fn validate(bundle: &Bundle) -> Vec<Diagnostic> {
    let mut v = Validator {
        bundle,
        registry: Registry::new(bundle),
        diags: Vec::new(),
    };
    v.duplicates();
    for entry in &bundle.entries {
        match &entry.resource.spec {
            Spec::Gateway(g) => v.gateway(entry, g),
            Spec::VirtualService(vs) => v.virtual_service(entry, vs),
            Spec::DestinationRule(dr) => v.destination_rule(entry, dr),
            Spec::ServiceEntry(se) => v.service_entry(entry, se),
            Spec::Secret(s) => v.secret(entry, s),
            Spec::AuthorizationPolicy(p) => {
                if let Err(errors) = crate::authz::compile_policy(String::new(), p) {
                    for (field, message) in errors {
                        v.err(entry, Code::InvalidValue, &field, message);
                    }
                }
            }
            Spec::RateLimit(r) => v.rate_limit(entry, r),
            Spec::RequestAuthentication(r) => {
                if let Err(errors) = crate::jwt::compile("", r) {
                    for (field, message) in errors {
                        v.err(entry, Code::InvalidValue, &field, message);
                    }
                }
            }
            _ => {}
        }
    }
    v.vs_host_conflicts();
    v.diags
}

struct Validator<'a> {
    bundle: &'a Bundle,
    registry: Registry,
    diags: Vec<Diagnostic>,
}

const PROTOCOLS: &[&str] = &["HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "TCP", "TLS"];
const TLS_MODES: &[&str] = &[
    "PASSTHROUGH",
    "SIMPLE",
    "MUTUAL",
    "AUTO_PASSTHROUGH",
    "ISTIO_MUTUAL",
    "OPTIONAL_MUTUAL",
];

impl Validator<'_> {
    fn err(&mut self, e: &Entry, code: Code, field: &str, msg: impl Into<String>) {
        self.diags.push(e.diag(Severity::Error, code, field, msg));
    }

    fn warn(&mut self, e: &Entry, code: Code, field: &str, msg: impl Into<String>) {
        self.diags.push(e.diag(Severity::Warning, code, field, msg));
    }

    fn duplicates(&mut self) {
        let mut seen: HashMap<(&str, &str, &str), &Entry> = HashMap::new();
        for e in &self.bundle.entries {
            let r = &e.resource;
            if let Some(first) = seen.insert((r.kind(), &r.namespace, &r.name), e) {
                let msg = format!(
                    "{} {}/{} is also defined at {}:{}",
                    r.kind(),
                    r.namespace,
                    r.name,
                    first.origin.file,
                    first.origin.spans.locate("").line
                );
                self.err(e, Code::DuplicateResource, "metadata.name", msg);
            }
        }
    }

    fn gateway(&mut self, e: &Entry, g: &GatewaySpec) {
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

    fn virtual_service(&mut self, e: &Entry, vs: &VirtualServiceSpec) {
        let ns = e.resource.namespace.clone();
        if vs.hosts.is_empty() {
            self.err(
                e,
                Code::Required,
                "spec.hosts",
                "a VirtualService needs at least one host",
            );
        }
        // Istio checks hosts by what the VirtualService is bound to: gateways only
        // (with SNI routes, generated AUTO_PASSTHROUGH names pass), or the mesh.
        let bound_to_gateway = !vs.gateways.iter().any(|g| g == "mesh");
        let sni = vs.tls.iter().any(|t| t.matches.iter().any(|m| !m.sni_hosts.is_empty()));
        let mut seen = HashSet::new();
        for (i, h) in vs.hosts.iter().enumerate() {
            if let Err(msg) = check_virtual_service_host(h, bound_to_gateway && !vs.gateways.is_empty(), sni) {
                self.err(e, Code::InvalidValue, &format!("spec.hosts[{i}]"), msg.to_string());
            }
            if !seen.insert(fqdn(h, &ns)) {
                self.err(
                    e,
                    Code::DuplicateHost,
                    &format!("spec.hosts[{i}]"),
                    format!("host {h} is listed twice"),
                );
            }
            let mesh_bound = vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh");
            if h == "*" && mesh_bound {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("spec.hosts[{i}]"),
                    "wildcard host * is only allowed for VirtualServices bound to gateways",
                );
            }
        }
        for (i, g) in vs.gateways.iter().enumerate() {
            self.gateway_exists(e, &format!("spec.gateways[{i}]"), g);
        }
        if vs.http.is_empty() && vs.tcp.is_empty() && vs.tls.is_empty() {
            self.err(
                e,
                Code::Required,
                "spec",
                "a VirtualService needs http, tcp or tls routes",
            );
        }
        for (i, r) in vs.http.iter().enumerate() {
            self.http_route(e, &format!("spec.http[{i}]"), r);
        }
        for (kind, routes) in [("tls", &vs.tls), ("tcp", &vs.tcp)] {
            for (i, r) in routes.iter().enumerate() {
                self.l4_route(e, &format!("spec.{kind}[{i}]"), r, kind == "tls", bound_to_gateway);
            }
        }
    }

    /// A `tcp` route, or a `tls` one (whose matches need `sniHosts`); `gateway`: the
    /// VirtualService is not bound to the mesh.
    fn l4_route(&mut self, e: &Entry, f: &str, r: &L4RouteSpec, tls: bool, gateway: bool) {
        if tls && r.matches.is_empty() {
            self.err(
                e,
                Code::Required,
                &format!("{f}.match"),
                "a tls route needs a match with sniHosts",
            );
        }
        for (j, m) in r.matches.iter().enumerate() {
            if tls && m.sni_hosts.is_empty() {
                self.err(
                    e,
                    Code::Required,
                    &format!("{f}.match[{j}].sniHosts"),
                    "sniHosts is required",
                );
            }
            for (k, h) in m.sni_hosts.iter().enumerate() {
                // IP addresses pass: Istio only warns that clients rarely send them as SNI.
                if let Err(msg) = check_virtual_service_host(h, gateway, true) {
                    self.err(
                        e,
                        Code::InvalidValue,
                        &format!("{f}.match[{j}].sniHosts[{k}]"),
                        msg.to_string(),
                    );
                }
            }
            if !m.destination_subnets.is_empty() || !m.source_labels.is_empty() || m.source_namespace.is_some() {
                self.warn(
                    e,
                    Code::NotEnforced,
                    &format!("{f}.match[{j}]"),
                    "destinationSubnets, sourceLabels and sourceNamespace are accepted but not enforced by this version of Strait",
                );
            }
        }
        if r.route.is_empty() {
            self.err(
                e,
                Code::Required,
                &format!("{f}.route"),
                "a route needs at least one destination",
            );
        }
        for (di, d) in r.route.iter().enumerate() {
            if let Some(dest) = &d.destination {
                self.destination_host(e, &format!("{f}.route[{di}].destination.host"), &dest.host);
            }
        }
        let weights: Vec<Option<i64>> = r.route.iter().map(|d| d.weight).collect();
        self.route_weights(e, f, &weights);
    }

    /// A destination's host, when given (a missing one is reported where it is
    /// required): a service name, never `*` alone.
    fn destination_host(&mut self, e: &Entry, field: &str, host: &str) {
        if host.is_empty() {
            return;
        }
        if let Err(msg) = check_service_host(host) {
            self.err(e, Code::InvalidValue, field, msg.to_string());
        }
    }

    /// The weights of route `f`'s destinations: each an int32 that is not negative,
    /// as in Istio; one positive when there are several; and a sum (taken so that it
    /// cannot wrap) that fits the u32 a destination is picked with.
    fn route_weights(&mut self, e: &Entry, f: &str, weights: &[Option<i64>]) {
        let mut valid = Vec::with_capacity(weights.len());
        for (di, w) in weights.iter().enumerate() {
            match w.map(crate::translate::route_weight) {
                Some(Ok(w)) => valid.push(w),
                Some(Err(msg)) => self.err(e, Code::InvalidValue, &format!("{f}.route[{di}].weight"), msg),
                None => {}
            }
        }
        // A weight refused for being too large was meant to be positive: the sum of
        // the others being 0 says nothing more.
        let too_large = weights
            .iter()
            .flatten()
            .any(|w| *w > 0 && crate::translate::route_weight(*w).is_err());
        match crate::translate::total_weight(valid) {
            None => self.err(
                e,
                Code::InvalidValue,
                &format!("{f}.route"),
                crate::translate::TOTAL_WEIGHT_TOO_LARGE,
            ),
            Some(0) if weights.len() > 1 && !too_large => self.err(
                e,
                Code::InvalidValue,
                &format!("{f}.route"),
                "with several destinations, at least one weight must be positive",
            ),
            Some(_) => {}
        }
    }

    fn gateway_exists(&mut self, e: &Entry, field: &str, reference: &str) {
        let Some((ns, name)) = gateway_ref(reference, &e.resource.namespace) else {
            return;
        };
        let found = self.bundle.entries.iter().any(|x| {
            matches!(x.resource.spec, Spec::Gateway(_)) && x.resource.namespace == ns && x.resource.name == name
        });
        if !found {
            self.err(
                e,
                Code::ReferenceNotFound,
                field,
                format!("Gateway {ns}/{name} is not defined"),
            );
        }
    }

    fn http_route(&mut self, e: &Entry, f: &str, r: &HttpRoute) {
        let shares = std::iter::once((
            "mirrorPercentage".to_string(),
            r.mirror_percentage.as_ref().and_then(|p| p.value),
        ))
        .chain(std::iter::once((
            "mirrorPercent".to_string(),
            r.mirror_percent.map(|p| p as f64),
        )))
        .chain(r.mirrors.iter().enumerate().map(|(i, m)| {
            (
                format!("mirrors[{i}].percentage"),
                m.percentage.as_ref().and_then(|p| p.value),
            )
        }));
        for (field, share) in shares {
            if let Some(v) = share.filter(|v| !(0.0..=100.0).contains(v)) {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.{field}"),
                    format!("{v} is not a percentage in [0, 100]"),
                );
            }
        }
        if r.retries.as_ref().is_some_and(|x| x.retry_remote_localities.is_some()) {
            self.diags.push(e.diag(
                Severity::Note,
                Code::NotEnforced,
                &format!("{f}.retries.retryRemoteLocalities"),
                "ignored: Strait does not balance by locality, so retries already go to any endpoint not tried yet",
            ));
        }
        if let Some(m) = &r.mirror {
            self.destination_host(e, &format!("{f}.mirror.host"), &m.host);
        }
        for (i, m) in r.mirrors.iter().enumerate() {
            self.destination_host(e, &format!("{f}.mirrors[{i}].destination.host"), &m.destination.host);
        }
        if r.mirror.is_some() && !r.mirrors.is_empty() {
            self.err(
                e,
                Code::Conflict,
                &format!("{f}.mirrors"),
                "mirror and mirrors are mutually exclusive",
            );
        }
        let mut compile = |re: &str| crate::translate::compile_full_match(re, false).map(std::sync::Arc::new);
        if let Err(errors) = crate::policy::route_policy(r, &mut compile) {
            for p in errors {
                self.err(e, p.code, &format!("{f}.{}", p.field), p.message);
            }
        }
        let actions = [
            !r.route.is_empty(),
            r.redirect.is_some(),
            r.direct_response.is_some(),
            r.delegate.is_some(),
        ];
        match actions.iter().filter(|a| **a).count() {
            0 => self.err(
                e,
                Code::Required,
                f,
                "an http route needs route, redirect, directResponse or delegate",
            ),
            1 => {}
            _ => self.err(
                e,
                Code::Conflict,
                f,
                "route, redirect, directResponse and delegate are mutually exclusive",
            ),
        }
        if r.rewrite.is_some() && (r.redirect.is_some() || r.direct_response.is_some()) {
            self.err(
                e,
                Code::Conflict,
                &format!("{f}.rewrite"),
                "rewrite cannot be used with redirect or directResponse",
            );
        }
        for (mi, m) in r.matches.iter().enumerate() {
            let mf = format!("{f}.match[{mi}]");
            for (name, sm) in [
                ("uri", &m.uri),
                ("scheme", &m.scheme),
                ("method", &m.method),
                ("authority", &m.authority),
            ] {
                if let Some(sm) = sm {
                    self.string_match(e, &format!("{mf}.{name}"), sm);
                }
            }
            for (kind, map) in [
                ("headers", &m.headers),
                ("withoutHeaders", &m.without_headers),
                ("queryParams", &m.query_params),
            ] {
                for (k, sm) in map {
                    let kf = format!("{mf}.{kind}.{k}");
                    if kind != "queryParams" && k.starts_with('@') {
                        match crate::translate::claim_key(k).map(crate::claims::ClaimPath::parse) {
                            Some(Ok(_)) => {}
                            Some(Err(m)) => self.err(e, Code::InvalidValue, &kf, m),
                            None => self.err(
                                e,
                                Code::InvalidValue,
                                &kf,
                                format!("{k:?}: the only @ key is @request.auth.claims.<claim>"),
                            ),
                        }
                    } else if kind != "queryParams" && k.chars().any(|c| c.is_ascii_uppercase()) {
                        self.err(e, Code::InvalidValue, &kf, "header names in matches must be lowercase");
                    } else if kind != "queryParams" && http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                        self.err(e, Code::InvalidValue, &kf, format!("{k:?} is not a valid header name"));
                    }
                    self.string_match(e, &kf, sm);
                }
            }
            if let Some(p) = m.port {
                if !(1..=65535).contains(&p) {
                    self.err(
                        e,
                        Code::InvalidValue,
                        &format!("{mf}.port"),
                        format!("port {p} is not in 1-65535"),
                    );
                }
            }
            for (gi, g) in m.gateways.iter().enumerate() {
                self.gateway_exists(e, &format!("{mf}.gateways[{gi}]"), g);
            }
        }
        for (di, d) in r.route.iter().enumerate() {
            let df = format!("{f}.route[{di}]");
            let Some(dest) = &d.destination else {
                self.err(
                    e,
                    Code::Required,
                    &format!("{df}.destination"),
                    "destination is required",
                );
                continue;
            };
            if dest.host.is_empty() {
                self.err(
                    e,
                    Code::Required,
                    &format!("{df}.destination.host"),
                    "destination host is required",
                );
                continue;
            }
            self.destination_host(e, &format!("{df}.destination.host"), &dest.host);
            let host = fqdn(&dest.host, &e.resource.namespace);
            if let Some(subset) = &dest.subset {
                if !self.registry.has_subset(&host, subset) {
                    self.err(
                        e,
                        Code::ReferenceNotFound,
                        &format!("{df}.destination.subset"),
                        format!("subset {subset} of host {host} is not defined in any DestinationRule"),
                    );
                }
            }
            if let Some(p) = dest.port.as_ref().and_then(|p| p.number) {
                if !(1..=65535).contains(&p) {
                    self.err(
                        e,
                        Code::InvalidValue,
                        &format!("{df}.destination.port.number"),
                        format!("port {p} is not in 1-65535"),
                    );
                }
            }
        }
        let weights: Vec<Option<i64>> = r.route.iter().map(|d| d.weight).collect();
        self.route_weights(e, f, &weights);
        if let Some(rw) = &r.rewrite {
            if rw.uri.is_some() && rw.uri_regex_rewrite.is_some() {
                self.err(
                    e,
                    Code::Conflict,
                    &format!("{f}.rewrite"),
                    "rewrite.uri and rewrite.uriRegexRewrite cannot both be set",
                );
            }
            if let Some(rr) = &rw.uri_regex_rewrite {
                match &rr.pattern {
                    None => self.err(
                        e,
                        Code::Required,
                        &format!("{f}.rewrite.uriRegexRewrite.match"),
                        "uriRegexRewrite needs match",
                    ),
                    Some(p) => self.regex(e, &format!("{f}.rewrite.uriRegexRewrite.match"), p),
                }
                if rr.rewrite.is_none() {
                    self.err(
                        e,
                        Code::Required,
                        &format!("{f}.rewrite.uriRegexRewrite.rewrite"),
                        "uriRegexRewrite needs rewrite",
                    );
                }
            }
        }
        if let Some(rd) = &r.redirect {
            if let Some(c) = rd.redirect_code {
                if ![301, 302, 303, 307, 308].contains(&c) {
                    self.err(
                        e,
                        Code::InvalidValue,
                        &format!("{f}.redirect.redirectCode"),
                        format!("redirectCode {c} is not one of 301, 302, 303, 307, 308"),
                    );
                }
            }
            if rd.port.is_some() && rd.derive_port.is_some() {
                self.err(
                    e,
                    Code::Conflict,
                    &format!("{f}.redirect"),
                    "port and derivePort cannot both be set",
                );
            }
            if let Some(d) = &rd.derive_port {
                if !matches!(d.as_str(), "FROM_PROTOCOL_DEFAULT" | "FROM_REQUEST_PORT") {
                    self.err(
                        e,
                        Code::InvalidValue,
                        &format!("{f}.redirect.derivePort"),
                        format!("derivePort {d:?} is not FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT"),
                    );
                }
            }
        }
        if let Some(d) = &r.direct_response {
            match d.status {
                None => self.err(
                    e,
                    Code::Required,
                    &format!("{f}.directResponse.status"),
                    "directResponse needs a status",
                ),
                Some(s) if !(200..=599).contains(&s) => self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.directResponse.status"),
                    format!("status {s} is not in 200-599"),
                ),
                _ => {}
            }
            if let Some(b) = &d.body {
                if b.string.is_some() && b.bytes.is_some() {
                    self.err(
                        e,
                        Code::Conflict,
                        &format!("{f}.directResponse.body"),
                        "body.string and body.bytes cannot both be set",
                    );
                }
            }
        }
    }

    fn string_match(&mut self, e: &Entry, f: &str, m: &StringMatch) {
        let set = [m.exact.is_some(), m.prefix.is_some(), m.regex.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        if set > 1 {
            self.err(
                e,
                Code::Conflict,
                f,
                "a StringMatch takes only one of exact, prefix and regex",
            );
        }
        if let Some(r) = &m.regex {
            self.regex(e, &format!("{f}.regex"), r);
        }
    }

    fn regex(&mut self, e: &Entry, f: &str, re: &str) {
        if let Err(msg) = compile_full_match(re, false) {
            self.err(e, Code::InvalidRegex, f, msg);
        }
    }

    fn destination_rule(&mut self, e: &Entry, dr: &DestinationRuleSpec) {
        if dr.host.is_empty() {
            self.err(e, Code::Required, "spec.host", "a DestinationRule needs a host");
        } else if let Err(msg) = check_wildcard_domain(&dr.host) {
            self.err(e, Code::InvalidValue, "spec.host", msg.to_string());
        }
        let mut names = HashSet::new();
        for (i, s) in dr.subsets.iter().enumerate() {
            if s.name.is_empty() {
                self.err(
                    e,
                    Code::Required,
                    &format!("spec.subsets[{i}].name"),
                    "subset name is required",
                );
            } else if !names.insert(s.name.as_str()) {
                self.err(
                    e,
                    Code::Conflict,
                    &format!("spec.subsets[{i}].name"),
                    format!("subset {} is defined twice", s.name),
                );
            }
        }
        let top = dr.traffic_policy.as_deref();
        let mut blocks: Vec<(String, Option<&TrafficPolicy>, Option<&TrafficPolicy>)> = Vec::new();
        if let Some(t) = top {
            blocks.push(("spec.trafficPolicy".into(), Some(t), None));
        }
        for (i, s) in dr.subsets.iter().enumerate() {
            if let Some(p) = s.traffic_policy.as_deref() {
                blocks.push((format!("spec.subsets[{i}].trafficPolicy"), top, Some(p)));
            }
        }
        for (field, top, sub) in blocks {
            let own = sub.or(top);
            let mut ports: Vec<u16> = own
                .map(|p| {
                    p.port_level_settings
                        .iter()
                        .filter_map(|pl| pl.port.as_ref()?.number.and_then(|n| u16::try_from(n).ok()))
                        .collect()
                })
                .unwrap_or_default();
            ports.push(0);
            for port in ports {
                let effective = crate::cluster_policy::effective(top, sub, port);
                if let Err(errors) = crate::cluster_policy::compile(&effective, &[]) {
                    for p in errors {
                        let at = if port == 0 {
                            format!("{field}.{}", p.field)
                        } else {
                            format!("{field}.portLevelSettings[port {port}].{}", p.field)
                        };
                        self.err(e, p.code, &at, p.message);
                    }
                }
            }
            if let Some(p) = own {
                self.traffic_policy_not_enforced(e, &field, p);
            }
        }
    }

    fn rate_limit(&mut self, e: &Entry, r: &crate::resources::strait::RateLimitSpec) {
        if let Err(errors) = crate::ratelimit::compile(String::new(), r) {
            for (field, message) in errors {
                self.err(e, Code::InvalidValue, &field, message);
            }
            return;
        }
        let ns = e.resource.namespace.as_str();
        let vs = self.bundle.entries.iter().find_map(|x| match &x.resource.spec {
            Spec::VirtualService(v) if x.resource.namespace == ns && x.resource.name == r.virtual_service => Some(v),
            _ => None,
        });
        match vs {
            None => self.warn(
                e,
                Code::ReferenceNotFound,
                "spec.virtualService",
                format!(
                    "no VirtualService {ns}/{}; this limit applies to nothing",
                    r.virtual_service
                ),
            ),
            Some(vs) => {
                for (i, name) in r.routes.iter().enumerate() {
                    if !vs.http.iter().any(|h| h.name.as_deref() == Some(name.as_str())) {
                        self.warn(
                            e,
                            Code::ReferenceNotFound,
                            &format!("spec.routes[{i}]"),
                            format!(
                                "VirtualService {ns}/{} has no http rule named {name}",
                                r.virtual_service
                            ),
                        );
                    }
                }
            }
        }
    }

    /// Warns about traffic-policy fields Strait accepts but does not act on yet.
    fn traffic_policy_not_enforced(&mut self, e: &Entry, field: &str, p: &TrafficPolicy) {
        let mut unused: Vec<&str> = Vec::new();
        for tls in p
            .tls
            .iter()
            .chain(p.port_level_settings.iter().filter_map(|pl| pl.tls.as_ref()))
        {
            match tls.mode.as_deref() {
                None | Some("DISABLE" | "SIMPLE" | "MUTUAL") => {}
                Some("ISTIO_MUTUAL") => unused.push("tls.mode ISTIO_MUTUAL (the mesh's mTLS, with the sidecar)"),
                Some(other) => self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{field}.tls.mode"),
                    format!("{other:?} is not one of DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL"),
                ),
            }
            if !tls.subject_alt_names.is_empty() {
                unused.push("tls.subjectAltNames (the server is verified against the SNI name)");
            }
            if tls.ca_crl.is_some() {
                unused.push("tls.caCrl");
            }
        }
        if p.proxy_protocol.is_some() {
            unused.push("proxyProtocol");
        }
        if p.tunnel.is_some() {
            unused.push("tunnel");
        }
        if let Some(lb) = &p.load_balancer {
            if lb.locality_lb_setting.is_some() {
                unused.push("loadBalancer.localityLbSetting");
            }
            if lb.warmup_duration_secs.is_some() || lb.warmup.is_some() {
                unused.push("loadBalancer.warmup");
            }
            if lb.simple.as_deref() == Some("PASSTHROUGH") {
                unused.push("loadBalancer.simple PASSTHROUGH (a gateway balances with LEAST_REQUEST)");
            }
        }
        if let Some(pool) = &p.connection_pool {
            if let Some(t) = &pool.tcp {
                if t.tcp_keepalive.is_some() {
                    unused.push("connectionPool.tcp.tcpKeepalive");
                }
                if t.max_connection_duration.is_some() {
                    unused.push("connectionPool.tcp.maxConnectionDuration");
                }
            }
            if let Some(h) = &pool.http {
                if h.max_retries.is_some() {
                    unused.push("connectionPool.http.maxRetries");
                }
                if h.use_client_protocol.is_some() {
                    unused.push("connectionPool.http.useClientProtocol");
                }
                if h.max_concurrent_streams.is_some() {
                    unused.push("connectionPool.http.maxConcurrentStreams");
                }
            }
        }
        if let Some(o) = &p.outlier_detection {
            if o.consecutive_local_origin_failures.is_some() || o.split_external_local_origin_errors.is_some() {
                unused.push("outlierDetection local-origin settings");
            }
        }
        for u in unused {
            self.warn(
                e,
                Code::NotEnforced,
                field,
                format!("{u} is accepted but not enforced by this version of Strait"),
            );
        }
    }

    fn service_entry(&mut self, e: &Entry, se: &ServiceEntrySpec) {
        if se.hosts.is_empty() {
            self.err(
                e,
                Code::Required,
                "spec.hosts",
                "a ServiceEntry needs at least one host",
            );
        }
        for (i, h) in se.hosts.iter().enumerate() {
            if let Err(msg) = check_service_host(h) {
                self.err(e, Code::InvalidValue, &format!("spec.hosts[{i}]"), msg.to_string());
            }
        }
        for (i, p) in se.ports.iter().enumerate() {
            if !p.number.is_some_and(|n| (1..=65535).contains(&n)) {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("spec.ports[{i}].number"),
                    "port number must be in 1-65535",
                );
            }
        }
        let resolution = se.resolution.as_deref().unwrap_or("NONE");
        if !matches!(resolution, "NONE" | "STATIC" | "DNS" | "DNS_ROUND_ROBIN") {
            self.err(
                e,
                Code::InvalidValue,
                "spec.resolution",
                format!("resolution {resolution:?} is not NONE, STATIC, DNS or DNS_ROUND_ROBIN"),
            );
        }
        if resolution == "STATIC" {
            for (i, ep) in se.endpoints.iter().enumerate() {
                match &ep.address {
                    None => self.err(
                        e,
                        Code::Required,
                        &format!("spec.endpoints[{i}].address"),
                        "STATIC endpoints need an address",
                    ),
                    Some(a) if a.parse::<std::net::IpAddr>().is_err() => self.err(
                        e,
                        Code::InvalidValue,
                        &format!("spec.endpoints[{i}].address"),
                        format!("{a:?} is not an IP address (STATIC resolution)"),
                    ),
                    _ => {}
                }
            }
        } else if resolution.starts_with("DNS") && se.endpoints.is_empty() && se.workload_selector.is_none() {
            for (i, h) in se.hosts.iter().enumerate() {
                if h.starts_with('*') {
                    self.err(
                        e,
                        Code::InvalidValue,
                        &format!("spec.hosts[{i}]"),
                        "a wildcard host cannot be resolved: DNS resolution without endpoints needs plain hosts",
                    );
                }
            }
        } else if resolution == "NONE" && se.endpoints.is_empty() {
            self.warn(
                e,
                Code::NotEnforced,
                "spec.resolution",
                "resolution NONE forwards to the original destination, which only a sidecar knows; at a gateway requests to these hosts get 503",
            );
        }
    }

    fn secret(&mut self, e: &Entry, s: &SecretBody) {
        if s.secret_type.as_deref() != Some("kubernetes.io/tls") {
            return;
        }
        for key in ["tls.crt", "tls.key"] {
            let present = s.data.contains_key(key) || s.string_data.contains_key(key);
            if !present {
                self.err(
                    e,
                    Code::Required,
                    "data",
                    format!("a kubernetes.io/tls Secret needs {key}"),
                );
            } else if secret_value(s, key).is_none() {
                self.err(e, Code::InvalidValue, &format!("data.{key}"), "not valid base64");
            } else if secret_value(s, key).is_some_and(|v| !v.windows(10).any(|w| w == b"-----BEGIN")) {
                self.err(e, Code::InvalidCertificate, &format!("data.{key}"), "not PEM");
            }
        }
    }

    /// Two VirtualServices bound to the same gateway with the same host: Istio merges
    /// their routes in creation order, which is rarely what was meant.
    fn vs_host_conflicts(&mut self) {
        let mut seen: HashMap<(String, String), &Entry> = HashMap::new();
        let mut found = Vec::new();
        for (e, vs) in self.bundle.of(|s| match s {
            Spec::VirtualService(v) => Some(v),
            _ => None,
        }) {
            let ns = &e.resource.namespace;
            for g in &vs.gateways {
                let Some((gns, gname)) = gateway_ref(g, ns) else {
                    continue;
                };
                for (i, h) in vs.hosts.iter().enumerate() {
                    if let Some(first) = seen.insert((format!("{gns}/{gname}"), fqdn(h, ns)), e) {
                        if !std::ptr::eq(first, e) {
                            found.push((e, i, h.clone(), first.reference().to_string(), format!("{gns}/{gname}")));
                        }
                    }
                }
            }
        }
        for (e, i, h, first, gw) in found {
            self.warn(
                e,
                Code::DuplicateHost,
                &format!("spec.hosts[{i}]"),
                format!("host {h} on gateway {gw} is also routed by {first}; routes are merged in file order"),
            );
        }
    }
}
