//! Traces through the real gateway: a request carrying a W3C parent reaches the
//! upstream with the same trace and the gateway's span as parent, and the span
//! arrives at an OTLP/gRPC collector with Istio's name and attributes.

use std::time::{Duration, Instant};

use crate::otlp::{flatten, grpc_collector, Received};
use crate::support::*;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_and_context_goes_upstream() {
    let (collector, mut spans) = grpc_collector().await;
    let backend = echo("backend", "v1").await;
    let config = http_gateway(&["app.example.com"])
        + &backend_entry(&[("v1", backend.addr.port())])
        + &virtual_service(
            "app",
            &["app.example.com"],
            &["gw"],
            &route_to("backend.default.svc.cluster.local"),
        );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("app.yaml"), config).expect("write");
    let mesh_dir = tempfile::tempdir().expect("tempdir");
    let mesh = mesh_dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh,
        format!(
            "extensionProviders:\n- name: otel\n  opentelemetry: {{service: 127.0.0.1, port: {collector}}}\ndefaultProviders: {{tracing: [otel]}}\ndefaultConfig: {{tracing: {{sampling: 100}}}}\n"
        ),
    )
    .expect("write");
    let gw = Gateway::start(dir.path(), &["--mesh-config", &mesh.display().to_string()]);
    let c = client(&[("app.example.com", gw.http)], &[]);
    let parent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let (status, echo) = get_json(
        &c,
        &format!("http://app.example.com:{}/traced", gw.http),
        &[("traceparent", &parent)],
    )
    .await;
    assert_eq!(status, 200);
    let upstream = echo["headers"]["traceparent"].as_str().unwrap_or_default().to_string();
    let parts: Vec<&str> = upstream.split('-').collect();
    assert_eq!((parts[0], parts[1], parts[3]), ("00", TRACE_ID, "01"), "{upstream}");
    assert_ne!(parts[2], PARENT_ID, "the gateway's own span is the upstream's parent");

    let deadline = Instant::now() + Duration::from_secs(20);
    let span: Received = loop {
        let batch = tokio::time::timeout(Duration::from_millis(500), spans.recv()).await;
        if let Ok(Some(request)) = batch {
            if let Some(s) = flatten(request).into_iter().next() {
                break s;
            }
        }
        assert!(Instant::now() < deadline, "no span reached the collector");
    };
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!(hex(&span.span.trace_id), TRACE_ID);
    assert_eq!(hex(&span.span.parent_span_id), PARENT_ID);
    assert_eq!(hex(&span.span.span_id), parts[2]);
    assert_eq!(span.span.name, "backend.default.svc.cluster.local:80/*");
    assert_eq!(span.service_name, "istio-ingressgateway.default");
    assert_eq!(span.attr("http.status_code").as_deref(), Some("200"));
    assert_eq!(
        span.attr("upstream_cluster").as_deref(),
        Some("outbound|80||backend.default.svc.cluster.local")
    );
    assert_eq!(span.attr("http.method").as_deref(), Some("GET"));
    assert!(span.attr("guid:x-request-id").is_some_and(|id| id.len() == 36));
}

/// A collector named by its service in the registry, as a cluster's mesh config
/// names it (`otel-collector.observability.svc.cluster.local`, which no DNS here
/// knows): spans go to that service's endpoints, as Istio resolves extension
/// providers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_named_by_its_service_is_reached_through_the_registry() {
    let (collector, mut spans) = grpc_collector().await;
    let backend = echo("backend", "v1").await;
    let collector_service = format!(
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: otel-collector, namespace: observability}}\nspec:\n  hosts: [otel-collector.observability.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 4317, name: grpc-otlp, protocol: GRPC}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{grpc-otlp: {collector}}}}}]\n---\n"
    );
    let config = http_gateway(&["app.example.com"])
        + &backend_entry(&[("v1", backend.addr.port())])
        + &collector_service
        + &virtual_service(
            "app",
            &["app.example.com"],
            &["gw"],
            &route_to("backend.default.svc.cluster.local"),
        );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("app.yaml"), config).expect("write");
    let mesh_dir = tempfile::tempdir().expect("tempdir");
    let mesh = mesh_dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh,
        "extensionProviders:\n- name: otel\n  opentelemetry: {service: otel-collector.observability.svc.cluster.local, port: 4317}\ndefaultProviders: {tracing: [otel]}\ndefaultConfig: {tracing: {sampling: 100}}\n",
    )
    .expect("write");
    let gw = Gateway::start(dir.path(), &["--mesh-config", &mesh.display().to_string()]);
    let c = client(&[("app.example.com", gw.http)], &[]);
    let (status, body) = get_json(&c, &format!("http://app.example.com:{}/traced", gw.http), &[]).await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let batch = tokio::time::timeout(Duration::from_millis(500), spans.recv()).await;
        if let Ok(Some(request)) = batch {
            if !flatten(request).is_empty() {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no span reached the collector named by its service"
        );
    }
}
