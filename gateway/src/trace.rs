//! Distributed tracing as Istio's proxies do it: a span per proxied request with
//! Envoy's and Istio's span attributes, the parent read from W3C `traceparent` or B3
//! headers, the new span written into the upstream request, sampling that honours
//! the parent's decision and otherwise takes the mesh config's percentage, and export
//! over OTLP (gRPC or HTTP/protobuf) in batches from a background task.
//!
//! The API takes plain data (`http::HeaderMap`, strings, numbers, times), never
//! pingora's session, so the proxy fills it from its own types:
//!
//! ```text
//! // once, from the mesh config (strait_config::mesh::MeshConfig::tracing):
//! let (tracer, task) = Tracer::new(Settings { tracing, identity, kind, queue })?;
//! task.spawn_thread()?;          // or tokio::spawn(task.run()), or task.run_until(shutdown)
//! // no provider: Tracer::default() -- every call below returns at once, allocating nothing
//!
//! // request_filter, as early as possible (start time = when the request arrived):
//! ctx.span = tracer.start(&session.req_header().headers, SystemTime::now());
//! // upstream_request_filter, on every attempt:
//! ctx.span.inject(|name, value| { let _ = upstream_request.insert_header(name, value); });
//! // logging, once the response is sent (or the request failed):
//! tracer.finish(std::mem::take(&mut ctx.span), &Record { operation, method, ... });
//! ```
//!
//! A request that is not sampled still gets a trace and span id, written upstream
//! with the sampled flag 0, but `finish` builds nothing for it. Export never blocks a
//! request: `finish` only tries to queue the span; when the collector is down the
//! queue fills, later spans are dropped and counted (`Tracer::stats`), and the
//! export task logs the failure at most once a minute.
//!
//! The SDK's own batch processor is not used: it runs a thread per processor, logs
//! through `tracing` without a rate limit, and needs an SDK span (with its locks and
//! allocations) for every request; here the span is built once, at `finish`, from
//! the proxy's data, and the batching task is ours (`export`).

mod context;
mod export;

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use opentelemetry_sdk::Resource;
use strait_config::tracing::Tracing;
use tokio::sync::mpsc;

pub use context::{extract, B3Form, Parent};
pub use export::{CollectorAddress, ExportTask, Exporting, QueueSettings, TraceStats};

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The provider's service and port do not make a URL.
    #[error("invalid collector endpoint {0:?}")]
    Endpoint(String),
    /// The OTLP exporter refused its settings.
    #[error("trace exporter for {endpoint}: {source}")]
    Build {
        /// The collector's URL.
        endpoint: String,
        /// What the exporter said.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// The export thread or its runtime could not start.
    #[error("cannot start the trace export thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Who this proxy is, as Istio's span attributes and resource say it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Resource `service.name`: the canonical service (e.g. `istio-ingressgateway.istio-system`).
    pub service_name: String,
    /// `node_id`: Istio's `router~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local`.
    pub node_id: String,
    /// `zone`, empty when unknown.
    pub zone: String,
    /// `istio.mesh_id` (Istio's default is `cluster.local`).
    pub mesh_id: String,
    /// `istio.namespace`.
    pub namespace: String,
    /// `istio.canonical_service`.
    pub canonical_service: String,
    /// `istio.canonical_revision` (Istio's default is `latest`).
    pub canonical_revision: String,
    /// `istio.cluster_id` (Istio's default is `Kubernetes`).
    pub cluster_id: String,
}

/// Everything a `Tracer` needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Provider and sampling from the mesh config.
    pub tracing: Tracing,
    /// The proxy's names.
    pub identity: Identity,
    /// Span kind: Envoy uses CLIENT for egress listeners (every Istio gateway
    /// listener, and sidecar outbound) and SERVER for sidecar inbound.
    pub kind: SpanKind,
    /// Export queue sizes.
    pub queue: QueueSettings,
    /// The collector's address from the registry, when its service is there.
    pub collector: export::CollectorAddress,
}

/// Span kind for the edge and egress gateway roles, as Envoy sets it for Istio's
/// gateway listeners (traffic direction outbound).
pub const GATEWAY_SPAN_KIND: SpanKind = SpanKind::Client;

/// Istio's span name for a route: `<destination host>:<port>/*`.
pub fn operation_name(host: &str, port: u16) -> String {
    format!("{host}:{port}/*")
}

/// The tracing handle the proxy keeps: cheap to clone; `Tracer::default()` is off.
#[derive(Debug, Clone, Default)]
pub struct Tracer {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    /// Sampling threshold out of 1,000,000.
    threshold: u32,
    kind: SpanKind,
    max_tag_length: usize,
    /// Attributes every span carries (component, node, zone, istio.*).
    common: Vec<KeyValue>,
    scope: InstrumentationScope,
    queue: mpsc::Sender<SpanData>,
    counters: Arc<export::Counters>,
}

/// The proxy's span for one request, kept in the request context between `start`
/// and `finish`. The default value is "not traced".
#[derive(Debug, Clone, Default)]
pub struct RequestSpan {
    active: Option<Active>,
}

#[derive(Debug, Clone)]
struct Active {
    ids: context::Ids,
    tracestate: Option<HeaderValue>,
    b3: B3Form,
    remote_parent: bool,
    start: SystemTime,
}

/// What the proxy knows about a request when it ends; all plain data. Empty strings
/// are "unknown" and show as `-` where Envoy writes `-`.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Span name, usually `operation_name(destination host, port)` of the route;
    /// empty: `<authority>/*`.
    pub operation: &'a str,
    /// Request method.
    pub method: &'a str,
    /// `http` or `https` as the client used it.
    pub scheme: &'a str,
    /// Host (and port) the client asked for.
    pub authority: &'a str,
    /// Path and query as received.
    pub path: &'a str,
    /// `HTTP/1.0`, `HTTP/1.1`, `HTTP/2`.
    pub protocol: &'a str,
    /// Response status sent to the client; 0 when none was.
    pub status: u16,
    /// Request body bytes received.
    pub request_size: u64,
    /// Response body bytes sent.
    pub response_size: u64,
    /// Envoy response flags (`UF`, `NR`, ...); empty when none.
    pub response_flags: &'a str,
    /// Cluster the request went to (`outbound|80||svc.ns.svc.cluster.local`); empty when none.
    pub upstream_cluster: &'a str,
    /// Address of the upstream peer, when one was chosen.
    pub upstream_address: &'a str,
    /// Address of the client's connection.
    pub peer_address: &'a str,
    /// The request's `x-request-id`.
    pub request_id: &'a str,
    /// The request's `user-agent`.
    pub user_agent: &'a str,
    /// The request's `x-envoy-downstream-service-cluster`.
    pub downstream_cluster: &'a str,
    /// When the response ended.
    pub end: SystemTime,
}

impl Default for Record<'_> {
    fn default() -> Self {
        Record {
            operation: "",
            method: "",
            scheme: "",
            authority: "",
            path: "",
            protocol: "",
            status: 0,
            request_size: 0,
            response_size: 0,
            response_flags: "",
            upstream_cluster: "",
            upstream_address: "",
            peer_address: "",
            request_id: "",
            user_agent: "",
            downstream_cluster: "",
            end: SystemTime::UNIX_EPOCH,
        }
    }
}

fn random_nonzero_u64() -> u64 {
    fastrand::u64(1..)
}

impl Tracer {
    /// A tracer for `settings`, and its export task, which the caller must run.
    pub fn new(settings: Settings) -> Result<(Tracer, ExportTask), Error> {
        let Settings {
            tracing,
            identity,
            kind,
            queue,
            collector: settings_collector,
        } = settings;
        export::endpoint(&tracing.provider)?;
        let (tx, rx) = mpsc::channel(queue.capacity.max(1));
        let counters = Arc::new(export::Counters::default());
        let mut resource = Resource::builder_empty().with_service_name(identity.service_name.clone());
        if tracing.provider.environment_resource {
            resource = resource.with_detector(Box::new(opentelemetry_sdk::resource::EnvResourceDetector::new()));
        }
        let id = identity;
        let common = [
            ("component", "proxy".to_string()),
            ("node_id", id.node_id),
            ("zone", id.zone),
            ("istio.canonical_service", id.canonical_service),
            ("istio.canonical_revision", id.canonical_revision),
            ("istio.mesh_id", id.mesh_id),
            ("istio.namespace", id.namespace),
            ("istio.cluster_id", id.cluster_id),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        // Arc<str> values make the per-span copies reference counts, not allocations.
        .map(|(k, v)| KeyValue::new(k, Arc::<str>::from(v)))
        .collect();
        let inner = Inner {
            threshold: (tracing.sampling.clamp(0.0, 100.0) * 10_000.0).round() as u32,
            kind,
            max_tag_length: tracing.provider.max_tag_length as usize,
            common,
            scope: InstrumentationScope::builder("strait")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            queue: tx,
            counters: counters.clone(),
        };
        let task = ExportTask {
            rx,
            provider: tracing.provider,
            collector: settings_collector,
            resource: resource.build(),
            queue,
            counters,
        };
        Ok((
            Tracer {
                inner: Some(Arc::new(inner)),
            },
            task,
        ))
    }

    /// Whether spans are made at all.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Counters of queued, dropped, exported and failed spans (zeros when off).
    pub fn stats(&self) -> TraceStats {
        self.inner.as_ref().map(|i| i.counters.snapshot()).unwrap_or_default()
    }

    /// Starts the span of a request: reads the parent from `headers` and decides
    /// sampling. Call once per downstream request, when it arrives.
    pub fn start(&self, headers: &HeaderMap, start: SystemTime) -> RequestSpan {
        let Some(inner) = &self.inner else {
            return RequestSpan::default();
        };
        let parent = extract(headers);
        let sampled = parent
            .sampled
            .unwrap_or_else(|| inner.threshold > 0 && fastrand::u32(0..1_000_000) < inner.threshold);
        let trace_id = match parent.trace_id {
            0 => fastrand::u128(1..),
            id => id,
        };
        let tracestate = if parent.w3c {
            headers.get(context::TRACESTATE).cloned()
        } else {
            None
        };
        RequestSpan {
            active: Some(Active {
                ids: context::Ids {
                    trace_id,
                    span_id: random_nonzero_u64(),
                    parent_span_id: parent.span_id,
                    sampled,
                    debug: parent.debug,
                },
                tracestate,
                b3: parent.b3,
                remote_parent: parent.span_id != 0,
                start,
            }),
        }
    }

    /// Ends the span of a request and queues it for export if it is sampled. Never
    /// waits: a full queue drops the span.
    pub fn finish(&self, span: RequestSpan, record: &Record<'_>) {
        let (Some(inner), Some(active)) = (&self.inner, span.active) else {
            return;
        };
        if !active.ids.sampled {
            return;
        }
        let data = inner.span_data(active, record);
        match inner.queue.try_send(data) {
            Ok(()) => inner.counters.queued.fetch_add(1, Ordering::Relaxed),
            Err(_) => inner.counters.dropped.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Envoy writes `-` for unknown values of these attributes.
fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

impl Inner {
    fn span_data(&self, active: Active, r: &Record<'_>) -> SpanData {
        let name: Cow<'static, str> = if r.operation.is_empty() {
            format!("{}/*", r.authority).into()
        } else {
            r.operation.to_string().into()
        };
        // Envoy keeps at most maxTagLength bytes of the path in http.url.
        let mut cut = r.path.len().min(self.max_tag_length);
        while !r.path.is_char_boundary(cut) {
            cut -= 1;
        }
        let scheme = if r.scheme.is_empty() { "http" } else { r.scheme };
        let mut attributes = Vec::with_capacity(self.common.len() + 16);
        attributes.extend(self.common.iter().cloned());
        let mut text = |k: &'static str, v: &str| attributes.push(KeyValue::new(k, v.to_string()));
        text("http.method", r.method);
        text("http.url", &format!("{scheme}://{}{}", r.authority, &r.path[..cut]));
        text("http.protocol", r.protocol);
        text("http.status_code", &r.status.to_string());
        text("request_size", &r.request_size.to_string());
        text("response_size", &r.response_size.to_string());
        text("response_flags", or_dash(r.response_flags));
        text("user_agent", or_dash(r.user_agent));
        text("downstream_cluster", or_dash(r.downstream_cluster));
        if !r.request_id.is_empty() {
            text("guid:x-request-id", r.request_id);
        }
        if !r.upstream_cluster.is_empty() {
            text("upstream_cluster", r.upstream_cluster);
            text("upstream_cluster.name", r.upstream_cluster);
        }
        if !r.upstream_address.is_empty() {
            text("upstream_address", r.upstream_address);
        }
        if !r.peer_address.is_empty() {
            text("peer.address", r.peer_address);
        }
        // Envoy marks a request that got no response, or a 5xx, as an error.
        let failed = r.status == 0 || r.status >= 500;
        let status = if failed {
            text("error", "true");
            Status::error("")
        } else {
            Status::Unset
        };
        let trace_state = active
            .tracestate
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<TraceState>().ok())
            .unwrap_or_default();
        let flags = if active.ids.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(active.ids.trace_id),
                SpanId::from(active.ids.span_id),
                flags,
                false,
                trace_state,
            ),
            parent_span_id: SpanId::from(active.ids.parent_span_id),
            parent_span_is_remote: active.remote_parent,
            span_kind: self.kind.clone(),
            name,
            start_time: active.start,
            end_time: r.end.max(active.start),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        }
    }
}

impl RequestSpan {
    /// Whether the request is traced at all (tracing on).
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// Whether the span will be exported.
    pub fn is_sampled(&self) -> bool {
        self.active.as_ref().is_some_and(|a| a.ids.sampled)
    }

    /// The trace id, e.g. for access logs.
    pub fn trace_id(&self) -> Option<TraceId> {
        self.active.as_ref().map(|a| TraceId::from(a.ids.trace_id))
    }

    /// This span's id, which the upstream sees as its parent.
    pub fn span_id(&self) -> Option<SpanId> {
        self.active.as_ref().map(|a| SpanId::from(a.ids.span_id))
    }

    /// The incoming parent span's id, if the request had one.
    pub fn parent_span_id(&self) -> Option<SpanId> {
        self.active
            .as_ref()
            .filter(|a| a.ids.parent_span_id != 0)
            .map(|a| SpanId::from(a.ids.parent_span_id))
    }

    /// Writes this span into an upstream request: `traceparent` (+ the incoming
    /// `tracestate`), and B3 in the form the request used. `put` sets one header,
    /// replacing any value. Does nothing when tracing is off (the request's own
    /// headers then pass through unchanged).
    pub fn inject(&self, mut put: impl FnMut(HeaderName, HeaderValue)) {
        if let Some(a) = &self.active {
            context::inject(&a.ids, a.tracestate.as_ref(), a.b3, &mut put);
        }
    }

    /// `inject` into a header map.
    pub fn inject_into(&self, headers: &mut HeaderMap) {
        self.inject(|name, value| {
            headers.insert(name, value);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use strait_config::tracing::{Provider, Transport};

    fn settings(sampling: f64, capacity: usize) -> Settings {
        Settings {
            tracing: Tracing {
                provider: Provider {
                    name: "otel".into(),
                    service: "127.0.0.1".into(),
                    port: 9,
                    transport: Transport::Grpc { metadata: vec![] },
                    timeout: Duration::from_millis(200),
                    max_tag_length: 8,
                    environment_resource: false,
                },
                sampling,
            },
            identity: Identity {
                service_name: "gw.ns".into(),
                node_id: "router~1.2.3.4~gw.ns~ns.svc.cluster.local".into(),
                mesh_id: "cluster.local".into(),
                ..Identity::default()
            },
            kind: GATEWAY_SPAN_KIND,
            queue: QueueSettings {
                capacity,
                ..QueueSettings::default()
            },
            collector: Default::default(),
        }
    }

    fn traceparent(flags: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = format!("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-{flags}");
        h.insert("traceparent", HeaderValue::from_str(&v).expect("header"));
        h
    }

    #[test]
    fn off_costs_no_allocation() {
        let tracer = Tracer::default();
        let headers = traceparent("01");
        let allocations = allocation_counter::measure(|| {
            let span = tracer.start(&headers, SystemTime::now());
            span.inject(|_, _| {});
            tracer.finish(span, &Record::default());
        });
        assert_eq!(allocations.count_total, 0);
    }

    #[test]
    fn unsampled_requests_build_nothing_but_propagate() {
        let (tracer, _task) = Tracer::new(settings(0.0, 4)).expect("tracer");
        let headers = HeaderMap::new();
        let allocations = allocation_counter::measure(|| {
            let span = tracer.start(&headers, SystemTime::now());
            assert!(span.is_active() && !span.is_sampled());
            tracer.finish(span, &Record::default());
        });
        assert_eq!(allocations.count_total, 0);
        let span = tracer.start(&headers, SystemTime::now());
        let mut out = HeaderMap::new();
        span.inject_into(&mut out);
        assert!(out["traceparent"].as_bytes().ends_with(b"-00"));
        assert_eq!(tracer.stats().queued, 0);
    }

    #[test]
    fn parent_decision_wins_and_queue_is_bounded() {
        let (tracer, _task) = Tracer::new(settings(0.0, 2)).expect("tracer");
        for _ in 0..5 {
            let span = tracer.start(&traceparent("01"), SystemTime::now());
            assert!(span.is_sampled());
            assert_eq!(span.trace_id(), Some(TraceId::from(0x0af7651916cd43dd8448eb211c80319c)));
            assert_eq!(span.parent_span_id(), Some(SpanId::from(0xb7ad6b7169203331)));
            tracer.finish(span, &Record::default());
        }
        let stats = tracer.stats();
        assert_eq!((stats.queued, stats.dropped), (2, 3));
        let (tracer, _task) = Tracer::new(settings(100.0, 2)).expect("tracer");
        assert!(!tracer.start(&traceparent("00"), SystemTime::now()).is_sampled());
        assert!(tracer.start(&HeaderMap::new(), SystemTime::now()).is_sampled());
    }

    #[test]
    fn span_attributes() {
        let (tracer, _task) = Tracer::new(settings(100.0, 2)).expect("tracer");
        let start = SystemTime::now();
        let span = tracer.start(&traceparent("01"), start);
        let inner = tracer.inner.as_ref().expect("on");
        let record = Record {
            method: "GET",
            authority: "app.example.com",
            path: "/héllo/world",
            protocol: "HTTP/1.1",
            status: 503,
            response_flags: "UF",
            upstream_cluster: "outbound|80||app.shop.svc.cluster.local",
            end: start + Duration::from_millis(5),
            ..Record::default()
        };
        let data = inner.span_data(span.active.expect("active"), &record);
        let get = |k: &str| {
            data.attributes
                .iter()
                .find(|kv| kv.key.as_str() == k)
                .map(|kv| kv.value.as_str().into_owned())
        };
        assert_eq!(data.name, "app.example.com/*");
        assert_eq!(get("http.url").as_deref(), Some("http://app.example.com/héllo/"));
        assert_eq!(get("http.status_code").as_deref(), Some("503"));
        assert_eq!(get("error").as_deref(), Some("true"));
        assert_eq!(get("user_agent").as_deref(), Some("-"));
        assert_eq!(get("component").as_deref(), Some("proxy"));
        assert_eq!(get("istio.mesh_id").as_deref(), Some("cluster.local"));
        assert_eq!(
            get("upstream_cluster.name").as_deref(),
            Some("outbound|80||app.shop.svc.cluster.local")
        );
        assert_eq!(get("zone"), None);
        assert!(matches!(data.status, Status::Error { .. }));
        assert_eq!(data.span_kind, SpanKind::Client);
        assert_eq!(
            operation_name("app.shop.svc.cluster.local", 80),
            "app.shop.svc.cluster.local:80/*"
        );
    }
}
