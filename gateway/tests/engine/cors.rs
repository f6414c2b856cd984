//! CORS preflights answered by the gateway, response headers for allowed origins.

use strait_gateway::testing::Harness;

use crate::common::*;

const CONFIG: &str = r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app, namespace: default}
spec:
  hosts: [app.example.com]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /strict}}]
    corsPolicy:
      allowOrigins: [{exact: "https://shop.example.com"}]
      allowMethods: [GET]
      unmatchedPreflights: IGNORE
    route: [{destination: {host: backend}}]
  - corsPolicy:
      allowOrigins: [{exact: "https://shop.example.com"}, {regex: "https://.*\\.partner\\.example"}]
      allowMethods: [GET, POST]
      allowHeaders: [authorization, x-token]
      exposeHeaders: [x-echo-name]
      maxAge: 24h
      allowCredentials: true
    route: [{destination: {host: backend}}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflights_and_allowed_origins() {
    let backend = echo("backend", "v1").await;
    let gw = Harness::start(&[
        ("app.yaml", &(http_gateway(&["app.example.com"]) + CONFIG)),
        ("backend.yaml", &backend_entry(&[("v1", backend.addr.port())])),
    ]);
    let c = client(&[("app.example.com", gw.http())], &[]);
    let url = |p: &str| format!("http://app.example.com:{}{p}", gw.http());
    let preflight = |path: &str, origin: &str| {
        c.request(reqwest::Method::OPTIONS, url(path))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };

    // A preflight from an allowed origin is answered by the gateway.
    let resp = preflight("/api", "https://a.partner.example").await.expect("preflight");
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "https://a.partner.example");
    assert_eq!(h["access-control-allow-methods"], "GET,POST");
    assert_eq!(h["access-control-allow-headers"], "authorization,x-token");
    assert_eq!(h["access-control-max-age"], "86400");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert!(h.get("x-echo-name").is_none(), "the backend never saw it");

    // From another origin it goes to the backend (FORWARD, the default)...
    let resp = preflight("/api", "https://evil.example").await.expect("preflight");
    assert_eq!(resp.headers()["x-echo-name"], "backend");
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    // ...or is answered without CORS headers under IGNORE.
    let resp = preflight("/strict", "https://evil.example").await.expect("preflight");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("x-echo-name").is_none());
    assert!(resp.headers().get("access-control-allow-origin").is_none());

    // An actual request from an allowed origin gets the headers on the backend's answer.
    let resp = c
        .get(url("/api"))
        .header("origin", "https://shop.example.com")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.headers()["x-echo-name"], "backend");
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://shop.example.com"
    );
    assert_eq!(resp.headers()["access-control-expose-headers"], "x-echo-name");
    let resp = c
        .get(url("/api"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("request");
    assert!(resp.headers().get("access-control-allow-origin").is_none());
}
