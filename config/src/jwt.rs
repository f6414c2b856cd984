//! RequestAuthentication as the request path applies it: JWT providers, where a
//! token is looked for, key sets, and verification with Istio's semantics. The
//! compilers are in `compile::jwt`.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::{HeaderMap, HeaderName};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Serialize;
use serde_json::Value;

use crate::claims::ClaimPath;

/// Envoy's allowance for clocks that disagree, applied to `exp` and `nbf`.
pub const CLOCK_SKEW_SECS: u64 = 60;

/// The JWT providers (one per jwtRule) that apply to one proxy.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JwtAuth {
    /// Providers in policy order.
    pub providers: Vec<Provider>,
}

/// One jwtRule, compiled.
#[derive(Debug, Clone, Serialize)]
pub struct Provider {
    /// `namespace/name` of the RequestAuthentication.
    pub policy: String,
    /// Expected `iss`.
    pub issuer: String,
    /// Accepted `aud` values; empty accepts any.
    pub audiences: Vec<String>,
    /// Where tokens are looked for.
    pub locations: Vec<Location>,
    /// Where the keys come from.
    pub jwks: Jwks,
    /// Whether the token stays on the forwarded request.
    pub forward: bool,
    /// Header receiving the verified payload (base64url, as in the token).
    #[serde(serialize_with = "ser_opt_name")]
    pub payload_header: Option<HeaderName>,
    /// Headers receiving single claims.
    #[serde(serialize_with = "ser_claim_headers")]
    pub claim_headers: Vec<(HeaderName, ClaimPath)>,
}

/// A place a token may be carried.
#[derive(Debug, Clone, Serialize)]
pub enum Location {
    /// A header, after a prefix such as `Bearer ` (compared without case).
    Header {
        /// Header name.
        #[serde(serialize_with = "crate::ser::ser_name")]
        name: HeaderName,
        /// Prefix before the token.
        prefix: String,
    },
    /// A query parameter.
    Param(String),
    /// A cookie.
    Cookie(String),
}

/// Where a provider's keys come from.
#[derive(Debug, Clone, Serialize)]
pub enum Jwks {
    /// The rule's inline `jwks`, parsed at load.
    Inline(#[serde(serialize_with = "ser_keys")] Arc<KeySet>),
    /// Fetched by the proxy from `jwksUri`, or found through the issuer's OpenID
    /// discovery document when the rule has neither `jwks` nor `jwksUri`.
    Remote {
        /// The URL: the JWKS, or the discovery document when `discover`.
        uri: String,
        /// How long one fetch may take.
        #[serde(serialize_with = "crate::ser::ser_duration")]
        timeout: Duration,
        /// `uri` is `<issuer>/.well-known/openid-configuration`, whose `jwks_uri` names the keys.
        discover: bool,
    },
}

/// Usable keys of a JSON Web Key Set.
#[derive(Clone)]
pub struct KeySet {
    keys: Vec<Key>,
}

#[derive(Clone)]
struct Key {
    kid: Option<String>,
    alg: Option<Algorithm>,
    kind: KeyKind,
    key: DecodingKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
    Hmac,
}

impl KeyKind {
    /// The key type as JWKS names it, for messages.
    fn name(self) -> &'static str {
        match self {
            KeyKind::Rsa => "RSA",
            KeyKind::P256 => "EC P-256",
            KeyKind::P384 => "EC P-384",
            KeyKind::Ed25519 => "Ed25519",
            KeyKind::Hmac => "oct",
        }
    }

    /// Whether a token signed with `alg` can be checked with this kind of key; this
    /// is what stops an RSA public key from being used as an HMAC secret.
    fn accepts(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::P256 => alg == ES256,
            KeyKind::P384 => alg == ES384,
            KeyKind::Ed25519 => alg == EdDSA,
            KeyKind::Hmac => matches!(alg, HS256 | HS384 | HS512),
        }
    }
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| (k.kind, k.kid.as_deref())))
            .finish()
    }
}

impl Serialize for KeySet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shown<'a> {
            kid: Option<&'a str>,
            kind: KeyKind,
        }
        s.collect_seq(self.keys.iter().map(|k| Shown {
            kid: k.kid.as_deref(),
            kind: k.kind,
        }))
    }
}

/// Why a JWKS document cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// Not JSON at all.
    #[error("the JWKS is not valid JSON: {0}")]
    NotJson(String),
    /// JSON without a `keys` array.
    #[error("the JWKS has no \"keys\" list")]
    NoKeyList,
    /// A key of a supported type that is malformed.
    #[error("JWKS key {index}: {problem}")]
    Key {
        /// Its place in the list.
        index: usize,
        /// What is wrong with it.
        problem: KeyProblem,
    },
    /// Only keys this proxy cannot verify with (encryption keys, other curves).
    #[error("the JWKS has no usable signing key (RSA, EC P-256/P-384, Ed25519 or oct)")]
    NoUsableKey,
}

/// What is wrong with one key of a JWKS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyProblem {
    /// A required member is absent.
    #[error("\"{0}\" is missing")]
    Missing(&'static str),
    /// An EC coordinate of the wrong size or encoding.
    #[error("\"{name}\" is not a {len}-byte base64url coordinate")]
    Coordinate {
        /// `x` or `y`.
        name: &'static str,
        /// The curve's coordinate size.
        len: usize,
    },
    /// An Ed25519 key of the wrong size or encoding.
    #[error("\"x\" is not a 32-byte base64url Ed25519 key")]
    Ed25519,
    /// An HMAC secret that is not base64url.
    #[error("\"k\" is not base64url")]
    Secret,
    /// The key components were refused by the verifier.
    #[error("{0}")]
    Rejected(String),
    /// `alg` names an algorithm of another key type.
    #[error("\"alg\" {alg:?} does not fit a {kind} key")]
    AlgMismatch {
        /// The `alg` given.
        alg: String,
        /// The key's type.
        kind: &'static str,
    },
}

impl KeySet {
    /// Parses a JWKS document. Keys for encryption or of unsupported types are
    /// skipped (as Envoy does); a malformed key of a supported type, or a set with no
    /// usable key, is an error.
    pub fn parse(json: &str) -> Result<KeySet, JwksError> {
        let doc: Value = serde_json::from_str(json).map_err(|e| JwksError::NotJson(e.to_string()))?;
        let list = doc.get("keys").and_then(Value::as_array).ok_or(JwksError::NoKeyList)?;
        let mut keys = Vec::new();
        for (index, jwk) in list.iter().enumerate() {
            if let Some(key) = parse_key(jwk).map_err(|problem| JwksError::Key { index, problem })? {
                keys.push(key);
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey);
        }
        Ok(KeySet { keys })
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no key (never true for a parsed set).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn parse_key(jwk: &Value) -> Result<Option<Key>, KeyProblem> {
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    let required = |name: &'static str| text(name).ok_or(KeyProblem::Missing(name));
    let rejected = |e: jsonwebtoken::errors::Error| KeyProblem::Rejected(e.to_string());
    if text("use") == Some("enc") {
        return Ok(None);
    }
    let alg = match text("alg") {
        None => None,
        Some(a) => match a.parse::<Algorithm>() {
            Ok(alg) => Some(alg),
            // An algorithm this proxy cannot verify (e.g. RSA-OAEP): not a signing key for us.
            Err(_) => return Ok(None),
        },
    };
    let (kind, key) = match text("kty") {
        Some("RSA") => (
            KeyKind::Rsa,
            DecodingKey::from_rsa_components(required("n")?, required("e")?).map_err(rejected)?,
        ),
        Some("EC") => {
            let (kind, len) = match text("crv") {
                Some("P-256") => (KeyKind::P256, 32),
                Some("P-384") => (KeyKind::P384, 48),
                _ => return Ok(None),
            };
            let (x, y) = (required("x")?, required("y")?);
            for (name, coord) in [("x", x), ("y", y)] {
                if URL_SAFE_NO_PAD.decode(coord).map(|b| b.len()).ok() != Some(len) {
                    return Err(KeyProblem::Coordinate { name, len });
                }
            }
            (kind, DecodingKey::from_ec_components(x, y).map_err(rejected)?)
        }
        Some("OKP") => {
            if text("crv") != Some("Ed25519") {
                return Ok(None);
            }
            let x = required("x")?;
            if URL_SAFE_NO_PAD.decode(x).map(|b| b.len()).ok() != Some(32) {
                return Err(KeyProblem::Ed25519);
            }
            (KeyKind::Ed25519, DecodingKey::from_ed_components(x).map_err(rejected)?)
        }
        Some("oct") => {
            let secret = URL_SAFE_NO_PAD.decode(required("k")?).map_err(|_| KeyProblem::Secret)?;
            (KeyKind::Hmac, DecodingKey::from_secret(&secret))
        }
        _ => return Ok(None),
    };
    if alg.is_some_and(|a| !kind.accepts(a)) {
        return Err(KeyProblem::AlgMismatch {
            alg: text("alg").unwrap_or("").to_string(),
            kind: kind.name(),
        });
    }
    Ok(Some(Key {
        kid: text("kid").map(str::to_string),
        alg,
        kind,
        key,
    }))
}

/// Why a token was refused; the messages are Envoy's, which clients and dashboards know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// Not three base64url parts with JSON header and payload.
    #[error("Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections")]
    BadFormat,
    /// `alg` missing, `none`, or not one the proxy verifies.
    #[error("Jwt header [alg] field value is invalid")]
    Algorithm,
    /// `iss` names no configured issuer.
    #[error("Jwt issuer is not configured")]
    UnknownIssuer,
    /// `exp` more than the skew in the past.
    #[error("Jwt is expired")]
    Expired,
    /// `nbf` more than the skew in the future.
    #[error("Jwt not yet valid")]
    NotYetValid,
    /// `aud` names none of the accepted audiences.
    #[error("Audiences in Jwt are not allowed")]
    Audience,
    /// No key with the token's `kid` and a fitting type.
    #[error("Jwks doesn't have key to match kid or alg from Jwt")]
    NoKey,
    /// The signature does not verify.
    #[error("Jwt verification fails")]
    Signature,
    /// The issuer's keys could not be fetched.
    #[error("Jwks remote fetch is failed")]
    JwksUnavailable,
}

/// A token read without verification, enough to pick its provider.
#[derive(Debug)]
pub struct Peeked<'a> {
    raw: &'a str,
    alg: Algorithm,
    kid: Option<String>,
    payload_segment: &'a str,
    payload: Value,
}

impl Peeked<'_> {
    /// The `iss` claim, if any.
    pub fn issuer(&self) -> Option<&str> {
        token_issuer(&self.payload)
    }
}

/// A verified token: what routing, authorization and header outputs use.
#[derive(Debug, Clone)]
pub struct Verified {
    /// `iss/sub`, Istio's request principal.
    pub principal: String,
    /// The payload.
    pub claims: Value,
    /// The payload as it was in the token (base64url), for `outputPayloadToHeader`.
    pub payload_segment: String,
}

impl Verified {
    /// `aud` as a list.
    pub fn audiences(&self) -> Vec<&str> {
        match self.claims.get("aud") {
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// `azp`, the authorized presenter.
    pub fn presenter(&self) -> Option<&str> {
        self.claims.get("azp").and_then(Value::as_str)
    }
}

fn decode_json(segment: &str) -> Result<Value, Failure> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|_| Failure::BadFormat)?;
    serde_json::from_slice(&bytes).map_err(|_| Failure::BadFormat)
}

/// Splits and decodes a token without trusting it.
pub fn peek(raw: &str) -> Result<Peeked<'_>, Failure> {
    let mut parts = raw.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Failure::BadFormat);
    };
    let head = decode_json(header)?;
    let alg = head
        .get("alg")
        .and_then(Value::as_str)
        .and_then(|a| a.parse::<Algorithm>().ok())
        .ok_or(Failure::Algorithm)?;
    let payload_json = decode_json(payload)?;
    if !payload_json.is_object() {
        return Err(Failure::BadFormat);
    }
    Ok(Peeked {
        raw,
        alg,
        kid: head.get("kid").and_then(Value::as_str).map(str::to_string),
        payload_segment: payload,
        payload: payload_json,
    })
}

/// A numeric-date claim: absent is fine, present must be a number.
fn numeric_date(payload: &Value, name: &str) -> Result<Option<u64>, Failure> {
    match payload.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .map(Some)
            .ok_or(Failure::BadFormat),
    }
}

/// Verifies a peeked token for `provider` with `keys` at time `now` (seconds since
/// the epoch).
pub fn verify(token: Peeked<'_>, provider: &Provider, keys: &KeySet, now: u64) -> Result<Verified, Failure> {
    let candidates: Vec<&Key> = keys
        .keys
        .iter()
        .filter(|k| token.kid.is_none() || k.kid == token.kid)
        .filter(|k| k.kind.accepts(token.alg) && k.alg.is_none_or(|a| a == token.alg))
        .collect();
    if candidates.is_empty() {
        return Err(Failure::NoKey);
    }
    let (message, signature) = token.raw.rsplit_once('.').ok_or(Failure::BadFormat)?;
    // `accepts` guarantees each key's family fits the algorithm, which jsonwebtoken's
    // low-level verify expects of its caller.
    let verified = candidates
        .iter()
        .any(|k| jsonwebtoken::crypto::verify(signature, message.as_bytes(), &k.key, token.alg).unwrap_or(false));
    if !verified {
        return Err(Failure::Signature);
    }
    let claims = token.payload;
    if token_issuer(&claims) != Some(provider.issuer.as_str()) {
        return Err(Failure::UnknownIssuer);
    }
    if let Some(exp) = numeric_date(&claims, "exp")? {
        if now > exp.saturating_add(CLOCK_SKEW_SECS) {
            return Err(Failure::Expired);
        }
    }
    if let Some(nbf) = numeric_date(&claims, "nbf")? {
        if nbf > now.saturating_add(CLOCK_SKEW_SECS) {
            return Err(Failure::NotYetValid);
        }
    }
    let principal = format!(
        "{}/{}",
        provider.issuer,
        claims.get("sub").and_then(Value::as_str).unwrap_or("")
    );
    let verified = Verified {
        principal,
        claims,
        payload_segment: token.payload_segment.to_string(),
    };
    if !provider.audiences.is_empty()
        && !verified
            .audiences()
            .iter()
            .any(|a| provider.audiences.iter().any(|x| x == a))
    {
        return Err(Failure::Audience);
    }
    Ok(verified)
}

fn token_issuer(claims: &Value) -> Option<&str> {
    claims.get("iss").and_then(Value::as_str)
}

impl Location {
    /// The token this location holds in a request, if any.
    pub fn find<'a>(&self, headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
        match self {
            Location::Header { name, prefix } => headers.get_all(name).iter().find_map(|v| {
                let v = v.to_str().ok()?;
                let head = v.get(..prefix.len())?;
                head.eq_ignore_ascii_case(prefix)
                    .then(|| v[prefix.len()..].trim())
                    .filter(|t| !t.is_empty())
            }),
            Location::Param(name) => query?.split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                (k == name && !v.is_empty()).then_some(v)
            }),
            Location::Cookie(name) => headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|c| {
                    let (k, v) = c.trim().split_once('=')?;
                    (k == name && !v.is_empty()).then_some(v)
                }),
        }
    }
}

impl JwtAuth {
    /// Whether no RequestAuthentication applies.
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }
}

fn ser_opt_name<S: serde::Serializer>(n: &Option<HeaderName>, s: S) -> Result<S::Ok, S::Error> {
    match n {
        Some(n) => crate::ser::ser_name(n, s),
        None => s.serialize_none(),
    }
}

fn ser_claim_headers<S: serde::Serializer>(list: &[(HeaderName, ClaimPath)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(list.iter().map(|(h, c)| (h.as_str(), c.0.join("."))))
}

fn ser_keys<S: serde::Serializer>(keys: &Arc<KeySet>, s: S) -> Result<S::Ok, S::Error> {
    keys.serialize(s)
}
