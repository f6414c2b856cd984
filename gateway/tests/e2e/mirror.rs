//! Mirroring: copies reach the shadow backend with `-shadow` on the host, bodies
//! included, in the configured share, and a shadow that never answers does not
//! slow the original request.

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
  - match: [{uri: {prefix: /all}}]
    route: [{destination: {host: main.internal}}]
    mirror: {host: shadow.internal}
  - match: [{uri: {prefix: /half}}]
    route: [{destination: {host: main.internal}}]
    mirrors: [{destination: {host: shadow.internal}, percentage: {value: 50}}]
  - match: [{uri: {prefix: /stuck}}]
    route: [{destination: {host: main.internal}}]
    mirror: {host: stuck.internal}
    mirrorPercentage: {value: 100}
"#;

/// The shadow's count and last request for `key`, waiting for copies in flight.
async fn shadow_seen(shadow: &strait_gateway::echo::EchoServer, key: &str, want: u64) -> (u64, serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let url = format!("http://{}/?key={key}&peek=1", shadow.addr);
        let body: serde_json::Value = reqwest::get(url).await.expect("shadow").json().await.expect("json");
        let seen = body["seen"].as_u64().expect("seen");
        if seen >= want || Instant::now() > deadline {
            return (seen, body["previous"].clone());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_reach_the_shadow_and_never_slow_the_request() {
    let main = echo("main", "v1").await;
    let shadow = echo("shadow", "v1").await;
    // Accepts connections (the kernel completes them) but never answers.
    let stuck = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let config = http_gateway(&["app.example.com"])
        + CONFIG
        + &service_entry("main.internal", "HTTP", &[main.addr.port()])
        + &service_entry("shadow.internal", "HTTP", &[shadow.addr.port()])
        + &service_entry("stuck.internal", "HTTP", &[stuck.local_addr().expect("addr").port()]);
    let (gw, _dir) = start_with(&[("app.yaml", &config)]);
    let c = client(&[("app.example.com", gw.http)], &[]);
    let url = |p: &str| format!("http://app.example.com:{}{p}", gw.http);

    let (status, body) = get_json(&c, &url("/all/items?key=copy1"), &[]).await;
    assert_eq!((status, body["name"].as_str()), (200, Some("main")));
    let (seen, previous) = shadow_seen(&shadow, "copy1", 1).await;
    assert_eq!(seen, 1, "one copy");
    assert_eq!(previous["host"], format!("app.example.com-shadow:{}", gw.http));
    assert_eq!(previous["path"], "/all/items?key=copy1");

    let resp = c
        .post(url("/all/upload?key=copy2"))
        .body("0123456789")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 200);
    let (_, previous) = shadow_seen(&shadow, "copy2", 1).await;
    assert_eq!(
        (previous["method"].as_str(), previous["content_length"].as_u64()),
        (Some("POST"), Some(10))
    );

    for _ in 0..200 {
        let (status, body) = get_json(&c, &url("/half?key=half"), &[]).await;
        assert_eq!((status, body["name"].as_str()), (200, Some("main")));
    }
    let (copies, _) = shadow_seen(&shadow, "half", 200).await;
    assert!((60..=140).contains(&copies), "50% of 200 mirrored: {copies}");

    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(get_json(&c, &url("/stuck"), &[]).await.0, 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a silent shadow slowed requests: {:?}",
        started.elapsed()
    );
}
