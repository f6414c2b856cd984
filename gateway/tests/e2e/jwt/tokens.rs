//! What a token must be: verified with each key type, refused with Envoy's message
//! when it is not, a little clock skew allowed, and never asked of a CORS preflight.

use jsonwebtoken::{Algorithm, Header};
use serde_json::{json, Value};
use strait_config::testing::jwt::{hs256, now, raw_token, TestKey};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_passes_where_no_policy_asks_for_one_and_claim_headers_cannot_be_forged() {
    let s = Setup::start().await;
    let open = s.call("GET", "/public", &[("x-jwt-sub", "admin")]).await;
    assert_eq!(open.status, 200);
    assert_eq!(
        open.upstream_header("x-jwt-sub"),
        None,
        "a client cannot forge claim headers"
    );
    assert_eq!(
        s.call("GET", "/secure", &[]).await.status,
        403,
        "AuthorizationPolicy requires a principal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_type_verifies_and_claims_become_headers() {
    let s = Setup::start().await;
    let k = &s.keys;
    // The token is removed before forwarding, claims become headers.
    for key in [&k.rsa, &k.pss, &k.p256, &k.p384, &k.ed] {
        let token = key.sign(&claims(INLINE, &format!("user-{}", key.kid)));
        let ok = s.call("GET", "/secure", &[("authorization", &bearer(&token))]).await;
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
}

/// `claims(INLINE, "alice")` changed by `f`.
fn alice_with(f: &dyn Fn(&mut Value)) -> Value {
    let mut c = claims(INLINE, "alice");
    f(&mut c);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_gets_401_with_envoys_message_and_a_bearer_challenge() {
    let s = Setup::start().await;
    let (rsa, p256) = (&s.keys.rsa, &s.keys.p256);
    let t = now();
    let mut forged_header = Header::new(Algorithm::RS256);
    forged_header.kid = Some("rsa".into());
    let attacker = TestKey::rsa("rsa", Algorithm::RS256);
    forged_header.jwk = serde_json::from_value(attacker.jwk.clone()).ok();
    forged_header.jku = Some("http://127.0.0.1:1/evil.json".into());
    let rsa_n = rsa.jwk["n"].as_str().unwrap_or_default().to_string();
    let refused: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            rsa.sign(&alice_with(&|c| c["exp"] = json!(t - 120))),
            "Jwt is expired",
        ),
        (
            "not yet valid",
            rsa.sign(&alice_with(&|c| c["nbf"] = json!(t + 600))),
            "Jwt not yet valid",
        ),
        (
            "wrong audience",
            rsa.sign(&alice_with(&|c| c["aud"] = json!("web"))),
            "Audiences in Jwt are not allowed",
        ),
        (
            "no audience",
            rsa.sign(&alice_with(&|c| {
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
        let r = s.call("GET", "/public", &[("authorization", &bearer(token))]).await;
        assert_eq!((r.status, r.body.as_str()), (401, *message), "{what}");
        let challenge = r.challenge.unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer realm=\"http://app.example.com") && challenge.contains("invalid_token"),
            "{what}: {challenge}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_expired_within_the_clock_skew_passes() {
    let s = Setup::start().await;
    let skew = s.keys.rsa.sign(&alice_with(&|c| c["exp"] = json!(now() - 30)));
    assert_eq!(
        s.call("GET", "/secure", &[("authorization", &bearer(&skew))])
            .await
            .status,
        200,
        "60 s of clock skew"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cors_preflight_is_not_authenticated_whatever_it_carries() {
    let s = Setup::start().await;
    let preflight = s
        .call(
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
}
