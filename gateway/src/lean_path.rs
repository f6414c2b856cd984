//! The lean HTTP/1 path: requests of HTTP/1 client connections proxied over
//! pingora-core's HTTP/1 sessions directly, through the same steps as the full path
//! (`proxy::Gateway`'s phases: limits, routing, authentication and authorization,
//! header operations, retries, metrics, access log, traces), without what Pingora's
//! `HttpProxy` does around them for features Strait does not use (caching,
//! modules, subrequests, a task per upstream connection released, a 64 KB body
//! buffer per request, both request and response headers copied per phase).
//!
//! Which path serves a request is decided per route when the snapshot is compiled
//! (`route_paths`): a route goes lean when every cluster it forwards to speaks
//! HTTP/1. HTTP/2 upstreams, upgrades, CONNECT and `Expect: 100-continue` take the
//! full path: the connection front hands the request to `HttpProxy`, which reads its
//! head again from the bytes the connection kept (`ConnState::take_head`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::header;
use http::Version;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::connectors::TransportConnector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora::protocols::http::v1::server::HttpSession as DownstreamSession;
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use pingora::upstreams::peer::Peer;

use crate::conn::ConnState;
use crate::context::RequestCtx;
use crate::hop_by_hop;
use crate::idle_pool::IdlePool;
use crate::proxy::Gateway;
use crate::request::{original_destination, outbound_listener};
use crate::route_paths::ListenerPath;
use crate::runtime::Runtime;
use crate::{reply, telemetry, upstream};

/// Which path HTTP/1 requests take (`--http1-path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Http1Path {
    /// The lean path for the routes it serves, Pingora's proxy for the rest.
    #[default]
    Lean,
    /// Pingora's proxy for every request (to compare, or to rule the lean path out).
    Full,
}

impl Http1Path {
    /// `STRAIT_HTTP1_PATH` (`lean` or `full`), as the binaries read it; the
    /// in-process test harness honours it too, so a whole suite can run on either.
    pub fn from_env() -> Http1Path {
        match std::env::var("STRAIT_HTTP1_PATH").as_deref() {
            Ok("full") => Http1Path::Full,
            _ => Http1Path::Lean,
        }
    }
}

/// What the lean paths of one server's listeners share: one connector (its TLS
/// settings, the system's roots among them, are loaded once per server, not per
/// listener) and one pool of idle connections.
#[derive(Clone)]
pub struct LeanUpstreams {
    /// Connects to upstreams (TCP, TLS with the peer's settings).
    pub connector: Arc<TransportConnector>,
    /// Idle upstream connections.
    pub pool: Arc<IdlePool>,
}

impl LeanUpstreams {
    /// A connector with the server's options, and an empty pool.
    pub fn new(conf: &pingora::server::configuration::ServerConf) -> LeanUpstreams {
        let options = pingora::connectors::ConnectorOptions::from_server_conf(conf);
        LeanUpstreams {
            connector: Arc::new(TransportConnector::new(Some(options))),
            pool: Default::default(),
        }
    }
}

/// What the lean path shares across the requests of a listener.
pub struct LeanPath {
    /// The request path's steps.
    pub gateway: Arc<Gateway>,
    /// The server's connector and pool.
    pub upstreams: LeanUpstreams,
    /// Tries per request at most (Pingora's `max_retries`).
    pub max_retries: usize,
}

/// How the HTTP/1 connection front sets up each request's session.
pub struct Front<'a> {
    /// Pingora's proxy, for the requests the lean path does not serve.
    pub proxy: &'a Arc<HttpProxy<Gateway>>,
    /// The lean path.
    pub lean: &'a LeanPath,
    /// The connection's state (kept head bytes).
    pub conn: &'a ConnState,
    /// Applied to each request's session before its head is read (whether it is
    /// the connection's first), after what the previous request left.
    pub configure: &'a (dyn Fn(&mut ServerSession, bool) + Send + Sync),
}

impl Front<'_> {
    /// Serves the requests of an HTTP/1 connection until it closes.
    pub async fn serve(&self, mut stream: Stream, shutdown: &ShutdownWatch) {
        self.conn.keep_heads();
        let mut shutdown_seen = shutdown.clone();
        let mut settings: Option<HttpPersistentSettings> = None;
        let mut first = true;
        loop {
            let mut session = Session::new_h1(stream);
            if let Some(s) = settings.take() {
                s.apply_to_session(&mut session.downstream_session);
            }
            (self.configure)(&mut session.downstream_session, first);
            first = false;
            self.conn.clear_head();
            let read = tokio::select! {
                biased;
                read = session.downstream_session.read_request() => read,
                _ = shutdown_seen.wait_for(|down| *down) => return,
            };
            match read {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    if e.etype() == &ErrorType::InvalidHTTPHeader {
                        let _ = reply::error_answer(&mut session, 400, bytes::Bytes::new()).await;
                    }
                    session.downstream_session.shutdown().await;
                    return;
                }
            }
            let shared = &self.lean.gateway.shared;
            let next = if self.is_lean(&session) {
                shared.http1_lean.fetch_add(1, Ordering::Relaxed);
                let reuse = serve_request(self.lean, &mut session).await;
                next_request(session, reuse).await
            } else {
                shared.http1_handed_over.fetch_add(1, Ordering::Relaxed);
                self.hand_over(session, shutdown).await
            };
            let Some(next) = next else { return };
            let (next_stream, next_settings) = next.consume();
            stream = next_stream;
            settings = next_settings;
        }
    }

    /// Whether the lean path serves this request: its protocol, then its route.
    fn is_lean(&self, session: &Session) -> bool {
        let req = session.req_header();
        if req.method == http::Method::CONNECT
            || session.is_upgrade_req()
            || req
                .headers
                .get(header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
        {
            return false;
        }
        let gateway = &self.lean.gateway;
        let runtime = gateway.shared.current();
        let listener = if gateway.captured && gateway.port == 0 {
            outbound_listener(&runtime, original_destination(session))
        } else {
            runtime.listener_of_port(gateway.port)
        };
        match runtime.paths.get(listener) {
            // No listener: the lean path answers 404 as the full one would.
            None | Some(ListenerPath::Lean) => true,
            Some(ListenerPath::Full) => false,
            Some(ListenerPath::Mixed(lean)) => mixed_route_is_lean(&runtime, listener, lean, session, gateway.tls),
        }
    }

    /// Gives the request to Pingora's proxy: a new session reads its head again
    /// from the bytes kept while it was read.
    async fn hand_over(&self, session: Session, shutdown: &ShutdownWatch) -> Option<ReusedHttpStream> {
        let head = self.conn.take_head();
        let keepalive = session.downstream_session.get_keepalive();
        let reuses = session.downstream_session.get_keepalive_reuses_remaining();
        let ServerSession::H1(h1) = *session.downstream_session else {
            return None;
        };
        let mut fresh = DownstreamSession::new(h1.into_inner());
        fresh.set_pipelined_prefix(head);
        let mut full = ServerSession::H1(fresh);
        full.set_keepalive(keepalive);
        full.set_keepalive_reuses_remaining(reuses);
        self.proxy.process_new_http(full, shutdown).await
    }
}

/// The lean flag of the route a request of a mixed listener matches (a request
/// that matches none is answered 404 on the lean path).
fn mixed_route_is_lean(runtime: &Runtime, listener: usize, lean: &[Vec<bool>], session: &Session, tls: bool) -> bool {
    let Some(l) = runtime.snapshot.listeners.get(listener) else {
        return true;
    };
    match crate::actions::find_route(l, session, tls) {
        Some((vhost, route)) => lean.get(vhost).and_then(|v| v.get(route)).copied().unwrap_or(true),
        None => true,
    }
}

/// Serves one request on the lean path, and logs it; whether its connection may
/// carry another.
async fn serve_request(lean: &LeanPath, session: &mut Session) -> bool {
    let gateway = &*lean.gateway;
    let mut ctx = gateway.new_ctx();
    let (reuse, error) = match gateway.request_steps(session, &mut ctx).await {
        Ok(true) => (true, None),
        Ok(false) => proxy(lean, session, &mut ctx).await,
        Err(e) => {
            let answered = reply::fail(session, &e, &mut ctx).await;
            (answered.can_reuse_downstream, Some(e))
        }
    };
    telemetry::finish(&gateway.shared, session, error.as_deref(), &mut ctx);
    if let Some(e) = error {
        session.downstream_session.on_proxy_failure(e);
    }
    reuse
}

/// The tries of a request, and the answer to its last error.
async fn proxy(lean: &LeanPath, session: &mut Session, ctx: &mut RequestCtx) -> (bool, Option<Box<Error>>) {
    let mut tries = 0;
    let (mut reuse, error) = loop {
        tries += 1;
        let (reuse, error) = one_try(lean, session, ctx).await;
        match error {
            Some(e) if e.retry() && tries < lean.max_retries => continue,
            error => break (reuse, error),
        }
    };
    if let Some(e) = &error {
        let answered = reply::fail(session, e, ctx).await;
        reuse = reuse && answered.can_reuse_downstream;
        if !lean.gateway.suppress_error_log(session, ctx, e) {
            log::error!("Fail to proxy: {e}, status: {}, tries: {tries}", answered.error_code);
        }
    }
    (reuse, error)
}

/// The connection of a finished request, readied for the next one when it may
/// carry it.
async fn next_request(session: Session, reuse: bool) -> Option<ReusedHttpStream> {
    if !reuse {
        return None;
    }
    let settings = HttpPersistentSettings::for_session(&session.downstream_session);
    let reusable = session.downstream_session.finish().await.ok().flatten()?;
    Some(ReusedHttpStream::from_reusable_stream(reusable, settings))
}

/// One try: a peer, a connection (pooled or new), the exchange. Returns whether
/// the client connection may be reused, and the try's error (marked for retry by
/// the request path's policy).
async fn one_try(lean: &LeanPath, session: &mut Session, ctx: &mut RequestCtx) -> (bool, Option<Box<Error>>) {
    let gateway = &*lean.gateway;
    let peer = match upstream::peer(&gateway.shared, session, gateway.limits.connect_timeout, ctx).await {
        Ok(peer) => peer,
        Err(e) => return (false, Some(e)),
    };
    let key = peer.reuse_hash();
    let (stream, reused) = match lean.upstreams.pool.take(key) {
        Some(stream) => (stream, true),
        None => match lean.upstreams.connector.new_stream(&*peer).await {
            Ok(stream) => (stream, false),
            Err(e) => return (false, Some(gateway.fail_to_connect(session, &peer, ctx, e).into_up())),
        },
    };
    let mut upstream = UpstreamSession::new_with_options(stream, &*peer);
    upstream.read_timeout = peer.options.read_timeout;
    upstream.write_timeout = peer.options.write_timeout;
    let fd = upstream.stream().id();
    if let Err(e) = Gateway::connected_steps(ctx, fd, reused, Some(upstream.digest())) {
        return (false, Some(e));
    }
    match exchange(gateway, session, &mut upstream, ctx).await {
        Ok(()) => {
            upstream.respect_keepalive();
            if let Some(stream) = upstream.reuse().await {
                lean.upstreams.pool.put(key, stream, peer.options.idle_timeout);
            }
            (true, None)
        }
        // A connection the upstream closed while pooled: the request path's retry
        // policy sees the error as Pingora's proxy hands it over (`ReusedOnly`).
        Err(e) => (true, Some(gateway.error_while_proxy(&peer, session, e, ctx, reused))),
    }
}

/// The downstream HTTP/1 session of a lean request (always one: the front made it).
fn downstream(session: &mut Session) -> Result<&mut DownstreamSession> {
    match &mut *session.downstream_session {
        ServerSession::H1(h1) => Ok(h1),
        _ => Err(Error::explain(
            ErrorType::InternalError,
            "lean path without an HTTP/1 session",
        )),
    }
}

/// Sends the request and its body upstream, then relays the answer.
async fn exchange(
    gateway: &Gateway,
    session: &mut Session,
    upstream: &mut UpstreamSession,
    ctx: &mut RequestCtx,
) -> Result<()> {
    let mut req = upstream_head(session.req_header());
    req.set_version(Version::HTTP_11);
    hop_by_hop::strip(&mut req)?;
    gateway.upstream_request_steps(session, &mut req, ctx).await?;
    let has_body = !session.downstream_session.is_body_empty();
    if has_body && !req.headers.contains_key(header::CONTENT_LENGTH) {
        req.insert_header(header::TRANSFER_ENCODING, "chunked")?;
    }
    upstream
        .write_request_header(Box::new(req))
        .await
        .map_err(|e| e.into_up())?;
    if has_body {
        send_body(gateway, session, upstream, ctx).await?;
    }
    upstream.finish_body().await.map_err(|e| e.into_up())?;

    let mut resp = {
        // A client that goes away meanwhile ends the request (`DC`), as on the full path.
        let down = downstream(session)?;
        tokio::select! {
            resp = read_answer(upstream) => client_head(resp?)?,
            gone = down.read_body_or_idle(true) => {
                return Err(gone.err().unwrap_or_else(|| {
                    Error::explain(ErrorType::ConnectionClosed, "client sent data while waiting for the answer")
                }).into_down());
            }
        }
    };
    upstream::answered(&resp, ctx)?;
    let no_body = session.req_header().method == http::Method::HEAD || matches!(resp.status.as_u16(), 204 | 304);
    if !no_body
        && !resp.headers.contains_key(header::TRANSFER_ENCODING)
        && !resp.headers.contains_key(header::CONTENT_LENGTH)
    {
        // A body that ends with the upstream's connection goes to the client
        // chunked, so the client's connection can carry the next request.
        resp.set_version(Version::HTTP_11);
        resp.insert_header(header::TRANSFER_ENCODING, "chunked")?;
    }
    Gateway::response_steps(&mut resp, ctx)?;
    let down = downstream(session)?;
    down.write_response_header(resp).await.map_err(|e| e.into_down())?;
    while let Some(chunk) = upstream.read_body_ref().await.map_err(|e| e.into_up())? {
        down.write_body(chunk).await.map_err(|e| e.into_down())?;
    }
    down.finish_body().await.map_err(|e| e.into_down())?;
    Ok(())
}

/// The request body: what an earlier try kept for a retry, then the rest as it
/// arrives; copies go to the route's mirror.
async fn send_body(
    gateway: &Gateway,
    session: &mut Session,
    upstream: &mut UpstreamSession,
    ctx: &mut RequestCtx,
) -> Result<()> {
    let side_calls = &gateway.shared.side_calls;
    let down = downstream(session)?;
    if ctx.attempts.tries > 1 {
        if let Some(kept) = down.get_retry_buffer() {
            upstream.write_body(&kept).await.map_err(|e| e.into_up())?;
        }
    } else {
        down.enable_retry_buffering();
    }
    loop {
        let chunk = down.read_body_bytes().await.map_err(|e| e.into_down())?;
        if ctx.mirror.is_some() {
            crate::mirror::feed(side_calls, chunk.as_ref(), chunk.is_none(), ctx);
        }
        let Some(chunk) = chunk else { return Ok(()) };
        upstream.write_body(&chunk).await.map_err(|e| e.into_up())?;
    }
}

/// Room for the headers added to a head: `x-forwarded-for`, `x-forwarded-proto` and
/// `x-request-id` upstream; `server`, `date` and `connection` (Pingora's) downstream,
/// and `transfer-encoding` either way.
const ROOM: usize = 4;

/// The upstream request's head: the client's, with room for the headers the gateway
/// adds and no record of the case the client wrote its header names in. Pingora keeps
/// that record in a second header map, which every insertion also updates and grows;
/// without it, header names go upstream in their canonical form (lowercase, or
/// Title-Case for the standard ones), as Envoy sends them lowercase. A target the URI
/// does not round-trip (absolute-form, not UTF-8) keeps the copy as the client sent it.
fn upstream_head(req: &RequestHeader) -> RequestHeader {
    let from_uri = req.raw_path_is_utf8()
        && req
            .uri
            .path_and_query()
            .is_some_and(|p| p.as_str().as_bytes() == req.raw_path());
    if !from_uri {
        return req.clone();
    }
    let mut parts = req.as_owned_parts();
    parts.headers.reserve(ROOM);
    RequestHeader::from(parts)
}

/// The head for the client, made from the upstream's answer as `upstream_head` makes
/// the upstream request's: room for the added headers, no case record. A reason
/// phrase other than the status code's own is kept.
fn client_head(resp: Box<ResponseHeader>) -> Result<Box<ResponseHeader>> {
    let reason = resp
        .get_reason_phrase()
        .filter(|r| Some(*r) != resp.status.canonical_reason())
        .map(str::to_owned);
    let mut parts = http::response::Parts::from(*resp);
    parts.headers.reserve(ROOM);
    let mut head = ResponseHeader::from(parts);
    if reason.is_some() {
        head.set_reason_phrase(reason.as_deref())?;
    }
    Ok(Box::new(head))
}

/// The upstream's final answer; informational ones (100, 103) are not relayed.
async fn read_answer(upstream: &mut UpstreamSession) -> Result<Box<ResponseHeader>> {
    loop {
        let resp = upstream.read_resp_header_parts().await.map_err(|e| e.into_up())?;
        if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
            return Err(
                Error::explain(ErrorType::InvalidHTTPHeader, "101 to a request that asked no upgrade").into_up(),
            );
        }
        if !resp.status.is_informational() {
            return Ok(resp);
        }
    }
}
