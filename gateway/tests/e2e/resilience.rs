//! Timeouts, retries and injected faults, against echo backends told to fail,
//! reset, stall or wait (query-string controls), with Istio's semantics.

use std::time::{Duration, Instant};

use crate::support::*;

const CONFIG: &str = r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app, namespace: default}
spec:
  hosts: [app.example.com]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /flaky}}]
    retries: {attempts: 3, retryOn: 5xx}
    route: [{destination: {host: backend}}]
  - match: [{uri: {prefix: /noretry}}]
    retries: {attempts: 0}
    route: [{destination: {host: backend}}]
  - match: [{uri: {prefix: /slow}}]
    timeout: 1s
    retries: {attempts: 5, perTryTimeout: 300ms, retryOn: 5xx}
    route: [{destination: {host: backend}}]
  - match: [{uri: {prefix: /deadline}}]
    timeout: 400ms
    route: [{destination: {host: backend}}]
  - match: [{uri: {prefix: /reset}}]
    retries: {attempts: 2, retryOn: reset}
    route: [{destination: {host: backend}}]
  - match: [{uri: {prefix: /codes}}]
    retries: {attempts: 1, retryOn: "409"}
    route: [{destination: {host: backend}}]
  - match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: backend}}]
  - match: [{uri: {prefix: /grpc-abort}}]
    fault: {abort: {grpcStatus: UNAVAILABLE}}
    route: [{destination: {host: backend}}]
  - match: [{uri: {prefix: /half}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 50}}}
    retries: {attempts: 0}
    route: [{destination: {host: backend}}]
  - match: [{uri: {prefix: /delayed}}]
    fault: {delay: {fixedDelay: 300ms}}
    route: [{destination: {host: backend}}]
  - route: [{destination: {host: backend}}]
"#;

struct Setup {
    gw: Gateway,
    client: reqwest::Client,
    backend: strait_gateway::echo::EchoServer,
    _dir: tempfile::TempDir,
}

async fn setup(extra_endpoint: Option<u16>) -> Setup {
    let backend = echo("backend", "v1").await;
    let mut endpoints = vec![("v1", backend.addr.port())];
    if let Some(p) = extra_endpoint {
        endpoints.push(("v1", p));
    }
    let (gw, dir) = start_with(&[
        ("app.yaml", &(http_gateway(&["app.example.com"]) + CONFIG)),
        ("backend.yaml", &backend_entry(&endpoints)),
    ]);
    let client = client(&[("app.example.com", gw.http)], &[]);
    Setup {
        gw,
        client,
        backend,
        _dir: dir,
    }
}

impl Setup {
    fn url(&self, path: &str) -> String {
        format!("http://app.example.com:{}{path}", self.gw.http)
    }

    async fn get(&self, path: &str) -> (u16, String, Duration) {
        let started = Instant::now();
        let resp = self.client.get(self.url(path)).send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default(), started.elapsed())
    }

    /// How many requests with `key` the backend has seen.
    async fn seen(&self, key: &str) -> u64 {
        let url = format!("http://{}/?key={key}&peek=1", self.backend.addr);
        let body: serde_json::Value = reqwest::get(url).await.expect("backend").json().await.expect("json");
        body["seen"].as_u64().expect("seen")
    }
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not echo JSON: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_hide_failures_the_policy_covers() {
    let s = setup(None).await;

    // Fails twice, then answers: 3 retries hide it.
    let (status, body, _) = s.get("/flaky?fail=2&key=flaky").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["seen"], 3);

    // No `retries`: Istio's default policy retries 503 twice...
    let (status, body, _) = s.get("/any?fail=2&key=default503").await;
    assert_eq!((status, json(&body)["seen"].as_u64()), (200, Some(3)));
    // ...but not 500.
    let (status, _, _) = s.get("/any?fail=1&fail_status=500&key=default500").await;
    assert_eq!(status, 500);
    assert_eq!(s.seen("default500").await, 1);

    // attempts: 0 disables retries.
    let (status, _, _) = s.get("/noretry?fail=1&key=noretry").await;
    assert_eq!(status, 503);
    assert_eq!(s.seen("noretry").await, 1);

    // Numbers in retryOn are retriable status codes.
    let (status, body, _) = s.get("/codes?fail=1&fail_status=409&key=codes").await;
    assert_eq!((status, json(&body)["seen"].as_u64()), (200, Some(2)));

    // A reset before the answer, retried twice, then Envoy's 503.
    let (status, body, _) = s.get("/reset?reset=1&key=reset").await;
    assert_eq!(status, 503);
    assert!(body.contains("reset before headers"), "{body}");
    assert_eq!(s.seen("reset").await, 3);

    // When retries run out, the last upstream answer is what the client gets.
    let (status, body, _) = s.get("/flaky?fail=9&fail_status=502&key=exhausted").await;
    assert_eq!(status, 502);
    assert_eq!(json(&body)["seen"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_try_timeouts_and_the_route_deadline_give_504() {
    let s = setup(None).await;

    // Each try stalls; tries of 300 ms are retried until the 1 s deadline.
    let (status, body, took) = s.get("/slow?stall=1&key=slow").await;
    assert_eq!(status, 504);
    assert_eq!(body, "upstream request timeout");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "deadline at 1 s, took {took:?}"
    );
    let tries = s.seen("slow").await;
    assert!((3..=4).contains(&tries), "tries of 300 ms in 1 s: {tries}");

    // A backend slower than the route timeout, no retry on timeouts by default.
    let (status, _, took) = s.get("/deadline?delay_ms=3000&key=deadline").await;
    assert_eq!(status, 504);
    assert!(took < Duration::from_millis(2000), "took {took:?}");
    assert_eq!(s.seen("deadline").await, 1);

    // Within the deadline, the answer passes.
    let (status, _, _) = s.get("/deadline?delay_ms=50").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_go_to_another_endpoint() {
    let [dead] = free_ports::<1>();
    let s = setup(Some(dead)).await;
    for i in 0..20 {
        let (status, body, _) = s.get(&format!("/any?n={i}")).await;
        assert_eq!(status, 200, "request {i}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_abort_and_delay() {
    let s = setup(None).await;

    let (status, body, _) = s.get("/abort?key=abort").await;
    assert_eq!((status, body.as_str()), (418, "fault filter abort"));
    assert_eq!(s.seen("abort").await, 0, "an aborted request never reaches the backend");

    let resp = s.client.get(s.url("/grpc-abort")).send().await.expect("request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["grpc-status"], "14");
    assert_eq!(resp.headers()["content-type"], "application/grpc");

    let (status, _, took) = s.get("/delayed").await;
    assert_eq!(status, 200);
    assert!(took >= Duration::from_millis(300), "delayed by 300 ms, took {took:?}");

    let mut aborted = 0;
    for _ in 0..400 {
        if s.get("/half").await.0 == 503 {
            aborted += 1;
        }
    }
    assert!((140..=260).contains(&aborted), "50% of 400 aborted: {aborted}");
}
