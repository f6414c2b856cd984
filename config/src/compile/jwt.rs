//! RequestAuthentication compiled from its resource: one JWT provider per rule,
//! and the providers that apply to a proxy's workload.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use crate::claims::ClaimPath;
use crate::duration;
use crate::jwt::*;
use crate::resources::security::{JwtRule, RequestAuthenticationSpec};

/// Istio's default time to wait for a JWKS.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a header named in a jwtRule cannot be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum HeaderNameError {
    /// `:path` and the like are not headers a token can travel in or be copied to.
    #[error("{0:?}: pseudo-headers cannot be used")]
    PseudoHeader(String),
    /// Not a valid HTTP header name.
    #[error("{0:?} is not a header name")]
    Invalid(String),
}

fn header_name(text: &str) -> Result<HeaderName, HeaderNameError> {
    if text.starts_with(':') {
        return Err(HeaderNameError::PseudoHeader(text.to_string()));
    }
    HeaderName::from_bytes(text.to_ascii_lowercase().as_bytes()).map_err(|_| HeaderNameError::Invalid(text.to_string()))
}

/// Compiles one jwtRule; errors are (field under the rule, message).
pub fn compile_rule(policy: String, rule: &JwtRule) -> Result<Provider, Vec<(String, String)>> {
    let mut errors = Vec::new();
    let mut err = |field: &str, message: String| errors.push((field.to_string(), message));
    let issuer = rule.issuer.clone().unwrap_or_default();
    if issuer.is_empty() {
        // Istio takes a rule with only a jwksUri as "any issuer"; Strait picks a
        // token's keys by its issuer, so it needs one.
        err(
            "issuer",
            "the issuer is required (Strait matches tokens to rules by issuer; Istio also takes a jwksUri alone)"
                .into(),
        );
    }
    for (i, a) in rule.audiences.iter().enumerate() {
        if a.is_empty() {
            err(&format!("audiences[{i}]"), "audience must be a non-empty string".into());
        }
    }
    for (name, list) in [("fromParams", &rule.from_params), ("fromCookies", &rule.from_cookies)] {
        for (i, x) in list.iter().enumerate() {
            if x.is_empty() {
                err(&format!("{name}[{i}]"), "must be a non-empty string".into());
            }
        }
    }
    if rule.jwks.is_some() && rule.jwks_uri.is_some() {
        err("jwks", "only one of jwks or jwksUri can be set".into());
    }
    let timeout = match rule.timeout.as_deref().map(duration::parse_positive) {
        None => DEFAULT_TIMEOUT,
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            err("timeout", e.to_string());
            DEFAULT_TIMEOUT
        }
    };
    let jwks = match (&rule.jwks, &rule.jwks_uri) {
        // Istio: inline keys win over the URI.
        (Some(inline), _) => match KeySet::parse(inline) {
            Ok(keys) => Some(Jwks::Inline(Arc::new(keys))),
            Err(e) => {
                err("jwks", e.to_string());
                None
            }
        },
        (None, Some(uri)) => match uri.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => Some(Jwks::Remote {
                uri: uri.clone(),
                timeout,
                discover: false,
            }),
            _ => {
                err("jwksUri", format!("{uri:?} is not an http or https URL"));
                None
            }
        },
        // As istiod does: the keys are found from the issuer's OpenID configuration.
        (None, None) => match issuer.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => Some(Jwks::Remote {
                uri: format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/')),
                timeout,
                discover: true,
            }),
            _ => {
                err(
                    "jwksUri",
                    "jwks or jwksUri is required when the issuer is not an http(s) URL to discover keys from".into(),
                );
                None
            }
        },
    };
    let mut locations = Vec::new();
    for (i, h) in rule.from_headers.iter().enumerate() {
        match header_name(h.name.as_deref().unwrap_or("")) {
            Ok(name) => locations.push(Location::Header {
                name,
                prefix: h.prefix.clone().unwrap_or_default(),
            }),
            Err(e) => err(&format!("fromHeaders[{i}].name"), e.to_string()),
        }
    }
    locations.extend(rule.from_params.iter().cloned().map(Location::Param));
    locations.extend(rule.from_cookies.iter().cloned().map(Location::Cookie));
    if locations.is_empty() {
        // Istio's defaults: a bearer token, then the access_token parameter.
        locations.push(Location::Header {
            name: http::header::AUTHORIZATION,
            prefix: "Bearer ".into(),
        });
        locations.push(Location::Param("access_token".into()));
    }
    let payload_header = match rule.output_payload_to_header.as_deref() {
        None | Some("") => None,
        Some(h) => match header_name(h) {
            Ok(n) => Some(n),
            Err(e) => {
                err("outputPayloadToHeader", e.to_string());
                None
            }
        },
    };
    let mut claim_headers = Vec::new();
    for (i, c) in rule.output_claim_to_headers.iter().enumerate() {
        // Istio's `ValidateStrictHTTPHeaderName`: letters, digits, `-` and `_` only.
        let header = c.header.as_deref().unwrap_or("");
        let strict = !header.is_empty()
            && header
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let header = if strict {
            header_name(header)
        } else {
            Err(HeaderNameError::Invalid(header.to_string()))
        };
        let claim = ClaimPath::parse(c.claim.as_deref().unwrap_or(""));
        match (header, claim) {
            (Ok(h), Ok(c)) => claim_headers.push((h, c)),
            (Err(e), _) => err(&format!("outputClaimToHeaders[{i}].header"), e.to_string()),
            (_, Err(e)) => err(&format!("outputClaimToHeaders[{i}].claim"), e.to_string()),
        }
    }
    match jwks {
        Some(jwks) if errors.is_empty() => Ok(Provider {
            policy,
            issuer,
            audiences: rule.audiences.clone(),
            locations,
            jwks,
            forward: rule.forward_original_token.unwrap_or(false),
            payload_header,
            claim_headers,
        }),
        _ => Err(errors),
    }
}

/// Compiles every rule of a RequestAuthentication; errors name the full field.
pub fn compile(policy: &str, spec: &RequestAuthenticationSpec) -> Result<Vec<Provider>, Vec<(String, String)>> {
    let mut providers = Vec::new();
    let mut errors = Vec::new();
    for (i, rule) in spec.jwt_rules.iter().enumerate() {
        match compile_rule(policy.to_string(), rule) {
            Ok(p) => providers.push(p),
            Err(e) => errors.extend(e.into_iter().map(|(f, m)| (format!("spec.jwtRules[{i}].{f}"), m))),
        }
    }
    if errors.is_empty() {
        Ok(providers)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests;
