//! AuthorizationPolicy at the gateway, with the path normalized first: a DENY on
//! /admin holds against the usual disguises under each normalization mode.

use crate::support::*;

const CONFIG: &str = r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app, namespace: default}
spec:
  hosts: [app.example.com, other.example.com]
  gateways: [gw]
  http:
  - directResponse: {status: 200, body: {string: ok}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: default}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: DENY
  rules: [{to: [{operation: {paths: [/admin, /admin/*]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-documentation-range, namespace: default}
spec:
  action: DENY
  rules: [{from: [{source: {remoteIpBlocks: [203.0.113.0/24]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: app-only, namespace: default}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: ALLOW
  rules:
  - from: [{source: {ipBlocks: [127.0.0.0/8]}}]
    to: [{operation: {hosts: [app.example.com]}}]
  - from: [{source: {requestPrincipals: ["*"]}}]
"#;

fn get(port: u16, host: &str, path: &str) -> Option<u16> {
    get_via(port, host, path, None)
}

fn get_via(port: u16, host: &str, path: &str, xff: Option<&str>) -> Option<u16> {
    let xff = xff.map_or(String::new(), |x| format!("X-Forwarded-For: {x}\r\n"));
    raw_status(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{xff}Connection: close\r\n\r\n").as_bytes(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_and_allow_with_normalized_paths() {
    let config = http_gateway(&["*.example.com"]) + CONFIG;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("app.yaml"), &config).expect("write");
    let mesh_dir = tempfile::tempdir().expect("tempdir");
    let mesh = mesh_dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh,
        "pathNormalization: {normalization: DECODE_AND_MERGE_SLASHES}\ndefaultConfig: {gatewayTopology: {numTrustedProxies: 1}}\n",
    )
    .expect("write");
    let mesh_arg = mesh.display().to_string();

    let base = Gateway::start(dir.path(), &[]);
    let strict = Gateway::start(dir.path(), &["--mesh-config", &mesh_arg]);

    // (path, status under BASE, status under DECODE_AND_MERGE_SLASHES)
    let table: &[(&str, u16, u16)] = &[
        ("/", 200, 200),
        ("/admin", 403, 403),
        ("/admin/users", 403, 403),
        ("/app/../admin", 403, 403),
        ("/./admin", 403, 403),
        ("/%61dmin", 403, 403),
        ("//admin", 200, 403),
        ("/admin%2fusers", 200, 403),
        ("/ADMIN", 200, 200),
        ("/admin;x", 200, 200),
        ("/admin%00", 400, 400),
    ];
    for (path, want_base, want_strict) in table {
        assert_eq!(
            get(base.http, "app.example.com", path),
            Some(*want_base),
            "{path} under BASE"
        );
        assert_eq!(
            get(strict.http, "app.example.com", path),
            Some(*want_strict),
            "{path} under DECODE_AND_MERGE_SLASHES"
        );
    }
    // remote.ip believes x-forwarded-for only behind trusted proxies (one, for `strict`).
    assert_eq!(
        get_via(base.http, "app.example.com", "/", Some("203.0.113.5")),
        Some(200)
    );
    assert_eq!(
        get_via(strict.http, "app.example.com", "/", Some("203.0.113.5")),
        Some(403)
    );
    assert_eq!(
        get_via(strict.http, "app.example.com", "/", Some("203.0.113.5, 192.0.2.1")),
        Some(200)
    );

    // An ALLOW policy exists: what none of its rules allows is denied.
    assert_eq!(get(base.http, "other.example.com", "/"), Some(403));
}
