//! Strait's RateLimit kind, compiled: a token bucket of `requests` per `per`, kept
//! per key, on the routes of one VirtualService. It maps onto Envoy's
//! `local_ratelimit` filter: `token_bucket {max_tokens: requests, tokens_per_fill:
//! requests, fill_interval: per}` with one descriptor per key.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use serde::Serialize;

use crate::duration;
use crate::resources::strait::RateLimitSpec;

/// A compiled rate limit.
#[derive(Debug, Clone, Serialize)]
pub struct RateLimit {
    /// `namespace/name`: buckets are kept under it, across reloads.
    pub id: String,
    /// Requests per period (also the burst).
    pub requests: u32,
    /// The period.
    #[serde(serialize_with = "crate::ser::ser_duration")]
    pub per: Duration,
    /// What buckets are kept per.
    pub key: RateKey,
}

/// The key of the buckets.
#[derive(Debug, Clone, Serialize)]
pub enum RateKey {
    /// The client address.
    ClientIp,
    /// A request header's value (requests without it share one bucket).
    Header(#[serde(serialize_with = "crate::ser::ser_name")] HeaderName),
    /// A verified JWT claim (requests without one share one bucket).
    Claim(crate::claims::ClaimPath),
}

/// Compiles a RateLimit; errors are (field, message).
pub fn compile(id: String, spec: &RateLimitSpec) -> Result<Arc<RateLimit>, Vec<(String, String)>> {
    let mut errors = Vec::new();
    if spec.virtual_service.is_empty() {
        errors.push((
            "spec.virtualService".to_string(),
            "the VirtualService to limit is required".to_string(),
        ));
    }
    let requests = match spec.requests.map(u32::try_from) {
        Some(Ok(n)) if n > 0 => n,
        _ => {
            errors.push(("spec.requests".into(), "requests must be a count of at least 1".into()));
            0
        }
    };
    let per = match spec.per.as_deref().map(duration::parse) {
        Some(Ok(d)) if d >= Duration::from_millis(1) => d,
        Some(Err(e)) => {
            errors.push(("spec.per".into(), e.to_string()));
            Duration::ZERO
        }
        _ => {
            errors.push((
                "spec.per".into(),
                "per must be a duration of at least 1ms, e.g. 1s".into(),
            ));
            Duration::ZERO
        }
    };
    let key = match &spec.key {
        None => RateKey::ClientIp,
        Some(k) => match (k.client_ip == Some(true), &k.header, &k.claim) {
            (true, None, None) | (false, None, None) => RateKey::ClientIp,
            (false, Some(h), None) => match HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()) {
                Ok(n) => RateKey::Header(n),
                Err(_) => {
                    errors.push(("spec.key.header".into(), format!("{h:?} is not a header name")));
                    RateKey::ClientIp
                }
            },
            (false, None, Some(c)) => match crate::claims::ClaimPath::parse(c) {
                Ok(path) => RateKey::Claim(path),
                Err(e) => {
                    errors.push(("spec.key.claim".into(), e.to_string()));
                    RateKey::ClientIp
                }
            },
            _ => {
                errors.push((
                    "spec.key".into(),
                    "only one of clientIp, header, claim may be set".into(),
                ));
                RateKey::ClientIp
            }
        },
    };
    if errors.is_empty() {
        Ok(Arc::new(RateLimit { id, requests, per, key }))
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> RateLimitSpec {
        let value = crate::yaml::parse_documents(yaml).expect("yaml").remove(0).value;
        serde_json::from_value(value).expect("spec")
    }

    #[test]
    fn compiles_and_names_bad_fields() {
        let r = compile(
            "default/r".into(),
            &spec("virtualService: app\nrequests: 5\nper: 2s\nkey: {header: X-User}"),
        )
        .expect("valid");
        assert_eq!((r.requests, r.per), (5, Duration::from_secs(2)));
        assert!(matches!(&r.key, RateKey::Header(h) if h == "x-user"));
        let errors = compile("r".into(), &spec("requests: 0\nper: soon\nkey: {header: a, claim: b}")).expect_err("bad");
        let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["spec.virtualService", "spec.requests", "spec.per", "spec.key"]);
    }
}
