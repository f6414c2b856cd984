//! External authorization: the `envoyExtAuthzHttp` extension providers of the mesh
//! config, which AuthorizationPolicies with `action: CUSTOM` name. The gateway asks
//! the provider's HTTP service about each request a CUSTOM policy matches, as Envoy's
//! ext_authz filter does: 2xx allows, any other answer is passed to the client.

use std::time::Duration;

use http::HeaderName;
use serde::Serialize;
use serde_json::Value;

use crate::duration;

/// Istio's default wait for the authorization service.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// One `envoyExtAuthzHttp` provider.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Provider {
    /// Name AuthorizationPolicies use in `provider.name`.
    pub name: String,
    /// Host of the service (`[<namespace>/]<hostname>`), resolved like a destination.
    pub service: String,
    /// Its port.
    pub port: u16,
    /// Longest wait for an answer.
    #[serde(serialize_with = "crate::ser::ser_duration")]
    pub timeout: Duration,
    /// Prefix put before the request's path in the check request.
    pub path_prefix: String,
    /// Allow the request when the service cannot be reached.
    pub fail_open: bool,
    /// Status sent to the client when the service cannot be reached.
    pub status_on_error: u16,
    /// Request headers sent to the service, besides Host, method and path.
    pub include_request_headers: Vec<Pattern>,
    /// Fixed headers added to the check request.
    #[serde(serialize_with = "ser_pairs")]
    pub include_additional_headers: Vec<(HeaderName, String)>,
    /// Headers of an allowing answer copied into the upstream request.
    pub headers_to_upstream_on_allow: Vec<Pattern>,
    /// Headers of an allowing answer added to the client's response.
    pub headers_to_downstream_on_allow: Vec<Pattern>,
    /// Headers of a denying answer passed to the client (empty: all of them).
    pub headers_to_downstream_on_deny: Vec<Pattern>,
}

/// A header name pattern as Istio writes them: exact, `prefix*` or `*suffix`,
/// without case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Pattern {
    /// The whole name.
    Exact(String),
    /// Names starting with this.
    Prefix(String),
    /// Names ending with this.
    Suffix(String),
}

impl Pattern {
    fn parse(text: &str) -> Pattern {
        let lower = text.to_ascii_lowercase();
        if let Some(p) = lower.strip_suffix('*') {
            Pattern::Prefix(p.to_string())
        } else if let Some(s) = lower.strip_prefix('*') {
            Pattern::Suffix(s.to_string())
        } else {
            Pattern::Exact(lower)
        }
    }

    /// Whether a lowercase header name matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Exact(e) => name == e,
            Pattern::Prefix(p) => name.starts_with(p.as_str()),
            Pattern::Suffix(s) => name.ends_with(s.as_str()),
        }
    }
}

/// Whether any pattern of `list` matches `name`.
pub fn any_matches(list: &[Pattern], name: &str) -> bool {
    list.iter().any(|p| p.matches(name))
}

fn ser_pairs<S: serde::Serializer>(pairs: &[(HeaderName, String)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(pairs.iter().map(|(k, v)| (k.as_str(), v)))
}

/// Parses one `envoyExtAuthzHttp` block; errors are (field under it, message).
pub fn parse(name: &str, http: &Value) -> Result<Provider, (String, String)> {
    let text = |field: &str| http.get(field).and_then(Value::as_str);
    let list = |field: &str| -> Vec<Pattern> {
        http.get(field)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(Pattern::parse).collect())
            .unwrap_or_default()
    };
    let service = text("service")
        .filter(|s| !s.is_empty())
        .ok_or(("service".to_string(), "the service is required".to_string()))?
        .to_string();
    let port = http
        .get("port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or(("port".to_string(), "the port must be 1-65535".to_string()))?;
    let timeout = match text("timeout") {
        None => DEFAULT_TIMEOUT,
        Some(t) => duration::parse(t).map_err(|e| ("timeout".to_string(), e.to_string()))?,
    };
    let status_on_error = match text("statusOnError") {
        None => 403,
        Some(s) => s
            .parse::<u16>()
            .ok()
            .filter(|s| (100..=599).contains(s))
            .ok_or(("statusOnError".to_string(), format!("{s:?} is not an HTTP status")))?,
    };
    let mut include_additional_headers = Vec::new();
    if let Some(map) = http.get("includeAdditionalHeadersInCheck").and_then(Value::as_object) {
        for (k, v) in map {
            let header = HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).map_err(|_| {
                (
                    "includeAdditionalHeadersInCheck".to_string(),
                    format!("{k:?} is not a header name"),
                )
            })?;
            include_additional_headers.push((header, v.as_str().unwrap_or_default().to_string()));
        }
    }
    Ok(Provider {
        name: name.to_string(),
        service,
        port,
        timeout,
        path_prefix: text("pathPrefix").unwrap_or("").to_string(),
        fail_open: http.get("failOpen").and_then(Value::as_bool).unwrap_or(false),
        status_on_error,
        include_request_headers: list("includeRequestHeadersInCheck"),
        include_additional_headers,
        headers_to_upstream_on_allow: list("headersToUpstreamOnAllow"),
        headers_to_downstream_on_allow: list("headersToDownstreamOnAllow"),
        headers_to_downstream_on_deny: list("headersToDownstreamOnDeny"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn provider_fields_and_defaults() {
        let p = parse(
            "authz",
            &json!({"service": "ext-authz.foo.svc.cluster.local", "port": 8000, "pathPrefix": "/check",
                    "includeRequestHeadersInCheck": ["x-ext-authz", "X-Tenant-*"],
                    "headersToUpstreamOnAllow": ["*-user"], "statusOnError": "503"}),
        )
        .expect("valid");
        assert_eq!((p.port, p.status_on_error, p.timeout), (8000, 503, DEFAULT_TIMEOUT));
        assert!(any_matches(&p.include_request_headers, "x-tenant-id"));
        assert!(any_matches(&p.headers_to_upstream_on_allow, "x-user"));
        assert!(!any_matches(&p.include_request_headers, "cookie"));
        assert!(p.headers_to_downstream_on_deny.is_empty());
        assert_eq!(
            parse("a", &json!({"port": 1})).err().map(|e| e.0),
            Some("service".into())
        );
        assert_eq!(
            parse("a", &json!({"service": "s", "port": 1, "statusOnError": "x"}))
                .err()
                .map(|e| e.0),
            Some("statusOnError".into())
        );
    }
}
