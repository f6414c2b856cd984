//! Request mirroring (VirtualService `mirror`, `mirrors`): a copy of the request
//! as it goes upstream, with `-shadow` appended to its host as Envoy does, is sent
//! from a task of its own; the answer is read and dropped. The original request
//! never waits for it. `start` and `feed` are the request path's steps: the copy is
//! decided once per request (not per try) and sent when its body is complete.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pingora::http::RequestHeader;
use pingora::protocols::http::ServerSession;
use strait_config::snapshot::{roll, Action};

use crate::context::RequestCtx;
use crate::dns::Dns;
use crate::request::{authority, path_and_query};
use crate::upstream::side_call_target;

/// Request bodies up to this size are mirrored; a larger body cancels the copy.
pub const MAX_BODY: usize = 64 * 1024;

/// How long a mirrored request may take before it is abandoned.
const TIMEOUT: Duration = Duration::from_secs(15);

/// The client that sends copies, with its own connection pool.
#[derive(Debug, Clone)]
pub struct Mirrors {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Mirrors {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        Mirrors {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }
}

/// A copy being assembled: the request head, then the body as it streams by.
#[derive(Debug)]
pub struct PendingCopy {
    /// Where copies go.
    pub targets: Vec<SocketAddr>,
    method: Method,
    path: String,
    headers: HeaderMap,
    body: BytesMut,
}

impl PendingCopy {
    /// A copy of a request head; `host` is the authority the upstream gets.
    pub fn new(targets: Vec<SocketAddr>, method: Method, path: &str, headers: &HeaderMap, host: &str) -> PendingCopy {
        let mut headers = headers.clone();
        if let Ok(v) = HeaderValue::from_str(&shadow_host(host)) {
            headers.insert(header::HOST, v);
        }
        PendingCopy {
            targets,
            method,
            path: path.to_string(),
            headers,
            body: BytesMut::new(),
        }
    }

    /// Adds a body chunk; false once the body is too large to mirror.
    pub fn push(&mut self, chunk: &[u8]) -> bool {
        if self.body.len() + chunk.len() > MAX_BODY {
            return false;
        }
        self.body.extend_from_slice(chunk);
        true
    }
}

/// `host` with `-shadow` after the name, before any port: `a.com:8080` -> `a.com-shadow:8080`.
pub fn shadow_host(host: &str) -> String {
    // A port follows the last ':' after the name, or after an IPv6 literal's ']'.
    let name_end = match host.rfind(':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) && !host[..i].contains(':') => i,
        Some(i) if host[..i].ends_with(']') => i,
        _ => host.len(),
    };
    format!("{}-shadow{}", &host[..name_end], &host[name_end..])
}

impl Mirrors {
    /// Sends `copy` to each of its targets from tasks of their own.
    pub fn send(&self, copy: PendingCopy) {
        let body = copy.body.freeze();
        for target in copy.targets {
            let uri = match Uri::builder()
                .scheme("http")
                .authority(target.to_string())
                .path_and_query(copy.path.as_str())
                .build()
            {
                Ok(u) => u,
                Err(e) => {
                    log::debug!("mirror: cannot build a URI for {target}{}: {e}", copy.path);
                    continue;
                }
            };
            let mut request = Request::new(Full::new(body.clone()));
            *request.method_mut() = copy.method.clone();
            *request.uri_mut() = uri;
            *request.headers_mut() = copy.headers.clone();
            if !body.is_empty() {
                request.headers_mut().remove(header::TRANSFER_ENCODING);
                request
                    .headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            }
            let client = self.client.clone();
            tokio::spawn(async move {
                let exchange = async {
                    let response = client.request(request).await?;
                    response.into_body().collect().await?;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                };
                match tokio::time::timeout(TIMEOUT, exchange).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => log::debug!("mirror to {target} failed: {e}"),
                    Err(_) => log::debug!("mirror to {target} abandoned after {TIMEOUT:?}"),
                }
            });
        }
    }
}

/// Decides, at the first try, whether the request is mirrored: a copy of
/// `upstream` for the route's mirrors that won their roll, sent now when the
/// request has no body, else kept for `feed`.
pub async fn start(
    dns: &Dns,
    mirrors: &Mirrors,
    session: &mut ServerSession,
    upstream: &RequestHeader,
    ctx: &mut RequestCtx,
) {
    if ctx.mirror_decided {
        return;
    }
    ctx.mirror_decided = true;
    let Some(copy) = copy_of(dns, ctx, upstream).await else {
        return;
    };
    if session.is_body_empty() {
        mirrors.send(copy);
    } else {
        ctx.mirror = Some(Box::new(copy));
    }
}

/// A copy of the upstream request for the route's mirrors that won their roll.
async fn copy_of(dns: &Dns, ctx: &RequestCtx, upstream: &RequestHeader) -> Option<PendingCopy> {
    let runtime = &*ctx.runtime;
    let Action::Forward(forward) = &ctx.place().route(runtime)?.action else {
        return None;
    };
    let mut targets = Vec::new();
    for m in forward.mirrors.iter().filter(|m| roll(m.percent)) {
        targets.extend(side_call_target(dns, runtime, m.cluster).await);
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
pub fn feed(mirrors: &Mirrors, body: Option<&Bytes>, end_of_stream: bool, ctx: &mut RequestCtx) {
    if let (Some(copy), Some(chunk)) = (ctx.mirror.as_mut(), body) {
        if !copy.push(chunk) {
            log::debug!("request body over {MAX_BODY} bytes: not mirrored");
            ctx.mirror = None;
        }
    }
    if end_of_stream {
        if let Some(copy) = ctx.mirror.take() {
            mirrors.send(*copy);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_suffix_goes_before_the_port() {
        assert_eq!(shadow_host("app.example.com"), "app.example.com-shadow");
        assert_eq!(shadow_host("app.example.com:8080"), "app.example.com-shadow:8080");
        assert_eq!(shadow_host("[::1]:8080"), "[::1]-shadow:8080");
    }

    #[test]
    fn bodies_past_the_limit_cancel_the_copy() {
        let mut copy = PendingCopy::new(Vec::new(), Method::POST, "/", &HeaderMap::new(), "a");
        assert!(copy.push(&[0; MAX_BODY]));
        assert!(!copy.push(b"x"));
    }
}
