use super::*;
use crate::testing::jwt::{hs256, jwks, now, raw_token, TestKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::HeaderMap;
use jsonwebtoken::Algorithm;
use jsonwebtoken::Header;
use serde_json::json;

const ISS: &str = "https://issuer.example.com";

fn provider(keys: &str, audiences: &[&str]) -> (Provider, Arc<KeySet>) {
    let rule = JwtRule {
        issuer: Some(ISS.into()),
        audiences: audiences.iter().map(|a| a.to_string()).collect(),
        jwks: Some(keys.into()),
        ..JwtRule::default()
    };
    let p = compile_rule("default/jwt".into(), &rule).expect("valid rule");
    let Jwks::Inline(set) = &p.jwks else {
        panic!("inline keys")
    };
    let set = set.clone();
    (p, set)
}

fn check(token: &str, p: &Provider, keys: &KeySet) -> Result<Verified, Failure> {
    verify(peek(token)?, p, keys, now())
}

#[test]
fn every_key_type_verifies_its_own_tokens() {
    let keys = [
        TestKey::rsa("rsa", Algorithm::RS256),
        TestKey::rsa("ps", Algorithm::PS384),
        TestKey::ec("p256", Algorithm::ES256),
        TestKey::ec("p384", Algorithm::ES384),
        TestKey::ed25519("ed"),
    ];
    let (p, set) = provider(&jwks(&keys.iter().collect::<Vec<_>>()), &[]);
    assert_eq!(set.len(), 5);
    for k in &keys {
        let v = check(&k.sign(&json!({"iss": ISS, "sub": k.kid})), &p, &set)
            .unwrap_or_else(|e| panic!("{:?} token refused: {e}", k.alg));
        assert_eq!(v.principal, format!("{ISS}/{}", k.kid));
    }
}

#[test]
fn times_audiences_and_issuer() {
    let k = TestKey::ec("k1", Algorithm::ES256);
    let (any_aud, set) = provider(&jwks(&[&k]), &[]);
    let (api_only, _) = provider(&jwks(&[&k]), &["api"]);
    let t = now();
    let ok = |claims| check(&k.sign(&claims), &any_aud, &set);
    assert!(ok(json!({"iss": ISS})).is_ok(), "exp is optional");
    assert!(ok(json!({"iss": ISS, "exp": t - 30})).is_ok(), "inside the 60 s skew");
    assert_eq!(ok(json!({"iss": ISS, "exp": t - 120})).err(), Some(Failure::Expired));
    assert!(ok(json!({"iss": ISS, "nbf": t + 30})).is_ok(), "inside the skew");
    assert_eq!(
        ok(json!({"iss": ISS, "nbf": t + 600})).err(),
        Some(Failure::NotYetValid)
    );
    assert_eq!(ok(json!({"iss": ISS, "exp": "soon"})).err(), Some(Failure::BadFormat));
    assert!(
        ok(json!({"iss": ISS, "aud": "anything"})).is_ok(),
        "no audiences: any aud"
    );

    let aud = |claims| check(&k.sign(&claims), &api_only, &set);
    assert!(aud(json!({"iss": ISS, "aud": "api"})).is_ok());
    assert!(aud(json!({"iss": ISS, "aud": ["web", "api"]})).is_ok());
    assert_eq!(aud(json!({"iss": ISS, "aud": "web"})).err(), Some(Failure::Audience));
    assert_eq!(aud(json!({"iss": ISS})).err(), Some(Failure::Audience));

    assert_eq!(
        ok(json!({"iss": "https://other.example.com"})).err(),
        Some(Failure::UnknownIssuer)
    );
}

#[test]
fn forgeries_are_refused() {
    let rsa = TestKey::rsa("rsa", Algorithm::RS256);
    let attacker = TestKey::rsa("rsa", Algorithm::RS256);
    let (p, set) = provider(&jwks(&[&rsa]), &[]);
    let claims = json!({"iss": ISS, "sub": "mallory"});

    let none = raw_token(&json!({"alg": "none", "typ": "JWT"}), &claims, b"");
    assert_eq!(check(&none, &p, &set).err(), Some(Failure::Algorithm));

    // HS256 keyed with the RSA public key the verifier holds.
    let n = rsa.jwk["n"].as_str().unwrap_or_default();
    let confused = hs256("rsa", n.as_bytes(), &claims);
    assert_eq!(check(&confused, &p, &set).err(), Some(Failure::NoKey));

    // Signed by the attacker, who ships their key (and URLs) in the header.
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa".into());
    header.jwk = serde_json::from_value(attacker.jwk.clone()).ok();
    header.jku = Some("https://evil.example.com/jwks".into());
    header.x5u = Some("https://evil.example.com/cert".into());
    let embedded = attacker.sign_with(&header, &claims);
    assert_eq!(check(&embedded, &p, &set).err(), Some(Failure::Signature));

    let unknown_kid = TestKey::rsa("other", Algorithm::RS256).sign(&claims);
    assert_eq!(check(&unknown_kid, &p, &set).err(), Some(Failure::NoKey));

    let genuine = rsa.sign(&claims);
    let (head, rest) = genuine.split_once('.').unwrap_or_default();
    let (_, sig) = rest.split_once('.').unwrap_or_default();
    let tampered = format!(
        "{head}.{}.{sig}",
        URL_SAFE_NO_PAD.encode(br#"{"iss":"https://issuer.example.com","sub":"admin"}"#)
    );
    assert_eq!(check(&tampered, &p, &set).err(), Some(Failure::Signature));

    assert_eq!(check("a.b", &p, &set).err(), Some(Failure::BadFormat));
    assert_eq!(check("not-a-jwt", &p, &set).err(), Some(Failure::BadFormat));
}

#[test]
fn jwks_parsing() {
    let ec = TestKey::ec("k", Algorithm::ES256);
    let mixed = json!({"keys": [
        {"kty": "RSA", "use": "enc", "n": "x", "e": "AQAB"},
        {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"},
        ec.jwk,
    ]});
    assert_eq!(KeySet::parse(&mixed.to_string()).map(|k| k.len()), Ok(1));
    assert!(KeySet::parse("{}").is_err());
    assert!(KeySet::parse(r#"{"keys": []}"#).is_err());
    assert!(KeySet::parse(r#"{"keys": [{"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}]}"#).is_err());
    assert!(KeySet::parse(r#"{"keys": [{"kty": "RSA", "alg": "ES256", "n": "AQAB", "e": "AQAB"}]}"#).is_err());
}

#[test]
fn header_names() {
    assert_eq!(header_name("X-Token").map(|h| h.to_string()), Ok("x-token".to_string()));
    assert_eq!(header_name(":path"), Err(HeaderNameError::PseudoHeader(":path".into())));
    assert_eq!(header_name("a b"), Err(HeaderNameError::Invalid("a b".into())));
    assert_eq!(
        HeaderNameError::PseudoHeader(":path".into()).to_string(),
        "\":path\": pseudo-headers cannot be used"
    );
    assert_eq!(
        HeaderNameError::Invalid("a b".into()).to_string(),
        "\"a b\" is not a header name"
    );
}

#[test]
fn rule_compilation() {
    let rule: JwtRule = serde_json::from_value(json!({
        "issuer": ISS,
        "jwksUri": "http://127.0.0.1:9/jwks",
        "fromHeaders": [{"name": "X-Token", "prefix": "Token "}],
        "fromCookies": ["session"],
        "outputClaimToHeaders": [{"header": "x-org", "claim": "org.name"}],
        "outputPayloadToHeader": "x-jwt-payload",
        "timeout": "2s"
    }))
    .expect("rule");
    let p = compile_rule("ns/r".into(), &rule).expect("valid");
    assert!(matches!(&p.jwks, Jwks::Remote { timeout, .. } if *timeout == Duration::from_secs(2)));
    assert!(!p.forward);
    assert_eq!(p.locations.len(), 2, "explicit locations replace the defaults");

    let mut headers = HeaderMap::new();
    headers.insert("x-token", "token abc.def.ghi".parse().expect("value"));
    headers.insert("cookie", "a=1; session=s.t.u".parse().expect("value"));
    assert_eq!(p.locations[0].find(&headers, None), Some("abc.def.ghi"));
    assert_eq!(p.locations[1].find(&headers, None), Some("s.t.u"));

    let defaults = compile_rule(
        "ns/r".into(),
        &JwtRule {
            issuer: Some(ISS.into()),
            jwks_uri: Some("https://issuer.example.com/jwks".into()),
            ..JwtRule::default()
        },
    )
    .expect("valid");
    let mut bearer = HeaderMap::new();
    bearer.insert("authorization", "Bearer x.y.z".parse().expect("value"));
    assert_eq!(defaults.locations[0].find(&bearer, None), Some("x.y.z"));
    assert_eq!(
        defaults.locations[1].find(&HeaderMap::new(), Some("a=1&access_token=q.r.s")),
        Some("q.r.s")
    );

    let bad: JwtRule = serde_json::from_value(json!({
        "jwksUri": "ftp://x", "timeout": "soon", "fromHeaders": [{"name": ":path"}],
        "outputClaimToHeaders": [{"header": "x", "claim": "a..b"}]
    }))
    .expect("rule");
    let discovered = compile_rule(
        "ns/r".into(),
        &JwtRule {
            issuer: Some("https://accounts.example.com/".into()),
            ..JwtRule::default()
        },
    )
    .expect("keys discovered from the issuer");
    assert!(matches!(&discovered.jwks, Jwks::Remote { uri, discover: true, .. }
        if uri == "https://accounts.example.com/.well-known/openid-configuration"));

    let fields: Vec<String> = compile_rule("ns/r".into(), &bad)
        .err()
        .unwrap_or_default()
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    assert_eq!(
        fields,
        [
            "issuer",
            "timeout",
            "jwksUri",
            "fromHeaders[0].name",
            "outputClaimToHeaders[0].claim"
        ]
    );
}
