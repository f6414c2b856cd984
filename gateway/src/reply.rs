//! The gateway's own answers. Steps of the request path that answer a request
//! themselves (a refusal, a redirect, a direct response) return a `Reply`; the phase
//! sends it, to gRPC clients as a gRPC "trailers-only" status the way Envoy's local
//! replies do. Errors that end a request (an unreachable upstream, a timeout, a
//! client gone) are classified here into the status, body and response flags Envoy
//! gives them, and `details` tells Envoy's `%RESPONSE_CODE_DETAILS%` for the logs.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::ErrorSource;
use strait_config::snapshot::HeaderOps;

use crate::context::RequestCtx;
use crate::flags::Flags;
use crate::header_ops;
use crate::request::is_grpc;

/// An answer from the gateway itself.
#[derive(Debug)]
pub struct Reply<'a> {
    /// Status.
    pub status: u16,
    /// Headers beside `content-length` and `content-type`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The route's response header operations (redirects and direct responses).
    pub ops: Option<&'a HeaderOps>,
    /// Body (`text/plain` when not empty).
    pub body: Bytes,
    /// Close the connection after answering: what the client sent is not trusted
    /// enough to read another request from it.
    pub close: bool,
}

impl<'a> Reply<'a> {
    /// An answer with `status` and `body`.
    #[inline]
    pub fn new(status: u16, body: &'static [u8]) -> Reply<'a> {
        Reply::with_body(status, Bytes::from_static(body))
    }

    /// An answer with `status` and a body made for it.
    #[inline]
    pub fn with_body(status: u16, body: Bytes) -> Reply<'a> {
        Reply {
            status,
            headers: Vec::new(),
            ops: None,
            body,
            close: false,
        }
    }

    /// With these headers.
    #[inline]
    pub fn headers(mut self, headers: Vec<(HeaderName, HeaderValue)>) -> Reply<'a> {
        self.headers = headers;
        self
    }

    /// Applies the route's response header operations to it.
    #[inline]
    pub fn ops(mut self, ops: &'a HeaderOps) -> Reply<'a> {
        self.ops = Some(ops);
        self
    }

    /// Closes the connection after it.
    #[inline]
    pub fn closing(mut self) -> Reply<'a> {
        self.close = true;
        self
    }
}

/// Why a step stops a request before it goes upstream.
#[derive(Debug)]
pub enum Halt<'a> {
    /// The gateway answers it.
    Reply(Reply<'a>),
    /// It failed (Pingora's error handling takes over).
    Error(Box<Error>),
}

impl<'a> From<Reply<'a>> for Halt<'a> {
    fn from(reply: Reply<'a>) -> Self {
        Halt::Reply(reply)
    }
}

impl From<Box<Error>> for Halt<'_> {
    fn from(e: Box<Error>) -> Self {
        Halt::Error(e)
    }
}

/// Writes a reply; true, for `request_filter`: the request is answered.
pub async fn send(session: &mut Session, reply: Reply<'_>) -> Result<bool> {
    let Reply {
        status,
        headers,
        ops,
        body,
        close,
    } = reply;
    if close {
        session.set_keepalive(None);
    }
    if status >= 400 && is_grpc(session.req_header()) {
        return respond_grpc(session, status, &body).await;
    }
    let mut resp = ResponseHeader::build(status, Some(5 + headers.len()))?;
    header_ops::server_header(&mut resp)?;
    resp.insert_header(header::CONTENT_LENGTH, body.len())?;
    if !body.is_empty() {
        resp.insert_header(header::CONTENT_TYPE, "text/plain")?;
    }
    for (k, v) in headers {
        resp.insert_header(k, v)?;
    }
    if let Some(ops) = ops {
        header_ops::apply_response(&mut resp, ops)?;
    }
    let empty = body.is_empty();
    session.write_response_header(Box::new(resp), empty).await?;
    if !empty {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(true)
}

/// Pingora's error answer (no caching, the connection closed after it) with the
/// gateway's `server` header instead of Pingora's.
pub(crate) async fn error_answer(session: &mut Session, code: u16, body: Bytes) -> Result<()> {
    let mut resp = pingora::protocols::http::ServerSession::generate_error(code);
    header_ops::server_header(&mut resp)?;
    if !body.is_empty() {
        resp.set_content_length(body.len())?;
    }
    session.write_error_response(resp, body).await
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

/// Whether an error of this type means the client went away (closed, reset its
/// stream): nobody is left to answer.
#[inline]
pub fn client_gone(etype: &ErrorType) -> bool {
    matches!(
        etype,
        ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed | ErrorType::H2Error
    )
}

/// Whether an error only says the client went away, which is the access log's
/// `DC` and not an error of the proxy: logging each at error level would let a
/// client flood the log.
pub fn client_went_away(error: &Error) -> bool {
    let gone = error.esource() == &ErrorSource::Downstream && client_gone(error.etype());
    if gone {
        log::debug!("client went away: {error}");
    }
    gone
}

/// How a request that failed is answered and flagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// Status for the client (0: nobody to answer).
    pub status: u16,
    /// Envoy's body for it.
    pub body: &'static [u8],
    /// The response flag it adds.
    pub flag: Flags,
}

/// What the request's own state adds to an error's classification.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ended {
    /// The route's deadline passed.
    pub timed_out: bool,
    /// The cluster's limits refused it.
    pub overflow: bool,
    /// No endpoint was healthy (already flagged).
    pub no_healthy_upstream: bool,
}

/// Envoy's answers, which Istio users script against: 503 when the upstream could
/// not be reached or reset before its headers, 504 on timeouts.
pub fn classify(e: &Error, ended: Ended) -> Failure {
    let (status, body): (u16, &'static [u8]) = match (e.etype(), e.esource()) {
        _ if ended.timed_out => (504, b"upstream request timeout"),
        _ if ended.overflow => (
            503,
            b"upstream connect error or disconnect/reset before headers. reset reason: overflow",
        ),
        (ErrorType::HTTPStatus(code), _) => (*code, b""),
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
        (t, ErrorSource::Downstream) if client_gone(t) => (0, b""),
        (_, ErrorSource::Downstream) => (400, b""),
        _ => (500, b""),
    };
    let flag = match (e.etype(), e.esource()) {
        _ if ended.timed_out => Flags::UPSTREAM_TIMEOUT,
        _ if ended.overflow => Flags::UPSTREAM_OVERFLOW,
        (ErrorType::ConnectNoRoute, _) if ended.no_healthy_upstream => Flags::NONE,
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
    };
    Failure { status, body, flag }
}

/// Envoy's `transport failure reason` of an upstream TLS handshake that failed:
/// `TLS_error: <cause>` with the cause in words (unknown CA, name mismatch,
/// expired...) and rustls's own text after it. None for other errors.
pub fn transport_failure(e: &Error) -> Option<String> {
    if !matches!(e.etype(), ErrorType::TLSHandshakeFailure | ErrorType::InvalidCert) {
        return None;
    }
    // rustls's reason is the innermost cause of Pingora's chain.
    let root = e.root_cause().to_string();
    let text = format!("{e} {root}");
    const CAUSES: [(&str, &str); 9] = [
        ("UnknownIssuer", "unknown CA"),
        ("NotValidForName", "certificate name mismatch"),
        ("Expired", "certificate expired"),
        ("NotValidYet", "certificate not yet valid"),
        ("CaUsedAsEndEntity", "a CA certificate presented as the server's"),
        ("BadSignature", "bad certificate signature"),
        ("Revoked", "certificate revoked"),
        ("caCertificates holds", "not the pinned certificate"),
        ("alert", "the server refused the handshake"),
    ];
    let cause = CAUSES
        .iter()
        .find(|(needle, _)| text.contains(needle))
        .map_or("handshake failed", |(_, words)| words);
    // rustls's own words, where Pingora's chain carries them.
    let detail = [
        "invalid peer certificate: ",
        "received fatal alert: ",
        "peer sent no certificates",
    ]
    .iter()
    .find_map(|phrase| {
        let start = text.find(phrase)?;
        let rest = &text[start..];
        Some(rest.split([',', '\n']).next().unwrap_or(rest).trim().to_string())
    })
    .unwrap_or_else(|| root.trim().to_string());
    Some(format!("TLS_error: {cause} ({detail})"))
}

/// Answers a request that failed, as `classify` says (gRPC clients get a gRPC status).
pub async fn fail(session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
    let failure = classify(
        e,
        Ended {
            timed_out: ctx.attempts.timed_out,
            overflow: ctx.overflow,
            no_healthy_upstream: ctx.flags.has(Flags::NO_HEALTHY_UPSTREAM),
        },
    );
    ctx.flags.add(failure.flag);
    let code = failure.status;
    let transport = transport_failure(e);
    if let Some(reason) = &transport {
        log::warn!(
            "upstream {}: {reason}",
            ctx.upstream_endpoint().map_or_else(|| "?".into(), |a| a.to_string())
        );
    }
    if code > 0 {
        // Envoy's wording: the reset reason, then the transport failure reason.
        let body = match &transport {
            Some(reason) if failure.status == 503 => Bytes::from(format!(
                "{}, transport failure reason: {reason}",
                String::from_utf8_lossy(failure.body)
            )),
            _ => Bytes::from_static(failure.body),
        };
        let sent = if is_grpc(session.req_header()) {
            respond_grpc(session, code, &body).await.map(|_| ())
        } else {
            error_answer(session, code, body).await
        };
        if let Err(err) = sent {
            log::debug!("could not send {code} downstream: {err}");
        }
    }
    ctx.transport_failure = transport.map(String::into_boxed_str);
    FailToProxy {
        error_code: code,
        can_reuse_downstream: false,
    }
}

/// Envoy's `%RESPONSE_CODE_DETAILS%`: whether the upstream answered, else why the
/// gateway did.
pub fn details(upstream_answered: bool, flags: Flags, status: u16) -> &'static str {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(e: Box<Error>, ended: Ended) -> (u16, Flags) {
        let f = classify(&e, ended);
        (f.status, f.flag)
    }

    #[test]
    fn errors_get_envoys_answers() {
        let none = Ended::default();
        assert_eq!(
            failure(Error::new_up(ErrorType::ReadTimedout), none),
            (504, Flags::UPSTREAM_TIMEOUT)
        );
        assert_eq!(
            failure(Error::new(ErrorType::ConnectRefused), none),
            (503, Flags::UPSTREAM_CONNECTION_FAILURE)
        );
        assert_eq!(
            failure(Error::new_up(ErrorType::ConnectionClosed), none),
            (503, Flags::UPSTREAM_TERMINATION)
        );
        assert_eq!(
            failure(Error::new_down(ErrorType::ConnectionClosed), none),
            (0, Flags::DOWNSTREAM_TERMINATION),
            "a client gone gets no answer"
        );
        assert_eq!(
            failure(Error::new_down(ErrorType::InvalidHTTPHeader), none),
            (400, Flags::DOWNSTREAM_TERMINATION)
        );
        assert_eq!(
            failure(Error::new(ErrorType::HTTPStatus(413)), none),
            (413, Flags::NONE)
        );
        let deadline = Ended {
            timed_out: true,
            ..none
        };
        assert_eq!(
            failure(Error::new(ErrorType::ConnectRefused), deadline),
            (504, Flags::UPSTREAM_TIMEOUT),
            "the route's deadline comes first"
        );
        let overflow = Ended { overflow: true, ..none };
        assert_eq!(
            failure(Error::new(ErrorType::ConnectRefused), overflow),
            (503, Flags::UPSTREAM_OVERFLOW)
        );
        let unhealthy = Ended {
            no_healthy_upstream: true,
            ..none
        };
        assert_eq!(
            failure(Error::new(ErrorType::ConnectNoRoute), unhealthy),
            (503, Flags::NONE),
            "already flagged UH"
        );
    }

    #[test]
    fn details_say_who_answered() {
        assert_eq!(details(true, Flags::NONE, 200), "via_upstream");
        assert_eq!(details(false, Flags::NO_ROUTE, 404), "route_not_found");
        assert_eq!(details(false, Flags::NONE, 401), "jwt_authn_access_denied");
        assert_eq!(details(false, Flags::NONE, 200), "direct_response");
    }
}
