//! RequestAuthentication at the gateway with Istio's semantics: real tokens signed
//! with RSA, ECDSA and Ed25519 keys, inline keys and a JWKS served on loopback that
//! can fail; authorization, routing and rate limits on the verified claims. Every
//! scenario starts a gateway with the same configuration (`Setup`): `tokens` checks
//! what a token must be, `claims` what its claims drive, `remote` the issuers whose
//! keys are fetched.

mod claims;
mod remote;
mod tokens;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use strait_config::testing::jwt::{jwks, now, TestKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

pub(super) const INLINE: &str = "https://inline.example.com";
pub(super) const REMOTE: &str = "https://remote.example.com";
pub(super) const DOWN: &str = "https://down.example.com";

/// A JWKS endpoint whose document can change and which can be made to fail.
struct JwksServer {
    port: u16,
    body: Arc<Mutex<String>>,
    failing: Arc<AtomicBool>,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksServer {
    async fn start(body: String) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let body = Arc::new(Mutex::new(body));
        let failing = Arc::new(AtomicBool::new(false));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (b, f, n) = (body.clone(), failing.clone(), fetches.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let read = stream.read(&mut buf).await.unwrap_or(0);
                let discovery = String::from_utf8_lossy(&buf[..read]).contains("/.well-known/openid-configuration");
                n.fetch_add(1, Ordering::SeqCst);
                let response = if discovery {
                    // OpenID discovery: the issuer's document names the JWKS.
                    let doc = format!(
                        r#"{{"issuer":"http://127.0.0.1:{port}","jwks_uri":"http://127.0.0.1:{port}/jwks.json"}}"#
                    );
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{doc}",
                        doc.len()
                    )
                } else if f.load(Ordering::SeqCst) {
                    "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_string()
                } else {
                    let doc = b.lock().map(|d| d.clone()).unwrap_or_default();
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{doc}",
                        doc.len()
                    )
                };
                let _ = stream.write_all(response.as_bytes()).await;
            }
        });
        JwksServer {
            port,
            body,
            failing,
            fetches,
            task,
        }
    }
}

fn config(backend: u16, jwks_port: u16, down_port: u16, inline_keys: &str) -> String {
    let inline = serde_json::to_string(inline_keys).expect("json string");
    http_gateway(&["app.example.com"])
        + &backend_entry(&[("v1", backend)])
        + &format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: app, namespace: default}}
spec:
  hosts: [app.example.com]
  gateways: [gw]
  http:
  - name: admins
    match: [{{uri: {{prefix: /whoami}}, headers: {{"@request.auth.claims.groups": {{exact: admin}}}}}}]
    directResponse: {{status: 200, body: {{string: admins}}}}
  - name: limited
    match: [{{uri: {{prefix: /limited}}}}]
    directResponse: {{status: 200, body: {{string: limited}}}}
  - name: rest
    route: [{{destination: {{host: backend.default.svc.cluster.local}}}}]
---
apiVersion: strait.io/v1alpha1
kind: RateLimit
metadata: {{name: per-user, namespace: default}}
spec:
  virtualService: app
  routes: [limited]
  requests: 2
  per: 60s
  key: {{claim: sub}}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: default}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  jwtRules:
  - issuer: {INLINE}
    audiences: [api]
    jwks: {inline}
    outputPayloadToHeader: x-jwt-payload
    outputClaimToHeaders:
    - {{header: x-jwt-sub, claim: sub}}
    - {{header: x-jwt-tier, claim: org.tier}}
  - issuer: {REMOTE}
    jwksUri: http://127.0.0.1:{jwks_port}/jwks.json
    fromHeaders: [{{name: x-token}}]
    fromParams: [token]
    fromCookies: [session]
    forwardOriginalToken: true
  - issuer: {DOWN}
    jwksUri: http://127.0.0.1:{down_port}/jwks.json
    timeout: 1s
  - issuer: http://127.0.0.1:{jwks_port}
    fromHeaders: [{{name: x-oidc-token}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: secure-needs-jwt, namespace: default}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  rules:
  - from: [{{source: {{requestPrincipals: ["*"]}}}}]
    to: [{{operation: {{paths: ["/secure*"]}}}}]
  - to: [{{operation: {{notPaths: ["/secure*"]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: no-banned, namespace: default}}
spec:
  action: DENY
  rules: [{{when: [{{key: "request.auth.claims[groups]", values: [banned]}}]}}]
"#
        )
}

struct Call {
    status: u16,
    body: String,
    challenge: Option<String>,
}

impl Call {
    fn echo(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn upstream_header(&self, name: &str) -> Option<String> {
        self.echo()["headers"][name].as_str().map(str::to_string)
    }
}

async fn call(c: &reqwest::Client, port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Call {
    let url = format!("http://app.example.com:{port}{path}");
    let mut req = c.request(method.parse().expect("method"), &url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Call {
        status,
        body: resp.text().await.unwrap_or_default(),
        challenge,
    }
}

fn claims(iss: &str, sub: &str) -> Value {
    json!({"iss": iss, "sub": sub, "aud": "api", "exp": now() + 600, "groups": ["dev"], "org": {"tier": "gold"}})
}

/// The keys the gateway trusts: five inline (one per algorithm family) and the
/// remote issuer's, served by the JWKS server.
struct Keys {
    rsa: TestKey,
    pss: TestKey,
    p256: TestKey,
    p384: TestKey,
    ed: TestKey,
    remote: TestKey,
}

/// A gateway with the configuration above, its backend and JWKS server, and a
/// client for app.example.com.
struct Setup {
    keys: Keys,
    jwks: JwksServer,
    gw: Gateway,
    c: reqwest::Client,
    _backend: strait_gateway::echo::EchoServer,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn start() -> Setup {
        let keys = Keys {
            rsa: TestKey::rsa("rsa", Algorithm::RS256),
            pss: TestKey::rsa("pss", Algorithm::PS256),
            p256: TestKey::ec("p256", Algorithm::ES256),
            p384: TestKey::ec("p384", Algorithm::ES384),
            ed: TestKey::ed25519("ed"),
            remote: TestKey::ec("remote-1", Algorithm::ES256),
        };
        let backend = echo("backend", "v1").await;
        let jwks_server = JwksServer::start(jwks(&[&keys.remote])).await;
        let [down_port] = free_ports::<1>();
        let dir = tempfile::tempdir().expect("tempdir");
        let inline = jwks(&[&keys.rsa, &keys.pss, &keys.p256, &keys.p384, &keys.ed]);
        std::fs::write(
            dir.path().join("app.yaml"),
            config(backend.addr.port(), jwks_server.port, down_port, &inline),
        )
        .expect("write");
        let gw = Gateway::start(dir.path(), &["--jwks-refresh-interval", "1"]);
        let c = client(&[("app.example.com", gw.http)], &[]);
        Setup {
            keys,
            jwks: jwks_server,
            gw,
            c,
            _backend: backend,
            _dir: dir,
        }
    }

    /// One request to app.example.com.
    async fn call(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Call {
        call(&self.c, self.gw.http, method, path, headers).await
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}
