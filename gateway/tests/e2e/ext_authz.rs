//! AuthorizationPolicy CUSTOM: an external HTTP authorization service (Istio's
//! `envoyExtAuthzHttp` provider) on loopback decides; its headers reach the upstream
//! and the client as the provider says; an unreachable one fails closed or open.

use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// An authorization service: allows requests carrying `x-ext-authz: allow`, and
/// remembers the check requests it got.
async fn authz_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let allow = head.contains("\r\nx-ext-authz: allow\r\n");
                if let Ok(mut l) = log.lock() {
                    l.push(head);
                }
                let response = if allow {
                    "HTTP/1.1 200 OK\r\nx-ext-authz-check-result: allowed\r\nx-current-user: bob\r\nx-auth-debug: allow-trace\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_string()
                } else {
                    let body = format!("denied by ext_authz for {path}");
                    format!(
                        "HTTP/1.1 403 Forbidden\r\nx-ext-authz-check-result: denied\r\nx-secret: internal\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    (port, seen)
}

const MESH: &str = r#"
extensionProviders:
- name: sample-ext-authz-http
  envoyExtAuthzHttp:
    service: ext-authz.default.svc.cluster.local
    port: 80
    pathPrefix: /check
    timeout: 2s
    includeRequestHeadersInCheck: [x-ext-authz]
    headersToUpstreamOnAllow: [x-current-user]
    headersToDownstreamOnAllow: [x-auth-debug]
    headersToDownstreamOnDeny: [x-ext-authz-check-result, content-type]
- name: closed
  envoyExtAuthzHttp: {service: down.default.svc.cluster.local, port: 80, statusOnError: "503"}
- name: open
  envoyExtAuthzHttp: {service: down.default.svc.cluster.local, port: 80, failOpen: true}
- name: zipkin
  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}
"#;

fn policy(name: &str, provider: &str, paths: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  action: CUSTOM\n  provider: {{name: {provider}}}\n  rules: [{{to: [{{operation: {{paths: [\"{paths}\"]}}}}]}}]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_policies_ask_the_authorizer() {
    let backend = echo("backend", "v1").await;
    let (authz_port, checks) = authz_server().await;
    let [down] = free_ports::<1>();
    let config = http_gateway(&["app.example.com"])
        + &backend_entry(&[("v1", backend.addr.port())])
        + &service_entry("ext-authz.default.svc.cluster.local", "HTTP", &[authz_port])
        + &service_entry("down.default.svc.cluster.local", "HTTP", &[down])
        + &virtual_service(
            "app",
            &["app.example.com"],
            &["gw"],
            &route_to("backend.default.svc.cluster.local"),
        )
        + &policy("ext", "sample-ext-authz-http", "/api/*")
        + &policy("closed", "closed", "/closed/*")
        + &policy("open", "open", "/open/*")
        + &policy("nobody", "missing", "/unknown/*")
        + "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: no-forbidden, namespace: default}\nspec:\n  action: DENY\n  rules: [{to: [{operation: {paths: [/api/forbidden]}}]}]\n";
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("app.yaml"), config).expect("write");
    let mesh_dir = tempfile::tempdir().expect("tempdir");
    let mesh_file = mesh_dir.path().join("mesh.yaml");
    std::fs::write(&mesh_file, MESH).expect("write");
    let gw = Gateway::start(dir.path(), &["--mesh-config", &mesh_file.display().to_string()]);
    let c = client(&[("app.example.com", gw.http)], &[]);
    let url = |p: &str| format!("http://app.example.com:{}{p}", gw.http);
    let checked = || checks.lock().map(|c| c.len()).unwrap_or(0);

    let (status, _) = get_json(&c, &url("/public"), &[]).await;
    assert_eq!((status, checked()), (200, 0), "no CUSTOM policy matches: no check");

    // Allowed: the authorizer's chosen headers go upstream and to the client.
    let resp = c
        .get(url("/api/items?page=2"))
        .header("x-ext-authz", "allow")
        .header("cookie", "session=secret")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-auth-debug"], "allow-trace");
    assert!(
        resp.headers().get("x-ext-authz-check-result").is_none(),
        "not listed for the client"
    );
    let echo: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("json");
    assert_eq!(echo["headers"]["x-current-user"], "bob");
    let check = checks.lock().expect("lock").last().cloned().unwrap_or_default();
    assert!(check.starts_with("get /check/api/items?page=2 http/1.1\r\n"), "{check}");
    assert!(check.contains("\r\nhost: app.example.com"), "{check}");
    assert!(!check.contains("cookie"), "only the listed headers are sent: {check}");

    // Denied: the client gets the authorizer's answer, with only the listed headers.
    let resp = c.get(url("/api/items")).send().await.expect("request");
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["x-ext-authz-check-result"], "denied");
    assert!(resp.headers().get("x-secret").is_none());
    assert_eq!(
        resp.text().await.expect("body"),
        "denied by ext_authz for /check/api/items"
    );

    // DENY policies still apply to what the authorizer allowed.
    let (status, _) = get_json(&c, &url("/api/forbidden"), &[("x-ext-authz", "allow")]).await;
    assert_eq!(status, 403);

    // An unreachable authorizer: statusOnError, or allowed with failOpen.
    assert_eq!(get_json(&c, &url("/closed/x"), &[]).await.0, 503);
    assert_eq!(get_json(&c, &url("/open/x"), &[]).await.0, 200);
    // A CUSTOM policy naming no provider denies what it matches, with a warning.
    assert_eq!(get_json(&c, &url("/unknown/x"), &[]).await.0, 403);
    assert!(gw.log().contains("no envoyExtAuthzHttp extension provider \"missing\""));
}
