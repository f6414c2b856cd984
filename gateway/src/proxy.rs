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
use strait_config::path::Normalization;
use strait_config::ratelimit::RateKey;
use strait_config::router::{strip_port, Routed};
use strait_config::snapshot::{hash_bytes, roll, Action, HashKey, HeaderOps, Redirect};

use crate::access_log::{self, AccessLog};
use crate::acme;
use crate::authn;
use crate::context::RequestCtx;
use crate::cors;
use crate::ext_authz;
use crate::flags::Flags;
use crate::metrics::RequestRecord;
use crate::mirror::PendingCopy;
use crate::request::{
    authority, connection_peer, connection_sni, connection_tls, is_grpc, local_port, path_and_query, peer_ip,
    remote_ip, request_view, scheme, X_FORWARDED_FOR,
};
use crate::retry::Failure;
use crate::state::{Runtime, Shared};
use crate::trace::{RequestSpan, Tracer};
use crate::upstream::{self, PickError};
use crate::upstreams::{ActiveGuard, Outcome};

/// Request limits enforced before routing.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most request headers accepted (431 beyond).
    pub max_headers: usize,
    /// Most bytes of request headers accepted, names and values (431 beyond).
    pub max_header_bytes: usize,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// What to do with request headers whose names contain underscores.
    pub underscores: Underscores,
    /// A request whose connection stays silent this long (reading or writing) is ended.
    pub stream_idle_timeout: Duration,
    /// How request paths are normalized before routing and authorization.
    pub normalization: Normalization,
    /// Proxies in front of the gateway whose `x-forwarded-for` entries are believed.
    pub trusted_hops: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_headers: 100,
            max_header_bytes: 60 * 1024,
            connect_timeout: Duration::from_secs(10),
            underscores: Underscores::Reject,
            stream_idle_timeout: Duration::from_secs(300),
            normalization: Normalization::Base,
            trusted_hops: 0,
        }
    }
}

/// Envoy's `headers_with_underscores_action`: such names are a classic way to
/// smuggle a header past checks that normalise `_` and `-` differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Underscores {
    /// Answer 400.
    Reject,
    /// Remove those headers and go on.
    Drop,
    /// Pass them on.
    Allow,
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

/// The error types of a client that went away (closed, reset its stream): nobody
/// is left to answer.
macro_rules! client_gone {
    () => {
        ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed | ErrorType::H2Error
    };
}

/// Envoy's body for answers of its fault filter.
const FAULT_BODY: &[u8] = b"fault filter abort";

/// Marks an upstream answer the retry policy replaces with another try.
const RETRIABLE_STATUS: ErrorType = ErrorType::Custom("retriable upstream status");

fn header_bytes(req: &RequestHeader) -> usize {
    req.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum()
}

/// The span data of a request, from the session and its metrics record.
fn trace_record<'a>(
    session: &'a Session,
    operation: &'a str,
    cluster: &'a str,
    upstream: &'a str,
    record: &RequestRecord,
) -> crate::trace::Record<'a> {
    let req = session.req_header();
    let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    crate::trace::Record {
        operation,
        method: req.method.as_str(),
        scheme: if connection_tls(session).is_some() {
            "https"
        } else {
            "http"
        },
        authority: authority(req),
        path: path_and_query(req),
        protocol: if req.version == http::Version::HTTP_2 {
            "HTTP/2"
        } else {
            "HTTP/1.1"
        },
        status: record.status,
        request_size: record.request_bytes,
        response_size: record.response_bytes,
        response_flags: "-",
        upstream_cluster: cluster,
        upstream_address: upstream,
        peer_address: "",
        request_id: "",
        user_agent: header("user-agent"),
        downstream_cluster: header("x-envoy-downstream-service-cluster"),
        end: std::time::SystemTime::now(),
    }
}

/// Envoy's `%RESPONSE_CODE_DETAILS%`: whether the upstream answered, else why the
/// gateway did.
fn details(upstream_answered: bool, flags: Flags, status: u16) -> &'static str {
    const REASONS: [(Flags, &str); 11] = [
        (Flags::NO_ROUTE, "route_not_found"),
        (Flags::RBAC_DENIED, "rbac_access_denied_matched_policy"),
        (Flags::EXT_AUTHZ_DENIED, "ext_authz_denied"),
        (Flags::RATE_LIMITED, "local_rate_limited"),
        (Flags::FAULT_INJECTED, "fault_filter_abort"),
        (Flags::NO_HEALTHY_UPSTREAM, "no_healthy_upstream"),
        (
            Flags::UPSTREAM_OVERFLOW,
            "upstream_reset_before_response_started{overflow}",
        ),
        (Flags::UPSTREAM_TIMEOUT, "response_timeout"),
        (
            Flags::UPSTREAM_CONNECTION_FAILURE,
            "upstream_reset_before_response_started{connection_failure}",
        ),
        (
            Flags::UPSTREAM_TERMINATION,
            "upstream_reset_before_response_started{connection_termination}",
        ),
        (Flags::DOWNSTREAM_TERMINATION, "downstream_remote_disconnect"),
    ];
    if upstream_answered {
        return "via_upstream";
    }
    match REASONS.iter().find(|(f, _)| flags.has(*f)) {
        Some((_, reason)) => reason,
        None if status == 401 => "jwt_authn_access_denied",
        None => "direct_response",
    }
}

/// The `grpc-status` of a header or trailer block.
fn grpc_status(headers: &http::HeaderMap) -> Option<u16> {
    headers.get("grpc-status")?.to_str().ok()?.trim().parse().ok()
}

/// Envoy's mapping of an HTTP status to a gRPC status for local replies.
fn grpc_status_of(http: u16) -> u32 {
    match http {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// A gRPC "trailers-only" answer: HTTP 200 whose headers carry the status.
async fn respond_grpc(session: &mut Session, http: u16, message: &[u8]) -> Result<bool> {
    let mut resp = ResponseHeader::build(200, Some(3))?;
    resp.insert_header(header::CONTENT_TYPE, "application/grpc")?;
    resp.insert_header("grpc-status", grpc_status_of(http))?;
    if let Ok(m) = HeaderValue::from_bytes(message) {
        resp.insert_header("grpc-message", m)?;
    }
    session.write_response_header(Box::new(resp), true).await?;
    Ok(true)
}

/// Writes a complete response from the proxy itself; to gRPC clients, as a gRPC
/// status (Envoy's local replies do the same).
async fn respond(
    session: &mut Session,
    status: u16,
    extra: &[(HeaderName, HeaderValue)],
    ops: Option<&HeaderOps>,
    body: Bytes,
) -> Result<bool> {
    if status >= 400 && is_grpc(session.req_header()) {
        return respond_grpc(session, status, &body).await;
    }
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

/// The request's hash for consistent hashing; None when the key is absent (then
/// Envoy, and Strait, pick at random). A missing cookie with a ttl is generated and
/// handed to the client so its next requests stick.
fn hash_key(session: &Session, key: &HashKey, set_cookie: &mut Option<HeaderValue>) -> Option<u64> {
    let req = session.req_header();
    match key {
        HashKey::Header(name) => req.headers.get(name).map(|v| hash_bytes(v.as_bytes())),
        HashKey::SourceIp => Some(match peer_ip(session)? {
            IpAddr::V4(v4) => hash_bytes(&v4.octets()),
            IpAddr::V6(v6) => hash_bytes(&v6.octets()),
        }),
        HashKey::QueryParameter(name) => {
            let query = req.uri.query()?;
            query.split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k == name).then(|| hash_bytes(v.as_bytes()))
            })
        }
        HashKey::Cookie { name, path, ttl } => {
            let found = req
                .headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|c| {
                    let (k, v) = c.trim().split_once('=')?;
                    (k == name).then(|| v.trim_matches('"').to_string())
                });
            if let Some(v) = found {
                return Some(hash_bytes(v.as_bytes()));
            }
            let ttl = (*ttl)?;
            let value = format!("{:016x}", fastrand::u64(..));
            let mut cookie = format!("{name}=\"{value}\"; Path={}; HttpOnly", path.as_deref().unwrap_or("/"));
            if !ttl.is_zero() {
                cookie.push_str(&format!("; Max-Age={}", ttl.as_secs()));
            }
            *set_cookie = HeaderValue::from_str(&cookie).ok();
            Some(hash_bytes(value.as_bytes()))
        }
    }
}

// Parsed once: looking a header up by string parses the name on every call.
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

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

impl Gateway {
    /// Normalizes the request path in place (mesh `pathNormalization`); false when
    /// the path cannot be normalized (the request then gets 400).
    fn normalize_path(&self, session: &mut Session) -> bool {
        let pq = path_and_query(session.req_header());
        let (path, query) = pq.split_once('?').map_or((pq, None), |(p, q)| (p, Some(q)));
        let normalized = match strait_config::path::normalize(path, self.limits.normalization) {
            Ok(None) => return true,
            Ok(Some(normalized)) => normalized,
            Err(_) => return false,
        };
        let full = match query {
            Some(q) => format!("{normalized}?{q}"),
            None => normalized,
        };
        match full.parse::<http::Uri>() {
            Ok(uri) => {
                session.req_header_mut().set_uri(uri);
                true
            }
            Err(_) => false,
        }
    }

    /// AuthorizationPolicy in Istio's order: a matching CUSTOM policy's external
    /// authorizer, then DENY and ALLOW. True when the request was answered.
    async fn authorize(&self, session: &mut Session, ctx: &mut RequestCtx, runtime: &Runtime) -> Result<bool> {
        let (custom, denied) = {
            let req = session.req_header();
            let host = strip_port(authority(req)).to_ascii_lowercase();
            let path = path_and_query(req).split('?').next().unwrap_or("/");
            let source_ip = peer_ip(session);
            let port = local_port(session, self.port);
            let request = strait_config::authz::Request {
                host: &host,
                port,
                method: req.method.as_str(),
                path,
                headers: &req.headers,
                source_ip,
                remote_ip: remote_ip(session, self.limits.trusted_hops),
                sni: connection_sni(session),
                peer: connection_peer(session).map(|p| p.principal.as_str()),
                auth: ctx.auth.as_deref(),
            };
            let authz = &runtime.snapshot.authz;
            let decision = authz.decide(&request, |policy| {
                log::info!("AUDIT {policy}: {} {host}{path} from {source_ip:?}", request.method);
            });
            let denied = match decision {
                strait_config::authz::Decision::Deny(policy) => {
                    log::debug!("denied by {policy}: {} {host}{path}", request.method);
                    true
                }
                strait_config::authz::Decision::Allow => false,
            };
            (authz.custom_provider(&request), denied)
        };
        if let Some(ext) = custom.and_then(|i| runtime.snapshot.ext_authz.get(i)) {
            let target = upstream::side_call_target(&self.shared.dns, runtime, ext.cluster).await;
            match ext_authz::check(self.shared.http(), target, &ext.provider, session.req_header()).await {
                ext_authz::Verdict::Deny { status, headers, body } => {
                    ctx.flags.add(Flags::EXT_AUTHZ_DENIED);
                    return respond(session, status, &headers, None, body).await;
                }
                ext_authz::Verdict::Allow { upstream, downstream } => {
                    for (name, value) in upstream {
                        session.req_header_mut().insert_header(name, value)?;
                    }
                    ctx.response_headers.extend(downstream);
                }
            }
        }
        if denied {
            ctx.flags.add(Flags::RBAC_DENIED);
            return respond(session, 403, &[], None, Bytes::from_static(b"RBAC: access denied")).await;
        }
        Ok(false)
    }

    /// Sends the request's span.
    fn finish_span(
        &self,
        tracer: &Tracer,
        span: RequestSpan,
        session: &Session,
        ctx: &RequestCtx,
        record: &RequestRecord,
    ) {
        if !span.is_sampled() {
            return tracer.finish(span, &trace_record(session, "", "", "", record));
        }
        let req = session.req_header();
        let place = ctx.place();
        let cluster = place.cluster(&ctx.runtime);
        let operation = cluster.map_or_else(String::new, |c| crate::trace::operation_name(&c.host, c.port));
        let upstream = ctx.upstream_endpoint().map(|a| a.to_string()).unwrap_or_default();
        let mut r = trace_record(
            session,
            &operation,
            cluster.map_or("", |c| c.name.as_str()),
            &upstream,
            record,
        );
        let flags = record.flags.text();
        r.response_flags = &flags;
        let made_up = ctx.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("");
        r.request_id = req
            .headers
            .get(&X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(made_up);
        tracer.finish(span, &r);
    }

    /// Writes the request's access log line.
    fn access_log(&self, log: &AccessLog, session: &Session, ctx: &RequestCtx, record: &RequestRecord) {
        let req = session.req_header();
        let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
        let place = ctx.place();
        let cluster = place.cluster(&ctx.runtime);
        let upstream_host = ctx.upstream_endpoint();
        let protocol = match req.version {
            http::Version::HTTP_2 => "HTTP/2",
            http::Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        };
        let started = std::time::SystemTime::now() - record.duration;
        // A request that never went upstream still gets an id, as Envoy gives every request one.
        let made_up = ctx.request_id.clone().unwrap_or_else(request_id);
        log.log(&access_log::Entry {
            start_time: crate::rfc3339::millis(started),
            method: req.method.as_str(),
            path: path_and_query(req),
            protocol,
            response_code: record.status,
            response_flags: record.flags.text(),
            response_code_details: details(ctx.upstream_answered, record.flags, record.status),
            bytes_received: record.request_bytes,
            bytes_sent: record.response_bytes,
            duration: record.duration.as_millis() as u64,
            x_forwarded_for: header("x-forwarded-for"),
            user_agent: header("user-agent"),
            request_id: header("x-request-id").or_else(|| made_up.to_str().ok()),
            authority: Some(authority(req)).filter(|a| !a.is_empty()),
            upstream_host,
            upstream_cluster: cluster.map(|c| c.name.as_str()),
            downstream_local_address: session.server_addr().and_then(|a| a.as_inet()).copied(),
            downstream_remote_address: session.client_addr().and_then(|a| a.as_inet()).copied(),
            requested_server_name: connection_sni(session),
            route_name: place.route(&ctx.runtime).and_then(|r| r.name.as_deref()),
        });
    }

    /// A copy of the upstream request for the route's mirrors that won their roll.
    async fn mirror_copy(&self, ctx: &RequestCtx, upstream: &RequestHeader) -> Option<PendingCopy> {
        let runtime = ctx.runtime.clone();
        let Action::Forward(forward) = &ctx.place().route(&runtime)?.action else {
            return None;
        };
        let mut targets = Vec::new();
        for m in forward.mirrors.iter().filter(|m| roll(m.percent)) {
            targets.extend(upstream::side_call_target(&self.shared.dns, &runtime, m.cluster).await);
        }
        if targets.is_empty() {
            return None;
        }
        Some(PendingCopy::new(
            targets,
            upstream.method.clone(),
            path_and_query(upstream),
            &upstream.headers,
            authority(upstream),
        ))
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(&self.shared, self.port)
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        session.set_read_timeout(Some(self.limits.stream_idle_timeout));
        session.set_write_timeout(Some(self.limits.stream_idle_timeout));
        if let Some(tracer) = self.shared.tracer.get() {
            ctx.span = Some(Box::new(
                tracer.start(&session.req_header().headers, std::time::SystemTime::now()),
            ));
        }
        // ACME's HTTP-01 validation comes before routes, policies and httpsRedirect.
        let acme_path = session.req_header().uri.path().strip_prefix(acme::HTTP01_PREFIX);
        if let Some(token) = acme_path.filter(|_| !ctx.runtime.snapshot.acme.is_empty()) {
            if let Some(answer) = self.shared.challenges.http_response(token) {
                log::info!("answered the HTTP-01 challenge {token}");
                let octets = [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                )];
                return respond(session, 200, &octets, None, Bytes::from(answer)).await;
            }
        }
        if self.limits.underscores != Underscores::Allow
            && session.req_header().headers.keys().any(|k| k.as_str().contains('_'))
        {
            if self.limits.underscores == Underscores::Reject {
                session.set_keepalive(None);
                return respond(
                    session,
                    400,
                    &[],
                    None,
                    Bytes::from_static(b"header name with underscore"),
                )
                .await;
            }
            let names: Vec<HeaderName> = session
                .req_header()
                .headers
                .keys()
                .filter(|k| k.as_str().contains('_'))
                .cloned()
                .collect();
            for name in names {
                session.req_header_mut().remove_header(&name);
            }
        }
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
            ctx.flags.add(Flags::NO_ROUTE);
            return respond(session, 404, &[], None, Bytes::new()).await;
        };
        if !self.normalize_path(session) {
            return respond(session, 400, &[], None, Bytes::from_static(b"invalid path")).await;
        }
        let scheme = scheme(self.tls);
        // Istio lets CORS preflights through unauthenticated: browsers send them without credentials.
        if !runtime.snapshot.jwt.is_empty() && !cors::is_preflight(session.req_header()) {
            match authn::authenticate(&runtime, session.req_header_mut()).await {
                Ok(auth) => ctx.auth = auth,
                Err(failure) => {
                    log::debug!("JWT refused: {failure}");
                    let challenge = authn::challenge(session.req_header(), scheme);
                    return respond(
                        session,
                        401,
                        &[(header::WWW_AUTHENTICATE, challenge)],
                        None,
                        Bytes::from(failure.to_string()),
                    )
                    .await;
                }
            }
        }
        if !runtime.snapshot.authz.is_empty() && self.authorize(session, ctx, &runtime).await? {
            return Ok(true);
        }
        let view = request_view(session.req_header(), scheme, ctx.auth.as_deref());
        let routed = listener.route(&view);
        let m = match routed {
            Routed::Matched(m) => m,
            Routed::NoHost | Routed::NoRoute(_) => {
                ctx.flags.add(Flags::NO_ROUTE);
                return respond(session, 404, &[], None, Bytes::new()).await;
            }
        };
        if self.tls {
            if let Some(vhost_server) = m.vhost.tls_server {
                let sni = connection_sni(session).and_then(|sni| listener.sni.lookup(sni));
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
        let policy = &m.route.policy;
        if let Some(limit) = &policy.rate_limit {
            let req = session.req_header();
            let key = match &limit.key {
                RateKey::ClientIp => remote_ip(session, self.limits.trusted_hops)
                    .map(|ip| ip.to_string())
                    .unwrap_or_default(),
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
            let verdict = self.shared.limiter.take(limit, &key, std::time::Instant::now());
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
                return respond(session, 429, &headers, None, Bytes::from_static(b"local_rate_limited")).await;
            }
            ctx.rate = Some((verdict.limit, verdict.remaining));
        }
        if let Some(c) = &policy.cors {
            let r = session.req_header();
            match cors::decide(c, &r.method, &r.headers) {
                cors::Decision::NotCors => {}
                cors::Decision::AnswerPreflight(headers) => {
                    return respond(session, 200, &headers, None, Bytes::new()).await;
                }
                cors::Decision::RefusePreflight => return respond(session, 200, &[], None, Bytes::new()).await,
                cors::Decision::Forward(headers) => ctx.response_headers.extend(headers),
            }
        }
        if let Some(fault) = &policy.fault {
            if let Some(d) = fault.delay.as_ref().filter(|d| roll(d.percent)) {
                ctx.flags.add(Flags::DELAY_INJECTED);
                tokio::time::sleep(d.duration).await;
            }
            if let Some(a) = fault.abort.as_ref().filter(|a| roll(a.percent)) {
                ctx.flags.add(Flags::FAULT_INJECTED);
                return match a.grpc_status {
                    Some(code) => {
                        let grpc = [
                            (header::CONTENT_TYPE, HeaderValue::from_static("application/grpc")),
                            (HeaderName::from_static("grpc-status"), HeaderValue::from(code)),
                            (
                                HeaderName::from_static("grpc-message"),
                                HeaderValue::from_static("fault filter abort"),
                            ),
                        ];
                        respond(session, a.status, &grpc, None, Bytes::new()).await
                    }
                    None => respond(session, a.status, &[], None, Bytes::from_static(FAULT_BODY)).await,
                };
            }
        }
        let view = request_view(session.req_header(), scheme, None);
        if !self.tls && m.vhost.https_redirect {
            let to = format!("https://{}{}", strip_port(view.authority), view.path);
            let loc = HeaderValue::from_str(&to).map_err(|_| Error::new(ErrorType::InvalidHTTPHeader))?;
            return respond(session, 301, &[(header::LOCATION, loc)], None, Bytes::new()).await;
        }
        match &m.route.action {
            Action::Redirect(r) => {
                let to = location(r, scheme, view.authority, self.port, view.path);
                let loc = HeaderValue::from_str(&to).map_err(|_| Error::new(ErrorType::InvalidHTTPHeader))?;
                let mut headers = rate_headers(ctx.rate);
                headers.push((header::LOCATION, loc));
                respond(session, r.code, &headers, Some(&m.route.response_headers), Bytes::new()).await
            }
            Action::DirectResponse(d) => {
                respond(
                    session,
                    d.status,
                    &rate_headers(ctx.rate),
                    Some(&m.route.response_headers),
                    Bytes::copy_from_slice(&d.body),
                )
                .await
            }
            Action::Forward(f) => {
                let picked = f.pick_index().and_then(|i| Some((i, f.destinations.get(i)?)));
                let cluster = picked.and_then(|(_, d)| runtime.snapshot.clusters.get(d.cluster));
                ctx.destination = picked.map(|(i, _)| i);
                if cluster.is_some_and(|c| c.blackhole) {
                    ctx.flags.add(Flags::NO_ROUTE);
                    return respond(session, 502, &[], None, Bytes::new()).await;
                }
                if cluster.is_none_or(|c| c.endpoints.is_empty()) {
                    ctx.flags.add(Flags::NO_HEALTHY_UPSTREAM);
                    return respond(session, 503, &[], None, Bytes::from_static(b"no healthy upstream")).await;
                }
                Ok(false)
            }
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        let runtime = ctx.runtime.clone();
        let place = ctx.place();
        let no_endpoint = || Error::explain(ErrorType::ConnectNoRoute, "no endpoint");
        let (Some(route), Some(cluster), Some(state)) = (
            place.route(&runtime),
            place.cluster(&runtime),
            place.cluster_state(&runtime),
        ) else {
            return Err(no_endpoint());
        };
        if ctx.admission.is_none() {
            match state.admit(&cluster.policy).await {
                Ok(a) => ctx.admission = Some(a),
                Err(_) => {
                    ctx.overflow = true;
                    return Err(Error::explain(ErrorType::ConnectRefused, "cluster limits reached"));
                }
            }
        }
        if ctx.attempts.tries == 0 {
            if let strait_config::snapshot::LoadBalancer::Hash(h) = &cluster.policy.lb {
                ctx.hash = hash_key(session, &h.key, &mut ctx.set_cookie);
            }
        }
        let attempts = &ctx.attempts;
        let dns = &self.shared.dns;
        let (address, index) = match upstream::endpoint(dns, cluster, state, ctx.hash, |i| attempts.tried(i)).await {
            Ok((address, index)) => (Ok(address), index),
            Err(PickError::NoEndpoint) => {
                ctx.flags.add(Flags::NO_HEALTHY_UPSTREAM);
                return Err(no_endpoint());
            }
            Err(PickError::Unresolved { index, reason }) => (Err(reason), index),
        };
        if ctx.attempts.tries > 0 {
            state.retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let Some(endpoint_state) = state.endpoints.get(index) else {
            return Err(no_endpoint());
        };
        // Held even when the name did not resolve: the try is this endpoint's, in the logs.
        ctx.endpoint = Some((index, ActiveGuard::new(endpoint_state)));
        let address = address.map_err(|reason| Error::explain(ErrorType::ConnectNoRoute, reason))?;
        let tls = place
            .destination(&runtime)
            .and_then(|d| runtime.upstream_tls.get(d.cluster))
            .and_then(Option::as_ref);
        let mut peer = HttpPeer::new(address, tls.is_some(), tls.map_or_else(String::new, |t| t.sni.clone()));
        if let Some(t) = tls {
            t.apply(&mut peer);
        }
        ctx.attempts.begin_try(&route.policy, index);
        let try_timeout = ctx.attempts.try_timeout(&route.policy.retry);
        let connect_timeout = cluster.policy.connect_timeout.unwrap_or(self.limits.connect_timeout);
        peer.options.connection_timeout = Some(try_timeout.map_or(connect_timeout, |t| t.min(connect_timeout)));
        peer.options.read_timeout = try_timeout;
        peer.options.idle_timeout = cluster.policy.idle_timeout;
        peer.group_key = cluster.pool_key();
        if cluster.policy.h2_upstream {
            // Prior knowledge over plain TCP (h2c), ALPN h2 over TLS; streams multiplexed.
            peer.options.set_http_version(2, 2);
            peer.options.max_h2_streams = 100;
        }
        Ok(Box::new(peer))
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let runtime = ctx.runtime.clone();
        let place = ctx.place();
        ctx.close_upstream = match (place.cluster(&runtime), place.cluster_state(&runtime)) {
            (Some(c), Some(s)) if !c.policy.h2_upstream => s.last_on_connection(&c.policy, fd, reused),
            _ => false,
        };
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.record(Outcome::LocalFailure);
        if let Some(s) = ctx.place().cluster_state(&ctx.runtime) {
            s.connect_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let runtime = ctx.runtime.clone();
        let again = ctx
            .place()
            .route(&runtime)
            .is_some_and(|r| ctx.attempts.retry(&r.policy.retry, Failure::Connect));
        e.set_retry(again);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        // A body too large to keep for a retry, or an answer already on its way
        // downstream, cannot be tried again.
        if session.as_ref().retry_buffer_truncated() || session.response_written().is_some() {
            e.set_retry(false);
            return e;
        }
        let failure = match e.etype() {
            t if *t == RETRIABLE_STATUS => Failure::Status,
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => Failure::Timeout,
            _ => Failure::Reset,
        };
        // A pooled connection the upstream closed while idle is not the upstream failing
        // the request: Pingora's own rule, retry once on a fresh connection.
        let stale = failure == Failure::Reset && client_reused && matches!(e.retry, pingora::RetryType::ReusedOnly);
        if failure != Failure::Status && !stale {
            ctx.record(Outcome::LocalFailure);
        }
        let runtime = ctx.runtime.clone();
        let route = ctx.place().route(&runtime);
        // `retry` also marks the request as timed out once the route's deadline passed.
        let again = stale || route.is_some_and(|r| ctx.attempts.retry(&r.policy.retry, failure));
        e.set_retry(again);
        e
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        ctx.upstream_answered = true;
        ctx.record(Outcome::Status(status));
        let Some(route) = ctx.route() else { return Ok(()) };
        let grpc_status = upstream_response
            .headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        if ctx.attempts.retry_status(&route.policy.retry, status, grpc_status) {
            return Err(Error::explain(RETRIABLE_STATUS, format!("upstream answered {status}")));
        }
        Ok(())
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
        if let Some(ip) = peer_ip(session) {
            let previous = upstream.headers.get(&X_FORWARDED_FOR).map(HeaderValue::as_bytes);
            if let Some(xff) = forwarded_for(previous, ip) {
                upstream.insert_header("x-forwarded-for", xff)?;
            }
        }
        upstream.insert_header("x-forwarded-proto", scheme(self.tls))?;
        // Envoy's SANITIZE_SET: only the gateway speaks of the client's certificate.
        match connection_peer(session).and_then(|p| p.xfcc.clone()) {
            Some(xfcc) => {
                upstream.insert_header(X_FORWARDED_CLIENT_CERT, xfcc)?;
            }
            None if upstream.headers.contains_key(&X_FORWARDED_CLIENT_CERT) => {
                upstream.remove_header(&X_FORWARDED_CLIENT_CERT);
            }
            None => {}
        }
        if upstream.headers.get(&X_REQUEST_ID).is_none() {
            let id = request_id();
            if self.shared.access_log.get().is_some() || ctx.span.is_some() {
                ctx.request_id = Some(id.clone());
            }
            upstream.insert_header("x-request-id", id)?;
        }
        if ctx.close_upstream {
            upstream.insert_header(header::CONNECTION, "close")?;
        }
        if let Some(span) = &ctx.span {
            span.inject(|name, value| {
                let _ = upstream.insert_header(name, value);
            });
        }
        if !ctx.mirror_decided {
            ctx.mirror_decided = true;
            if let Some(copy) = self.mirror_copy(ctx, upstream).await {
                if session.is_body_empty() {
                    self.shared.mirrors.send(copy);
                } else {
                    ctx.mirror = Some(Box::new(copy));
                }
            }
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let (Some(copy), Some(chunk)) = (ctx.mirror.as_mut(), body.as_ref()) {
            if !copy.push(chunk) {
                log::debug!("request body over {} bytes: not mirrored", crate::mirror::MAX_BODY);
                ctx.mirror = None;
            }
        }
        if end_of_stream {
            if let Some(copy) = ctx.mirror.take() {
                self.shared.mirrors.send(*copy);
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        let (code, body): (u16, &'static [u8]) = match (e.etype(), e.esource()) {
            _ if ctx.attempts.timed_out => (504, b"upstream request timeout"),
            _ if ctx.overflow => (
                503,
                b"upstream connect error or disconnect/reset before headers. reset reason: overflow",
            ),
            (ErrorType::HTTPStatus(code), _) => (*code, b""),
            // Envoy's answers, which Istio users script against: 503 when the upstream
            // could not be reached or reset before its headers, 504 on timeouts.
            (ErrorType::ReadTimedout | ErrorType::WriteTimedout, ErrorSource::Upstream) => {
                (504, b"upstream request timeout")
            }
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
            (client_gone!(), ErrorSource::Downstream) => (0, b""),
            (_, ErrorSource::Downstream) => (400, b""),
            _ => (500, b""),
        };
        ctx.flags.add(match (e.etype(), e.esource()) {
            _ if ctx.attempts.timed_out => Flags::UPSTREAM_TIMEOUT,
            _ if ctx.overflow => Flags::UPSTREAM_OVERFLOW,
            (ErrorType::ConnectNoRoute, _) if ctx.flags.has(Flags::NO_HEALTHY_UPSTREAM) => Flags::NONE,
            (ErrorType::ReadTimedout | ErrorType::WriteTimedout, ErrorSource::Upstream) => Flags::UPSTREAM_TIMEOUT,
            (
                ErrorType::ConnectTimedout
                | ErrorType::ConnectRefused
                | ErrorType::ConnectNoRoute
                | ErrorType::ConnectError,
                _,
            ) => Flags::UPSTREAM_CONNECTION_FAILURE,
            (_, ErrorSource::Upstream) => Flags::UPSTREAM_TERMINATION,
            (_, ErrorSource::Downstream) => Flags::DOWNSTREAM_TERMINATION,
            _ => Flags::NONE,
        });
        if code > 0 {
            let sent = if is_grpc(session.req_header()) {
                respond_grpc(session, code, body).await.map(|_| ())
            } else {
                session.respond_error_with_body(code, Bytes::from_static(body)).await
            };
            if let Err(err) = sent {
                log::debug!("could not send {code} downstream: {err}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, error: &Error) -> bool {
        // A client that went away is the access log's `DC`, not an error of the
        // proxy; logging each at error level would let a client flood the log.
        let gone = error.esource() == &ErrorSource::Downstream && matches!(error.etype(), client_gone!());
        if gone {
            log::debug!("client went away: {error}");
        }
        gone
    }

    fn upstream_response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(status) = grpc_status(trailers) {
            ctx.grpc_status = Some(status);
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if e.is_some_and(|e| e.esource() == &ErrorSource::Downstream) {
            ctx.flags.add(Flags::DOWNSTREAM_TERMINATION);
            if session.req_header().version == http::Version::HTTP_2 {
                crate::h2_front::note_early_reset();
            }
        }
        let written = session.response_written();
        let status = written.map_or(0, |r| r.status.as_u16());
        let grpc = is_grpc(session.req_header());
        if ctx.attempts.tries > 1 && (status >= 500 || e.is_some()) {
            ctx.flags.add(Flags::UPSTREAM_RETRY_LIMIT);
        }
        let record = RequestRecord {
            grpc,
            status,
            grpc_status: if grpc {
                ctx.grpc_status
                    .or_else(|| written.and_then(|r| grpc_status(&r.headers)))
            } else {
                None
            },
            flags: ctx.flags,
            duration: ctx.start.elapsed(),
            request_bytes: session.body_bytes_read() as u64,
            response_bytes: session.body_bytes_sent() as u64,
        };
        let cluster = ctx.destination().map(|d| d.cluster);
        if let Some(dest) = ctx.runtime.destination(cluster) {
            let endpoint = ctx.endpoint.as_ref().map(|(i, _)| *i);
            self.shared.metrics.record(dest, endpoint, &record);
        }
        if let Some(log) = self.shared.access_log.get() {
            self.access_log(log, session, ctx, &record);
        }
        if let (Some(tracer), Some(span)) = (self.shared.tracer.get(), ctx.span.take()) {
            self.finish_span(tracer, *span, session, ctx, &record);
        }
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(status) = grpc_status(&resp.headers) {
            ctx.grpc_status = Some(status);
        }
        if let Some(route) = ctx.route() {
            apply_response_ops(resp, &route.response_headers)?;
        }
        if let Some(d) = ctx.destination() {
            apply_response_ops(resp, &d.response_headers)?;
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
