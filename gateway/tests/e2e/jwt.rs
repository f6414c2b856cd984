//! RequestAuthentication at the gateway with Istio's semantics: real tokens signed
//! with RSA, ECDSA and Ed25519 keys, inline keys and a JWKS served on loopback that
//! can fail; authorization, routing and rate limits on the verified claims.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::{Algorithm, Header};
use serde_json::{json, Value};
use strait_config::testing::jwt::{hs256, jwks, now, raw_token, TestKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

const INLINE: &str = "https://inline.example.com";
const REMOTE: &str = "https://remote.example.com";
const DOWN: &str = "https://down.example.com";

/// A JWKS endpoint whose document can change and which can be made to fail.
struct JwksServer {
    port: u16,
    body: Arc<Mutex<String>>,
    failing: Arc<AtomicBool>,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_verified_with_istio_semantics() {
    let rsa = TestKey::rsa("rsa", Algorithm::RS256);
    let pss = TestKey::rsa("pss", Algorithm::PS256);
    let p256 = TestKey::ec("p256", Algorithm::ES256);
    let p384 = TestKey::ec("p384", Algorithm::ES384);
    let ed = TestKey::ed25519("ed");
    let remote_key = TestKey::ec("remote-1", Algorithm::ES256);
    let backend = echo("backend", "v1").await;
    let jwks_server = JwksServer::start(jwks(&[&remote_key])).await;
    let [down_port] = free_ports::<1>();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("app.yaml"),
        config(
            backend.addr.port(),
            jwks_server.port,
            down_port,
            &jwks(&[&rsa, &pss, &p256, &p384, &ed]),
        ),
    )
    .expect("write");
    let gw = Gateway::start(dir.path(), &["--jwks-refresh-interval", "1"]);
    let c = client(&[("app.example.com", gw.http)], &[]);
    let port = gw.http;
    let bearer = |t: &str| format!("Bearer {t}");

    // No token: passes where no policy asks for one; spoofed output headers are dropped.
    let open = call(&c, port, "GET", "/public", &[("x-jwt-sub", "admin")]).await;
    assert_eq!(open.status, 200);
    assert_eq!(
        open.upstream_header("x-jwt-sub"),
        None,
        "a client cannot forge claim headers"
    );
    assert_eq!(
        call(&c, port, "GET", "/secure", &[]).await.status,
        403,
        "AuthorizationPolicy requires a principal"
    );

    // Each key type; the token is removed before forwarding, claims become headers.
    for key in [&rsa, &pss, &p256, &p384, &ed] {
        let token = key.sign(&claims(INLINE, &format!("user-{}", key.kid)));
        let ok = call(&c, port, "GET", "/secure", &[("authorization", &bearer(&token))]).await;
        assert_eq!(ok.status, 200, "{:?} token: {}", key.alg, ok.body);
        assert_eq!(ok.upstream_header("x-jwt-sub"), Some(format!("user-{}", key.kid)));
        assert_eq!(ok.upstream_header("x-jwt-tier").as_deref(), Some("gold"));
        assert_eq!(
            ok.upstream_header("authorization"),
            None,
            "forwardOriginalToken defaults to false"
        );
        let payload = ok.upstream_header("x-jwt-payload").unwrap_or_default();
        assert_eq!(Some(payload.as_str()), token.split('.').nth(1), "outputPayloadToHeader");
    }

    // Refusals: 401 with Envoy's message and a bearer challenge.
    let t = now();
    let mut forged_header = Header::new(Algorithm::RS256);
    forged_header.kid = Some("rsa".into());
    let attacker = TestKey::rsa("rsa", Algorithm::RS256);
    forged_header.jwk = serde_json::from_value(attacker.jwk.clone()).ok();
    forged_header.jku = Some("http://127.0.0.1:1/evil.json".into());
    let rsa_n = rsa.jwk["n"].as_str().unwrap_or_default().to_string();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims(INLINE, "alice");
        f(&mut c);
        c
    };
    let refused: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            rsa.sign(&with(&|c| c["exp"] = json!(t - 120))),
            "Jwt is expired",
        ),
        (
            "not yet valid",
            rsa.sign(&with(&|c| c["nbf"] = json!(t + 600))),
            "Jwt not yet valid",
        ),
        (
            "wrong audience",
            rsa.sign(&with(&|c| c["aud"] = json!("web"))),
            "Audiences in Jwt are not allowed",
        ),
        (
            "no audience",
            rsa.sign(&with(&|c| {
                c.as_object_mut().map(|o| o.remove("aud"));
            })),
            "Audiences in Jwt are not allowed",
        ),
        (
            "unknown issuer",
            rsa.sign(&claims("https://evil.example.com", "alice")),
            "Jwt issuer is not configured",
        ),
        (
            "alg none",
            raw_token(&json!({"alg": "none"}), &claims(INLINE, "alice"), b""),
            "Jwt header [alg] field value is invalid",
        ),
        (
            "HS256 keyed with the RSA key",
            hs256("rsa", rsa_n.as_bytes(), &claims(INLINE, "alice")),
            "Jwks doesn't have key to match kid or alg from Jwt",
        ),
        (
            "embedded jwk and jku",
            attacker.sign_with(&forged_header, &claims(INLINE, "alice")),
            "Jwt verification fails",
        ),
        (
            "unknown kid",
            TestKey::ec("nope", Algorithm::ES256).sign(&claims(INLINE, "alice")),
            "Jwks doesn't have key to match kid or alg from Jwt",
        ),
        (
            "garbage",
            "not.a-token".into(),
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
        ),
        (
            "issuer whose JWKS is unreachable",
            p256.sign(&claims(DOWN, "alice")),
            "Jwks remote fetch is failed",
        ),
    ];
    for (what, token, message) in &refused {
        // Even where no policy needs a token, a bad one is refused.
        let r = call(&c, port, "GET", "/public", &[("authorization", &bearer(token))]).await;
        assert_eq!((r.status, r.body.as_str()), (401, *message), "{what}");
        let challenge = r.challenge.unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer realm=\"http://app.example.com") && challenge.contains("invalid_token"),
            "{what}: {challenge}"
        );
    }
    let skew = rsa.sign(&with(&|c| c["exp"] = json!(t - 30)));
    assert_eq!(
        call(&c, port, "GET", "/secure", &[("authorization", &bearer(&skew))])
            .await
            .status,
        200,
        "60 s of clock skew"
    );

    // A CORS preflight is not authenticated, whatever it carries.
    let preflight = call(
        &c,
        port,
        "OPTIONS",
        "/public",
        &[
            ("origin", "https://web.example.com"),
            ("access-control-request-method", "GET"),
            ("authorization", "Bearer not.a-token"),
        ],
    )
    .await;
    assert_eq!(preflight.status, 200, "preflight: {}", preflight.body);

    // Claims drive routing, authorization and rate limits.
    let admin = rsa.sign(&with(&|c| c["groups"] = json!(["dev", "admin"])));
    let routed = call(&c, port, "GET", "/whoami", &[("authorization", &bearer(&admin))]).await;
    assert_eq!(routed.body, "admins", "@request.auth.claims route");
    let plain = call(
        &c,
        port,
        "GET",
        "/whoami",
        &[("authorization", &bearer(&rsa.sign(&claims(INLINE, "alice"))))],
    )
    .await;
    assert_eq!(plain.echo()["path"], "/whoami", "no admin claim: the next route");
    let banned = rsa.sign(&with(&|c| c["groups"] = json!(["banned"])));
    assert_eq!(
        call(&c, port, "GET", "/public", &[("authorization", &bearer(&banned))])
            .await
            .status,
        403
    );
    let alice = bearer(&rsa.sign(&claims(INLINE, "alice")));
    let bob = bearer(&rsa.sign(&claims(INLINE, "bob")));
    let mut statuses = Vec::new();
    for auth in [&alice, &alice, &alice, &bob] {
        statuses.push(
            call(&c, port, "GET", "/limited", &[("authorization", auth)])
                .await
                .status,
        );
    }
    assert_eq!(statuses, [200, 200, 429, 200], "2 per minute per sub");

    // The remote issuer: header, parameter and cookie; forwardOriginalToken keeps it.
    let remote = remote_key.sign(&claims(REMOTE, "carol"));
    let via_header = call(&c, port, "GET", "/secure/h", &[("x-token", &remote)]).await;
    assert_eq!(via_header.status, 200, "{}", via_header.body);
    assert_eq!(via_header.upstream_header("x-token"), Some(remote.clone()));
    let via_param = call(&c, port, "GET", &format!("/secure/p?a=1&token={remote}"), &[]).await;
    assert_eq!(via_param.status, 200);
    assert_eq!(via_param.echo()["path"], format!("/secure/p?a=1&token={remote}"));
    let discovered = remote_key.sign(&claims(&format!("http://127.0.0.1:{}", jwks_server.port), "erin"));
    let via_discovery = call(&c, port, "GET", "/secure/d", &[("x-oidc-token", &discovered)]).await;
    assert_eq!(
        via_discovery.status, 200,
        "keys through OpenID discovery: {}",
        via_discovery.body
    );
    let cookie = format!("theme=dark; session={remote}");
    assert_eq!(
        call(&c, port, "GET", "/secure/c", &[("cookie", &cookie)]).await.status,
        200
    );

    // The JWKS fails: the keys already fetched stay in use.
    jwks_server.failing.store(true, Ordering::SeqCst);
    let before = jwks_server.fetches.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        jwks_server.fetches.load(Ordering::SeqCst) > before,
        "refreshed periodically"
    );
    assert_eq!(
        call(&c, port, "GET", "/secure", &[("x-token", &remote)]).await.status,
        200
    );
    assert!(gw.log().contains("keeping the previous keys"), "the failure is logged");

    // Key rotation: once the JWKS answers again with a new key, its tokens pass.
    let rotated = TestKey::ed25519("remote-2");
    *jwks_server.body.lock().expect("lock") = jwks(&[&rotated]);
    jwks_server.failing.store(false, Ordering::SeqCst);
    let token = rotated.sign(&claims(REMOTE, "dave"));
    let mut status = 0;
    for _ in 0..40 {
        status = call(&c, port, "GET", "/secure", &[("x-token", &token)]).await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(status, 200, "rotated key picked up");
    assert_eq!(
        call(&c, port, "GET", "/secure", &[("x-token", &remote)]).await.status,
        401,
        "the retired key no longer verifies"
    );
    jwks_server.task.abort();
}
