//! Where a request goes and how each try of it ends. `peer` is `upstream_peer`:
//! the cluster's admission, the hash key, an endpoint not tried yet
//! (`upstream_client::endpoint`, as every upstream connection chooses one) and its
//! peer (`upstream_client::peer`) with the try's timeouts. The
//! other steps judge a try (connect failure, error while proxying, retriable
//! status) for outlier detection and the retry policy. The clusters' runtime state
//! itself is `upstreams`.

use std::net::IpAddr;
use std::os::unix::io::RawFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::header::{self, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;
use strait_config::snapshot::{hash_bytes, Cluster, ClusterKind, HashKey, LoadBalancer};

use crate::context::RequestCtx;
use crate::engine::Engine;
use crate::flags::Flags;
use crate::request::peer_ip;
use crate::retry::Failure;
use crate::telemetry::GRPC_STATUS;
use crate::upstream_client::{self, PickError};
use crate::upstreams::{ActiveGuard, Outcome};

/// Marks an upstream answer the retry policy replaces with another try.
const RETRIABLE_STATUS: ErrorType = ErrorType::Custom("retriable upstream status");

/// The peer of the request's next try: admission to the cluster (once), the hash
/// key (at the first try), an endpoint not tried yet, and the connection's TLS,
/// timeouts (the per-try timeout cut to the route's deadline), pool and protocol.
pub async fn peer(
    shared: &Engine,
    session: &ServerSession,
    connect_timeout: Duration,
    ctx: &mut RequestCtx,
) -> Result<Box<HttpPeer>> {
    // Borrowed field by field: the context's other fields change meanwhile.
    let runtime = &*ctx.runtime;
    let place = ctx.place();
    let no_endpoint = || Error::explain(ErrorType::ConnectNoRoute, "no endpoint");
    let (Some(route), Some(cluster), Some(state)) = (
        place.route(runtime),
        place.cluster(runtime),
        place.cluster_state(runtime),
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
        if let LoadBalancer::Hash(h) = &cluster.policy.lb {
            ctx.hash = hash_key(session, &h.key, &mut ctx.set_cookie);
        }
    }
    let cluster_index = place.destination(runtime).map_or(usize::MAX, |d| d.cluster);
    if matches!(
        cluster.kind,
        ClusterKind::OriginalDestination | ClusterKind::LocalWorkload
    ) {
        let Some(address) = crate::request::original_destination(session) else {
            ctx.flags.add(Flags::NO_ROUTE);
            return Err(Error::explain(ErrorType::ConnectNoRoute, "no original destination"));
        };
        // One address, no endpoint to choose: every try goes there.
        ctx.attempts.begin_try(&route.policy, 0);
        return Ok(captured_peer(address, cluster, connect_timeout));
    }
    let attempts = &ctx.attempts;
    let pick = upstream_client::endpoint(&shared.dns, runtime, cluster_index, ctx.hash, |i| attempts.tried(i));
    let (address, index) = match pick.await {
        Ok((address, index)) => (Ok(address), index),
        Err(PickError::NoEndpoint) => {
            ctx.flags.add(Flags::NO_HEALTHY_UPSTREAM);
            return Err(no_endpoint());
        }
        Err(PickError::Unresolved { index, reason }) => (Err(reason), index),
    };
    if ctx.attempts.tries > 0 {
        state.retries.fetch_add(1, Ordering::Relaxed);
    }
    let Some(endpoint_state) = state.endpoints.get(index) else {
        return Err(no_endpoint());
    };
    // Held even when the name did not resolve: the try is this endpoint's, in the logs.
    ctx.endpoint = Some((index, ActiveGuard::new(endpoint_state)));
    let address = address.map_err(|reason| Error::explain(ErrorType::ConnectNoRoute, reason.to_string()))?;
    let mut peer = upstream_client::peer(runtime, cluster_index, address, Some(index), &shared.identity, false)
        .ok_or_else(no_endpoint)?;
    ctx.attempts.begin_try(&route.policy, index);
    let try_timeout = ctx.attempts.try_timeout(&route.policy.retry);
    let connect_timeout = cluster.policy.connect_timeout.unwrap_or(connect_timeout);
    peer.options.connection_timeout = Some(try_timeout.map_or(connect_timeout, |t| t.min(connect_timeout)));
    peer.options.read_timeout = try_timeout;
    Ok(Box::new(peer))
}

/// Refuses a connection whose server presented a certificate other than the pinned
/// ones of its cluster (`CompiledUpstreamTls::pinned`), before the request is sent.
pub fn check_server(ctx: &mut RequestCtx, digest: Option<&pingora::protocols::Digest>) -> Result<()> {
    let Some(cluster) = ctx.destination().map(|d| d.cluster) else {
        return Ok(());
    };
    let Some(tls) = ctx.runtime.upstream_tls.get(cluster).and_then(Option::as_ref) else {
        return Ok(());
    };
    if tls.pinned.is_none() {
        return Ok(());
    }
    let presented = digest
        .and_then(|d| d.ssl_digest.as_ref())
        .map(|d| d.cert_digest.as_slice())
        .unwrap_or_default();
    if tls.accepts(presented) {
        return Ok(());
    }
    ctx.flags.add(Flags::UPSTREAM_CONNECTION_FAILURE);
    // An upstream failure (503, as Envoy answers a failed TLS check), not the proxy's.
    Err(Error::create(
        ErrorType::InvalidCert,
        ErrorSource::Upstream,
        Some("TLS error: the server's certificate is not the one caCertificates holds".into()),
        None,
    ))
}

/// The peer of a sidecar's passthrough or inbound cluster: where the client was
/// going (the connection's original destination). The inbound side reaches its
/// workload from 127.0.0.6, which the capture rules let through, as Istio's sidecar
/// does.
fn captured_peer(address: std::net::SocketAddr, cluster: &Cluster, connect_timeout: Duration) -> Box<HttpPeer> {
    let mut peer = HttpPeer::new(address, false, String::new());
    if cluster.kind == ClusterKind::LocalWorkload {
        let mut bind = pingora::connectors::l4::BindTo::default();
        bind.addr = Some(std::net::SocketAddr::new(INBOUND_PASSTHROUGH_SOURCE, 0));
        peer.options.bind_to = Some(bind);
    }
    peer.options.connection_timeout = Some(cluster.policy.connect_timeout.unwrap_or(connect_timeout));
    peer.options.idle_timeout = cluster.policy.idle_timeout;
    Box::new(peer)
}

/// The source address of a sidecar's connections to its own workload (Istio's
/// `InboundPassthroughBindIpv4`): the capture rules return it untouched.
pub const INBOUND_PASSTHROUGH_SOURCE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 6));

/// The request's hash for consistent hashing; None when the key is absent (then
/// Envoy, and Strait, pick at random). A missing cookie with a ttl is generated and
/// handed to the client so its next requests stick.
fn hash_key(session: &ServerSession, key: &HashKey, set_cookie: &mut Option<HeaderValue>) -> Option<u64> {
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

/// Notes whether the connection of this try may carry no request after it (the
/// cluster's `maxRequestsPerConnection`; HTTP/2 upstreams multiplex instead).
pub fn connected(ctx: &mut RequestCtx, fd: RawFd, reused: bool) {
    let place = ctx.place();
    ctx.close_upstream = match (place.cluster(&ctx.runtime), place.cluster_state(&ctx.runtime)) {
        (Some(c), Some(s)) if !c.policy.h2_upstream => s.last_on_connection(&c.policy, fd, reused),
        _ => false,
    };
}

/// Tells the upstream that this try is the last request of its connection.
pub fn last_on_connection(ctx: &RequestCtx, upstream: &mut RequestHeader) -> Result<()> {
    if ctx.close_upstream {
        upstream.insert_header(header::CONNECTION, "close")?;
    }
    Ok(())
}

/// A try whose connection failed: counted against the endpoint, and tried again
/// when the route's retry policy covers connect failures.
pub fn connect_failed(ctx: &mut RequestCtx, mut e: Box<Error>) -> Box<Error> {
    ctx.record(Outcome::LocalFailure);
    let place = ctx.place();
    if let Some(s) = place.cluster_state(&ctx.runtime) {
        s.connect_failures.fetch_add(1, Ordering::Relaxed);
    }
    let attempts = &mut ctx.attempts;
    let again = place
        .route(&ctx.runtime)
        .is_some_and(|r| attempts.retry(&r.policy.retry, Failure::Connect));
    e.set_retry(again);
    e
}

/// A try that failed after connecting (reset, timeout, or a status the policy
/// retries): tried again when the retry policy covers it and nothing of the answer
/// reached the client yet.
pub fn proxy_failed(
    session: &ServerSession,
    peer: &HttpPeer,
    e: Box<Error>,
    ctx: &mut RequestCtx,
    client_reused: bool,
) -> Box<Error> {
    let mut e = e.more_context(format!("Peer: {peer}"));
    // A body too large to keep for a retry, or an answer already on its way
    // downstream, cannot be tried again.
    if session.retry_buffer_truncated() || session.response_written().is_some() {
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
    let route = ctx.place().route(&ctx.runtime);
    let attempts = &mut ctx.attempts;
    // `retry` also marks the request as timed out once the route's deadline passed.
    let again = stale || route.is_some_and(|r| attempts.retry(&r.policy.retry, failure));
    e.set_retry(again);
    e
}

/// The upstream's answer to a try: recorded for outlier detection, and turned into
/// a retriable error when the retry policy retries its status.
pub fn answered(resp: &ResponseHeader, ctx: &mut RequestCtx) -> Result<()> {
    let status = resp.status.as_u16();
    ctx.upstream_answered = true;
    ctx.record(Outcome::Status(status));
    let Some(route) = ctx.place().route(&ctx.runtime) else {
        return Ok(());
    };
    let grpc_status = resp
        .headers
        .get(&GRPC_STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    if ctx.attempts.retry_status(&route.policy.retry, status, grpc_status) {
        return Err(Error::explain(RETRIABLE_STATUS, format!("upstream answered {status}")));
    }
    Ok(())
}
