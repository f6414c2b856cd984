//! The proxy: one `ProxyHttp` implementation per listener port. Requests are
//! matched against the snapshot loaded once in `new_ctx`; everything the phases
//! need was compiled before that snapshot was swapped in.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::ErrorSource;
use strait_config::router::{strip_port, RequestView, Routed};
use strait_config::snapshot::{Action, HeaderOps, Listener, Redirect, Route, WeightedCluster};

use crate::certs::TlsInfo;
use crate::state::{InflightGuard, Runtime, Shared};

/// Request limits enforced before routing.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most request headers accepted (431 beyond).
    pub max_headers: usize,
    /// Most bytes of request headers accepted, names and values (431 beyond).
    pub max_header_bytes: usize,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_headers: 100,
            max_header_bytes: 60 * 1024,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// The proxy for one listener.
pub struct Gateway {
    /// Shared engine state.
    pub shared: Arc<Shared>,
    /// The Gateway port this listener serves (before `--port-map`).
    pub port: u16,
    /// Whether the listener terminates TLS.
    pub tls: bool,
    /// Limits.
    pub limits: Limits,
}

/// Per-request state.
pub struct RequestCtx {
    runtime: Arc<Runtime>,
    _inflight: InflightGuard,
    listener: usize,
    /// (virtual host, route) indexes once matched.
    route: Option<(usize, usize)>,
    /// Index of the chosen destination of a Forward action.
    destination: Option<usize>,
    prefix_len: Option<usize>,
}

impl RequestCtx {
    fn listener(&self) -> Option<&Listener> {
        self.runtime.snapshot.listeners.get(self.listener)
    }

    fn route(&self) -> Option<&Route> {
        let (v, r) = self.route?;
        self.listener()?.virtual_hosts.get(v)?.routes.get(r)
    }

    fn destination(&self) -> Option<&WeightedCluster> {
        match &self.route()?.action {
            Action::Forward(f) => f.destinations.get(self.destination?),
            _ => None,
        }
    }
}

fn authority(req: &RequestHeader) -> &str {
    req.headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
}

fn path_and_query(req: &RequestHeader) -> &str {
    req.uri.path_and_query().map_or("/", |p| p.as_str())
}

fn header_bytes(req: &RequestHeader) -> usize {
    req.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum()
}

/// Writes a complete response from the proxy itself.
async fn respond(
    session: &mut Session,
    status: u16,
    extra: &[(HeaderName, HeaderValue)],
    ops: Option<&HeaderOps>,
    body: Bytes,
) -> Result<bool> {
    let mut resp = ResponseHeader::build(status, Some(4 + extra.len()))?;
    resp.insert_header(header::CONTENT_LENGTH, body.len())?;
    if !body.is_empty() {
        resp.insert_header(header::CONTENT_TYPE, "text/plain")?;
    }
    for (k, v) in extra {
        resp.insert_header(k.clone(), v.clone())?;
    }
    if let Some(ops) = ops {
        apply_response_ops(&mut resp, ops)?;
    }
    let empty = body.is_empty();
    session.write_response_header(Box::new(resp), empty).await?;
    if !empty {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(true)
}

fn apply_request_ops(req: &mut RequestHeader, ops: &HeaderOps) -> Result<()> {
    for (k, v) in &ops.set {
        req.insert_header(k.clone(), v.clone())?;
    }
    for (k, v) in &ops.add {
        req.append_header(k.clone(), v.clone())?;
    }
    for k in &ops.remove {
        req.remove_header(k);
    }
    Ok(())
}

fn apply_response_ops(resp: &mut ResponseHeader, ops: &HeaderOps) -> Result<()> {
    for (k, v) in &ops.set {
        resp.insert_header(k.clone(), v.clone())?;
    }
    for (k, v) in &ops.add {
        resp.append_header(k.clone(), v.clone())?;
    }
    for k in &ops.remove {
        resp.remove_header(k);
    }
    Ok(())
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
    let new_path = match (&r.uri, query) {
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

// Parsed once: looking a header up by string parses the name on every call.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A version-4 UUID, as Envoy generates for `x-request-id`. Written by hand: the
/// formatting machinery cost more than the rest of the request filter.
fn request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bytes = fastrand::u128(..).to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut out = Vec::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push(b'-');
        }
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0x0f)]);
    }
    HeaderValue::from_maybe_shared(Bytes::from(out)).unwrap_or(HeaderValue::from_static("-"))
}

/// `x-forwarded-for` with `ip` appended to what the client sent, built in one buffer.
fn forwarded_for(previous: Option<&[u8]>, ip: IpAddr) -> Option<HeaderValue> {
    let mut out = Vec::with_capacity(previous.map_or(0, |p| p.len() + 2) + 39);
    if let Some(p) = previous {
        out.extend_from_slice(p);
        out.extend_from_slice(b", ");
    }
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            write!(out, "{v6}").ok()?;
        }
    }
    HeaderValue::from_maybe_shared(Bytes::from(out)).ok()
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        let runtime = self.shared.current();
        let listener = runtime
            .snapshot
            .listeners
            .iter()
            .position(|l| l.port == self.port)
            .unwrap_or(usize::MAX);
        RequestCtx {
            runtime,
            _inflight: InflightGuard::new(&self.shared),
            listener,
            route: None,
            destination: None,
            prefix_len: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let req = session.req_header();
        if req.headers.len() > self.limits.max_headers || header_bytes(req) > self.limits.max_header_bytes {
            session.set_keepalive(None);
            return respond(
                session,
                431,
                &[],
                None,
                Bytes::from_static(b"request header fields too large"),
            )
            .await;
        }
        let runtime = ctx.runtime.clone();
        let Some(listener) = runtime.snapshot.listeners.get(ctx.listener) else {
            return respond(session, 404, &[], None, Bytes::new()).await;
        };
        let scheme = if self.tls { "https" } else { "http" };
        let req = session.req_header();
        let view = RequestView {
            method: req.method.as_str(),
            path: path_and_query(req),
            authority: authority(req),
            scheme,
            headers: &req.headers,
        };
        let routed = listener.route(&view);
        let m = match routed {
            Routed::Matched(m) => m,
            Routed::NoHost | Routed::NoRoute(_) => return respond(session, 404, &[], None, Bytes::new()).await,
        };
        if self.tls {
            if let Some(vhost_server) = m.vhost.tls_server {
                let sni = session
                    .digest()
                    .and_then(|d| d.ssl_digest.as_ref())
                    .and_then(|d| d.extension.get::<TlsInfo>())
                    .and_then(|i| i.sni.as_deref())
                    .and_then(|sni| listener.sni.lookup(sni));
                let cert_of = |i: usize| listener.tls_servers.get(i).map(|s| s.certificate);
                if let Some(sni_server) = sni {
                    if cert_of(sni_server) != cert_of(vhost_server) {
                        // The connection's certificate does not cover this Host (RFC 9110 15.5.20).
                        return respond(session, 421, &[], None, Bytes::from_static(b"misdirected request")).await;
                    }
                }
            }
        }
        ctx.route = Some((m.vhost_index, m.route_index));
        ctx.prefix_len = m.prefix_len;
        if !self.tls && m.vhost.https_redirect {
            let to = format!("https://{}{}", strip_port(view.authority), view.path);
            let loc = HeaderValue::from_str(&to).map_err(|_| Error::new(ErrorType::InvalidHTTPHeader))?;
            return respond(session, 301, &[(header::LOCATION, loc)], None, Bytes::new()).await;
        }
        match &m.route.action {
            Action::Redirect(r) => {
                let to = location(r, scheme, view.authority, self.port, view.path);
                let loc = HeaderValue::from_str(&to).map_err(|_| Error::new(ErrorType::InvalidHTTPHeader))?;
                respond(
                    session,
                    r.code,
                    &[(header::LOCATION, loc)],
                    Some(&m.route.response_headers),
                    Bytes::new(),
                )
                .await
            }
            Action::DirectResponse(d) => {
                respond(
                    session,
                    d.status,
                    &[],
                    Some(&m.route.response_headers),
                    Bytes::copy_from_slice(&d.body),
                )
                .await
            }
            Action::Forward(f) => {
                let picked = f.pick_index().and_then(|i| Some((i, f.destinations.get(i)?)));
                let has_endpoints = picked
                    .and_then(|(_, d)| runtime.snapshot.clusters.get(d.cluster))
                    .is_some_and(|c| !c.endpoints.is_empty());
                if !has_endpoints {
                    return respond(session, 503, &[], None, Bytes::from_static(b"no healthy upstream")).await;
                }
                ctx.destination = picked.map(|(i, _)| i);
                Ok(false)
            }
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        let endpoint = ctx
            .destination()
            .and_then(|d| ctx.runtime.snapshot.clusters.get(d.cluster))
            .and_then(|c| c.pick())
            .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "no endpoint"))?;
        let mut peer = HttpPeer::new(endpoint.address, false, String::new());
        peer.options.connection_timeout = Some(self.limits.connect_timeout);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
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
            apply_request_ops(upstream, &route.request_headers)?;
        }
        if let Some(d) = ctx.destination() {
            apply_request_ops(upstream, &d.request_headers)?;
        }
        let client_ip: Option<IpAddr> = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        if let Some(ip) = client_ip {
            let previous = upstream.headers.get(&X_FORWARDED_FOR).map(HeaderValue::as_bytes);
            if let Some(xff) = forwarded_for(previous, ip) {
                upstream.insert_header("x-forwarded-for", xff)?;
            }
        }
        upstream.insert_header("x-forwarded-proto", if self.tls { "https" } else { "http" })?;
        if upstream.headers.get(&X_REQUEST_ID).is_none() {
            upstream.insert_header("x-request-id", request_id())?;
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, _ctx: &mut RequestCtx) -> FailToProxy {
        let (code, body): (u16, &'static [u8]) = match (e.etype(), e.esource()) {
            (ErrorType::HTTPStatus(code), _) => (*code, b""),
            // Envoy's answers, which Istio users script against: 503 when the upstream
            // could not be reached or reset before its headers, 504 on timeouts.
            (
                ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout,
                ErrorSource::Upstream,
            ) => (504, b"upstream request timeout"),
            (
                ErrorType::ConnectTimedout
                | ErrorType::ConnectRefused
                | ErrorType::ConnectNoRoute
                | ErrorType::ConnectError,
                _,
            ) => (
                503,
                b"upstream connect error or disconnect/reset before headers. reset reason: connection failure",
            ),
            (_, ErrorSource::Upstream) => (
                503,
                b"upstream connect error or disconnect/reset before headers. reset reason: connection termination",
            ),
            (ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed, ErrorSource::Downstream) => {
                (0, b"")
            }
            (_, ErrorSource::Downstream) => (400, b""),
            _ => (500, b""),
        };
        if code > 0 {
            if let Err(err) = session.respond_error_with_body(code, Bytes::from_static(body)).await {
                log::debug!("could not send {code} downstream: {err}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(route) = ctx.route() {
            apply_response_ops(resp, &route.response_headers)?;
        }
        if let Some(d) = ctx.destination() {
            apply_response_ops(resp, &d.response_headers)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect() -> Redirect {
        Redirect {
            uri: None,
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
    }

    #[test]
    fn request_ids_are_uuid_v4() {
        for _ in 0..100 {
            let value = request_id();
            let id = value.to_str().expect("ascii");
            assert_eq!(id.len(), 36);
            assert_eq!(id.matches('-').count(), 4);
            assert_eq!([&id[8..9], &id[13..14], &id[14..15]], ["-", "-", "4"]);
            assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
            assert_ne!(value, request_id());
        }
    }

    #[test]
    fn forwarded_for_appends_the_client() {
        let v4: IpAddr = "10.0.12.255".parse().expect("ip");
        let v6: IpAddr = "2001:db8::1".parse().expect("ip");
        assert_eq!(forwarded_for(None, v4).expect("value"), "10.0.12.255");
        assert_eq!(
            forwarded_for(Some(b"1.2.3.4"), v4).expect("value"),
            "1.2.3.4, 10.0.12.255"
        );
        assert_eq!(
            forwarded_for(Some(b"1.2.3.4"), v6).expect("value"),
            "1.2.3.4, 2001:db8::1"
        );
        assert_eq!(
            forwarded_for(None, "0.9.100.7".parse().expect("ip")).expect("value"),
            "0.9.100.7"
        );
    }
}
