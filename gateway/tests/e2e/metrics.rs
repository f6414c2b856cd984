//! Istio's metrics on the metrics port: known traffic (200s, 503s after retries, a
//! 404 without a route, a gRPC call) gives exact counters and Istio's label sets,
//! and a real Prometheus (the Debian package) scraping the gateway answers one of
//! Istio's dashboard queries.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::support::*;

const ROUTES: &str = r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app, namespace: default}
spec:
  hosts: [app.example.com]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /down}}]
    retries: {attempts: 1, retryOn: connect-failure}
    route: [{destination: {host: down.internal}}]
  - route: [{destination: {host: backend.default.svc.cluster.local}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: grpc, namespace: default}
spec:
  hosts: [grpc.example.com]
  gateways: [gw]
  http:
  - route: [{destination: {host: health.internal}}]
"#;

/// The value of the sample of `name` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The metrics port's page once `ready` holds for it (or after 5 s, for the test's
/// assertions to report). A request is counted when it ends, which can be just after
/// its client has read the whole answer, as with Envoy.
async fn scrape_until(port: u16, ready: impl Fn(&str) -> bool) -> String {
    let url = format!("http://127.0.0.1:{port}/stats/prometheus");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let text = reqwest::get(&url).await.expect("scrape").text().await.expect("body");
        if ready(&text) || std::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Istio's label names, all of which every request sample carries.
const ISTIO_LABELS: [&str; 21] = [
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

/// A gateway in front of an echo backend, a gRPC health server and a closed port,
/// after known traffic: three 200s, two 503s (after a retry each), a 404 without a
/// route and a gRPC call.
struct KnownTraffic {
    gw: Gateway,
    _dir: tempfile::TempDir,
    _backend: strait_gateway::echo::EchoServer,
    _reporter: tonic_health::server::HealthReporter,
}

impl KnownTraffic {
    async fn start() -> KnownTraffic {
        let backend = echo("backend", "v1").await;
        let (reporter, health) = tonic_health::server::health_reporter();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let grpc_port = listener.local_addr().expect("addr").port();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(tokio_stream_from(listener)),
        );
        let [down] = free_ports::<1>();
        let config = http_gateway(&["app.example.com", "grpc.example.com"])
            + &backend_entry(&[("v1", backend.addr.port())])
            + &service_entry("down.internal", "HTTP", &[down])
            + &service_entry("health.internal", "GRPC", &[grpc_port])
            + ROUTES;
        let (gw, dir) = start_with(&[("app.yaml", &config)]);
        let c = client(&[("app.example.com", gw.http), ("other.example.com", gw.http)], &[]);
        for _ in 0..3 {
            assert_eq!(
                get_json(&c, &format!("http://app.example.com:{}/ok", gw.http), &[])
                    .await
                    .0,
                200
            );
        }
        for _ in 0..2 {
            assert_eq!(
                get_json(&c, &format!("http://app.example.com:{}/down", gw.http), &[])
                    .await
                    .0,
                503
            );
        }
        assert_eq!(
            get_json(&c, &format!("http://other.example.com:{}/", gw.http), &[])
                .await
                .0,
            404
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", gw.http))
            .expect("endpoint")
            .origin("http://grpc.example.com".parse().expect("origin"))
            .connect()
            .await
            .expect("h2c");
        let mut grpc = HealthClient::new(channel);
        grpc.check(HealthCheckRequest { service: String::new() })
            .await
            .expect("health check");
        KnownTraffic {
            gw,
            _dir: dir,
            _backend: backend,
            _reporter: reporter,
        }
    }

    /// What the metrics port shows once the last request (the gRPC check) is counted.
    async fn scrape(&self) -> String {
        scrape_until(self.gw.metrics, |text| {
            sample(text, "istio_requests_total", &[("request_protocol", "grpc")]).is_some()
        })
        .await
    }
}

/// The labels of the three 200s.
const OK: [(&str, &str); 6] = [
    ("destination_service", "backend.default.svc.cluster.local"),
    ("destination_service_name", "backend"),
    ("destination_service_namespace", "default"),
    ("request_protocol", "http"),
    ("response_code", "200"),
    ("response_flags", "-"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_with_istios_labels() {
    let traffic = KnownTraffic::start().await;
    let text = traffic.scrape().await;
    let requests = |labels: &[(&str, &str)]| sample(&text, "istio_requests_total", labels);
    let source = [
        ("reporter", "source"),
        ("source_workload", "istio-ingressgateway"),
        ("source_workload_namespace", "default"),
        ("source_principal", "unknown"),
        ("connection_security_policy", "unknown"),
    ];
    assert_eq!(requests(&[&source[..], &OK[..]].concat()), Some(3.0), "{text}");
    let failed = [
        ("destination_service", "down.internal"),
        ("response_code", "503"),
        ("response_flags", "UF,URX"),
    ];
    assert_eq!(requests(&failed), Some(2.0), "{text}");
    let no_route = [
        ("destination_service", "unknown"),
        ("response_code", "404"),
        ("response_flags", "NR"),
    ];
    assert_eq!(requests(&no_route), Some(1.0), "{text}");
    let grpc_call = [
        ("destination_service", "health.internal"),
        ("request_protocol", "grpc"),
        ("response_code", "200"),
        ("grpc_response_status", "0"),
    ];
    assert_eq!(requests(&grpc_call), Some(1.0), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("istio_requests_total{"))
        .unwrap_or_default();
    for label in ISTIO_LABELS {
        assert!(line.contains(&format!("{label}=\"")), "{label} missing from {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_sizes_retries_and_connect_failures_are_measured() {
    let traffic = KnownTraffic::start().await;
    let text = traffic.scrape().await;
    assert_eq!(
        sample(&text, "istio_request_duration_milliseconds_count", &OK),
        Some(3.0)
    );
    assert!(
        text.contains("istio_request_duration_milliseconds_bucket{") && text.contains("le=\"0.5\""),
        "Istio's buckets"
    );
    assert_eq!(sample(&text, "istio_response_bytes_count", &OK), Some(3.0));
    let down_cluster = [("cluster_name", "outbound|80||down.internal")];
    assert_eq!(
        sample(&text, "envoy_cluster_upstream_rq_retry", &down_cluster),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "envoy_cluster_upstream_cx_connect_fail", &down_cluster),
        Some(4.0)
    );
    assert!(text.contains("strait_config_version 1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scraping_the_gateway_answers_the_dashboards_success_rate() {
    let traffic = KnownTraffic::start().await;
    // A real Prometheus scrapes the gateway and answers the mesh dashboard's
    // success-rate expression (over the counters, as rate() needs a longer run).
    let [prom_port] = free_ports::<1>();
    let work = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "global: {{scrape_interval: 1s}}\nscrape_configs:\n- job_name: strait\n  metrics_path: /stats/prometheus\n  static_configs: [{{targets: ['127.0.0.1:{}']}}]\n",
        traffic.gw.metrics
    );
    std::fs::write(work.path().join("prometheus.yml"), config).expect("write");
    let mut prometheus = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            work.path().join("prometheus.yml").display()
        ))
        .arg(format!("--storage.tsdb.path={}", work.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian package prometheus) is needed");
    let query = r#"sum(istio_requests_total{reporter="source",response_code!~"5.*"}) / sum(istio_requests_total{reporter="source"})"#;
    let api = format!("http://127.0.0.1:{prom_port}/api/v1/query");
    let deadline = Instant::now() + Duration::from_secs(30);
    let value = loop {
        let answer = reqwest::Client::new().get(&api).query(&[("query", query)]).send().await;
        if let Ok(r) = answer {
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            if let Some(v) = body["data"]["result"][0]["value"][1].as_str() {
                break v.parse::<f64>().unwrap_or(f64::NAN);
            }
        }
        assert!(Instant::now() < deadline, "prometheus never answered");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert!((value - 5.0 / 7.0).abs() < 1e-9, "success rate {value}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_workload_and_build_version() {
    let v1 = echo("reviews", "v1").await;
    let v2 = echo("reviews", "v2").await;
    let workload_entry = |name: &str, version: &str, port: u16| {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  address: 127.0.0.1\n  ports: {{http: {port}}}\n  labels: {{app: reviews, version: {version}}}\n"
        )
    };
    let config = http_gateway(&["reviews.example.com"])
        + r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.example.com]
  gateways: [gw]
  http:
  - match: [{headers: {x-version: {exact: v2}}}]
    route: [{destination: {host: reviews.default.svc.cluster.local, subset: v2}}]
  - route: [{destination: {host: reviews.default.svc.cluster.local, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"# + &workload_entry("reviews-v1", "v1", v1.addr.port())
        + &workload_entry("reviews-v2", "v2", v2.addr.port());
    let (gw, _dir) = start_with(&[("reviews.yaml", &config)]);
    let c = client(&[("reviews.example.com", gw.http)], &[]);
    let url = format!("http://reviews.example.com:{}/", gw.http);
    for _ in 0..2 {
        assert_eq!(get_json(&c, &url, &[]).await.0, 200);
    }
    assert_eq!(get_json(&c, &url, &[("x-version", "v2")]).await.0, 200);

    let text = scrape_until(gw.metrics, |text| text.contains("destination_workload=\"reviews-v2\"")).await;
    let requests = |workload: &str| {
        sample(
            &text,
            "istio_requests_total",
            &[
                ("source_workload", "istio-ingressgateway"),
                ("source_app", "istio-ingressgateway"),
                ("destination_workload", workload),
                ("destination_workload_namespace", "default"),
                ("destination_service_name", "reviews"),
            ],
        )
    };
    assert_eq!(requests("reviews-v1"), Some(2.0), "{text}");
    assert_eq!(requests("reviews-v2"), Some(1.0), "{text}");
    let build = format!(
        "istio_build{{component=\"proxy\",tag=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.lines().any(|l| l == build), "{build} missing from {text}");
}
