//! Request matching: from a listener and a request's facts to the chosen virtual
//! host and route, in Istio's order. Pure and allocation-free.

use http::HeaderMap;

use crate::snapshot::{ClaimMatch, HeaderMatch, Listener, RequestMatch, Route, StrMatch, VirtualHost};

/// The facts of a request that routing looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Method.
    pub method: &'a str,
    /// Path with query, as received.
    pub path: &'a str,
    /// Host header or :authority, possibly with a port.
    pub authority: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// The verified JWT payload, if the request carried a valid token.
    pub claims: Option<&'a serde_json::Value>,
}

/// The outcome of routing.
#[derive(Debug)]
pub enum Routed<'a> {
    /// No virtual host for this Host.
    NoHost,
    /// A virtual host, but no route matched.
    NoRoute(&'a VirtualHost),
    /// A route matched.
    Matched(RouteMatch<'a>),
}

/// A matched route.
#[derive(Debug, Clone, Copy)]
pub struct RouteMatch<'a> {
    /// The virtual host.
    pub vhost: &'a VirtualHost,
    /// Its index in `Listener::virtual_hosts`.
    pub vhost_index: usize,
    /// The route.
    pub route: &'a Route,
    /// Its index in `VirtualHost::routes`.
    pub route_index: usize,
    /// Length of the matched `uri.prefix`, for prefix rewrites; `None` for other matches.
    pub prefix_len: Option<usize>,
}

/// Longest host name we normalize on the stack; longer names cannot be DNS names.
const MAX_HOST: usize = 255;

/// Calls `f` with `authority` lowercased, without port and trailing dot, without
/// allocating.
pub fn with_host<R>(authority: &str, f: impl FnOnce(&str) -> R) -> R {
    let host = strip_port(authority);
    let host = host.strip_suffix('.').unwrap_or(host);
    if !host.bytes().any(|b| b.is_ascii_uppercase()) || host.len() > MAX_HOST {
        return f(host);
    }
    let mut buf = [0u8; MAX_HOST];
    let lower = &mut buf[..host.len()];
    lower.copy_from_slice(host.as_bytes());
    lower.make_ascii_lowercase();
    // Lowercasing ASCII letters keeps UTF-8 valid.
    f(std::str::from_utf8(lower).unwrap_or(host))
}

/// `host:port` -> `host`; `[v6]:port` -> `[v6]`.
pub fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

impl Listener {
    /// The index of the virtual host for an authority.
    pub fn virtual_host_index(&self, authority: &str) -> Option<usize> {
        with_host(authority, |h| self.hosts.lookup(h)).filter(|i| *i < self.virtual_hosts.len())
    }

    /// Routes a request: first virtual host by Host, then the first route whose
    /// matches accept the request.
    pub fn route<'a>(&'a self, req: &RequestView<'_>) -> Routed<'a> {
        let Some((vhost_index, vhost)) = self
            .virtual_host_index(req.authority)
            .map(|i| (i, &self.virtual_hosts[i]))
        else {
            return Routed::NoHost;
        };
        let (path, query) = req.path.split_once('?').unwrap_or((req.path, ""));
        for (route_index, route) in vhost.routes.iter().enumerate() {
            let found = |prefix_len| {
                Routed::Matched(RouteMatch {
                    vhost,
                    vhost_index,
                    route,
                    route_index,
                    prefix_len,
                })
            };
            if route.matches.is_empty() {
                return found(None);
            }
            for m in &route.matches {
                if let Some(prefix_len) = matches(m, self.port, req, path, query) {
                    return found(prefix_len);
                }
            }
        }
        Routed::NoRoute(vhost)
    }
}

/// `Some(prefix length)` when `m` accepts the request; `path` is without its `query`.
fn matches(m: &RequestMatch, port: u16, req: &RequestView<'_>, path: &str, query: &str) -> Option<Option<usize>> {
    if m.port.is_some_and(|p| p != port) {
        return None;
    }
    let mut prefix_len = None;
    if let Some(uri) = &m.uri {
        if !uri_matches(uri, path, m.ignore_uri_case) {
            return None;
        }
        if let StrMatch::Prefix(p) | StrMatch::PathPrefix(p) = uri {
            prefix_len = Some(p.len());
        }
    }
    let checks = [
        (&m.method, req.method),
        (&m.scheme, req.scheme),
        (&m.authority, req.authority),
    ];
    if checks
        .iter()
        .any(|(sm, value)| sm.as_ref().is_some_and(|sm| !str_matches(sm, value)))
    {
        return None;
    }
    if !m.headers.iter().all(|h| header_matches(h, req.headers)) {
        return None;
    }
    if m.without_headers.iter().any(|h| header_matches(h, req.headers)) {
        return None;
    }
    if !m.claims.iter().all(|c| claim_matches(c, req.claims)) {
        return None;
    }
    if m.without_claims.iter().any(|c| claim_matches(c, req.claims)) {
        return None;
    }
    if !m.query_params.is_empty() {
        for (name, sm) in &m.query_params {
            let value = query.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == name).then_some(v)
            });
            if !value.is_some_and(|v| str_matches(sm, v)) {
                return None;
            }
        }
    }
    Some(prefix_len)
}

fn header_matches(h: &HeaderMatch, headers: &HeaderMap) -> bool {
    match headers.get(&h.name) {
        None => false,
        Some(v) => match v.to_str() {
            Ok(s) => str_matches(&h.matcher, s),
            Err(_) => matches!(h.matcher, StrMatch::Present),
        },
    }
}

/// Istio routes on claims only for requests with a verified token.
fn claim_matches(c: &ClaimMatch, claims: Option<&serde_json::Value>) -> bool {
    claims
        .and_then(|p| c.claim.lookup(p))
        .is_some_and(|v| crate::claims::any_value(v, |s| str_matches(&c.matcher, s)))
}

/// Whether `value` satisfies `m` (regexes match the whole value).
pub fn str_matches(m: &StrMatch, value: &str) -> bool {
    match m {
        StrMatch::Exact(e) => value == e,
        StrMatch::Prefix(p) => value.starts_with(p.as_str()),
        StrMatch::PathPrefix(p) => segment_prefix(p, value),
        StrMatch::Regex(r) => r.is_match(value),
        StrMatch::Present => true,
    }
}

/// Whether `path` starts with the segments of `prefix` (kept without its trailing
/// `/`): the next byte after it is the end or a `/`.
pub fn segment_prefix(prefix: &str, path: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn uri_matches(m: &StrMatch, path: &str, ignore_case: bool) -> bool {
    if !ignore_case {
        return str_matches(m, path);
    }
    match m {
        StrMatch::Exact(e) => path.eq_ignore_ascii_case(e),
        StrMatch::Prefix(p) => path.get(..p.len()).is_some_and(|head| head.eq_ignore_ascii_case(p)),
        StrMatch::PathPrefix(p) => path.get(..p.len()).is_some_and(|head| {
            head.eq_ignore_ascii_case(p) && path.get(p.len()..).is_some_and(|r| r.is_empty() || r.starts_with('/'))
        }),
        // Compiled case-insensitive at translation.
        StrMatch::Regex(r) => r.is_match(path),
        StrMatch::Present => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_normalization() {
        assert_eq!(strip_port("app.example.com:8443"), "app.example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        with_host("App.Example.COM.:80", |h| assert_eq!(h, "app.example.com"));
    }

    #[test]
    fn path_prefix_matches_whole_segments() {
        let cases = [
            ("/v2", "/v2", true),
            ("/v2", "/v2/", true),
            ("/v2", "/v2/example", true),
            ("/v2", "/v2example", false),
            ("/v2", "/v", false),
            ("", "/", true),
            ("", "/anything", true),
            ("/a/b", "/a/b/c", true),
            ("/a/b", "/a/bc", false),
        ];
        for (prefix, path, want) in cases {
            assert_eq!(segment_prefix(prefix, path), want, "{prefix:?} on {path:?}");
            assert_eq!(str_matches(&StrMatch::PathPrefix(prefix.into()), path), want);
        }
    }
}
