//! The request path: one `ProxyHttp` implementation per listener port, each phase
//! a short list of steps. A step is a function of the module of its concept, taking
//! the request header, context and runtime it needs, so that another request path
//! can call the same steps:
//! - `context`: the request's state, the snapshot it runs under, where it was routed;
//! - `request`: facts about the request and its connection (authority, SNI, peer);
//! - `downstream`: limits on what clients send, and the forwarding headers;
//! - `authz`: JWT authentication, then AuthorizationPolicy and external authorization;
//! - `actions`: what the matched route does, and its header operations;
//! - `upstream`: the peer of each try, and how each try ended;
//! - `mirror`: copies of the request for the route's mirrors;
//! - `reply`: the gateway's own answers, and errors turned into answers;
//! - `telemetry`: span, metrics and access log.
//!
//! Requests are matched against the snapshot loaded once in `new_ctx`; everything
//! the phases need was compiled before that snapshot was swapped in.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::FailToProxy;

use crate::actions;
use crate::authz;
use crate::context::RequestCtx;
use crate::downstream::{self, Limits};
use crate::engine::Engine;
use crate::flags::Flags;
use crate::mirror;
use crate::reply::{self, Halt, Reply};
use crate::request::{connection_peer, local_port, original_destination, outbound_listener, peer_ip, scheme};
use crate::runtime::Runtime;
use crate::telemetry;
use crate::upstream;

/// The proxy for one listener.
#[derive(Clone)]
pub struct Gateway {
    /// Engine engine state.
    pub shared: Arc<Engine>,
    /// The Gateway port this listener serves (before `--port-map`).
    pub port: u16,
    /// Whether the listener terminates TLS.
    pub tls: bool,
    /// Limits.
    pub limits: Limits,
    /// A sidecar's capture listener: its connections tell where their clients were
    /// going (the original destination), which decides the port a request is for;
    /// with `port` 0 (outbound) also the listener it is routed by.
    pub captured: bool,
}

impl Gateway {
    /// Whether this is a sidecar's inbound listener (captured, with a port of its own).
    fn inbound(&self) -> bool {
        self.captured && self.port != 0
    }

    /// The port the client connected to: the original destination's for captured
    /// connections, else the local one (the listener's Gateway port when unknown).
    fn destination_port(&self, session: &Session) -> u16 {
        if self.captured {
            if let Some(original) = original_destination(session) {
                return original.port();
            }
        }
        local_port(session, self.port)
    }

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
        if self.captured && self.port == 0 {
            ctx.listener = outbound_listener(runtime, original_destination(session));
        }
        let Some(listener) = runtime.snapshot.listeners.get(ctx.listener) else {
            ctx.flags.add(Flags::NO_ROUTE);
            return Err(Reply::new(404, b"").into());
        };
        downstream::normalize_path(self.limits.normalization, session.req_header_mut())?;
        let policy = listener.policy;
        authz::authenticate(runtime, policy, session.req_header_mut(), scheme(self.tls), ctx).await?;
        let hops = self.limits.trusted_hops;
        let port = self.destination_port(session);
        authz::authorize(&self.shared, runtime, policy, session, port, hops, ctx).await?;
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

    /// `request_filter`: the steps before a request may go upstream; true when
    /// the gateway answered it itself.
    pub(crate) async fn request_steps(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        crate::conn::head_received();
        session.set_read_timeout(Some(self.limits.stream_idle_timeout));
        session.set_write_timeout(Some(self.limits.stream_idle_timeout));
        telemetry::start_span(&self.shared, session.req_header(), ctx);
        // A handle of its own: the route borrows from it while the context changes.
        let runtime = ctx.runtime.clone();
        match self.admit(session, ctx, &runtime).await {
            Ok(()) => Ok(false),
            // Boxed: writing a local reply is a large future, and most requests never
            // reply locally; inline, it would be copied with request_filter's every time.
            Err(Halt::Reply(reply)) => Box::pin(reply::send(session, reply)).await,
            Err(Halt::Error(e)) => Err(e),
        }
    }

    /// `upstream_request_filter`: rewrites, forwarding headers, the request id,
    /// trace context, and the mirror's start.
    pub(crate) async fn upstream_request_steps(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        actions::rewrite_request(ctx, upstream)?;
        // A sidecar's inbound listener leaves `x-forwarded-for` as it came, as Istio's
        // (`use_remote_address: false`): the client's sidecar already wrote its address.
        let peer = if self.inbound() { None } else { peer_ip(session) };
        downstream::forwarding_headers(upstream, peer, self.tls, connection_peer(session))?;
        let keep_id = self.shared.access_log.get().is_some() || ctx.span.is_some();
        if let Some(id) = downstream::ensure_request_id(upstream, keep_id)? {
            ctx.request_id = Some(id);
        }
        upstream::last_on_connection(ctx, upstream)?;
        telemetry::inject_span(ctx, upstream);
        mirror::start(
            &self.shared.dns,
            &self.shared.side_calls,
            &self.shared.identity,
            session,
            upstream,
            ctx,
        )
        .await;
        Ok(())
    }

    /// `connected_to_upstream`: the connection's request count, the pinned
    /// certificate check.
    pub(crate) fn connected_steps(
        ctx: &mut RequestCtx,
        fd: std::os::unix::io::RawFd,
        reused: bool,
        digest: Option<&pingora::protocols::Digest>,
    ) -> Result<()> {
        upstream::connected(ctx, fd, reused);
        upstream::check_server(ctx, digest)
    }

    /// `response_filter`: the answer's gRPC status, the response's header operations.
    pub(crate) fn response_steps(resp: &mut ResponseHeader, ctx: &mut RequestCtx) -> Result<()> {
        telemetry::note_grpc_status(&resp.headers, ctx);
        actions::response_headers(ctx, resp)
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(&self.shared, self.port)
    }

    /// No downstream modules: Pingora's default adds its response compression module,
    /// disabled (level 0), which Strait never enables, and which would still be
    /// built and consulted on every request.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        self.request_steps(session, ctx).await
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        upstream::peer(&self.shared, session, self.limits.connect_timeout, ctx).await
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        fd: std::os::unix::io::RawFd,
        digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        Self::connected_steps(ctx, fd, reused, digest)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        upstream::connect_failed(ctx, e)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        upstream::proxy_failed(session, peer, e, ctx, client_reused)
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        upstream::answered(upstream_response, ctx)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.upstream_request_steps(session, upstream, ctx).await
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        mirror::feed(&self.shared.side_calls, body.as_ref(), end_of_stream, ctx);
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
        telemetry::note_grpc_status(trailers, ctx);
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        telemetry::finish(&self.shared, session, e, ctx);
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        Self::response_steps(resp, ctx)
    }
}
