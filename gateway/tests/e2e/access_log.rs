//! Access logs in Istio's default text format and in JSON, with Envoy's response
//! flags for each way a request can end: answered upstream (-), no route (NR), no
//! healthy upstream (UH), connection failure after retries (UF,URX), overflow (UO)
//! and a client that went away (DC).

use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::*;

const ROUTES: &str = r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app, namespace: default}
spec:
  hosts: [app.example.com]
  gateways: [gw]
  http:
  - name: down
    match: [{uri: {prefix: /down}}]
    retries: {attempts: 1, retryOn: connect-failure}
    route: [{destination: {host: down.internal}}]
  - name: empty
    match: [{uri: {prefix: /empty}}]
    route: [{destination: {host: empty.internal}}]
  - name: limited
    match: [{uri: {prefix: /limited}}]
    route: [{destination: {host: limited.internal}}]
  - name: backend
    route: [{destination: {host: backend.default.svc.cluster.local}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: empty, namespace: default}
spec:
  hosts: [empty.internal]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: []
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: limited, namespace: default}
spec:
  host: limited.internal
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1}
"#;

fn start(backend: u16, log: &std::path::Path, encoding: &str) -> (Gateway, tempfile::TempDir, tempfile::TempDir) {
    let [down] = free_ports::<1>();
    let config = http_gateway(&["app.example.com"])
        + &backend_entry(&[("v1", backend)])
        + &service_entry("down.internal", "HTTP", &[down])
        + &service_entry("limited.internal", "HTTP", &[backend])
        + ROUTES;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("app.yaml"), config).expect("write");
    let mesh_dir = tempfile::tempdir().expect("tempdir");
    let mesh = mesh_dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh,
        format!("accessLogFile: {}\naccessLogEncoding: {encoding}\n", log.display()),
    )
    .expect("write");
    let gw = Gateway::start(dir.path(), &["--mesh-config", &mesh.display().to_string()]);
    (gw, dir, mesh_dir)
}

/// The log's lines once `n` are there.
async fn lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_lines_with_response_flags() {
    let backend = echo("backend", "v1").await;
    let work = tempfile::tempdir().expect("tempdir");
    let log = work.path().join("access.log");
    let (gw, _dir, _mesh) = start(backend.addr.port(), &log, "TEXT");
    let c = client(&[("app.example.com", gw.http), ("other.example.com", gw.http)], &[]);
    let url = |p: &str| format!("http://app.example.com:{}{p}", gw.http);

    let ok = c
        .get(url("/ok?x=1"))
        .header("user-agent", "strait-test")
        .header("x-request-id", "req-1")
        .send()
        .await
        .expect("request");
    assert_eq!(ok.status(), 200);
    assert_eq!(
        get_json(&c, &format!("http://other.example.com:{}/", gw.http), &[])
            .await
            .0,
        404
    );
    assert_eq!(get_json(&c, &url("/empty"), &[]).await.0, 503);
    assert_eq!(get_json(&c, &url("/down"), &[]).await.0, 503);

    // maxConnections 1 + 1 pending: a third concurrent request overflows.
    let slow = |c: reqwest::Client| {
        let u = url("/limited?delay_ms=800");
        tokio::spawn(async move { c.get(u).send().await.map(|r| r.status().as_u16()) })
    };
    let first = slow(c.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = slow(c.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get_json(&c, &url("/limited"), &[]).await.0, 503);
    assert_eq!(first.await.ok().and_then(Result::ok), Some(200));
    assert_eq!(second.await.ok().and_then(Result::ok), Some(200));

    // The client gives up before the answer.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.http)).expect("connect");
    s.write_all(b"GET /gone?delay_ms=1500 HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
        .expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(s);

    let lines = lines(&log, 8).await;
    let find = |needle: &str| {
        lines
            .iter()
            .find(|l| l.contains(needle))
            .cloned()
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{}", lines.join("\n")))
    };
    let ok = find("\"GET /ok?x=1 HTTP/1.1\"");
    let fields: Vec<&str> = ok.split('"').collect();
    assert!(ok.starts_with('[') && ok.contains("Z] \"GET"), "{ok}");
    assert!(fields[2].starts_with(" 200 - via_upstream - "), "{ok}");
    assert_eq!(fields[7], "strait-test");
    assert_eq!(fields[9], "req-1");
    assert_eq!(fields[11], format!("app.example.com:{}", gw.http));
    assert_eq!(fields[13], backend.addr.to_string());
    assert!(
        fields[14].starts_with(" outbound|80||backend.default.svc.cluster.local - 127.0.0.1:"),
        "{ok}"
    );
    assert!(ok.ends_with(" - backend"), "SNI and route name: {ok}");
    assert!(find("\"GET / HTTP/1.1\"").contains(" 404 NR route_not_found "));
    assert!(find("\"GET /empty HTTP/1.1\"").contains(" 503 UH no_healthy_upstream "));
    assert!(find("\"GET /down HTTP/1.1\"")
        .contains(" 503 UF,URX upstream_reset_before_response_started{connection_failure} "));
    assert!(find("\"GET /limited HTTP/1.1\"").contains(" 503 UO upstream_reset_before_response_started{overflow} "));
    let gone = find("\"GET /gone?delay_ms=1500 HTTP/1.1\"");
    assert!(gone.contains(" DC "), "{gone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines() {
    let backend = echo("backend", "v1").await;
    let work = tempfile::tempdir().expect("tempdir");
    let log = work.path().join("access.json");
    let (gw, _dir, _mesh) = start(backend.addr.port(), &log, "JSON");
    let c = client(&[("app.example.com", gw.http)], &[]);
    let status = get_json(
        &c,
        &format!("http://app.example.com:{}/down", gw.http),
        &[("user-agent", "ua")],
    )
    .await
    .0;
    assert_eq!(status, 503);
    let lines = lines(&log, 1).await;
    let entry: serde_json::Value = serde_json::from_str(&lines[0]).expect("a JSON object per line");
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["path"], "/down");
    assert_eq!(entry["protocol"], "HTTP/1.1");
    assert_eq!(entry["response_code"], 503);
    assert_eq!(entry["response_flags"], "UF,URX");
    assert_eq!(entry["upstream_cluster"], "outbound|80||down.internal");
    assert_eq!(entry["route_name"], "down");
    assert_eq!(entry["user_agent"], "ua");
    assert!(entry["request_id"].as_str().is_some_and(|id| id.len() == 36), "{entry}");
    assert!(entry["start_time"].as_str().is_some_and(|t| t.ends_with('Z')));
}
