//! HTTP routes of the snapshot: virtual hosts, match blocks, actions, header
//! operations and the per-route policy (timeouts, retries, faults, CORS, rate limit).

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use regex::Regex;
use serde::{Serialize, Serializer};

use crate::ser::{
    ser_body, ser_duration, ser_name, ser_names, ser_opt_arc, ser_opt_duration, ser_opt_value, ser_pairs, ser_regex,
};

/// The index of a destination picked by weight (thread-local random, no locks).
pub fn pick_weighted(destinations: &[WeightedCluster], total_weight: u32) -> Option<usize> {
    let last = destinations.len().checked_sub(1)?;
    if last == 0 || total_weight == 0 {
        return Some(0);
    }
    let mut n = fastrand::u32(0..total_weight);
    for (i, d) in destinations.iter().enumerate() {
        if n < d.weight {
            return Some(i);
        }
        n -= d.weight;
    }
    Some(last)
}

/// Routes for one domain on one listener.
#[derive(Debug, Serialize)]
pub struct VirtualHost {
    /// The domain (`app.example.com`, `*.example.com` or `*`).
    pub domain: String,
    /// For HTTPS listeners, the TLS server (certificate) that owns this domain.
    pub tls_server: Option<usize>,
    /// Plain-HTTP requests are redirected to HTTPS.
    pub https_redirect: bool,
    /// Routes in evaluation order.
    pub routes: Vec<Route>,
}

/// One compiled VirtualService HTTP rule.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    /// `name` of the rule, if any.
    pub name: Option<String>,
    /// The resource and rule it came from, e.g. `VirtualService default/app http[1]`.
    pub source: String,
    /// OR'd match blocks; empty matches everything.
    pub matches: Vec<RequestMatch>,
    /// What to do.
    pub action: Action,
    /// Header operations on the request.
    pub request_headers: HeaderOps,
    /// Header operations on the response.
    pub response_headers: HeaderOps,
    /// Timeout, retries, faults and CORS.
    pub policy: RoutePolicy,
}

/// What happens around forwarding: deadlines, retries, injected faults, CORS.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RoutePolicy {
    /// Deadline for the whole request, retries included (None: no deadline).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_opt_duration")]
    pub timeout: Option<Duration>,
    /// Retry policy (Istio's default when the rule has none).
    pub retry: RetryPolicy,
    /// Injected faults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<Box<Fault>>,
    /// CORS handling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors: Option<Box<Cors>>,
    /// Local rate limit (Strait's RateLimit kind).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_opt_arc")]
    pub rate_limit: Option<Arc<crate::ratelimit::RateLimit>>,
}

/// Retry conditions, Envoy's `retry_on` values as bits.
pub mod retry_on {
    /// Any 5xx, a reset, a connect failure or a per-try timeout.
    pub const FIVE_XX: u32 = 1;
    /// 502, 503, 504, a reset or a connect failure.
    pub const GATEWAY_ERROR: u32 = 1 << 1;
    /// The upstream reset or closed the connection before answering.
    pub const RESET: u32 = 1 << 2;
    /// The connection could not be made.
    pub const CONNECT_FAILURE: u32 = 1 << 3;
    /// HTTP/2 REFUSED_STREAM.
    pub const REFUSED_STREAM: u32 = 1 << 4;
    /// 409.
    pub const RETRIABLE_4XX: u32 = 1 << 5;
    /// The codes in `RetryPolicy::status_codes`.
    pub const RETRIABLE_STATUS_CODES: u32 = 1 << 6;
    /// grpc-status CANCELLED (1).
    pub const CANCELLED: u32 = 1 << 7;
    /// grpc-status DEADLINE_EXCEEDED (4).
    pub const DEADLINE_EXCEEDED: u32 = 1 << 8;
    /// grpc-status RESOURCE_EXHAUSTED (8).
    pub const RESOURCE_EXHAUSTED: u32 = 1 << 9;
    /// grpc-status INTERNAL (13).
    pub const INTERNAL: u32 = 1 << 10;
    /// grpc-status UNAVAILABLE (14).
    pub const UNAVAILABLE: u32 = 1 << 11;

    /// The names as written in `retryOn`, with their bits.
    pub const NAMES: &[(&str, u32)] = &[
        ("5xx", FIVE_XX),
        ("gateway-error", GATEWAY_ERROR),
        ("reset", RESET),
        ("connect-failure", CONNECT_FAILURE),
        ("refused-stream", REFUSED_STREAM),
        ("retriable-4xx", RETRIABLE_4XX),
        ("retriable-status-codes", RETRIABLE_STATUS_CODES),
        ("cancelled", CANCELLED),
        ("deadline-exceeded", DEADLINE_EXCEEDED),
        ("resource-exhausted", RESOURCE_EXHAUSTED),
        ("internal", INTERNAL),
        ("unavailable", UNAVAILABLE),
    ];

    /// Envoy conditions Istio passes through that Strait accepts and ignores.
    pub const IGNORED: &[&str] = &[
        "retriable-headers",
        "envoy-ratelimited",
        "http3-post-connect-failure",
        "reset-before-request",
    ];
}

/// How failed tries are retried.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryPolicy {
    /// Retries after the first try.
    pub attempts: u32,
    /// Timeout of each try.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_opt_duration")]
    pub per_try_timeout: Option<Duration>,
    /// `retry_on` bits.
    #[serde(serialize_with = "ser_retry_on")]
    pub on: u32,
    /// Status codes retried under `retriable-status-codes`.
    pub status_codes: Vec<u16>,
}

impl Default for RetryPolicy {
    /// Istio's policy for routes without `retries`: 2 retries on connect failure,
    /// refused stream, gRPC unavailable/cancelled and 503.
    fn default() -> Self {
        RetryPolicy {
            attempts: 2,
            per_try_timeout: None,
            on: retry_on::CONNECT_FAILURE
                | retry_on::REFUSED_STREAM
                | retry_on::UNAVAILABLE
                | retry_on::CANCELLED
                | retry_on::RETRIABLE_STATUS_CODES,
            status_codes: vec![503],
        }
    }
}

impl RetryPolicy {
    /// No retries at all (`attempts: 0`).
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            attempts: 0,
            per_try_timeout: None,
            on: 0,
            status_codes: Vec::new(),
        }
    }

    /// Whether an answer with `status` (and `grpc_status`, if the upstream sent one) is retried.
    pub fn retries_status(&self, status: u16, grpc_status: Option<u32>) -> bool {
        let on = self.on;
        (on & retry_on::FIVE_XX != 0 && (500..=599).contains(&status))
            || (on & retry_on::GATEWAY_ERROR != 0 && matches!(status, 502..=504))
            || (on & retry_on::RETRIABLE_4XX != 0 && status == 409)
            || (on & retry_on::RETRIABLE_STATUS_CODES != 0 && self.status_codes.contains(&status))
            || grpc_status.is_some_and(|g| {
                let bit = match g {
                    1 => retry_on::CANCELLED,
                    4 => retry_on::DEADLINE_EXCEEDED,
                    8 => retry_on::RESOURCE_EXHAUSTED,
                    13 => retry_on::INTERNAL,
                    14 => retry_on::UNAVAILABLE,
                    _ => 0,
                };
                on & bit != 0
            })
    }

    /// Whether a failure to connect is retried.
    pub fn retries_connect_failure(&self) -> bool {
        self.on & (retry_on::FIVE_XX | retry_on::GATEWAY_ERROR | retry_on::CONNECT_FAILURE) != 0
    }

    /// Whether a reset or close before the answer is retried.
    pub fn retries_reset(&self) -> bool {
        self.on & (retry_on::FIVE_XX | retry_on::GATEWAY_ERROR | retry_on::RESET) != 0
    }

    /// Whether a per-try timeout is retried (Envoy counts it under `5xx` and `gateway-error`).
    pub fn retries_timeout(&self) -> bool {
        self.on & (retry_on::FIVE_XX | retry_on::GATEWAY_ERROR) != 0
    }
}

/// Faults injected before forwarding.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    /// Delay and the percentage of requests delayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    /// Abort and the percentage of requests aborted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

/// A compiled fault delay.
#[derive(Debug, Clone, Serialize)]
pub struct FaultDelay {
    /// How long.
    #[serde(serialize_with = "ser_duration")]
    pub duration: Duration,
    /// Share of requests, 0 to 100.
    pub percent: f64,
}

/// A compiled fault abort.
#[derive(Debug, Clone, Serialize)]
pub struct FaultAbort {
    /// HTTP status (200 for gRPC aborts, which carry `grpc-status`).
    pub status: u16,
    /// gRPC status code for gRPC aborts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<u32>,
    /// Share of requests, 0 to 100.
    pub percent: f64,
}

/// Whether a fault with `percent` applies to this request (thread-local random, no locks).
pub fn roll(percent: f64) -> bool {
    percent >= 100.0 || (percent > 0.0 && fastrand::f64() * 100.0 < percent)
}

/// A compiled CORS policy.
#[derive(Debug, Clone, Serialize)]
pub struct Cors {
    /// Allowed origins.
    pub allow_origins: Vec<StrMatch>,
    /// `access-control-allow-methods`.
    #[serde(serialize_with = "ser_opt_value")]
    pub allow_methods: Option<HeaderValue>,
    /// `access-control-allow-headers`.
    #[serde(serialize_with = "ser_opt_value")]
    pub allow_headers: Option<HeaderValue>,
    /// `access-control-expose-headers`.
    #[serde(serialize_with = "ser_opt_value")]
    pub expose_headers: Option<HeaderValue>,
    /// `access-control-max-age`.
    #[serde(serialize_with = "ser_opt_value")]
    pub max_age: Option<HeaderValue>,
    /// `access-control-allow-credentials: true`.
    pub allow_credentials: bool,
    /// Preflights from origins not allowed go upstream (FORWARD) or are answered
    /// without CORS headers (IGNORE).
    pub forward_unmatched_preflights: bool,
}

/// One match block (AND of its conditions).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RequestMatch {
    /// Path match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<StrMatch>,
    /// Case-insensitive path match.
    pub ignore_uri_case: bool,
    /// Scheme match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StrMatch>,
    /// Method match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<StrMatch>,
    /// Authority match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<StrMatch>,
    /// Headers that must match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    /// Headers that must not match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub without_headers: Vec<HeaderMatch>,
    /// Verified JWT claims that must match (`@request.auth.claims.*` header keys).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<ClaimMatch>,
    /// Verified JWT claims that must not match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub without_claims: Vec<ClaimMatch>,
    /// Query parameters that must match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<(String, StrMatch)>,
    /// Gateway port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// A header condition.
#[derive(Debug, Clone, Serialize)]
pub struct HeaderMatch {
    /// Lowercase header name.
    #[serde(serialize_with = "ser_name")]
    pub name: HeaderName,
    /// Value condition.
    pub matcher: StrMatch,
}

/// A condition on a verified JWT claim.
#[derive(Debug, Clone, Serialize)]
pub struct ClaimMatch {
    /// The claim.
    pub claim: crate::claims::ClaimPath,
    /// Value condition; a list claim matches when one of its values does.
    pub matcher: StrMatch,
}

/// A compiled StringMatch.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StrMatch {
    /// Equal.
    Exact(String),
    /// Starts with (plain string).
    Prefix(String),
    /// A path prefix by whole segments, as the Gateway API's PathPrefix: `/v2`
    /// matches `/v2` and `/v2/x`, not `/v2x`. Kept without its trailing `/`; empty
    /// is `/`, every path.
    PathPrefix(String),
    /// Whole-value regex.
    /// Shared: identical patterns compile once, and a clone of a `Regex` would carry
    /// its own cache pool (about 2 KiB).
    Regex(#[serde(serialize_with = "ser_regex")] Arc<Regex>),
    /// Any value, as long as present.
    Present,
}

/// The action of a route.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Proxy to weighted clusters.
    Forward(Forward),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer with a fixed response.
    DirectResponse(DirectResponse),
}

/// Weighted forwarding.
#[derive(Debug, Clone, Serialize)]
pub struct Forward {
    /// Destinations with weights.
    pub destinations: Vec<WeightedCluster>,
    /// Sum of the weights.
    pub total_weight: u32,
    /// URI/authority rewrite.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
    /// Where copies of the requests go.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<Mirror>,
}

/// A mirror: copies of a share of the requests, answers discarded.
#[derive(Debug, Clone, Serialize)]
pub struct Mirror {
    /// Index into `Snapshot::clusters`.
    pub cluster: usize,
    /// Share of requests, 0 to 100.
    pub percent: f64,
}

impl Forward {
    /// Picks a destination by weight with a thread-local random number (no locks).
    pub fn pick(&self) -> Option<&WeightedCluster> {
        self.pick_index().and_then(|i| self.destinations.get(i))
    }

    /// The index of a destination picked by weight.
    pub fn pick_index(&self) -> Option<usize> {
        pick_weighted(&self.destinations, self.total_weight)
    }
}

/// A destination with weight.
#[derive(Debug, Clone, Serialize)]
pub struct WeightedCluster {
    /// Index into `Snapshot::clusters`.
    pub cluster: usize,
    /// Relative weight.
    pub weight: u32,
    /// Request header operations for this destination.
    pub request_headers: HeaderOps,
    /// Response header operations for this destination.
    pub response_headers: HeaderOps,
}

/// A compiled rewrite.
#[derive(Debug, Clone, Serialize)]
pub struct Rewrite {
    /// Replacement for the matched prefix (prefix match) or the whole path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Regex rewrite of the path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri_regex: Option<RegexRewrite>,
    /// New Host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

/// A compiled regex rewrite.
#[derive(Debug, Clone, Serialize)]
pub struct RegexRewrite {
    /// Pattern.
    #[serde(serialize_with = "ser_regex")]
    pub pattern: Arc<Regex>,
    /// Replacement in `regex` crate syntax (`${1}`).
    pub replacement: String,
}

impl RegexRewrite {
    /// The Gateway API's ReplacePrefixMatch of path prefix `prefix` (matched by whole
    /// segments) with `replacement`: `/prefix/one` -> `/one` makes `/prefix/one/two`
    /// `/one/two`; a replacement ending in `/` swallows the `/` after the prefix, so
    /// `/strip` -> `/` makes `/strip/three` `/three` and `/strip` `/`.
    pub fn replace_prefix(prefix: &str, replacement: &str) -> RegexRewrite {
        let prefix = prefix.trim_end_matches('/');
        let (pattern, replacement) = if replacement.ends_with('/') {
            (format!("^{}/*", regex::escape(prefix)), replacement.to_string())
        } else {
            (format!("^{}", regex::escape(prefix)), replacement.to_string())
        };
        RegexRewrite {
            pattern: Arc::new(Regex::new(&pattern).expect("an anchored, escaped literal compiles")),
            replacement: replacement.replace('$', "$$"),
        }
    }

    /// The Gateway API's ReplaceFullPath: the whole path becomes `path`.
    pub fn replace_full_path(path: &str) -> RegexRewrite {
        RegexRewrite {
            pattern: Arc::new(Regex::new("^.*").expect("a constant pattern compiles")),
            replacement: path.replace('$', "$$"),
        }
    }
}

/// A redirect answer.
#[derive(Debug, Clone, Serialize)]
pub struct Redirect {
    /// New path (query kept unless it carries its own).
    pub uri: Option<String>,
    /// New path made from the request's with a regex (the Gateway API's
    /// ReplacePrefixMatch); `uri` wins when both are set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri_regex: Option<RegexRewrite>,
    /// New authority.
    pub authority: Option<String>,
    /// New scheme.
    pub scheme: Option<String>,
    /// New port.
    pub port: Option<u16>,
    /// Keep the request's port.
    pub port_from_request: bool,
    /// Status code.
    pub code: u16,
}

/// A fixed answer.
#[derive(Debug, Clone, Serialize)]
pub struct DirectResponse {
    /// Status.
    pub status: u16,
    /// Body.
    #[serde(serialize_with = "ser_body")]
    pub body: bytes_body::Body,
}

/// Body bytes shared without copying per request.
pub mod bytes_body {
    /// An immutable body.
    pub type Body = std::sync::Arc<[u8]>;
}

/// Header operations, compiled to header names and values.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HeaderOps {
    /// Overwrite.
    #[serde(serialize_with = "ser_pairs", skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Append.
    #[serde(serialize_with = "ser_pairs", skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Remove.
    #[serde(serialize_with = "ser_names", skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<HeaderName>,
}

impl HeaderOps {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

fn ser_retry_on<S: Serializer>(on: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(
        retry_on::NAMES
            .iter()
            .filter(|(_, bit)| on & bit != 0)
            .map(|(name, _)| *name),
    )
}
