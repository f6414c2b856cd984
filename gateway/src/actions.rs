//! What a route does with a request once it matched, in Istio's order: the local
//! rate limit, CORS, fault injection, the virtual host's HTTPS redirect, then the
//! route's action (redirect, direct response, or forward to a weighted
//! destination). Also the header operations of routes and destinations on the
//! upstream request (with the URI and authority rewrite) and on the response, and
//! ACME's HTTP-01 challenge, answered before any route.

use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;
use strait_config::ratelimit::{RateKey, RateLimit};
use strait_config::router::{strip_port, RouteMatch, Routed};
use strait_config::snapshot::{roll, Action, ClusterKind, Cors, Fault, Listener, Redirect};

use crate::acme;
use crate::context::RequestCtx;
use crate::cors;
use crate::engine::Engine;
use crate::flags::Flags;
use crate::header_ops;
use crate::ratelimit::Limiter;
use crate::reply::{Halt, Reply};
use crate::request::{authority, connection_sni, path_and_query, remote_ip, request_view, scheme};
use crate::runtime::Runtime;

/// Envoy's body for answers of its fault filter.
const FAULT_BODY: &[u8] = b"fault filter abort";

/// Answers ACME's HTTP-01 validation of a certificate being issued; it comes
/// before routes, policies and httpsRedirect.
pub fn acme_challenge(shared: &Engine, runtime: &Runtime, req: &RequestHeader) -> Result<(), Reply<'static>> {
    let acme_path = req.uri.path().strip_prefix(acme::HTTP01_PREFIX);
    let Some(token) = acme_path.filter(|_| !runtime.snapshot.acme.is_empty()) else {
        return Ok(());
    };
    let Some(answer) = shared.challenges.http_response(token) else {
        return Ok(());
    };
    log::info!("answered the HTTP-01 challenge {token}");
    let octets = [(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    )];
    Err(Reply::with_body(200, Bytes::from(answer)).headers(octets.into()))
}

/// Matches the request against the listener's routes (404 when none matches) and
/// notes the route in the context. Over TLS, a Host whose certificate is not the
/// one the connection was made with gets 421 (RFC 9110 15.5.20).
pub fn route<'l>(
    listener: &'l Listener,
    session: &ServerSession,
    tls: bool,
    ctx: &mut RequestCtx,
) -> Result<RouteMatch<'l>, Reply<'static>> {
    let view = request_view(session.req_header(), scheme(tls), ctx.auth.as_deref());
    let m = match listener.route(&view) {
        Routed::Matched(m) => m,
        Routed::NoHost | Routed::NoRoute(_) => {
            ctx.flags.add(Flags::NO_ROUTE);
            return Err(Reply::new(404, b""));
        }
    };
    if tls {
        if let Some(vhost_server) = m.vhost.tls_server {
            let sni = connection_sni(session).and_then(|sni| listener.sni.lookup(sni));
            let cert_of = |i: usize| listener.tls_servers.get(i).map(|s| s.certificate);
            if let Some(sni_server) = sni {
                if cert_of(sni_server) != cert_of(vhost_server) {
                    return Err(Reply::new(421, b"misdirected request"));
                }
            }
        }
    }
    ctx.route = Some((m.vhost_index, m.route_index));
    ctx.prefix_len = m.prefix_len;
    Ok(m)
}

/// The (virtual host, route) a request would match before its JWT is checked:
/// for choosing its path, never for serving it.
pub(crate) fn find_route(listener: &Listener, session: &ServerSession, tls: bool) -> Option<(usize, usize)> {
    let view = request_view(session.req_header(), scheme(tls), None);
    match listener.route(&view) {
        Routed::Matched(m) => Some((m.vhost_index, m.route_index)),
        Routed::NoHost | Routed::NoRoute(_) => None,
    }
}

/// Takes a token from the route's rate limit bucket for this request's key (429
/// when none is left); what is left goes into the response's headers. `hops` are
/// the trusted proxies in front of the gateway, for a limit keyed by client.
pub fn rate_limit(
    limiter: &Limiter,
    limit: &RateLimit,
    session: &ServerSession,
    hops: u32,
    ctx: &mut RequestCtx,
) -> Result<(), Reply<'static>> {
    let req = session.req_header();
    let key = match &limit.key {
        RateKey::ClientIp => remote_ip(session, hops).map(|ip| ip.to_string()).unwrap_or_default(),
        RateKey::Header(name) => req
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default(),
        // Requests without the claim share one bucket.
        RateKey::Claim(path) => ctx
            .auth
            .as_ref()
            .and_then(|a| path.lookup(&a.claims))
            .and_then(strait_config::claims::header_value)
            .unwrap_or_default(),
    };
    let verdict = limiter.take(limit, &key, Instant::now());
    if !verdict.allowed {
        let headers = [
            (
                HeaderName::from_static("x-ratelimit-limit"),
                HeaderValue::from(verdict.limit),
            ),
            (
                HeaderName::from_static("x-ratelimit-remaining"),
                HeaderValue::from(0u32),
            ),
            (
                HeaderName::from_static("x-ratelimit-reset"),
                HeaderValue::from(verdict.reset_secs),
            ),
            (header::RETRY_AFTER, HeaderValue::from(verdict.reset_secs)),
        ];
        ctx.flags.add(Flags::RATE_LIMITED);
        return Err(Reply::new(429, b"local_rate_limited").headers(headers.into()));
    }
    ctx.rate = Some((verdict.limit, verdict.remaining));
    Ok(())
}

/// Applies the route's CORS policy: a preflight is answered here, other
/// cross-origin requests carry the CORS headers to their response.
pub fn cors(policy: &Cors, req: &RequestHeader, ctx: &mut RequestCtx) -> Result<(), Reply<'static>> {
    match cors::decide(policy, &req.method, &req.headers) {
        cors::Decision::NotCors => Ok(()),
        cors::Decision::AnswerPreflight(headers) => Err(Reply::new(200, b"").headers(headers)),
        cors::Decision::RefusePreflight => Err(Reply::new(200, b"")),
        cors::Decision::Forward(headers) => {
            ctx.response_headers.extend(headers);
            Ok(())
        }
    }
}

/// Injects the route's faults: a delay, then an abort answered here (as a gRPC
/// status when the fault names one).
pub async fn fault(fault: &Fault, ctx: &mut RequestCtx) -> Result<(), Reply<'static>> {
    if let Some(d) = fault.delay.as_ref().filter(|d| roll(d.percent)) {
        ctx.flags.add(Flags::DELAY_INJECTED);
        tokio::time::sleep(d.duration).await;
    }
    let Some(a) = fault.abort.as_ref().filter(|a| roll(a.percent)) else {
        return Ok(());
    };
    ctx.flags.add(Flags::FAULT_INJECTED);
    Err(match a.grpc_status {
        Some(code) => {
            let grpc = [
                (header::CONTENT_TYPE, HeaderValue::from_static("application/grpc")),
                (HeaderName::from_static("grpc-status"), HeaderValue::from(code)),
                (
                    HeaderName::from_static("grpc-message"),
                    HeaderValue::from_static("fault filter abort"),
                ),
            ];
            Reply::new(a.status, b"").headers(grpc.into())
        }
        None => Reply::new(a.status, FAULT_BODY),
    })
}

/// The virtual host's `httpsRedirect`: a plain-HTTP request is sent to the same
/// host and path over HTTPS.
pub fn https_redirect(m: &RouteMatch<'_>, req: &RequestHeader, tls: bool) -> Result<(), Halt<'static>> {
    if tls || !m.vhost.https_redirect {
        return Ok(());
    }
    let to = format!("https://{}{}", strip_port(authority(req)), path_and_query(req));
    let loc = HeaderValue::from_str(&to).map_err(|_| Error::new(ErrorType::InvalidHTTPHeader))?;
    Err(Reply::new(301, b"").headers(vec![(header::LOCATION, loc)]).into())
}

/// The route's action: a redirect or a direct response is answered here; a forward
/// picks its weighted destination (502 for a blackhole, 503 without endpoints) and
/// lets the request go upstream. `port` is the listener's Gateway port.
pub fn act<'r>(
    m: &RouteMatch<'r>,
    runtime: &Runtime,
    req: &RequestHeader,
    tls: bool,
    port: u16,
    ctx: &mut RequestCtx,
) -> Result<(), Halt<'r>> {
    let route = m.route;
    match &route.action {
        Action::Redirect(r) => {
            let to = location(r, scheme(tls), authority(req), port, path_and_query(req));
            let loc = HeaderValue::from_str(&to).map_err(|_| Error::new(ErrorType::InvalidHTTPHeader))?;
            let mut headers = rate_headers(ctx.rate);
            headers.push((header::LOCATION, loc));
            Err(Reply::new(r.code, b"")
                .headers(headers)
                .ops(&route.response_headers)
                .into())
        }
        Action::DirectResponse(d) => Err(Reply::with_body(d.status, Bytes::copy_from_slice(&d.body))
            .headers(rate_headers(ctx.rate))
            .ops(&route.response_headers)
            .into()),
        Action::Forward(f) => {
            let picked = f.pick_index().and_then(|i| Some((i, f.destinations.get(i)?)));
            let cluster = picked.and_then(|(_, d)| runtime.snapshot.clusters.get(d.cluster));
            ctx.destination = picked.map(|(i, _)| i);
            match cluster.map(|c| c.kind) {
                Some(ClusterKind::Blackhole) => {
                    ctx.flags.add(Flags::NO_ROUTE);
                    return Err(Reply::new(502, b"").into());
                }
                Some(ClusterKind::InvalidBackend) => {
                    ctx.flags.add(Flags::NO_ROUTE);
                    return Err(Reply::new(500, b"").into());
                }
                _ => {}
            }
            // A sidecar's passthrough and inbound clusters have one address: where the
            // client was going.
            let captured = cluster
                .is_some_and(|c| matches!(c.kind, ClusterKind::OriginalDestination | ClusterKind::LocalWorkload));
            let endpoints = picked.and_then(|(_, d)| runtime.cluster_endpoints(d.cluster));
            if cluster.is_none() || (!captured && endpoints.is_none_or(|e| e.endpoints.is_empty())) {
                ctx.flags.add(Flags::NO_HEALTHY_UPSTREAM);
                return Err(Reply::new(503, b"no healthy upstream").into());
            }
            Ok(())
        }
    }
}

/// The Location of a redirect, as Envoy builds it from Istio's HTTPRedirect.
fn location(r: &Redirect, scheme: &str, authority: &str, listener_port: u16, path: &str) -> String {
    let new_scheme = r.scheme.as_deref().unwrap_or(scheme);
    let host = r.authority.as_deref().map_or_else(|| strip_port(authority), strip_port);
    let port = if let Some(p) = r.port {
        Some(p)
    } else if r.port_from_request {
        authority
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .or(Some(listener_port))
    } else if let Some(a) = r.authority.as_deref().filter(|a| a.contains(':') && !a.ends_with(']')) {
        a.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
    } else if r.scheme.is_none() {
        authority.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
    } else {
        None
    };
    let port = port.filter(|p| !matches!((new_scheme, p), ("http", 80) | ("https", 443)));
    let (orig_path, query) = path.split_once('?').map_or((path, None), |(p, q)| (p, Some(q)));
    // The Gateway API's ReplacePrefixMatch: the request's path, its prefix replaced.
    let replaced = r
        .uri_regex
        .as_ref()
        .filter(|_| r.uri.is_none())
        .map(|rr| rr.pattern.replace(orig_path, rr.replacement.as_str()).into_owned());
    let new_path = match (r.uri.as_ref().or(replaced.as_ref()), query) {
        (Some(u), _) if u.contains('?') => u.clone(),
        (Some(u), Some(q)) => format!("{u}?{q}"),
        (Some(u), None) => u.clone(),
        (None, Some(q)) => format!("{orig_path}?{q}"),
        (None, None) => orig_path.to_string(),
    };
    match port {
        Some(p) => format!("{new_scheme}://{host}:{p}{new_path}"),
        None => format!("{new_scheme}://{host}{new_path}"),
    }
}

/// `x-ratelimit-limit` and `x-ratelimit-remaining` for a request under a RateLimit.
fn rate_headers(rate: Option<(u32, u32)>) -> Vec<(HeaderName, HeaderValue)> {
    rate.map_or_else(Vec::new, |(limit, remaining)| {
        vec![
            (HeaderName::from_static("x-ratelimit-limit"), HeaderValue::from(limit)),
            (
                HeaderName::from_static("x-ratelimit-remaining"),
                HeaderValue::from(remaining),
            ),
        ]
    })
}

/// The upstream request as the route says: a Host for clients that sent only an
/// authority, the route's URI and authority rewrite, then the header operations of
/// the route and of the chosen destination.
pub fn rewrite_request(ctx: &RequestCtx, upstream: &mut RequestHeader) -> Result<()> {
    if upstream.headers.get(header::HOST).is_none() {
        if let Some(a) = upstream.uri.authority().map(|a| a.as_str().to_string()) {
            upstream.insert_header(header::HOST, a)?;
        }
    }
    if let Some(route) = ctx.route() {
        if let Action::Forward(f) = &route.action {
            if let Some(rw) = &f.rewrite {
                let pq = path_and_query(upstream);
                let (path, query) = pq.split_once('?').map_or((pq, None), |(p, q)| (p, Some(q)));
                let new_path = if let Some(uri) = &rw.uri {
                    match ctx.prefix_len {
                        Some(n) => format!("{uri}{}", path.get(n..).unwrap_or("")),
                        None => uri.clone(),
                    }
                } else if let Some(rr) = &rw.uri_regex {
                    rr.pattern.replace_all(path, rr.replacement.as_str()).into_owned()
                } else {
                    path.to_string()
                };
                if rw.uri.is_some() || rw.uri_regex.is_some() {
                    let full = match query {
                        Some(q) => format!("{new_path}?{q}"),
                        None => new_path,
                    };
                    let uri = full.parse::<http::Uri>().map_err(|_| {
                        Error::explain(ErrorType::InvalidHTTPHeader, "rewritten path is not a valid URI")
                    })?;
                    upstream.set_uri(uri);
                }
                if let Some(a) = &rw.authority {
                    upstream.insert_header(header::HOST, a.as_str())?;
                }
            }
        }
        header_ops::apply_request(upstream, &route.request_headers)?;
    }
    if let Some(d) = ctx.destination() {
        header_ops::apply_request(upstream, &d.request_headers)?;
    }
    Ok(())
}

/// The response as the route says: the header operations of the route and of the
/// chosen destination, then the headers the gateway adds (CORS, external
/// authorization, rate limit, a new hash cookie).
pub fn response_headers(ctx: &mut RequestCtx, resp: &mut ResponseHeader) -> Result<()> {
    header_ops::server_header(resp)?;
    if let Some(route) = ctx.route() {
        header_ops::apply_response(resp, &route.response_headers)?;
    }
    if let Some(d) = ctx.destination() {
        header_ops::apply_response(resp, &d.response_headers)?;
    }
    for (name, value) in ctx.response_headers.drain(..) {
        resp.insert_header(name, value)?;
    }
    for (name, value) in rate_headers(ctx.rate) {
        resp.insert_header(name, value)?;
    }
    if let Some(cookie) = ctx.set_cookie.take() {
        resp.append_header(header::SET_COOKIE, cookie)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect() -> Redirect {
        Redirect {
            uri: None,
            uri_regex: None,
            authority: None,
            scheme: None,
            port: None,
            port_from_request: false,
            code: 301,
        }
    }

    #[test]
    fn redirect_locations() {
        let r = Redirect {
            uri: Some("/new".into()),
            ..redirect()
        };
        assert_eq!(
            location(&r, "http", "app.example.com", 80, "/old?x=1"),
            "http://app.example.com/new?x=1"
        );
        let r = Redirect {
            scheme: Some("https".into()),
            ..redirect()
        };
        assert_eq!(
            location(&r, "http", "app.example.com:8080", 80, "/a"),
            "https://app.example.com/a"
        );
        let r = Redirect {
            authority: Some("other.example.com".into()),
            port: Some(8443),
            scheme: Some("https".into()),
            ..redirect()
        };
        assert_eq!(
            location(&r, "http", "app.example.com", 80, "/a"),
            "https://other.example.com:8443/a"
        );
        let r = Redirect {
            port_from_request: true,
            ..redirect()
        };
        assert_eq!(
            location(&r, "http", "app.example.com:8080", 80, "/a"),
            "http://app.example.com:8080/a"
        );
        let r = Redirect {
            uri_regex: Some(strait_config::snapshot::RegexRewrite::replace_prefix("/old", "/")),
            ..redirect()
        };
        assert_eq!(
            location(&r, "http", "app.example.com", 80, "/old/page?x=1"),
            "http://app.example.com/page?x=1"
        );
    }
}
