//! Tracing settings from Istio's mesh config: the `opentelemetry` extension providers,
//! the one `defaultProviders.tracing` selects, `enableTracing`, and the sampling
//! percentage of `defaultConfig.tracing.sampling`. The gateway's `trace` module
//! exports spans to the selected provider over OTLP (gRPC, or HTTP/protobuf when the
//! provider has an `http` block), as Envoy does for Istio.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::duration;

/// Istio's default sampling percentage (`defaultConfig.tracing.sampling`).
pub const DEFAULT_SAMPLING: f64 = 1.0;

/// Envoy's default longest request path put into the `http.url` attribute.
pub const DEFAULT_MAX_TAG_LENGTH: u32 = 256;

/// The OTLP/HTTP path when the provider's `http.path` is empty (the OTLP default).
pub const DEFAULT_HTTP_PATH: &str = "/v1/traces";

/// Export timeout when the provider sets none: the OTLP exporters' default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How spans travel to the collector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "protocol", rename_all = "snake_case")]
pub enum Transport {
    /// OTLP over gRPC (the provider has no `http` block).
    Grpc {
        /// Request metadata (`grpc.initialMetadata`).
        metadata: Vec<(String, String)>,
    },
    /// OTLP/HTTP with protobuf bodies, POSTed to `path`.
    Http {
        /// Request path (`http.path`).
        path: String,
        /// Extra request headers (`http.headers`).
        headers: Vec<(String, String)>,
    },
}

/// One `opentelemetry` extension provider.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Provider {
    /// Name `defaultProviders.tracing` uses.
    pub name: String,
    /// Host of the collector (`[<namespace>/]<hostname>`).
    pub service: String,
    /// Its port.
    pub port: u16,
    /// gRPC or HTTP, with their settings.
    pub transport: Transport,
    /// Longest wait for one export (`http.timeout` or `grpc.timeout`).
    #[serde(serialize_with = "crate::ser::ser_duration")]
    pub timeout: Duration,
    /// Longest request path kept in `http.url` (`maxTagLength`).
    pub max_tag_length: u32,
    /// `resourceDetectors.environment`: add `OTEL_RESOURCE_ATTRIBUTES` to the resource.
    pub environment_resource: bool,
}

impl Provider {
    /// The collector's host name, without Istio's optional `<namespace>/` prefix.
    pub fn host(&self) -> &str {
        self.service.split_once('/').map_or(self.service.as_str(), |(_, h)| h)
    }
}

/// Tracing as the mesh config turns it on: the provider and how much to sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tracing {
    /// Where spans go.
    pub provider: Provider,
    /// Percentage (0-100) of requests without a parent decision that are traced.
    pub sampling: f64,
}

/// Reads Istio's `HttpHeader` list (`[{name, value}]`); errors are (field, message).
fn header_list(v: Option<&Value>, field: &str) -> Result<Vec<(String, String)>, (String, String)> {
    let mut out = Vec::new();
    for (i, h) in v.and_then(Value::as_array).into_iter().flatten().enumerate() {
        let name = h.get("name").and_then(Value::as_str).unwrap_or("");
        let valid = !name.is_empty() && http::HeaderName::from_bytes(name.as_bytes()).is_ok();
        if !valid {
            return Err((format!("{field}[{i}].name"), format!("{name:?} is not a header name")));
        }
        let value = h.get("value").and_then(Value::as_str).unwrap_or("");
        if http::HeaderValue::from_str(value).is_err() {
            return Err((format!("{field}[{i}].value"), "not a valid header value".into()));
        }
        out.push((name.to_ascii_lowercase(), value.to_string()));
    }
    Ok(out)
}

fn timeout(block: &Value, field: &str) -> Result<Duration, (String, String)> {
    match block.get("timeout").and_then(Value::as_str) {
        None => Ok(DEFAULT_TIMEOUT),
        Some(t) => duration::parse(t).map_err(|e| (format!("{field}.timeout"), e.to_string())),
    }
}

/// Parses one `opentelemetry` block; errors are (field under it, message).
pub fn parse_provider(name: &str, otel: &Value) -> Result<Provider, (String, String)> {
    let service = otel
        .get("service")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(("service".to_string(), "the service is required".to_string()))?
        .to_string();
    let port = otel
        .get("port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or(("port".to_string(), "the port must be 1-65535".to_string()))?;
    let max_tag_length = match otel.get("maxTagLength") {
        None => DEFAULT_MAX_TAG_LENGTH,
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or(("maxTagLength".to_string(), format!("{v} is not a length")))?,
    };
    // Istio picks OTLP/HTTP when `http` is present, gRPC otherwise.
    let (transport, timeout) = match otel.get("http") {
        Some(http) => {
            let path = http.get("path").and_then(Value::as_str).unwrap_or("");
            let path = match path {
                "" => DEFAULT_HTTP_PATH.to_string(),
                p if p.starts_with('/') => p.to_string(),
                p => format!("/{p}"),
            };
            if http::uri::PathAndQuery::try_from(path.as_str()).is_err() {
                return Err(("http.path".into(), format!("{path:?} is not a request path")));
            }
            let headers = header_list(http.get("headers"), "http.headers")?;
            (Transport::Http { path, headers }, timeout(http, "http")?)
        }
        None => {
            let grpc = otel.get("grpc").cloned().unwrap_or(Value::Null);
            let metadata = header_list(grpc.get("initialMetadata"), "grpc.initialMetadata")?;
            (Transport::Grpc { metadata }, timeout(&grpc, "grpc")?)
        }
    };
    let environment_resource = otel
        .get("resourceDetectors")
        .and_then(|d| d.get("environment"))
        .is_some();
    Ok(Provider {
        name: name.to_string(),
        service,
        port,
        transport,
        timeout,
        max_tag_length,
        environment_resource,
    })
}

/// Parts of an `opentelemetry` block Strait reads but does not act on, as field
/// paths under the block, for notes.
pub fn unused_fields(otel: &Value) -> Vec<&'static str> {
    let mut out = Vec::new();
    if otel.get("resourceDetectors").and_then(|d| d.get("dynatrace")).is_some() {
        out.push("resourceDetectors.dynatrace");
    }
    if otel.get("dynatraceSampler").is_some() {
        out.push("dynatraceSampler");
    }
    out
}

/// Reads a sampling percentage: a number from 0 to 100.
pub fn parse_sampling(v: &Value) -> Option<f64> {
    v.as_f64().filter(|p| (0.0..=100.0).contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn grpc_by_default_http_when_asked() {
        let p = parse_provider(
            "otel",
            &json!({"service": "observability/otel-collector.observability.svc.cluster.local", "port": 4317}),
        )
        .expect("valid");
        assert_eq!(p.transport, Transport::Grpc { metadata: vec![] });
        assert_eq!((p.timeout, p.max_tag_length), (DEFAULT_TIMEOUT, 256));
        assert_eq!(p.host(), "otel-collector.observability.svc.cluster.local");
        let p = parse_provider(
            "otel",
            &json!({"service": "c", "port": 4318, "maxTagLength": 99,
                    "http": {"path": "v1/traces", "timeout": "2s",
                             "headers": [{"name": "X-Tenant", "value": "a"}]},
                    "resourceDetectors": {"environment": {}}}),
        )
        .expect("valid");
        assert_eq!(
            p.transport,
            Transport::Http {
                path: "/v1/traces".into(),
                headers: vec![("x-tenant".into(), "a".into())]
            }
        );
        assert_eq!((p.timeout, p.max_tag_length), (Duration::from_secs(2), 99));
        assert!(p.environment_resource);
        let empty_path = parse_provider("o", &json!({"service": "c", "port": 1, "http": {}})).expect("valid");
        assert!(matches!(empty_path.transport, Transport::Http { path, .. } if path == DEFAULT_HTTP_PATH));
    }

    #[test]
    fn bad_fields_are_named() {
        let field = |v: Value| parse_provider("o", &v).err().map(|e| e.0);
        assert_eq!(field(json!({"port": 1})), Some("service".into()));
        assert_eq!(field(json!({"service": "c", "port": 70000})), Some("port".into()));
        assert_eq!(
            field(json!({"service": "c", "port": 1, "http": {"timeout": "soon"}})),
            Some("http.timeout".into())
        );
        assert_eq!(
            field(json!({"service": "c", "port": 1, "http": {"headers": [{"name": "a b"}]}})),
            Some("http.headers[0].name".into())
        );
        assert_eq!(
            field(json!({"service": "c", "port": 1, "grpc": {"timeout": "-1s"}})),
            Some("grpc.timeout".into())
        );
        assert_eq!(parse_sampling(&json!(100)), Some(100.0));
        assert_eq!(parse_sampling(&json!(0.5)), Some(0.5));
        assert_eq!(parse_sampling(&json!(101)), None);
        assert_eq!(parse_sampling(&json!("1")), None);
        assert_eq!(
            unused_fields(&json!({"dynatraceSampler": {}, "resourceDetectors": {"dynatrace": {}}})),
            vec!["resourceDetectors.dynatrace", "dynatraceSampler"]
        );
    }
}
