//! Signing keys for tests: real RSA (made by the `openssl` tool, since ring cannot
//! generate RSA keys), ECDSA P-256/P-384 and Ed25519 keys, their JWKS entries, and
//! tokens signed with them.

use std::process::Command;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// A test issuer's key pair.
pub struct TestKey {
    /// Signing algorithm.
    pub alg: Algorithm,
    /// Key id, written in tokens and the JWKS.
    pub kid: String,
    encoding: EncodingKey,
    /// The public key as a JWK.
    pub jwk: Value,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn run(cmd: &mut Command, input: Option<&[u8]>) -> Vec<u8> {
    use std::io::Write;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the openssl tool is needed for RSA test keys");
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(data).expect("write to openssl");
    }
    let out = child.wait_with_output().expect("openssl");
    assert!(out.status.success(), "openssl failed");
    out.stdout
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

impl TestKey {
    /// A 2048-bit RSA key for `alg` (RS* or PS*).
    pub fn rsa(kid: &str, alg: Algorithm) -> TestKey {
        let pem = run(
            Command::new("openssl").args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
            None,
        );
        let modulus = run(Command::new("openssl").args(["rsa", "-noout", "-modulus"]), Some(&pem));
        let modulus = String::from_utf8(modulus).expect("utf8");
        let n = hex(modulus.trim().trim_start_matches("Modulus="));
        TestKey {
            alg,
            kid: kid.into(),
            encoding: EncodingKey::from_rsa_pem(&pem).expect("rsa pem"),
            jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "n": b64(&n), "e": "AQAB"}),
        }
    }

    /// An ECDSA key: ES256 on P-256 or ES384 on P-384.
    pub fn ec(kid: &str, alg: Algorithm) -> TestKey {
        let (curve, crv, len) = match alg {
            Algorithm::ES384 => (&rcgen::PKCS_ECDSA_P384_SHA384, "P-384", 48),
            _ => (&rcgen::PKCS_ECDSA_P256_SHA256, "P-256", 32),
        };
        let pair = rcgen::KeyPair::generate_for(curve).expect("ec key");
        // Uncompressed point: 0x04, then x and y.
        let point = pair.public_key_raw();
        TestKey {
            alg,
            kid: kid.into(),
            encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
            jwk: json!({"kty": "EC", "kid": kid, "crv": crv,
                        "x": b64(&point[1..1 + len]), "y": b64(&point[1 + len..])}),
        }
    }

    /// An Ed25519 key (EdDSA).
    pub fn ed25519(kid: &str) -> TestKey {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519 key");
        TestKey {
            alg: Algorithm::EdDSA,
            kid: kid.into(),
            encoding: EncodingKey::from_ed_der(&pair.serialize_der()),
            jwk: json!({"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64(pair.public_key_raw())}),
        }
    }

    /// A token with `claims`, signed by this key, naming it by `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        self.sign_with(&header, claims)
    }

    /// A token with a header of the caller's making, signed by this key.
    pub fn sign_with(&self, header: &Header, claims: &Value) -> String {
        jsonwebtoken::encode(header, claims, &self.encoding).expect("sign")
    }
}

/// A JWKS document with the public keys of `keys`.
pub fn jwks(keys: &[&TestKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// A token whose header and signature are given as is (`alg: none`, forged...).
pub fn raw_token(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(signature)
    )
}

/// A token signed with HMAC-SHA256 under `secret`: with an RSA key's public JWK as
/// the secret, the classic algorithm-confusion forgery.
pub fn hs256(kid: &str, secret: &[u8], claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).expect("sign")
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
