//! HTTPRoute, GRPCRoute and TLSRoute rules compiled: matches with their precedence,
//! filters (header modifiers, redirect, rewrite, mirror, CORS), weighted backends
//! resolved through the registry and gated by ReferenceGrants, timeouts, retries.

use std::sync::Arc;

use http::HeaderName;

use crate::bundle::Entry;
use crate::compile::virtual_service::{CompiledAction, CompiledDestination, CompiledForward, Target};
use crate::compile::Compiler;
use crate::diag::Code;
use crate::duration;
use crate::hosts::check_wildcard_domain;
use crate::resources::gateway_api::{
    GrpcRouteSpec, HttpBackendRef, HttpRouteMatch, HttpRouteRule, HttpRouteSpec, ObjectRef, PathModifier, TlsRouteSpec,
    ValueMatch,
};
use crate::snapshot::{
    retry_on, Cors, DirectResponse, HeaderMatch, HeaderOps, RegexRewrite, RequestMatch, RetryPolicy, RoutePolicy,
    StrMatch,
};

use super::filters::{merge, Filters};
use super::{is_invalid, ref_namespace, CompiledRoute, GatewayRule, Precedence, RouteKind, INVALID_BACKEND};

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

impl<'a> Compiler<'a> {
    /// Compiles an HTTPRoute.
    pub(super) fn http_route(&mut self, e: &'a Entry, r: &HttpRouteSpec) -> CompiledRoute<'a> {
        let mut route = self.route_shell(e, RouteKind::Http, &r.hostnames);
        for (i, rule) in r.rules.iter().enumerate() {
            let compiled = self.http_route_rule(e, i, rule, &mut route.unresolved);
            route.rules.push(compiled);
        }
        route
    }

    /// Compiles a GRPCRoute.
    pub(super) fn grpc_route(&mut self, e: &'a Entry, r: &GrpcRouteSpec) -> CompiledRoute<'a> {
        let mut route = self.route_shell(e, RouteKind::Grpc, &r.hostnames);
        for (i, rule) in r.rules.iter().enumerate() {
            let f = format!("spec.rules[{i}]");
            let mut matches = Vec::new();
            for (mi, m) in rule.matches.iter().enumerate() {
                let mf = format!("{f}.matches[{mi}]");
                let (mut condition, svc, method) = self.grpc_method(e, &mf, m.method.as_ref());
                condition.headers = self.header_matches(e, &format!("{mf}.headers"), &m.headers);
                let headers = condition.headers.len() as i64;
                condition.headers.push(grpc_content_type());
                matches.push((condition, [0, -svc, -method, -headers, 0, 0]));
            }
            if matches.is_empty() {
                let condition = RequestMatch {
                    headers: vec![grpc_content_type()],
                    ..RequestMatch::default()
                };
                matches.push((condition, [0, 0, 0, 0, 0, 0]));
            }
            let filters = self.filters(e, &f, &rule.filters, true, &mut route.unresolved);
            let mut compiled = self.rule_action(e, &f, &rule.backend_refs, filters, "GRPCRoute", &mut route.unresolved);
            compiled.name = rule.name.clone();
            compiled.matches = matches;
            compiled.h2 = true;
            route.rules.push(compiled);
        }
        route
    }

    /// Compiles a TLSRoute.
    pub(super) fn tls_route(&mut self, e: &'a Entry, r: &TlsRouteSpec) -> CompiledRoute<'a> {
        let mut route = self.route_shell(e, RouteKind::Tls, &r.hostnames);
        for (i, rule) in r.rules.iter().enumerate() {
            let f = format!("spec.rules[{i}]");
            let l4 = self.backends(e, &f, &rule.backend_refs, "TLSRoute", &mut route.unresolved);
            route.rules.push(GatewayRule {
                name: rule.name.clone(),
                source: format!("TLSRoute {}/{} rules[{i}]", e.resource.namespace, e.resource.name),
                matches: Vec::new(),
                action: CompiledAction::DirectResponse(internal_error()),
                request_headers: HeaderOps::default(),
                response_headers: HeaderOps::default(),
                policy: RoutePolicy::default(),
                l4,
                h2: false,
            });
        }
        route
    }

    fn route_shell(&mut self, e: &'a Entry, kind: RouteKind, hostnames: &[String]) -> CompiledRoute<'a> {
        let mut hosts = Vec::new();
        for (i, h) in hostnames.iter().enumerate() {
            let h = h.to_ascii_lowercase();
            if h.parse::<std::net::IpAddr>().is_ok() || h == "*" || check_wildcard_domain(&h).is_err() {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("spec.hostnames[{i}]"),
                    format!("{h} is not a host name (an optional `*.` label, then DNS labels; no IPs)"),
                );
            }
            hosts.push(h);
        }
        let meta = &e.resource.metadata;
        let created = meta
            .other
            .get("creationTimestamp")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        CompiledRoute {
            entry: e,
            kind,
            hostnames: hosts,
            rules: Vec::new(),
            parents: Vec::new(),
            unresolved: None,
            order: (created, format!("{}/{}", e.resource.namespace, e.resource.name)),
        }
    }

    fn http_route_rule(
        &mut self,
        e: &Entry,
        i: usize,
        rule: &HttpRouteRule,
        unresolved: &mut Option<(&'static str, String)>,
    ) -> GatewayRule {
        let f = format!("spec.rules[{i}]");
        let default_match = [HttpRouteMatch::default()];
        let written = if rule.matches.is_empty() {
            &default_match[..]
        } else {
            &rule.matches[..]
        };
        let matches: Vec<(RequestMatch, Precedence)> = written
            .iter()
            .enumerate()
            .map(|(mi, m)| self.http_match(e, &format!("{f}.matches[{mi}]"), m))
            .collect();
        let filters = self.filters(e, &f, &rule.filters, false, unresolved);
        if filters.redirect.is_some() && !rule.backend_refs.is_empty() {
            self.err(
                e,
                Code::Conflict,
                &format!("{f}.filters"),
                "RequestRedirect filter must not be used together with backendRefs",
            );
        }
        let prefix_rewrite = |p: &Option<PathModifier>| p.as_ref().is_some_and(|p| p.kind == "ReplacePrefixMatch");
        let needs_prefix = rule.filters.iter().any(|x| {
            prefix_rewrite(&x.url_rewrite.as_ref().and_then(|u| u.path.clone()))
                || prefix_rewrite(&x.request_redirect.as_ref().and_then(|r| r.path.clone()))
        });
        let one_prefix = matches!(&matches[..], [(m, _)] if matches!(m.uri, Some(StrMatch::PathPrefix(_))));
        if needs_prefix && !one_prefix {
            self.err(
                e,
                Code::Conflict,
                &format!("{f}.filters"),
                "a path.replacePrefixMatch needs exactly one PathPrefix match",
            );
        }
        let mut compiled = self.rule_action(e, &f, &rule.backend_refs, filters, "HTTPRoute", unresolved);
        compiled.name = rule.name.clone();
        // ReplacePrefixMatch rewrites the prefix of the one match the rule has.
        let prefix = matches.first().and_then(|(m, _)| match &m.uri {
            Some(StrMatch::PathPrefix(p)) => Some(p.clone()),
            _ => None,
        });
        let place = |rr: &mut Option<RegexRewrite>| {
            if let (Some(rr), Some(p)) = (rr.as_mut(), prefix.as_deref()) {
                if rr.pattern.as_str() == "^" {
                    *rr = RegexRewrite::replace_prefix(p, &rr.replacement.replace("$$", "$"));
                }
            }
        };
        match &mut compiled.action {
            CompiledAction::Redirect(r) => place(&mut r.uri_regex),
            CompiledAction::Forward(fw) => {
                if let Some(rw) = fw.rewrite.as_mut() {
                    place(&mut rw.uri_regex)
                }
            }
            CompiledAction::DirectResponse(_) => {}
        }
        compiled.matches = matches;
        compiled.policy = self.http_policy(e, &f, rule, compiled.policy.cors.take());
        compiled
    }

    fn http_match(&mut self, e: &Entry, f: &str, m: &HttpRouteMatch) -> (RequestMatch, Precedence) {
        let kind = m.path.as_ref().and_then(|p| p.kind.as_deref()).unwrap_or("PathPrefix");
        let value = m.path.as_ref().and_then(|p| p.value.as_deref()).unwrap_or("/");
        let pf = format!("{f}.path.value");
        if matches!(kind, "Exact" | "PathPrefix") {
            let bad = ["//", "/./", "/../", "%2f", "%2F", "#"]
                .iter()
                .find(|b| value.contains(**b));
            if !value.starts_with('/') || bad.is_some() || value.ends_with("/..") || value.ends_with("/.") {
                self.err(
                    e,
                    Code::InvalidValue,
                    &pf,
                    format!("{value:?} must be an absolute path without `//`, `/./`, `/../`, `%2f` or `#`"),
                );
            }
        }
        let len = value.len() as i64;
        let (uri, class) = match kind {
            "Exact" => (Some(StrMatch::Exact(value.to_string())), 0),
            "PathPrefix" => (Some(StrMatch::PathPrefix(value.trim_end_matches('/').to_string())), 2),
            "RegularExpression" => (self.gw_regex(e, &pf, value).map(StrMatch::Regex), 1),
            other => {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.path.type"),
                    format!("{other:?} is not one of Exact, PathPrefix, RegularExpression"),
                );
                (None, 2)
            }
        };
        let method = m.method.as_ref().map(|method| {
            if !METHODS.contains(&method.as_str()) {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.method"),
                    format!("{method:?} is not an HTTP method"),
                );
            }
            StrMatch::Exact(method.clone())
        });
        let headers = self.header_matches(e, &format!("{f}.headers"), &m.headers);
        let query: Vec<(String, StrMatch)> = self
            .value_matches(e, &format!("{f}.queryParams"), &m.query_params, false)
            .into_iter()
            .map(|(_, q)| q)
            .collect();
        let precedence = [
            1,
            class,
            -len,
            i64::from(method.is_none()),
            -(headers.len() as i64),
            -(query.len() as i64),
        ];
        let condition = RequestMatch {
            uri,
            method,
            headers,
            query_params: query,
            ..RequestMatch::default()
        };
        (condition, precedence)
    }

    /// Header matches; only the first of a name counts.
    fn header_matches(&mut self, e: &Entry, f: &str, list: &[ValueMatch]) -> Vec<HeaderMatch> {
        let mut out = Vec::new();
        for (i, (name, matcher)) in self.value_matches(e, f, list, true) {
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(name) => out.push(HeaderMatch { name, matcher }),
                Err(_) => self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}[{i}].name"),
                    format!("{name:?} is not a header name"),
                ),
            }
        }
        out
    }

    /// Name and value matches (with their index); only the first of a name counts,
    /// names compared without case for headers, with case for query parameters.
    fn value_matches(
        &mut self,
        e: &Entry,
        f: &str,
        list: &[ValueMatch],
        header: bool,
    ) -> Vec<(usize, (String, StrMatch))> {
        let mut out: Vec<(usize, (String, StrMatch))> = Vec::new();
        for (i, v) in list.iter().enumerate() {
            let key = if header {
                v.name.to_ascii_lowercase()
            } else {
                v.name.clone()
            };
            if key.is_empty() {
                self.err(e, Code::Required, &format!("{f}[{i}].name"), "a match needs a name");
                continue;
            }
            if out.iter().any(|(_, (k, _))| *k == key) {
                continue;
            }
            let matcher = match v.kind.as_deref().unwrap_or("Exact") {
                "Exact" => StrMatch::Exact(v.value.clone()),
                "RegularExpression" => match self.gw_regex(e, &format!("{f}[{i}].value"), &v.value) {
                    Some(r) => StrMatch::Regex(r),
                    None => continue,
                },
                other => {
                    self.err(
                        e,
                        Code::InvalidValue,
                        &format!("{f}[{i}].type"),
                        format!("{other:?} is not one of Exact, RegularExpression"),
                    );
                    continue;
                }
            };
            out.push((i, (key, matcher)));
        }
        out
    }

    pub(super) fn gw_regex(&mut self, e: &Entry, f: &str, re: &str) -> Option<Arc<regex::Regex>> {
        match self.regexes.get(re, false) {
            Ok(r) => Some(r),
            Err(err) => {
                self.err(e, Code::InvalidRegex, f, err.to_string());
                None
            }
        }
    }

    /// A GRPCRoute method match as a path condition, with the lengths of its service
    /// and method for precedence.
    fn grpc_method(
        &mut self,
        e: &Entry,
        f: &str,
        m: Option<&crate::resources::gateway_api::GrpcMethodMatch>,
    ) -> (RequestMatch, i64, i64) {
        let Some(m) = m else {
            return (RequestMatch::default(), 0, 0);
        };
        let (svc, method) = (m.service.as_deref(), m.method.as_deref());
        if svc.is_none() && method.is_none() {
            self.err(e, Code::Required, f, "a method match needs service or method");
        }
        let lens = (svc.map_or(0, str::len) as i64, method.map_or(0, str::len) as i64);
        let uri = match (m.kind.as_deref().unwrap_or("Exact"), svc, method) {
            ("Exact", Some(s), Some(m)) => Some(StrMatch::Exact(format!("/{s}/{m}"))),
            ("Exact", Some(s), None) => Some(StrMatch::Prefix(format!("/{s}/"))),
            ("Exact", None, Some(m)) => self
                .gw_regex(e, &format!("{f}.method"), &format!("/[^/]+/{}", regex::escape(m)))
                .map(StrMatch::Regex),
            ("RegularExpression", s, m) => self
                .gw_regex(
                    e,
                    &format!("{f}.service"),
                    &format!("/(?:{})/(?:{})", s.unwrap_or("[^/]+"), m.unwrap_or("[^/]+")),
                )
                .map(StrMatch::Regex),
            (other, _, _) => {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.type"),
                    format!("{other:?} is not one of Exact, RegularExpression"),
                );
                None
            }
        };
        let condition = RequestMatch {
            uri,
            ..RequestMatch::default()
        };
        (condition, lens.0, lens.1)
    }

    /// The action of a rule from its filters and backends.
    fn rule_action(
        &mut self,
        e: &Entry,
        f: &str,
        refs: &[HttpBackendRef],
        filters: Filters,
        kind: &'static str,
        unresolved: &mut Option<(&'static str, String)>,
    ) -> GatewayRule {
        let destinations = self.backends(e, f, refs, kind, unresolved);
        let total_weight = destinations.iter().map(|d| d.weight).sum();
        let action = if filters.unsupported {
            CompiledAction::DirectResponse(internal_error())
        } else if let Some(r) = filters.redirect {
            CompiledAction::Redirect(r)
        } else if destinations.iter().all(is_invalid) {
            CompiledAction::DirectResponse(internal_error())
        } else {
            CompiledAction::Forward(CompiledForward {
                destinations,
                total_weight,
                rewrite: filters.rewrite,
                mirrors: filters.mirrors,
            })
        };
        GatewayRule {
            name: None,
            source: format!(
                "{kind} {}/{} {}",
                e.resource.namespace,
                e.resource.name,
                f.trim_start_matches("spec.")
            ),
            matches: Vec::new(),
            action,
            request_headers: filters.request,
            response_headers: filters.response,
            policy: RoutePolicy {
                cors: filters.cors.map(Box::new),
                ..RoutePolicy::default()
            },
            l4: Vec::new(),
            h2: false,
        }
    }

    /// The backends that resolve, with weights above zero; the others are reported
    /// in `unresolved` (the first reason wins).
    fn backends(
        &mut self,
        e: &Entry,
        f: &str,
        refs: &[HttpBackendRef],
        kind: &str,
        unresolved: &mut Option<(&'static str, String)>,
    ) -> Vec<CompiledDestination> {
        let mut out = Vec::new();
        for (j, b) in refs.iter().enumerate() {
            let bf = format!("{f}.backendRefs[{j}]");
            let weight = b.weight.unwrap_or(1);
            if !(0..=1_000_000).contains(&weight) {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{bf}.weight"),
                    format!("{weight} is not in 0..1000000"),
                );
            }
            let mut request_headers = HeaderOps::default();
            let mut response_headers = HeaderOps::default();
            for (k, x) in b.filters.iter().enumerate() {
                let ff = format!("{bf}.filters[{k}]");
                match (x.kind.as_str(), &x.request_header_modifier, &x.response_header_modifier) {
                    ("RequestHeaderModifier", Some(m), _) => {
                        let ops = self.modifier(e, &format!("{ff}.requestHeaderModifier"), m);
                        merge(&mut request_headers, ops);
                    }
                    ("ResponseHeaderModifier", _, Some(m)) => {
                        let ops = self.modifier(e, &format!("{ff}.responseHeaderModifier"), m);
                        merge(&mut response_headers, ops);
                    }
                    (other, _, _) => self.warn(
                        e,
                        Code::NotEnforced,
                        &ff,
                        format!("{other} filters on a backendRef are not applied by this version of Strait"),
                    ),
                }
            }
            if weight <= 0 {
                // Still checked: its status reports it.
                let _ = self.backend_target(e, &bf, &b.backend, kind, unresolved);
                continue;
            }
            // The share of one that does not resolve gets 500 (the spec's words).
            let target = self
                .backend_target(e, &bf, &b.backend, kind, unresolved)
                .unwrap_or_else(|| Target {
                    host: INVALID_BACKEND.to_string(),
                    port: None,
                    subset: None,
                });
            out.push(CompiledDestination {
                field: bf,
                target,
                weight: u32::try_from(weight).unwrap_or(1),
                request_headers,
                response_headers,
            });
        }
        out
    }

    /// The service a backendRef names, when it resolves: a Service (core group) or
    /// Istio's `Hostname` kind (a ServiceEntry host), cross-namespace only with a
    /// ReferenceGrant.
    pub(super) fn backend_target(
        &mut self,
        e: &Entry,
        f: &str,
        r: &ObjectRef,
        from_kind: &str,
        unresolved: &mut Option<(&'static str, String)>,
    ) -> Option<Target> {
        let group = r.group.as_deref().unwrap_or("");
        let kind = r.kind.as_deref().unwrap_or("Service");
        let own = e.resource.namespace.as_str();
        let ns = ref_namespace(&r.namespace, own);
        let mut fail = |reason: &'static str, message: String| {
            unresolved.get_or_insert((reason, message));
            None
        };
        let host = match (group, kind) {
            ("", "Service") => format!("{}.{ns}.svc.cluster.local", r.name),
            ("networking.istio.io", "Hostname") => r.name.to_ascii_lowercase(),
            _ => {
                return fail(
                    "InvalidKind",
                    format!("backendRef kind {kind} of group {group:?} is not supported"),
                )
            }
        };
        let Some(port) = r.port else {
            self.err(
                e,
                Code::Required,
                &format!("{f}.port"),
                format!("a backendRef to a {kind} needs a port"),
            );
            return None;
        };
        if kind == "Service" && !self.granted(from_kind, own, "", "Service", ns, &r.name) {
            return fail(
                "RefNotPermitted",
                format!(
                    "no ReferenceGrant in namespace {ns} lets {from_kind}s of {own} refer to Service {}",
                    r.name
                ),
            );
        }
        let port16 = u16::try_from(port).ok();
        if let Err(err) = self.registry.resolve(&host, port16, None) {
            return fail("BackendNotFound", err.to_string());
        }
        Some(Target {
            host,
            port: Some(port),
            subset: None,
        })
    }

    /// Timeouts and retries of an HTTPRoute rule.
    fn http_policy(&mut self, e: &Entry, f: &str, rule: &HttpRouteRule, cors: Option<Box<Cors>>) -> RoutePolicy {
        let parse = |c: &mut Self, field: &str, v: Option<&String>| -> Option<std::time::Duration> {
            let v = v?;
            match duration::parse(v) {
                Ok(d) if d.is_zero() => None,
                Ok(d) => Some(d),
                Err(err) => {
                    c.err(e, Code::InvalidValue, &format!("{f}.{field}"), err.to_string());
                    None
                }
            }
        };
        let timeouts = rule.timeouts.as_ref();
        let timeout = parse(self, "timeouts.request", timeouts.and_then(|t| t.request.as_ref()));
        let per_try = parse(
            self,
            "timeouts.backendRequest",
            timeouts.and_then(|t| t.backend_request.as_ref()),
        );
        if let (Some(t), Some(p)) = (timeout, per_try) {
            if p > t {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.timeouts.backendRequest"),
                    "backendRequest timeout cannot be longer than request timeout",
                );
            }
        }
        let mut retry = match &rule.retry {
            None => RetryPolicy::default(),
            Some(r) => RetryPolicy {
                attempts: u32::try_from(r.attempts.unwrap_or(2)).unwrap_or(0),
                per_try_timeout: None,
                on: retry_on::CONNECT_FAILURE | retry_on::RESET | retry_on::RETRIABLE_STATUS_CODES,
                status_codes: if r.codes.is_empty() {
                    vec![500, 502, 503, 504]
                } else {
                    r.codes.iter().filter_map(|c| u16::try_from(*c).ok()).collect()
                },
            },
        };
        retry.per_try_timeout = per_try;
        RoutePolicy {
            timeout,
            retry,
            cors,
            ..RoutePolicy::default()
        }
    }
}

/// What a rule without a usable backend answers.
fn internal_error() -> DirectResponse {
    DirectResponse {
        status: 500,
        body: Arc::from(&b""[..]),
    }
}

fn grpc_content_type() -> HeaderMatch {
    HeaderMatch {
        name: http::header::CONTENT_TYPE,
        matcher: StrMatch::Prefix("application/grpc".into()),
    }
}
