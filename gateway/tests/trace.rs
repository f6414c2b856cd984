//! The tracing library against real OTLP receivers on loopback: a tonic
//! `TraceServiceServer` for gRPC and a hyper server decoding OTLP/HTTP protobuf.
//! Spans are made through the same calls the proxy makes (`start`, `inject`,
//! `finish`), and what arrives is compared with the headers that went in and out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message;
use strait_config::tracing::{Provider, Tracing, Transport};
use strait_gateway::trace::{
    operation_name, ExportTask, Identity, QueueSettings, Record, Settings, Tracer, GATEWAY_SPAN_KIND,
};
use tokio::sync::mpsc;

#[path = "otlp/mod.rs"]
mod otlp;
use otlp::{flatten, grpc_collector, Received};

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_ID: &str = "b7ad6b7169203331";

/// One OTLP/HTTP request as the collector saw it.
struct HttpExport {
    path: String,
    headers: HeaderMap,
    body: ExportTraceServiceRequest,
}

/// An OTLP/HTTP protobuf collector on a free loopback port.
async fn http_collector() -> (u16, mpsc::UnboundedReceiver<HttpExport>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let bytes = body.collect().await?.to_bytes();
                        let status = match ExportTraceServiceRequest::decode(bytes) {
                            Ok(body) => {
                                let _ = tx.send(HttpExport {
                                    path: parts.uri.path().to_string(),
                                    headers: parts.headers,
                                    body,
                                });
                                200
                            }
                            Err(_) => 400,
                        };
                        let answer = ExportTraceServiceResponse::default().encode_to_vec();
                        Ok::<_, hyper::Error>(
                            http::Response::builder()
                                .status(status)
                                .header("content-type", "application/x-protobuf")
                                .body(Full::new(Bytes::from(answer)))
                                .expect("response"),
                        )
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    (port, rx)
}

fn settings(port: u16, transport: Transport, sampling: f64) -> Settings {
    Settings {
        tracing: Tracing {
            provider: Provider {
                name: "otel".into(),
                service: "observability/127.0.0.1".into(),
                port,
                transport,
                timeout: Duration::from_secs(2),
                max_tag_length: 256,
                environment_resource: false,
            },
            sampling,
        },
        identity: Identity {
            service_name: "istio-ingressgateway.istio-system".into(),
            node_id: "router~10.0.0.7~istio-ingressgateway-1.istio-system~istio-system.svc.cluster.local".into(),
            zone: "zone-a".into(),
            mesh_id: "cluster.local".into(),
            namespace: "istio-system".into(),
            canonical_service: "istio-ingressgateway".into(),
            canonical_revision: "latest".into(),
            cluster_id: "Kubernetes".into(),
        },
        kind: GATEWAY_SPAN_KIND,
        queue: QueueSettings {
            interval: Duration::from_millis(50),
            ..QueueSettings::default()
        },
        collector: Default::default(),
    }
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.insert(*k, HeaderValue::from_str(v).expect("test header"));
    }
    map
}

/// One proxied request as the proxy would report it: start, inject, finish.
fn proxy_request(tracer: &Tracer, incoming: &HeaderMap, status: u16) -> HeaderMap {
    let start = SystemTime::now();
    let span = tracer.start(incoming, start);
    let mut upstream = incoming.clone();
    span.inject_into(&mut upstream);
    let operation = operation_name("httpbin.default.svc.cluster.local", 8000);
    tracer.finish(
        span,
        &Record {
            operation: &operation,
            method: "GET",
            scheme: "http",
            authority: "httpbin.example.com",
            path: "/status/200?x=1",
            protocol: "HTTP/1.1",
            status,
            request_size: 0,
            response_size: 17,
            response_flags: "",
            upstream_cluster: "outbound|8000||httpbin.default.svc.cluster.local",
            upstream_address: "127.0.0.1:8000",
            peer_address: "127.0.0.1:50000",
            request_id: "3f5a0e1c-8c2b-4d7e-9e55-2f7b0c9d1a11",
            user_agent: "curl/8.5.0",
            downstream_cluster: "",
            end: start + Duration::from_millis(3),
        },
    );
    upstream
}

async fn next_spans<T>(
    rx: &mut mpsc::UnboundedReceiver<T>,
    want: usize,
    into: impl Fn(T) -> Vec<Received>,
) -> Vec<Received> {
    let mut out = Vec::new();
    while out.len() < want {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(request)) => out.extend(into(request)),
            _ => panic!("only {} of {want} spans arrived", out.len()),
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The trace id and span id of a `traceparent`, and whether it says sampled.
fn traceparent(upstream: &HeaderMap) -> (String, String, bool) {
    let value = upstream["traceparent"].to_str().expect("ascii").to_string();
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    (parts[1].to_string(), parts[2].to_string(), parts[3] == "01")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_spans_continue_w3c_and_b3_parents() {
    let (port, mut rx) = grpc_collector().await;
    // 0% configured: only the parents' sampled flags get these exported.
    let (tracer, task) = Tracer::new(settings(port, Transport::Grpc { metadata: vec![] }, 0.0)).expect("tracer");
    tokio::spawn(task.run());

    let w3c_in = headers(&[
        ("traceparent", &format!("00-{TRACE_ID}-{PARENT_ID}-01")),
        ("tracestate", "congo=t61rcWkgMzE"),
    ]);
    let w3c_out = proxy_request(&tracer, &w3c_in, 200);
    let (trace_id, span_id, sampled) = traceparent(&w3c_out);
    assert_eq!((trace_id.as_str(), sampled), (TRACE_ID, true));
    assert_ne!(span_id, PARENT_ID);
    assert_eq!(w3c_out["tracestate"], "congo=t61rcWkgMzE");
    assert!(w3c_out.get("b3").is_none() && w3c_out.get("x-b3-traceid").is_none());

    let b3_trace = "463ac35c9f6413ad48485a3953bb6124";
    let b3_in = headers(&[
        ("x-b3-traceid", b3_trace),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ("x-b3-sampled", "1"),
    ]);
    let b3_out = proxy_request(&tracer, &b3_in, 503);
    let (b3_trace_out, b3_span_out, _) = traceparent(&b3_out);
    assert_eq!(b3_trace_out, b3_trace);
    assert_eq!(b3_out["x-b3-traceid"], b3_trace);
    assert_eq!(b3_out["x-b3-spanid"], b3_span_out.as_str());
    assert_eq!(b3_out["x-b3-parentspanid"], "a2fb4a1d1a96d312");
    assert_eq!(b3_out["x-b3-sampled"], "1");

    let mut spans = next_spans(&mut rx, 2, flatten).await;
    spans.sort_by_key(|s| s.attr("http.status_code"));
    let (ok, failed) = (&spans[0], &spans[1]);
    assert_eq!(ok.service_name, "istio-ingressgateway.istio-system");
    assert_eq!(ok.span.name, "httpbin.default.svc.cluster.local:8000/*");
    assert_eq!(ok.span.kind, 3, "CLIENT, as Envoy for gateway listeners");
    assert_eq!(hex(&ok.span.trace_id), TRACE_ID);
    assert_eq!(hex(&ok.span.parent_span_id), PARENT_ID);
    assert_eq!(hex(&ok.span.span_id), span_id, "the upstream's parent is this span");
    assert_eq!(ok.span.trace_state, "congo=t61rcWkgMzE");
    assert_eq!(ok.span.end_time_unix_nano - ok.span.start_time_unix_nano, 3_000_000);
    let expected = [
        ("http.method", "GET"),
        ("http.url", "http://httpbin.example.com/status/200?x=1"),
        ("http.protocol", "HTTP/1.1"),
        ("http.status_code", "200"),
        ("upstream_cluster", "outbound|8000||httpbin.default.svc.cluster.local"),
        (
            "upstream_cluster.name",
            "outbound|8000||httpbin.default.svc.cluster.local",
        ),
        (
            "node_id",
            "router~10.0.0.7~istio-ingressgateway-1.istio-system~istio-system.svc.cluster.local",
        ),
        ("zone", "zone-a"),
        ("guid:x-request-id", "3f5a0e1c-8c2b-4d7e-9e55-2f7b0c9d1a11"),
        ("downstream_cluster", "-"),
        ("user_agent", "curl/8.5.0"),
        ("request_size", "0"),
        ("response_size", "17"),
        ("response_flags", "-"),
        ("component", "proxy"),
        ("istio.canonical_service", "istio-ingressgateway"),
        ("istio.mesh_id", "cluster.local"),
        ("istio.namespace", "istio-system"),
        ("peer.address", "127.0.0.1:50000"),
    ];
    for (key, value) in expected {
        assert_eq!(ok.attr(key).as_deref(), Some(value), "{key}");
    }
    assert_eq!(ok.attr("error"), None);
    assert_eq!(ok.span.status.as_ref().map_or(0, |s| s.code), 0);

    assert_eq!(hex(&failed.span.trace_id), b3_trace);
    assert_eq!(hex(&failed.span.parent_span_id), "a2fb4a1d1a96d312");
    assert_eq!(hex(&failed.span.span_id), b3_span_out);
    assert_eq!(failed.attr("error").as_deref(), Some("true"));
    assert_eq!(
        failed.span.status.as_ref().map(|s| s.code),
        Some(2),
        "STATUS_CODE_ERROR"
    );
    // The collector has answered; the task counts once the answer is read.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tracer.stats().exported < 2 {
        assert!(Instant::now() < deadline, "{:?}", tracer.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_export_of_sampled_root_and_b3_single() {
    let (port, mut rx) = http_collector().await;
    let transport = Transport::Http {
        path: "/otlp/v1/traces".into(),
        headers: vec![("x-tenant".into(), "shop".into())],
    };
    let (tracer, task) = Tracer::new(settings(port, transport, 100.0)).expect("tracer");
    let thread = task.spawn_thread().expect("export thread");

    let root_out = proxy_request(&tracer, &HeaderMap::new(), 200);
    let (root_trace, root_span, sampled) = traceparent(&root_out);
    assert!(sampled, "100% sampling");
    let b3_in = headers(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")]);
    let b3_out = proxy_request(&tracer, &b3_in, 200);
    let (b3_trace, b3_span, _) = traceparent(&b3_out);
    assert_eq!(b3_trace, "80f198ee56343ba864fe8b2a57d3eff7");
    assert_eq!(
        b3_out["b3"],
        format!("80f198ee56343ba864fe8b2a57d3eff7-{b3_span}-1-e457b5a2e4d86bd1").as_str()
    );

    let spans = next_spans(&mut rx, 2, |e: HttpExport| {
        assert_eq!(e.headers["content-type"], "application/x-protobuf");
        flatten(e.body)
    })
    .await;
    let by_trace: HashMap<String, &Received> = spans.iter().map(|s| (hex(&s.span.trace_id), s)).collect();
    let root = by_trace[&root_trace];
    assert_eq!(hex(&root.span.span_id), root_span);
    assert!(root.span.parent_span_id.is_empty(), "a root span has no parent");
    let child = by_trace["80f198ee56343ba864fe8b2a57d3eff7"];
    assert_eq!(hex(&child.span.parent_span_id), "e457b5a2e4d86bd1");
    assert_eq!(hex(&child.span.span_id), b3_span);
    assert_eq!(child.attr("http.status_code").as_deref(), Some("200"));
    drop(tracer);
    // Dropping the last Tracer ends the export thread.
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .expect("join")
        .expect("thread");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_collector_sees_the_configured_path_and_headers() {
    let (port, mut rx) = http_collector().await;
    let transport = Transport::Http {
        path: "/otlp/v1/traces".into(),
        headers: vec![("x-tenant".into(), "shop".into())],
    };
    let (tracer, task) = Tracer::new(settings(port, transport, 100.0)).expect("tracer");
    tokio::spawn(task.run());
    proxy_request(&tracer, &HeaderMap::new(), 200);
    let export = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("in time")
        .expect("an export");
    assert_eq!(export.path, "/otlp/v1/traces");
    assert_eq!(export.headers["x-tenant"], "shop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_percent_exports_nothing_but_still_propagates() {
    let (port, mut rx) = grpc_collector().await;
    let (tracer, task) = Tracer::new(settings(port, Transport::Grpc { metadata: vec![] }, 0.0)).expect("tracer");
    tokio::spawn(task.run());
    let mut ids = std::collections::HashSet::new();
    for _ in 0..20 {
        let out = proxy_request(&tracer, &HeaderMap::new(), 200);
        let (trace_id, span_id, sampled) = traceparent(&out);
        assert!(!sampled, "sampled flag 0");
        assert_ne!(trace_id, "0".repeat(32));
        ids.insert(trace_id);
        assert_ne!(span_id, "0".repeat(16));
    }
    assert_eq!(ids.len(), 20, "each request starts its own trace");
    // A parent that said "not sampled" is honoured too, and its trace continues.
    let out = proxy_request(
        &tracer,
        &headers(&[("traceparent", &format!("00-{TRACE_ID}-{PARENT_ID}-00"))]),
        200,
    );
    assert_eq!(traceparent(&out), (TRACE_ID.to_string(), traceparent(&out).1, false));
    // Several flush intervals pass with nothing to send.
    assert!(tokio::time::timeout(Duration::from_millis(400), rx.recv())
        .await
        .is_err());
    assert_eq!(tracer.stats().queued, 0);
}

/// Counts error lines mentioning a port, to prove the rate limit of export errors.
struct CountingLogger {
    port: AtomicU64,
    lines: AtomicU64,
}

impl log::Log for CountingLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Error
    }
    fn log(&self, record: &log::Record<'_>) {
        let port = self.port.load(Ordering::Relaxed);
        if record.level() == log::Level::Error && format!("{}", record.args()).contains(&format!(":{port} failed")) {
            self.lines.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn flush(&self) {}
}

static LOGGER: CountingLogger = CountingLogger {
    port: AtomicU64::new(0),
    lines: AtomicU64::new(0),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_down_never_blocks_and_logs_once_a_minute() {
    // A port nobody listens on: connections are refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    LOGGER.port.store(u64::from(port), Ordering::Relaxed);
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Error);
    let mut s = settings(port, Transport::Grpc { metadata: vec![] }, 100.0);
    s.tracing.provider.timeout = Duration::from_millis(300);
    s.queue = QueueSettings {
        capacity: 16,
        batch_size: 4,
        interval: Duration::from_millis(10),
        error_log_interval: Duration::from_secs(60),
    };
    let (tracer, task): (Tracer, ExportTask) = Tracer::new(s).expect("tracer");
    tokio::spawn(task.run());

    let began = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..2000 {
        let t = Instant::now();
        let out = proxy_request(&tracer, &HeaderMap::new(), 200);
        slowest = slowest.max(t.elapsed());
        assert!(out.contains_key("traceparent"));
    }
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "2000 requests took {:?}",
        began.elapsed()
    );
    assert!(slowest < Duration::from_millis(50), "slowest call {slowest:?}");
    let stats = tracer.stats();
    assert!(stats.dropped > 0, "a full queue drops spans: {stats:?}");

    // Let several exports fail.
    let deadline = Instant::now() + Duration::from_secs(20);
    while tracer.stats().failed < 12 {
        assert!(
            Instant::now() < deadline,
            "exports did not fail in time: {:?}",
            tracer.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = tracer.stats();
    assert_eq!(stats.exported, 0);
    assert_eq!(stats.errors_logged, 1, "{stats:?}");
    assert_eq!(LOGGER.lines.load(Ordering::Relaxed), 1);
    // The request path is still prompt while exports keep failing.
    let t = Instant::now();
    proxy_request(&tracer, &HeaderMap::new(), 200);
    assert!(t.elapsed() < Duration::from_millis(50));
}
