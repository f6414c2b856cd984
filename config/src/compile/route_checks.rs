//! What Istio refuses in a VirtualService beyond what compiling its rules checks:
//! virtualservice.go `validateHTTPRoute`, `validateHTTPRouteConflict`,
//! `validateHTTPRouteMatchRequest`, `validateAuthorityRewrite`; validation.go
//! `ValidateVirtualService`, `validateGatewayNames`, `validateHTTPRedirect`,
//! `validateHTTPRewrite`, `validateHTTPDirectResponse`, `validateCORSPolicy`,
//! `validateHTTPFaultInjection`, `validateStringMatch`, `validateTLSMatch`,
//! `validateSniHost`, `validateTCPMatch`, `validateDestination`, the header checks
//! (`ValidateHTTPHeader*`) and header_value_validator.go; agent `ValidateHTTPRetry`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::bundle::Entry;
use crate::diag::Code;
use crate::duration;
use crate::hosts::{check_fqdn, check_virtual_service_host, is_label};
use crate::resources::networking::{
    Destination, HeaderOperations, Headers, HttpMatchRequest, HttpRoute, L4RouteSpec, StringMatch, VirtualServiceSpec,
};

use super::authz::ip_block;
use super::Compiler;

/// Methods a CORS policy may allow (validation.go, `supportedCORSMethods`).
const CORS_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*",
];

/// HTTP/2 pseudo-headers a match may name.
const PSEUDO_HEADERS: &[&str] = &[":method", ":scheme", ":authority", ":path", ":status"];

/// A token character of an HTTP header name (RFC 7230 `tchar`).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Why a header value is refused (header_value_validator.go, `ValidateHTTPHeaderValue`;
/// control characters are refused where the value compiles).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderValueError {
    /// A `%` that neither is doubled nor starts a closed `%VARIABLE%`.
    #[error("header value {0:?}: an unescaped '%' must start a %VARIABLE% (write %% for a literal %)")]
    Percent(String),
}

/// Checks a header value as Envoy's formatter reads it: `%%`, or `%NAME%` /
/// `%NAME(args)%`, closed.
pub fn check_header_value(v: &str) -> Result<(), HeaderValueError> {
    let b = v.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            i += 1;
            continue;
        }
        if b.get(i + 1) == Some(&b'%') {
            i += 2;
            continue;
        }
        // A variable: its name, an optional (...) argument list, then '%'.
        let mut j = i + 1;
        let mut depth = 0usize;
        loop {
            match b.get(j) {
                None => return Err(HeaderValueError::Percent(v.to_string())),
                Some(b'(') => depth += 1,
                Some(b')') => depth = depth.saturating_sub(1),
                Some(b'%') if depth == 0 => break,
                _ => {}
            }
            j += 1;
        }
        if j == i + 1 {
            return Err(HeaderValueError::Percent(v.to_string()));
        }
        i = j + 1;
    }
    Ok(())
}

impl Compiler<'_> {
    /// Istio's checks of a VirtualService that its compilation does not make.
    pub(super) fn virtual_service_checks(&mut self, e: &Entry, vs: &VirtualServiceSpec) {
        for (i, g) in vs.gateways.iter().enumerate() {
            self.gateway_name(e, &format!("spec.gateways[{i}]"), g);
        }
        self.overlapping_hosts(e, &vs.hosts);
        let on_gateway = !vs.gateways.is_empty() && !vs.gateways.iter().any(|g| g == "mesh");
        for (i, r) in vs.http.iter().enumerate() {
            self.http_route_checks(e, &format!("spec.http[{i}]"), r, on_gateway);
        }
        self.unreachable_rules(e, vs);
        for (kind, routes) in [("tls", &vs.tls), ("tcp", &vs.tcp)] {
            for (i, r) in routes.iter().enumerate() {
                self.l4_checks(e, &format!("spec.{kind}[{i}]"), r, vs, kind == "tls");
            }
        }
        self.export_to(e, &vs.export_to, false, false);
    }

    /// `namespace/name` with both DNS labels, or a legacy FQDN (warned).
    fn gateway_name(&mut self, e: &Entry, f: &str, g: &str) {
        if g == "mesh" {
            return;
        }
        match g.split_once('/') {
            Some((ns, name)) => {
                if ns.is_empty() || name.is_empty() || !is_label(ns) || !is_label(name) {
                    self.err(
                        e,
                        Code::InvalidValue,
                        f,
                        format!("invalid gateway {g:?}: namespace and name must be DNS-1123 labels"),
                    );
                }
            }
            None => {
                if let Err(err) = check_fqdn(g) {
                    self.err(e, Code::InvalidValue, f, err.to_string());
                } else if let Some((name, rest)) = g.split_once('.') {
                    let ns = rest.split('.').next().unwrap_or(rest);
                    self.warn(
                        e,
                        Code::InvalidValue,
                        f,
                        format!("using legacy gateway name format {g:?}; prefer <namespace>/<name>: \"{ns}/{name}\""),
                    );
                }
            }
        }
    }

    /// Hosts of which one includes another (`*.com` and `*.foo.com`), exact
    /// duplicates being reported already.
    fn overlapping_hosts(&mut self, e: &Entry, hosts: &[String]) {
        let covers = |wide: &str, narrow: &str| {
            wide.strip_prefix('*')
                .is_some_and(|suffix| narrow.len() > suffix.len() && narrow.ends_with(suffix))
        };
        for (j, b) in hosts.iter().enumerate() {
            let b = b.to_ascii_lowercase();
            let hit = hosts[..j]
                .iter()
                .map(|a| a.to_ascii_lowercase())
                .find(|a| *a != b && (covers(a, &b) || covers(&b, a)));
            if let Some(a) = hit {
                self.err(
                    e,
                    Code::DuplicateHost,
                    &format!("spec.hosts[{j}]"),
                    format!("duplicate hosts in virtual service: {a} & {b}"),
                );
            }
        }
    }

    fn http_route_checks(&mut self, e: &Entry, f: &str, r: &HttpRoute, on_gateway: bool) {
        if r.fault.is_some() && (r.redirect.is_some() || r.direct_response.is_some()) {
            self.err(
                e,
                Code::Conflict,
                &format!("{f}.fault"),
                "fault cannot be used with redirect or directResponse",
            );
        }
        for (mi, m) in r.matches.iter().enumerate() {
            self.match_checks(e, &format!("{f}.match[{mi}]"), m, on_gateway);
        }
        self.header_checks(e, &format!("{f}.headers"), r.headers.as_ref());
        for (di, d) in r.route.iter().enumerate() {
            self.header_checks(e, &format!("{f}.route[{di}].headers"), d.headers.as_ref());
            if let Some(dest) = &d.destination {
                self.destination_checks(e, &format!("{f}.route[{di}].destination"), dest);
            }
        }
        self.authority_once(e, f, r);
        if let Some(rd) = &r.redirect {
            let rf = format!("{f}.redirect");
            if rd.uri.is_some() && rd.prefix_rewrite.is_some() {
                self.err(
                    e,
                    Code::Conflict,
                    &rf,
                    "redirect may only specify one of uri or prefixRewrite",
                );
            } else if rd.prefix_rewrite.is_some()
                && r.matches
                    .iter()
                    .any(|m| m.uri.as_ref().is_some_and(|u| u.prefix.is_none()))
            {
                self.err(
                    e,
                    Code::Conflict,
                    &format!("{rf}.prefixRewrite"),
                    "redirect prefixRewrite requires all URI matches to use prefix match type",
                );
            } else if rd.uri.is_none()
                && rd.prefix_rewrite.is_none()
                && rd.authority.is_none()
                && rd.port.is_none()
                && rd.derive_port.is_none()
                && rd.scheme.is_none()
            {
                self.err(
                    e,
                    Code::Required,
                    &rf,
                    "redirect must specify uri, authority, scheme or port",
                );
            }
            if rd.prefix_rewrite.is_some() {
                self.warn(
                    e,
                    Code::NotEnforced,
                    &format!("{rf}.prefixRewrite"),
                    "redirect.prefixRewrite is accepted but not enforced by this version of Strait: the path is kept",
                );
            }
            if let Some(s) = rd.scheme.as_deref().filter(|s| !matches!(*s, "http" | "https")) {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{rf}.scheme"),
                    format!("invalid redirect scheme {s:?}: must be \"http\" or \"https\""),
                );
            }
            if let Some(p) = rd.port.filter(|p| !(1..=65535).contains(p)) {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{rf}.port"),
                    format!("port {p} is not in 1-65535"),
                );
            }
        }
        if let Some(rw) = &r.rewrite {
            if rw.uri.is_none() && rw.uri_regex_rewrite.is_none() && rw.authority.is_none() {
                self.err(
                    e,
                    Code::Required,
                    &format!("{f}.rewrite"),
                    "rewrite must specify at least one of uri, uriRegexRewrite or authority",
                );
            }
        }
        if let Some(body) = r.direct_response.as_ref().and_then(|d| d.body.as_ref()) {
            let size = body.string.as_ref().or(body.bytes.as_ref()).map_or(0, String::len);
            let bf = format!("{f}.directResponse.body");
            if size > 1024 * 1024 {
                self.err(
                    e,
                    Code::InvalidValue,
                    &bf,
                    "direct response bodies must be less than 1MB",
                );
            } else if size > 100 * 1024 {
                self.warn(
                    e,
                    Code::InvalidValue,
                    &bf,
                    "large direct responses may impact control plane performance",
                );
            }
        }
        if r.mirror_percent.is_some() {
            self.warn(
                e,
                Code::InvalidValue,
                &format!("{f}.mirrorPercent"),
                "mirrorPercent is deprecated, use mirrorPercentage instead",
            );
        }
        if let Some(m) = &r.mirror {
            self.destination_checks(e, &format!("{f}.mirror"), m);
        }
        for (i, m) in r.mirrors.iter().enumerate() {
            self.destination_checks(e, &format!("{f}.mirrors[{i}].destination"), &m.destination);
        }
        self.retry_checks(e, f, r);
        if let Some(fault) = &r.fault {
            self.fault_checks(e, &format!("{f}.fault"), fault);
        }
        if let Some(c) = &r.cors_policy {
            self.cors_checks(e, &format!("{f}.corsPolicy"), c);
        }
    }

    fn retry_checks(&mut self, e: &Entry, f: &str, r: &HttpRoute) {
        let Some(x) = &r.retries else { return };
        let rf = format!("{f}.retries");
        if x.attempts.unwrap_or(0) == 0
            && (x.per_try_timeout.is_some()
                || x.retry_on.as_deref().is_some_and(|s| !s.is_empty())
                || x.retry_remote_localities.is_some())
        {
            self.err(
                e,
                Code::Conflict,
                &rf,
                "http retry policy configured when attempts are set to 0 (disabled)",
            );
        }
        if let Some(Err(err)) = x.backoff.as_deref().map(duration::parse_positive) {
            self.err(e, Code::InvalidValue, &format!("{rf}.backoff"), err.to_string());
        }
        for (name, set) in [
            ("backoff", x.backoff.is_some()),
            ("retryIgnorePreviousHosts", x.retry_ignore_previous_hosts.is_some()),
        ] {
            if set {
                self.warn(
                    e,
                    Code::NotEnforced,
                    &format!("{rf}.{name}"),
                    format!("retries.{name} is accepted but not enforced by this version of Strait"),
                );
            }
        }
    }

    fn fault_checks(&mut self, e: &Entry, f: &str, fault: &crate::resources::networking::HttpFaultInjection) {
        if fault.abort.is_none() && fault.delay.is_none() {
            self.err(
                e,
                Code::Required,
                f,
                "HTTP fault injection must have an abort and/or a delay",
            );
        }
        let tiny = |p: Option<f64>| p.is_some_and(|v| v > 0.0 && v < 0.0001);
        if tiny(
            fault
                .delay
                .as_ref()
                .and_then(|d| d.percentage.as_ref())
                .and_then(|p| p.value),
        ) {
            self.err(
                e,
                Code::InvalidValue,
                &format!("{f}.delay.percentage"),
                "percentage is neither 0.0, nor in range [0.0001, 100.0]",
            );
        }
        if tiny(
            fault
                .abort
                .as_ref()
                .and_then(|a| a.percentage.as_ref())
                .and_then(|p| p.value),
        ) {
            self.err(
                e,
                Code::InvalidValue,
                &format!("{f}.abort.percentage"),
                "percentage is neither 0.0, nor in range [0.0001, 100.0]",
            );
        }
    }

    fn cors_checks(&mut self, e: &Entry, f: &str, c: &crate::resources::networking::CorsPolicy) {
        for (i, o) in c.allow_origins.iter().enumerate() {
            let value = o.exact.as_ref().or(o.prefix.as_ref()).or(o.regex.as_ref());
            if value.is_none_or(String::is_empty) {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.allowOrigins[{i}]"),
                    "an allowed origin needs a non-empty exact, prefix or regex",
                );
            }
        }
        for (i, m) in c.allow_methods.iter().enumerate() {
            if !CORS_METHODS.contains(&m.as_str()) {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.allowMethods[{i}]"),
                    format!("{m:?} is not a supported HTTP method"),
                );
            }
        }
        for (name, list) in [("allowHeaders", &c.allow_headers), ("exposeHeaders", &c.expose_headers)] {
            for (i, h) in list.iter().enumerate() {
                if h != "*" && (h.is_empty() || !h.bytes().all(is_tchar)) {
                    self.err(
                        e,
                        Code::InvalidValue,
                        &format!("{f}.{name}[{i}]"),
                        format!("header name {h:?} is not a valid header name"),
                    );
                }
            }
        }
        if let Some(Ok(d)) = c.max_age.as_deref().map(duration::parse) {
            if d < duration::MIN_POSITIVE || d.subsec_nanos() != 0 {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.maxAge"),
                    "maxAge must be at least 1s and whole seconds: it is accurate only to seconds precision",
                );
            }
        }
    }

    fn match_checks(&mut self, e: &Entry, f: &str, m: &HttpMatchRequest, on_gateway: bool) {
        for (kind, map) in [("headers", &m.headers), ("withoutHeaders", &m.without_headers)] {
            for (k, sm) in map {
                let kf = format!("{f}.{kind}.{k}");
                if k.starts_with('@') && !on_gateway {
                    self.err(
                        e,
                        Code::InvalidValue,
                        &kf,
                        "JWT claim based routing is only supported for gateways (the VirtualService binds to the mesh)",
                    );
                } else if k.starts_with(':') && !PSEUDO_HEADERS.contains(&k.as_str()) {
                    self.err(e, Code::InvalidValue, &kf, format!("{k:?} is not a valid header name"));
                }
                // `*` in withoutHeaders means "present", not a regex.
                if !(kind == "withoutHeaders" && sm.regex.as_deref() == Some("*")) {
                    self.string_match_checks(e, &kf, sm, false);
                }
            }
        }
        if let Some(u) = &m.uri {
            self.string_match_checks(e, &format!("{f}.uri"), u, true);
        }
        for (name, sm) in [
            ("scheme", &m.scheme),
            ("method", &m.method),
            ("authority", &m.authority),
        ] {
            if let Some(sm) = sm {
                self.string_match_checks(e, &format!("{f}.{name}"), sm, false);
            }
        }
        for (k, sm) in &m.query_params {
            self.string_match_checks(e, &format!("{f}.queryParams.{k}"), sm, false);
        }
        self.labels(e, &format!("{f}.sourceLabels"), &m.source_labels);
        for (i, g) in m.gateways.iter().enumerate() {
            self.gateway_name(e, &format!("{f}.gateways[{i}]"), g);
        }
        if let Some(ns) = m.source_namespace.as_deref().filter(|ns| !is_label(ns)) {
            self.err(
                e,
                Code::InvalidValue,
                &format!("{f}.sourceNamespace"),
                format!("sourceNamespace {ns:?} is not a DNS-1123 label"),
            );
        }
    }

    /// An empty prefix (but on `uri`) or regex, or a regex over 1024 characters.
    fn string_match_checks(&mut self, e: &Entry, f: &str, sm: &StringMatch, uri: bool) {
        if !uri && sm.prefix.as_deref() == Some("") {
            self.err(
                e,
                Code::InvalidValue,
                &format!("{f}.prefix"),
                "prefix string match should not be empty",
            );
        }
        match sm.regex.as_deref() {
            Some("") => self.err(
                e,
                Code::InvalidValue,
                &format!("{f}.regex"),
                "regex string match should not be empty",
            ),
            Some(re) if re.len() > 1024 => self.err(
                e,
                Code::InvalidRegex,
                &format!("{f}.regex"),
                "regex is too large, max length allowed is 1024",
            ),
            _ => {}
        }
    }

    /// Header names and values of header operations.
    fn header_checks(&mut self, e: &Entry, f: &str, h: Option<&Headers>) {
        let Some(h) = h else { return };
        let check = |c: &mut Self, f: &str, ops: Option<&HeaderOperations>, request: bool| {
            let Some(ops) = ops else { return };
            for (kind, map) in [("set", &ops.set), ("add", &ops.add)] {
                for (name, value) in map {
                    let nf = format!("{f}.{kind}.{name}");
                    c.header_name(e, &nf, name, request);
                    if let Err(err) = check_header_value(value) {
                        c.err(e, Code::InvalidValue, &nf, err.to_string());
                    }
                }
            }
            for (i, name) in ops.remove.iter().enumerate() {
                c.header_name(e, &format!("{f}.remove[{i}]"), name, false);
            }
        };
        check(self, &format!("{f}.request"), h.request.as_ref(), true);
        check(self, &format!("{f}.response"), h.response.as_ref(), false);
    }

    /// A header an operation names: not empty, no pseudo-header; `Host` (or
    /// `:authority`) only set or added on requests.
    fn header_name(&mut self, e: &Entry, f: &str, name: &str, request_write: bool) {
        let authority = name.eq_ignore_ascii_case("host") || name.eq_ignore_ascii_case(":authority");
        let msg = if name.is_empty() {
            Some("header name cannot be empty".to_string())
        } else if authority && request_write {
            None
        } else if name.eq_ignore_ascii_case("host") {
            Some(format!("invalid header {name:?}: cannot set Host header"))
        } else if name.starts_with(':') {
            Some(format!("invalid header {name:?}: header cannot have \":\" prefix"))
        } else {
            None
        };
        if let Some(msg) = msg {
            self.err(e, Code::InvalidValue, f, msg);
        }
    }

    /// The authority is rewritten in one place only (`validateAuthorityRewrite`).
    fn authority_once(&mut self, e: &Entry, f: &str, r: &HttpRoute) {
        let mut count = usize::from(
            r.rewrite
                .as_ref()
                .is_some_and(|rw| rw.authority.as_deref().is_some_and(|a| !a.is_empty())),
        );
        let req = r.headers.as_ref().and_then(|h| h.request.as_ref());
        let is_authority = |k: &String| k.eq_ignore_ascii_case("host") || k.eq_ignore_ascii_case(":authority");
        for map in req.iter().flat_map(|o| [&o.set, &o.add]) {
            count += map.keys().filter(|k| is_authority(k)).count();
        }
        if count > 1 {
            self.err(
                e,
                Code::Conflict,
                &format!("{f}.headers.request"),
                "authority header cannot be set multiple times (rewrite.authority and a Host/:authority header)",
            );
        }
    }

    /// A destination's subset name and port (the host is checked where it compiles).
    fn destination_checks(&mut self, e: &Entry, f: &str, d: &Destination) {
        if let Some(s) = d.subset.as_deref().filter(|s| !is_label(s)) {
            self.err(
                e,
                Code::InvalidValue,
                &format!("{f}.subset"),
                format!("subset name {s:?} is not a DNS-1123 label"),
            );
        }
    }

    /// A rule without matches catches everything: rules after it are never used
    /// (validation.go, `analyzeUnreachableHTTPRules`, its simplest case).
    fn unreachable_rules(&mut self, e: &Entry, vs: &VirtualServiceSpec) {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut catch_all = None;
        for (i, r) in vs.http.iter().enumerate() {
            if let Some(first) = catch_all {
                self.warn(
                    e,
                    Code::InvalidValue,
                    &format!("spec.http[{i}]"),
                    format!("virtualService rule #{i} not used (rule #{first} before it matches every request)"),
                );
                continue;
            }
            if r.matches.is_empty() || r.matches.iter().any(is_empty_match) {
                catch_all = Some(i);
            }
            for (mi, m) in r.matches.iter().enumerate() {
                let mut m = m.clone();
                m.name = None;
                let key = serde_json::to_string(&m).unwrap_or_default();
                if let Some(prev) = seen.get(&key) {
                    self.warn(
                        e,
                        Code::InvalidValue,
                        &format!("spec.http[{i}].match[{mi}]"),
                        format!("virtualService rule #{i} match #{mi} is not used (duplicate match in rule #{prev})"),
                    );
                } else {
                    seen.insert(key, i);
                }
            }
        }
    }

    /// A tls or tcp rule's matches (validateTLSMatch, validateSniHost, validateTCPMatch).
    fn l4_checks(&mut self, e: &Entry, f: &str, r: &L4RouteSpec, vs: &VirtualServiceSpec, tls: bool) {
        for (j, m) in r.matches.iter().enumerate() {
            let mf = format!("{f}.match[{j}]");
            for (k, s) in m.destination_subnets.iter().enumerate() {
                let valid = if s.contains('/') {
                    ip_block(s).is_ok()
                } else {
                    s.parse::<IpAddr>().is_ok()
                };
                if !valid {
                    self.err(
                        e,
                        Code::InvalidValue,
                        &format!("{mf}.destinationSubnets[{k}]"),
                        format!("{s} is not a valid IP or CIDR block"),
                    );
                }
            }
            self.labels(e, &format!("{mf}.sourceLabels"), &m.source_labels);
            for (i, g) in m.gateways.iter().enumerate() {
                self.gateway_name(e, &format!("{mf}.gateways[{i}]"), g);
            }
            if !tls {
                continue;
            }
            for (k, sni) in m.sni_hosts.iter().enumerate() {
                let sf = format!("{mf}.sniHosts[{k}]");
                if sni.parse::<IpAddr>().is_ok() {
                    self.warn(
                        e,
                        Code::InvalidValue,
                        &sf,
                        format!(
                            "using an IP address ({sni:?}) goes against SNI spec and most clients do not support this"
                        ),
                    );
                } else if check_virtual_service_host(sni, true, true).is_ok()
                    && !vs.hosts.iter().any(|h| sni_within(sni, h))
                {
                    self.err(
                        e,
                        Code::InvalidValue,
                        &sf,
                        format!(
                            "SNI host {sni:?} is not a compatible subset of any of the virtual service hosts: [{}]",
                            vs.hosts.join(", ")
                        ),
                    );
                }
            }
        }
    }
}

/// A match block with no condition matches every request.
fn is_empty_match(m: &HttpMatchRequest) -> bool {
    let mut m = m.clone();
    m.name = None;
    m.stat_prefix = None;
    m == HttpMatchRequest::default()
}

/// Whether every name of `sni` is a name of `host` (host `SubsetOf`).
fn sni_within(sni: &str, host: &str) -> bool {
    let (sni, host) = (sni.to_ascii_lowercase(), host.to_ascii_lowercase());
    if host == "*" || sni == host {
        return true;
    }
    match host.strip_prefix('*') {
        Some(suffix) => sni.strip_prefix('*').unwrap_or(&sni).ends_with(suffix) && sni.len() > suffix.len(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_follow_envoys_formatter() {
        for ok in [
            "foo",
            "%HOSTNAME%",
            "100%%",
            "prefix %HOSTNAME% suffix",
            "%REQ(x-a)%",
            "tab\there",
        ] {
            assert_eq!(check_header_value(ok), Ok(()), "{ok}");
        }
        for bad in ["abc%123", "%START_TIME%%", "%%%", "%"] {
            assert!(check_header_value(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sni_hosts_within_vs_hosts() {
        assert!(sni_within("a.example.com", "*.example.com"));
        assert!(sni_within("*.a.example.com", "*.example.com"));
        assert!(!sni_within("example.com", "*.example.com"));
        assert!(!sni_within("a.example.org", "a.example.com"));
        assert!(sni_within("x", "*"));
    }
}
