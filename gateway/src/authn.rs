//! Request authentication: the JWTs a request carries, verified against the
//! RequestAuthentication providers of the running configuration, as Istio does it.
//! A request without a token passes (AuthorizationPolicy decides whether it needs
//! one); a request with a token that does not verify gets 401.

use http::header::HeaderValue;
use pingora::http::RequestHeader;
use strait_config::claims;
use strait_config::jwt::{self, Failure, Jwks, Location, Provider, Verified};

use crate::runtime::Runtime;

/// A token found in a request, with the provider locations that hold it.
struct Found {
    token: String,
    /// (provider, location) pairs where it was found.
    places: Vec<(usize, usize)>,
}

/// Seconds since the epoch.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn tokens(providers: &[Provider], req: &RequestHeader) -> Vec<Found> {
    let mut found: Vec<Found> = Vec::new();
    for (pi, p) in providers.iter().enumerate() {
        for (li, loc) in p.locations.iter().enumerate() {
            let Some(token) = loc.find(&req.headers, req.uri.query()) else {
                continue;
            };
            match found.iter_mut().find(|f| f.token == token) {
                Some(f) => f.places.push((pi, li)),
                None => found.push(Found {
                    token: token.to_string(),
                    places: vec![(pi, li)],
                }),
            }
        }
    }
    found
}

async fn keys(runtime: &Runtime, policy: usize, index: usize) -> Option<std::sync::Arc<jwt::KeySet>> {
    match &runtime.snapshot.policies.get(policy)?.jwt.providers.get(index)?.jwks {
        Jwks::Inline(keys) => Some(keys.clone()),
        Jwks::Remote { .. } => runtime.jwks.get(policy)?.get(index)?.as_ref()?.keys().await,
    }
}

/// Verifies every token of the request. On success the request's copy of the
/// provider's output headers is replaced by the verified values (so a client cannot
/// forge them), tokens not to be forwarded are removed, and the first verified token
/// is returned.
pub async fn authenticate(
    runtime: &Runtime,
    policy: usize,
    req: &mut RequestHeader,
) -> Result<Option<Box<Verified>>, Failure> {
    let Some(policy_of_listener) = runtime.snapshot.policies.get(policy) else {
        return Ok(None);
    };
    let providers = &policy_of_listener.jwt.providers;
    for p in providers {
        for name in p.payload_header.iter().chain(p.claim_headers.iter().map(|(h, _)| h)) {
            req.remove_header(name);
        }
    }
    let mut first = None;
    for found in tokens(providers, req) {
        let peeked = jwt::peek(&found.token)?;
        let issuer = peeked.issuer().unwrap_or("");
        // Providers sharing a location are told apart by the token's issuer.
        let Some(&(pi, _)) = found
            .places
            .iter()
            .find(|(pi, _)| providers.get(*pi).is_some_and(|p| p.issuer == issuer))
        else {
            return Err(Failure::UnknownIssuer);
        };
        let Some(provider) = providers.get(pi) else {
            return Err(Failure::UnknownIssuer);
        };
        let keyset = keys(runtime, policy, pi).await.ok_or(Failure::JwksUnavailable)?;
        let verified = jwt::verify(peeked, provider, &keyset, now())?;
        output(req, provider, &verified);
        if !provider.forward {
            for (_, li) in found.places.iter().filter(|(p, _)| *p == pi) {
                if let Some(loc) = provider.locations.get(*li) {
                    remove(req, loc);
                }
            }
        }
        if first.is_none() {
            first = Some(Box::new(verified));
        }
    }
    Ok(first)
}

fn output(req: &mut RequestHeader, provider: &Provider, verified: &Verified) {
    if let Some(name) = &provider.payload_header {
        if let Ok(v) = HeaderValue::from_str(&verified.payload_segment) {
            let _ = req.insert_header(name.clone(), v);
        }
    }
    for (name, path) in &provider.claim_headers {
        let value = path.lookup(&verified.claims).and_then(claims::header_value);
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            let _ = req.insert_header(name.clone(), v);
        }
    }
}

/// Takes the token out of the request (Istio's default, `forwardOriginalToken:
/// false`). Cookies are left alone, as Envoy does.
fn remove(req: &mut RequestHeader, loc: &Location) {
    match loc {
        Location::Header { name, .. } => {
            req.remove_header(name);
        }
        Location::Param(name) => {
            let Some(query) = req.uri.query() else { return };
            let kept: Vec<&str> = query
                .split('&')
                .filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) != name)
                .collect();
            let path = req.uri.path();
            let uri = if kept.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", kept.join("&"))
            };
            if let Ok(uri) = uri.parse() {
                req.set_uri(uri);
            }
        }
        Location::Cookie(_) => {}
    }
}

/// Envoy's challenge on a refused token.
pub fn challenge(req: &RequestHeader, scheme: &str) -> HeaderValue {
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    let text = format!(
        "Bearer realm=\"{scheme}://{host}{}\", error=\"invalid_token\"",
        req.uri.path()
    );
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("Bearer error=\"invalid_token\""))
}
