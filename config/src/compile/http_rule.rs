//! A VirtualService `http` rule checked as Istio's webhook checks it and compiled
//! once: match blocks with their regexes, the action (destinations named, rewrite
//! regex compiled), header operations and the route policy.

use std::sync::Arc;

use base64::Engine as _;
use http::{HeaderName, HeaderValue};

use crate::bundle::Entry;
use crate::claims::{claim_key, ClaimPath, CLAIM_KEY};
use crate::diag::{Code, Severity};
use crate::resources::networking::{HeaderOperations, Headers, HttpMatchRequest, HttpRoute, StringMatch};
use crate::snapshot::{
    ClaimMatch, DirectResponse, HeaderMatch, HeaderOps, Redirect, RegexRewrite, RequestMatch, Rewrite, StrMatch,
};

use super::regex::re2_replacement;
use super::route_policy::route_policy;
use super::virtual_service::{
    AppliesOn, CompiledAction, CompiledForward, CompiledMatch, CompiledMirror, CompiledRule, Target,
};
use super::Compiler;

impl Compiler<'_> {
    /// Checks and compiles rule `i` of a VirtualService; None (its errors reported)
    /// when it has errors.
    pub(super) fn http_rule(&mut self, e: &Entry, i: usize, r: &HttpRoute) -> Option<CompiledRule> {
        let errors_before = self.error_count();
        let f = format!("spec.http[{i}]");
        self.http_rule_checks(e, &f, r);
        let matches: Vec<CompiledMatch> = r
            .matches
            .iter()
            .enumerate()
            .map(|(mi, m)| {
                let mf = format!("{f}.match[{mi}]");
                for (gi, g) in m.gateways.iter().enumerate() {
                    self.gateway_exists(e, &format!("{mf}.gateways[{gi}]"), g);
                }
                CompiledMatch {
                    condition: self.request_match(e, &mf, m),
                    on: AppliesOn::of(&m.gateways, &e.resource.namespace),
                }
            })
            .collect();
        let action = self.action(e, &f, r);
        let (request_headers, response_headers) = self.header_ops(e, &format!("{f}.headers"), r.headers.as_ref());
        let regexes = &mut self.regexes;
        let policy = route_policy(r, &mut |re| regexes.get(re, false));
        let mut policy = match policy {
            Ok(p) => p,
            Err(errors) => {
                for p in errors {
                    self.err(e, p.code, &format!("{f}.{}", p.field), p.message);
                }
                return None;
            }
        };
        if self.error_count() > errors_before {
            return None;
        }
        let ns = e.resource.namespace.as_str();
        policy.rate_limit = self.rate_limit_for(ns, &e.resource.name, r.name.as_deref());
        Some(CompiledRule {
            name: r.name.clone(),
            source: format!("VirtualService {ns}/{} http[{i}]", e.resource.name),
            has_matches: !r.matches.is_empty(),
            matches,
            action,
            request_headers,
            response_headers,
            policy,
        })
    }

    /// What Istio refuses in a rule beyond its parts' own checks.
    fn http_rule_checks(&mut self, e: &Entry, f: &str, r: &HttpRoute) {
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
            let host = crate::hosts::fqdn(&dest.host, &e.resource.namespace);
            if let Some(subset) = &dest.subset {
                // A name that is not a label is refused as such (`route_checks`).
                if crate::hosts::is_label(subset) && !self.registry.has_subset(&host, subset) {
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
                if rr.pattern.is_none() {
                    self.err(
                        e,
                        Code::Required,
                        &format!("{f}.rewrite.uriRegexRewrite.match"),
                        "uriRegexRewrite needs match",
                    );
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
                // Istio (validation.go, validateHTTPRedirect): any 3xx.
                if !(300..=399).contains(&c) {
                    self.err(
                        e,
                        Code::InvalidValue,
                        &format!("{f}.redirect.redirectCode"),
                        format!("{c} is not a valid redirect code, must be 3xx"),
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
                // Istio (validation.go, validateHTTPStatus): 200 to 600.
                Some(s) if !(200..=600).contains(&s) => self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.directResponse.status"),
                    format!("status {s} is not in 200-600"),
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

    /// A match block, checked and compiled (a part with errors is left out; the
    /// errors reject the rule).
    fn request_match(&mut self, e: &Entry, mf: &str, m: &HttpMatchRequest) -> RequestMatch {
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
        let one = |c: &mut Self, name: &str, sm: Option<&StringMatch>, ignore_case: bool| {
            c.string_match(e, &format!("{mf}.{name}"), sm?, ignore_case)
        };
        let uri = one(self, "uri", m.uri.as_ref(), m.ignore_uri_case);
        let scheme = one(self, "scheme", m.scheme.as_ref(), false);
        let method = one(self, "method", m.method.as_ref(), false);
        let authority = one(self, "authority", m.authority.as_ref(), false);
        let mut headers = Vec::new();
        let mut claims = Vec::new();
        let mut without_headers = Vec::new();
        let mut without_claims = Vec::new();
        for (kind, map, into_headers, into_claims) in [
            ("headers", &m.headers, &mut headers, &mut claims),
            (
                "withoutHeaders",
                &m.without_headers,
                &mut without_headers,
                &mut without_claims,
            ),
        ] {
            for (k, sm) in map {
                let kf = format!("{mf}.{kind}.{k}");
                // In withoutHeaders, Istio reads a regex `*` as "present".
                let matcher = if kind == "withoutHeaders" && sm.regex.as_deref() == Some("*") {
                    Some(StrMatch::Present)
                } else {
                    self.string_match(e, &kf, sm, false)
                };
                if k.starts_with('@') {
                    match claim_key(k).map(ClaimPath::parse) {
                        Some(Ok(claim)) => into_claims.extend(matcher.map(|matcher| ClaimMatch { claim, matcher })),
                        Some(Err(msg)) => self.err(e, Code::InvalidValue, &kf, msg.to_string()),
                        None => self.err(
                            e,
                            Code::InvalidValue,
                            &kf,
                            format!("{k:?}: the only @ key is {CLAIM_KEY}.<claim>"),
                        ),
                    }
                } else if k.chars().any(|c| c.is_ascii_uppercase()) {
                    self.err(e, Code::InvalidValue, &kf, "header names in matches must be lowercase");
                } else {
                    match HeaderName::from_bytes(k.as_bytes()) {
                        Ok(name) => into_headers.extend(matcher.map(|matcher| HeaderMatch { name, matcher })),
                        Err(_) => self.err(e, Code::InvalidValue, &kf, format!("{k:?} is not a valid header name")),
                    }
                }
            }
        }
        let mut query_params = Vec::new();
        for (k, sm) in &m.query_params {
            query_params.extend(
                self.string_match(e, &format!("{mf}.queryParams.{k}"), sm, false)
                    .map(|matcher| (k.clone(), matcher)),
            );
        }
        RequestMatch {
            uri,
            ignore_uri_case: m.ignore_uri_case,
            scheme,
            method,
            authority,
            headers,
            without_headers,
            claims,
            without_claims,
            query_params,
            port: m.port.and_then(|p| u16::try_from(p).ok()),
        }
    }

    /// A StringMatch checked (one kind only) and compiled.
    fn string_match(&mut self, e: &Entry, f: &str, m: &StringMatch, ignore_case: bool) -> Option<StrMatch> {
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
            return None;
        }
        Some(match (&m.exact, &m.prefix, &m.regex) {
            (Some(x), _, _) => StrMatch::Exact(x.clone()),
            (_, Some(p), _) => StrMatch::Prefix(p.clone()),
            (_, _, Some(r)) => StrMatch::Regex(self.regex(e, &format!("{f}.regex"), r, ignore_case)?),
            _ => StrMatch::Present,
        })
    }

    /// A regex compiled (shared with its other uses), or an error at `f`.
    fn regex(&mut self, e: &Entry, f: &str, re: &str, ignore_case: bool) -> Option<Arc<regex::Regex>> {
        match self.regexes.get(re, ignore_case) {
            Ok(r) => Some(r),
            Err(msg) => {
                self.err(e, Code::InvalidRegex, f, msg.to_string());
                None
            }
        }
    }

    /// The rule's action, destinations named by host (resolved per proxy).
    fn action(&mut self, e: &Entry, f: &str, rule: &HttpRoute) -> Option<CompiledAction> {
        if let Some(r) = &rule.redirect {
            let derive = r.derive_port.as_deref() == Some("FROM_REQUEST_PORT");
            return Some(CompiledAction::Redirect(Redirect {
                uri_regex: None,
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
                Ok(body) => Some(CompiledAction::DirectResponse(DirectResponse {
                    status: d.status.and_then(|s| u16::try_from(s).ok()).unwrap_or(200),
                    body: Arc::from(body),
                })),
                Err(msg) => {
                    self.err(
                        e,
                        Code::InvalidValue,
                        &format!("{f}.directResponse.body.bytes"),
                        format!("invalid base64: {msg}"),
                    );
                    None
                }
            };
        }
        if rule.route.is_empty() {
            // A delegate: reported where it matters (Strait does not serve it).
            return None;
        }
        let ns = e.resource.namespace.as_str();
        // Istio: `mirror` with `mirrorPercentage` (or the old `mirrorPercent`), all
        // requests when neither is set; `mirrors` each with its own percentage.
        let single_mirror = rule.mirror.as_ref().map(|d| {
            let percent = rule
                .mirror_percentage
                .as_ref()
                .and_then(|p| p.value)
                .or(rule.mirror_percent.map(|p| p as f64))
                .unwrap_or(100.0);
            (format!("{f}.mirror"), d, percent)
        });
        let listed = rule.mirrors.iter().enumerate().map(|(i, m)| {
            let percent = m.percentage.as_ref().and_then(|p| p.value).unwrap_or(100.0);
            (format!("{f}.mirrors[{i}].destination"), &m.destination, percent)
        });
        let mirrors = single_mirror
            .into_iter()
            .chain(listed)
            .map(|(field, dest, percent)| CompiledMirror {
                field,
                target: Target::of(dest, ns),
                percent,
            })
            .collect();
        let dests = rule
            .route
            .iter()
            .map(|d| (d.destination.as_ref(), d.weight, d.headers.as_ref()))
            .collect();
        let (destinations, total_weight) = self.weighted(e, f, dests);
        let rewrite = match &rule.rewrite {
            None => None,
            Some(r) => Some(Rewrite {
                uri: r.uri.clone(),
                uri_regex: match &r.uri_regex_rewrite {
                    Some(rr) => Some(RegexRewrite {
                        pattern: self.regex(
                            e,
                            &format!("{f}.rewrite.uriRegexRewrite.match"),
                            rr.pattern.as_deref()?,
                            false,
                        )?,
                        replacement: re2_replacement(rr.rewrite.as_deref().unwrap_or("")),
                    }),
                    None => None,
                },
                authority: r.authority.clone(),
            }),
        };
        Some(CompiledAction::Forward(CompiledForward {
            destinations,
            total_weight,
            rewrite,
            mirrors,
        }))
    }

    /// Request and response header operations, compiled to names and values.
    pub(super) fn header_ops(&mut self, e: &Entry, field: &str, headers: Option<&Headers>) -> (HeaderOps, HeaderOps) {
        let Some(h) = headers else { return Default::default() };
        (
            self.ops(e, &format!("{field}.request"), h.request.as_ref()),
            self.ops(e, &format!("{field}.response"), h.response.as_ref()),
        )
    }

    fn ops(&mut self, e: &Entry, field: &str, ops: Option<&HeaderOperations>) -> HeaderOps {
        let Some(ops) = ops else { return HeaderOps::default() };
        let mut out = HeaderOps::default();
        let pair = |c: &mut Self, kind: &str, k: &str, v: &str| -> Option<(HeaderName, HeaderValue)> {
            // `:authority` is the Host header; other pseudo-headers are refused by
            // `route_checks`.
            let k = if k.eq_ignore_ascii_case(":authority") {
                "host"
            } else {
                k
            };
            if k.starts_with(':') {
                return None;
            }
            match (
                HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()),
                HeaderValue::from_str(v),
            ) {
                (Ok(n), Ok(v)) => Some((n, v)),
                _ => {
                    c.err(
                        e,
                        Code::InvalidValue,
                        &format!("{field}.{kind}.{k}"),
                        "not a valid header name or value",
                    );
                    None
                }
            }
        };
        for (k, v) in &ops.set {
            out.set.extend(pair(self, "set", k, v));
        }
        for (k, v) in &ops.add {
            out.add.extend(pair(self, "add", k, v));
        }
        out.remove = ops
            .remove
            .iter()
            .filter_map(|k| HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).ok())
            .collect();
        out
    }
}
