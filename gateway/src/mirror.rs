//! Mirroring as the request path's steps: whether a request is copied is decided
//! once per request (not per try), and the copy is sent when its body is complete.

use std::sync::Arc;

use bytes::Bytes;
use pingora::http::RequestHeader;
use pingora::protocols::http::ServerSession;
use strait_config::snapshot::{roll, Action, Mirror};

use crate::context::RequestCtx;
use crate::dns::Dns;
use crate::identity::Identity;
use crate::request::{authority, path_and_query};
use crate::request_copy::{PendingCopy, MAX_BODY};
use crate::upstream_client::{side_call_peer, SideCalls};

/// Decides, at the first try, whether the request is mirrored: a copy of
/// `upstream` for the route's mirrors that won their roll, sent now when the
/// request has no body, else kept for `feed`.
pub async fn start(
    dns: &Dns,
    side_calls: &Arc<SideCalls>,
    identity: &Identity,
    session: &mut ServerSession,
    upstream: &RequestHeader,
    ctx: &mut RequestCtx,
) {
    if ctx.mirror_decided {
        return;
    }
    ctx.mirror_decided = true;
    let runtime = ctx.runtime.clone();
    let Some(Action::Forward(forward)) = ctx.place().route(&runtime).map(|r| &r.action) else {
        return;
    };
    if forward.mirrors.is_empty() {
        return;
    }
    // Boxed: resolving mirror targets is a large future only mirrored routes need.
    let Some(copy) = Box::pin(copy_of(dns, identity, &forward.mirrors, ctx, upstream)).await else {
        return;
    };
    if session.is_body_empty() {
        copy.send(side_calls);
    } else {
        ctx.mirror = Some(Box::new(copy));
    }
}

/// A copy of the upstream request for the route's mirrors that won their roll.
async fn copy_of(
    dns: &Dns,
    identity: &Identity,
    mirrors: &[Mirror],
    ctx: &RequestCtx,
    upstream: &RequestHeader,
) -> Option<PendingCopy> {
    let runtime = &*ctx.runtime;
    let mut targets = Vec::new();
    for m in mirrors.iter().filter(|m| roll(m.percent)) {
        targets.extend(side_call_peer(dns, runtime, m.cluster, identity).await);
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

/// Adds a chunk of the request body to the copy waiting for it (a body past
/// `MAX_BODY` cancels the copy) and sends the copy at the body's end.
pub fn feed(side_calls: &Arc<SideCalls>, body: Option<&Bytes>, end_of_stream: bool, ctx: &mut RequestCtx) {
    if let (Some(copy), Some(chunk)) = (ctx.mirror.as_mut(), body) {
        if !copy.push(chunk) {
            log::debug!("request body over {MAX_BODY} bytes: not mirrored");
            ctx.mirror = None;
        }
    }
    if end_of_stream {
        if let Some(copy) = ctx.mirror.take() {
            copy.send(side_calls);
        }
    }
}
