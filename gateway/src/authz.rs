//! Who may make a request, in Istio's order: the request's JWTs are verified first
//! (RequestAuthentication, `authn`), then AuthorizationPolicy decides: a matching
//! CUSTOM policy asks its external authorizer (`ext_authz`), then DENY and ALLOW
//! policies. A refusal is the gateway's own answer (401, 403 or the authorizer's).

use bytes::Bytes;
use http::header;
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;
use strait_config::authz::{Decision, Request};
use strait_config::router::strip_port;
use strait_config::snapshot::HttpPolicy;

use crate::authn;
use crate::context::RequestCtx;
use crate::cors;
use crate::engine::Engine;
use crate::ext_authz;
use crate::flags::Flags;
use crate::reply::{Halt, Reply};
use crate::request::{authority, connection_peer, connection_sni, path_and_query, peer_ip, remote_ip};
use crate::runtime::Runtime;
use crate::upstream_client;

/// Verifies the request's JWTs (when the listener's policy has providers) and
/// keeps the first verified token in the context; a token that does not verify gets
/// 401 with Envoy's challenge.
pub async fn authenticate(
    runtime: &Runtime,
    policy: Option<usize>,
    req: &mut RequestHeader,
    scheme: &str,
    ctx: &mut RequestCtx,
) -> Result<(), Reply<'static>> {
    let Some(index) = policy.filter(|i| runtime.snapshot.policies.get(*i).is_some_and(|p| !p.jwt.is_empty())) else {
        return Ok(());
    };
    // Istio lets CORS preflights through unauthenticated: browsers send them without credentials.
    if cors::is_preflight(req) {
        return Ok(());
    }
    // Boxed: waiting for remote keys is a large future that only JWT policies need.
    match Box::pin(authn::authenticate(runtime, index, req)).await {
        Ok(auth) => {
            ctx.auth = auth;
            Ok(())
        }
        Err(failure) => {
            log::debug!("JWT refused: {failure}");
            let challenge = authn::challenge(req, scheme);
            Err(Reply::with_body(401, Bytes::from(failure.to_string()))
                .headers(vec![(header::WWW_AUTHENTICATE, challenge)]))
        }
    }
}

/// The AuthorizationPolicy verdict on a request: the CUSTOM provider to ask, and
/// whether DENY and ALLOW refuse it.
#[derive(Debug, Clone, Copy)]
struct Verdict {
    custom: Option<usize>,
    denied: bool,
}

/// AuthorizationPolicy in Istio's order: a matching CUSTOM policy's external
/// authorizer, then DENY and ALLOW. `port` is the port the client connected to
/// (`destination.port`); `hops` the trusted proxies in front of the gateway.
pub async fn authorize(
    shared: &Engine,
    runtime: &Runtime,
    policy: Option<usize>,
    session: &mut ServerSession,
    port: u16,
    hops: u32,
    ctx: &mut RequestCtx,
) -> Result<(), Halt<'static>> {
    let Some(policy) = policy
        .and_then(|i| runtime.snapshot.policies.get(i))
        .filter(|p| !p.authz.is_empty())
    else {
        return Ok(());
    };
    let verdict = decide(policy, session, port, hops, ctx);
    if let Some(ext) = verdict.custom.and_then(|i| policy.ext_authz.get(i)) {
        // Boxed: a side call (DNS, a pooled connection, an exchange) is a large future,
        // copied with every request's request_filter if it were inline.
        let call = async {
            let target = upstream_client::side_call_peer(&shared.dns, runtime, ext.cluster, &shared.identity).await;
            ext_authz::check(&shared.side_calls, target, &ext.provider, session.req_header()).await
        };
        match Box::pin(call).await {
            ext_authz::Verdict::Deny { status, headers, body } => {
                ctx.flags.add(Flags::EXT_AUTHZ_DENIED);
                return Err(Reply::with_body(status, body).headers(headers).into());
            }
            ext_authz::Verdict::Allow { upstream, downstream } => {
                for (name, value) in upstream {
                    session.req_header_mut().insert_header(name, value)?;
                }
                ctx.response_headers.extend(downstream);
            }
        }
    }
    if verdict.denied {
        ctx.flags.add(Flags::RBAC_DENIED);
        return Err(Reply::new(403, b"RBAC: access denied").into());
    }
    Ok(())
}

/// Matches the request against the policies, with what its connection tells.
fn decide(policy: &HttpPolicy, session: &ServerSession, port: u16, hops: u32, ctx: &RequestCtx) -> Verdict {
    let req = session.req_header();
    let host = strip_port(authority(req)).to_ascii_lowercase();
    let path = path_and_query(req).split('?').next().unwrap_or("/");
    let source_ip = peer_ip(session);
    let request = Request {
        host: &host,
        port,
        method: req.method.as_str(),
        path,
        headers: &req.headers,
        source_ip,
        remote_ip: remote_ip(session, hops),
        sni: connection_sni(session),
        peer: connection_peer(session).map(|p| p.principal.as_str()),
        auth: ctx.auth.as_deref(),
    };
    let authz = &policy.authz;
    let decision = authz.decide(&request, |policy| {
        log::info!("AUDIT {policy}: {} {host}{path} from {source_ip:?}", request.method);
    });
    let denied = match decision {
        Decision::Deny(policy) => {
            log::debug!("denied by {policy}: {} {host}{path}", request.method);
            true
        }
        Decision::Allow => false,
    };
    Verdict {
        custom: authz.custom_provider(&request),
        denied,
    }
}
