//! The filters of a Gateway API rule compiled: header modifiers, RequestRedirect,
//! URLRewrite, RequestMirror and CORS, as what the snapshot's routes carry.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use crate::bundle::Entry;
use crate::compile::virtual_service::CompiledMirror;
use crate::compile::Compiler;
use crate::diag::Code;
use crate::resources::gateway_api::{HeaderModifier, HttpRouteFilter, PathModifier};
use crate::snapshot::{Cors, HeaderOps, Redirect, RegexRewrite, Rewrite, StrMatch};

/// What a rule's filters add up to.
#[derive(Default)]
pub(super) struct Filters {
    pub(super) request: HeaderOps,
    pub(super) response: HeaderOps,
    pub(super) redirect: Option<Redirect>,
    pub(super) rewrite: Option<Rewrite>,
    pub(super) mirrors: Vec<CompiledMirror>,
    pub(super) cors: Option<Cors>,
    /// A filter Strait cannot apply: the rule answers 500 rather than skip it.
    pub(super) unsupported: bool,
}

impl Compiler<'_> {
    pub(super) fn filters(
        &mut self,
        e: &Entry,
        f: &str,
        list: &[HttpRouteFilter],
        grpc: bool,
        unresolved: &mut Option<(&'static str, String)>,
    ) -> Filters {
        let mut out = Filters::default();
        for (i, x) in list.iter().enumerate() {
            let ff = format!("{f}.filters[{i}]");
            let present = match x.kind.as_str() {
                "RequestHeaderModifier" => x.request_header_modifier.as_ref().map(|m| {
                    let ops = self.modifier(e, &format!("{ff}.requestHeaderModifier"), m);
                    merge(&mut out.request, ops);
                }),
                "ResponseHeaderModifier" => x.response_header_modifier.as_ref().map(|m| {
                    let ops = self.modifier(e, &format!("{ff}.responseHeaderModifier"), m);
                    merge(&mut out.response, ops);
                }),
                "RequestMirror" => x.request_mirror.as_ref().map(|m| {
                    let percent = match (&m.percent, &m.fraction) {
                        (Some(p), _) => *p as f64,
                        (None, Some(fr)) => fr.numerator as f64 * 100.0 / fr.denominator.unwrap_or(100).max(1) as f64,
                        (None, None) => 100.0,
                    };
                    if let Some(target) = self.backend_target(
                        e,
                        &format!("{ff}.requestMirror.backendRef"),
                        &m.backend_ref,
                        if grpc { "GRPCRoute" } else { "HTTPRoute" },
                        unresolved,
                    ) {
                        out.mirrors.push(CompiledMirror {
                            field: format!("{ff}.requestMirror.backendRef"),
                            target,
                            percent: percent.clamp(0.0, 100.0),
                        });
                    }
                }),
                "RequestRedirect" if !grpc => x.request_redirect.as_ref().map(|r| {
                    out.redirect = Some(self.redirect(e, &format!("{ff}.requestRedirect"), r));
                }),
                "URLRewrite" if !grpc => x.url_rewrite.as_ref().map(|r| {
                    let (uri_regex, _) = self.path_modifier(e, &format!("{ff}.urlRewrite.path"), r.path.as_ref());
                    out.rewrite = Some(Rewrite {
                        uri: None,
                        uri_regex,
                        authority: r.hostname.clone(),
                    });
                }),
                "CORS" if !grpc => x.cors.as_ref().map(|c| {
                    out.cors = self.gw_cors(e, &format!("{ff}.cors"), c);
                }),
                "ExtensionRef" | "ExternalAuth" => {
                    self.warn(
                        e,
                        Code::NotEnforced,
                        &format!("{ff}.type"),
                        format!(
                            "{} filters are not served by Strait: requests to this rule get 500",
                            x.kind
                        ),
                    );
                    out.unsupported = true;
                    Some(())
                }
                other => {
                    self.err(
                        e,
                        Code::InvalidValue,
                        &format!("{ff}.type"),
                        format!("{other:?} is not a filter of this route kind"),
                    );
                    Some(())
                }
            };
            if present.is_none() {
                self.err(
                    e,
                    Code::Required,
                    &ff,
                    format!("a {} filter needs its settings", x.kind),
                );
            }
        }
        out
    }

    pub(super) fn modifier(&mut self, e: &Entry, f: &str, m: &HeaderModifier) -> HeaderOps {
        let mut ops = HeaderOps::default();
        let pair = |c: &mut Self, list: &str, i: usize, name: &str, value: &str| match (
            HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(n), Ok(v)) => Some((n, v)),
            _ => {
                c.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.{list}[{i}]"),
                    "not a valid header name or value",
                );
                None
            }
        };
        for (i, h) in m.set.iter().enumerate() {
            ops.set.extend(pair(self, "set", i, &h.name, &h.value));
        }
        for (i, h) in m.add.iter().enumerate() {
            ops.add.extend(pair(self, "add", i, &h.name, &h.value));
        }
        ops.remove = m
            .remove
            .iter()
            .filter_map(|n| HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes()).ok())
            .collect();
        ops
    }

    /// A path modifier as a regex rewrite; ReplacePrefixMatch is completed with the
    /// rule's prefix once known (pattern `^`). Also returns the full path, if any.
    fn path_modifier(
        &mut self,
        e: &Entry,
        f: &str,
        p: Option<&PathModifier>,
    ) -> (Option<RegexRewrite>, Option<String>) {
        let Some(p) = p else { return (None, None) };
        match (p.kind.as_str(), &p.replace_full_path, &p.replace_prefix_match) {
            ("ReplaceFullPath", Some(full), _) => (Some(RegexRewrite::replace_full_path(full)), Some(full.clone())),
            ("ReplacePrefixMatch", _, Some(prefix)) => (
                Some(RegexRewrite::replace_prefix("", prefix)).map(|mut r| {
                    // Completed in `http_rule` with the match's prefix.
                    r.pattern = Arc::new(regex::Regex::new("^").expect("a constant pattern compiles"));
                    r
                }),
                None,
            ),
            (kind, _, _) => {
                self.err(
                    e,
                    Code::Required,
                    f,
                    format!("path type {kind:?} needs its replaceFullPath or replacePrefixMatch"),
                );
                (None, None)
            }
        }
    }

    fn redirect(&mut self, e: &Entry, f: &str, r: &crate::resources::gateway_api::RequestRedirect) -> Redirect {
        let code = r.status_code.unwrap_or(302);
        if ![301, 302, 303, 307, 308].contains(&code) {
            self.err(
                e,
                Code::InvalidValue,
                &format!("{f}.statusCode"),
                format!("{code} is not one of 301, 302, 303, 307, 308"),
            );
        }
        if let Some(s) = r.scheme.as_deref().filter(|s| !matches!(*s, "http" | "https")) {
            self.err(
                e,
                Code::InvalidValue,
                &format!("{f}.scheme"),
                format!("{s:?} is not one of http, https"),
            );
        }
        let port = r.port.map(|p| {
            u16::try_from(p).ok().filter(|p| *p > 0).unwrap_or_else(|| {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.port"),
                    format!("{p} is not a port"),
                );
                0
            })
        });
        let (uri_regex, full) = self.path_modifier(e, &format!("{f}.path"), r.path.as_ref());
        Redirect {
            uri: full,
            uri_regex: uri_regex.filter(|rr| rr.pattern.as_str() == "^"),
            authority: r.hostname.clone(),
            scheme: r.scheme.clone(),
            port,
            port_from_request: false,
            code: u16::try_from(code).unwrap_or(302),
        }
    }

    fn gw_cors(&mut self, e: &Entry, f: &str, c: &crate::resources::gateway_api::CorsFilter) -> Option<Cors> {
        let mut allow_origins = Vec::new();
        for (i, o) in c.allow_origins.iter().enumerate() {
            if o == "*" {
                allow_origins.push(StrMatch::Present);
            } else if o.contains('*') {
                let re = regex::escape(o).replace(r"\*", "[^/]*");
                allow_origins.extend(
                    self.gw_regex(e, &format!("{f}.allowOrigins[{i}]"), &re)
                        .map(StrMatch::Regex),
                );
            } else {
                allow_origins.push(StrMatch::Exact(o.clone()));
            }
        }
        let joined = |items: &[String]| {
            (!items.is_empty())
                .then(|| HeaderValue::from_str(&items.join(", ")).ok())
                .flatten()
        };
        Some(Cors {
            allow_origins,
            allow_methods: joined(&c.allow_methods),
            allow_headers: joined(&c.allow_headers),
            expose_headers: joined(&c.expose_headers),
            max_age: Some(HeaderValue::from(c.max_age.unwrap_or(5).max(0))),
            allow_credentials: c.allow_credentials.unwrap_or(false),
            forward_unmatched_preflights: true,
        })
    }
}

/// Appends `ops` to `into`.
pub(super) fn merge(into: &mut HeaderOps, ops: HeaderOps) {
    into.set.extend(ops.set);
    into.add.extend(ops.add);
    into.remove.extend(ops.remove);
}
