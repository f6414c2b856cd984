//! What a request leaves behind: its span (started when it arrives, passed on to
//! the upstream, finished at the end), the `grpc-status` of its answer, and, in the
//! logging phase, its response flags, Istio's metrics, the access log entry and the
//! span's data. The sinks themselves are `metrics`, `access_log` and `trace`.

use std::time::SystemTime;

use http::header::{self, HeaderName};
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;
use pingora::ErrorSource;

use crate::access_log::{self, AccessLog};
use crate::context::RequestCtx;
use crate::downstream::{request_id, X_REQUEST_ID};
use crate::engine::Engine;
use crate::flags::Flags;
use crate::metrics::RequestRecord;
use crate::reply::details;
use crate::request::{authority, connection_sni, connection_tls, is_grpc, path_and_query, X_FORWARDED_FOR};
use crate::trace::{self, RequestSpan, Tracer};

/// Starts the request's span when tracing is on, continuing the client's trace.
pub fn start_span(shared: &Engine, req: &RequestHeader, ctx: &mut RequestCtx) {
    if let Some(tracer) = shared.tracer.get() {
        ctx.span = Some(Box::new(tracer.start(&req.headers, SystemTime::now())));
    }
}

/// Passes the request's trace context on to the upstream.
pub fn inject_span(ctx: &RequestCtx, upstream: &mut RequestHeader) {
    if let Some(span) = &ctx.span {
        span.inject(|name, value| {
            let _ = upstream.insert_header(name, value);
        });
    }
}

/// Keeps the `grpc-status` of the upstream's headers or trailers, for the metrics.
pub fn note_grpc_status(headers: &http::HeaderMap, ctx: &mut RequestCtx) {
    if let Some(status) = grpc_status(headers) {
        ctx.grpc_status = Some(status);
    }
}

// Parsed once: looking a header up by string parses the name on every call, and
// every response is looked at.
/// `grpc-status`.
pub(crate) const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `x-envoy-downstream-service-cluster`.
const X_ENVOY_DOWNSTREAM_SERVICE_CLUSTER: HeaderName = HeaderName::from_static("x-envoy-downstream-service-cluster");

/// The `grpc-status` of a header or trailer block.
fn grpc_status(headers: &http::HeaderMap) -> Option<u16> {
    headers.get(&GRPC_STATUS)?.to_str().ok()?.trim().parse().ok()
}

/// The logging phase: the request's last response flags, then its metrics, access
/// log entry and span.
pub fn finish(shared: &Engine, session: &ServerSession, e: Option<&Error>, ctx: &mut RequestCtx) {
    crate::conn::request_done();
    if e.is_some_and(|e| e.esource() == &ErrorSource::Downstream) {
        ctx.flags.add(Flags::DOWNSTREAM_TERMINATION);
        if session.req_header().version == http::Version::HTTP_2 {
            crate::conn::note_early_reset();
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
        let who = if dest.inbound {
            crate::request::connection_peer(session).map(|p| p.principal.as_str())
        } else {
            ctx.upstream_workload()
        };
        shared.metrics.record(dest, who, &record);
    }
    if let Some(log) = shared.access_log.get() {
        log_entry(log, session, ctx, &record);
    }
    if let (Some(tracer), Some(span)) = (shared.tracer.get(), ctx.span.take()) {
        finish_span(tracer, *span, session, ctx, &record);
    }
}

/// The span data of a request, from the session and its metrics record.
fn trace_record<'a>(
    session: &'a ServerSession,
    operation: &'a str,
    cluster: &'a str,
    upstream: &'a str,
    record: &RequestRecord,
) -> trace::Record<'a> {
    let req = session.req_header();
    let header = |name: &HeaderName| req.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    trace::Record {
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
        user_agent: header(&header::USER_AGENT),
        downstream_cluster: header(&X_ENVOY_DOWNSTREAM_SERVICE_CLUSTER),
        end: SystemTime::now(),
    }
}

/// Sends the request's span.
fn finish_span(tracer: &Tracer, span: RequestSpan, session: &ServerSession, ctx: &RequestCtx, record: &RequestRecord) {
    if !span.is_sampled() {
        return tracer.finish(span, &trace_record(session, "", "", "", record));
    }
    let req = session.req_header();
    let place = ctx.place();
    let cluster = place.cluster(&ctx.runtime);
    let operation = cluster.map_or_else(String::new, |c| trace::operation_name(&c.host, c.port));
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
fn log_entry(log: &AccessLog, session: &ServerSession, ctx: &RequestCtx, record: &RequestRecord) {
    let req = session.req_header();
    let header = |name: &HeaderName| req.headers.get(name).and_then(|v| v.to_str().ok());
    let place = ctx.place();
    let cluster = place.cluster(&ctx.runtime);
    let upstream_host = ctx.upstream_endpoint();
    let protocol = match req.version {
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    let started = SystemTime::now() - record.duration;
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
        x_forwarded_for: header(&X_FORWARDED_FOR),
        user_agent: header(&header::USER_AGENT),
        request_id: header(&X_REQUEST_ID).or_else(|| made_up.to_str().ok()),
        authority: Some(authority(req)).filter(|a| !a.is_empty()),
        upstream_host,
        upstream_cluster: cluster.map(|c| c.name.as_str()),
        downstream_local_address: session.server_addr().and_then(|a| a.as_inet()).copied(),
        downstream_remote_address: session.client_addr().and_then(|a| a.as_inet()).copied(),
        requested_server_name: connection_sni(session),
        route_name: place.route(&ctx.runtime).and_then(|r| r.name.as_deref()),
        upstream_transport_failure_reason: ctx.transport_failure.as_deref(),
    });
}
