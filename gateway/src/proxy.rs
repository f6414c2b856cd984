//! The proxy: one `ProxyHttp` implementation per listener port. Requests are
//! matched against the snapshot loaded once in `new_ctx`; everything the phases
//! need was compiled before that snapshot was swapped in.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::ErrorSource;
use strait_config::snapshot::{hash_bytes, roll, Action, HashKey};

use crate::access_log::{self, AccessLog};
use crate::actions;
use crate::authz;
use crate::context::RequestCtx;
use crate::downstream::{self, request_id, Limits, X_REQUEST_ID};
use crate::flags::Flags;
use crate::metrics::RequestRecord;
use crate::mirror::PendingCopy;
use crate::reply::{self, details, Halt, Reply};
use crate::request::{
    authority, connection_peer, connection_sni, connection_tls, is_grpc, path_and_query, peer_ip, scheme,
};
use crate::retry::Failure;
use crate::state::{Runtime, Shared};
use crate::trace::{RequestSpan, Tracer};
use crate::upstream::{self, PickError};
use crate::upstreams::{ActiveGuard, Outcome};

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

/// Marks an upstream answer the retry policy replaces with another try.
const RETRIABLE_STATUS: ErrorType = ErrorType::Custom("retriable upstream status");

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

/// The `grpc-status` of a header or trailer block.
fn grpc_status(headers: &http::HeaderMap) -> Option<u16> {
    headers.get("grpc-status")?.to_str().ok()?.trim().parse().ok()
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

impl Gateway {
    /// The steps a request goes through before it may go upstream, in order; each
    /// may answer it instead.
    async fn admit<'r>(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        runtime: &'r Runtime,
    ) -> Result<(), Halt<'r>> {
        actions::acme_challenge(&self.shared, runtime, session.req_header())?;
        downstream::check_headers(&self.limits, session.req_header_mut())?;
        let Some(listener) = runtime.snapshot.listeners.get(ctx.listener) else {
            ctx.flags.add(Flags::NO_ROUTE);
            return Err(Reply::new(404, b"").into());
        };
        downstream::normalize_path(self.limits.normalization, session.req_header_mut())?;
        authz::authenticate(runtime, session.req_header_mut(), scheme(self.tls), ctx).await?;
        let hops = self.limits.trusted_hops;
        authz::authorize(&self.shared, runtime, session, self.port, hops, ctx).await?;
        let m = actions::route(listener, session, self.tls, ctx)?;
        let policy = &m.route.policy;
        if let Some(limit) = &policy.rate_limit {
            actions::rate_limit(&self.shared.limiter, limit, session, hops, ctx)?;
        }
        if let Some(cors) = &policy.cors {
            actions::cors(cors, session.req_header(), ctx)?;
        }
        if let Some(fault) = &policy.fault {
            actions::fault(fault, ctx).await?;
        }
        actions::https_redirect(&m, session.req_header(), self.tls)?;
        actions::act(&m, runtime, session.req_header(), self.tls, self.port, ctx)
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
        // A handle of its own: the route borrows from it while the context changes.
        let runtime = ctx.runtime.clone();
        match self.admit(session, ctx, &runtime).await {
            Ok(()) => Ok(false),
            Err(Halt::Reply(reply)) => reply::send(session, reply).await,
            Err(Halt::Error(e)) => Err(e),
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
        actions::rewrite_request(ctx, upstream)?;
        downstream::forwarding_headers(upstream, peer_ip(session), self.tls, connection_peer(session))?;
        let keep_id = self.shared.access_log.get().is_some() || ctx.span.is_some();
        if let Some(id) = downstream::ensure_request_id(upstream, keep_id)? {
            ctx.request_id = Some(id);
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
        reply::fail(session, e, ctx).await
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, error: &Error) -> bool {
        reply::client_went_away(error)
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
        actions::response_headers(ctx, resp)
    }
}
