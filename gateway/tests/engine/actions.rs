//! Route actions carried out by the engine: rewrites, header operations,
//! redirects, direct responses and httpsRedirect.

use strait_gateway::testing::Harness;

use crate::common::*;

const CONFIG: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [app.example.com]
  - port: {number: 80, name: http-legacy, protocol: HTTP}
    hosts: [legacy.example.com]
    tls: {httpsRedirect: true}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app, namespace: default}
spec:
  hosts: [app.example.com, legacy.example.com]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /old/}}]
    rewrite: {uri: /new/, authority: internal.example.com}
    route: [{destination: {host: backend}}]
  - match: [{uri: {regex: "/users/[0-9]+/profile"}}]
    rewrite:
      uriRegexRewrite: {match: "^/users/([0-9]+)/profile$", rewrite: '/profiles/\1'}
    route: [{destination: {host: backend}}]
  - match: [{uri: {exact: /moved}}]
    redirect: {uri: /here, authority: www.example.com, redirectCode: 308}
  - match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {string: "short and stout"}}
    headers:
      response:
        set: {x-kind: teapot}
  - headers:
      request:
        set: {x-route: default}
        add: {x-added: "yes"}
        remove: [x-secret]
      response:
        set: {x-served-by: strait}
        remove: [x-echo-name]
    route:
    - destination: {host: backend}
      headers:
        request:
          set: {x-destination: backend}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_headers_redirects_and_direct_responses() {
    let backend = echo("backend", "v1").await;
    let gw = Harness::start(&[
        ("app.yaml", CONFIG),
        ("backend.yaml", &backend_entry(&[("v1", backend.addr.port())])),
    ]);
    let p = gw.http();
    let c = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .resolve("app.example.com", ([127, 0, 0, 1], p).into())
        .resolve("legacy.example.com", ([127, 0, 0, 1], p).into())
        .build()
        .expect("client");
    let base = format!("http://app.example.com:{p}");

    let (status, body) = get_json(&c, &format!("{base}/old/page?q=1"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body["path"], "/new/page?q=1");
    assert_eq!(body["host"], "internal.example.com");

    let (_, body) = get_json(&c, &format!("{base}/users/42/profile"), &[]).await;
    assert_eq!(body["path"], "/profiles/42");

    let resp = c.get(format!("{base}/moved?x=1")).send().await.expect("request");
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers()["location"],
        format!("http://www.example.com:{p}/here?x=1").as_str()
    );

    let resp = c.get(format!("{base}/teapot")).send().await.expect("request");
    assert_eq!(resp.status(), 418);
    assert_eq!(resp.headers()["x-kind"], "teapot");
    assert_eq!(resp.text().await.expect("body"), "short and stout");

    let resp = c
        .get(format!("{base}/other"))
        .header("x-secret", "s3cr3t")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.headers()["x-served-by"], "strait");
    assert!(resp.headers().get("x-echo-name").is_none(), "response header removed");
    let body: serde_json::Value = resp.json().await.expect("json");
    let h = &body["headers"];
    assert_eq!(
        (
            h["x-route"].as_str(),
            h["x-added"].as_str(),
            h["x-destination"].as_str()
        ),
        (Some("default"), Some("yes"), Some("backend"))
    );
    assert!(h.get("x-secret").is_none(), "request header removed before forwarding");

    let resp = c
        .get(format!("http://legacy.example.com:{p}/path?a=b"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 301);
    assert_eq!(resp.headers()["location"], "https://legacy.example.com/path?a=b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_or_missing_backends_get_503() {
    let [closed] = free_ports::<1>();
    let config = CONFIG.replace("  - match: [{uri: {prefix: /old/}}]", "  - match: [{uri: {prefix: /ghost}}]\n    route: [{destination: {host: ghost.example.com}}]\n  - match: [{uri: {prefix: /old/}}]");
    let gw = Harness::start(&[
        ("app.yaml", &config),
        ("backend.yaml", &backend_entry(&[("v1", closed)])),
    ]);
    let c = client(&[("app.example.com", gw.http())], &[]);
    let resp = c
        .get(format!("http://app.example.com:{}/other", gw.http()))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 503, "connection refused by the only endpoint");
    assert_eq!(
        resp.text().await.expect("body"),
        "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
    );
    let resp = c
        .get(format!("http://app.example.com:{}/ghost", gw.http()))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 503, "a host no ServiceEntry or Service defines");
    assert_eq!(resp.text().await.expect("body"), "no healthy upstream");
    assert!(config_dump(gw.admin)["warnings"]
        .to_string()
        .contains("no ServiceEntry or Service defines host ghost.example.com"));
}
