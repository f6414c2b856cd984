//! The compiled, immutable configuration an engine serves from. Everything the
//! request path needs (regexes, weights, header names) is built here, before the
//! swap; it serializes to what `/config_dump` shows.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use regex::Regex;
use serde::{Serialize, Serializer};

use crate::resources::networking::Labels;

/// A complete configuration for one proxy.
#[derive(Debug, Default, Serialize)]
pub struct Snapshot {
    /// Increases with every accepted configuration.
    pub version: u64,
    /// The files it was built from.
    pub sources: Vec<String>,
    /// Listeners by port.
    pub listeners: Vec<Listener>,
    /// Upstream clusters, referenced by index from routes.
    pub clusters: Vec<Cluster>,
    /// Server certificates, referenced by index from listeners.
    pub certificates: Vec<Certificate>,
    /// AuthorizationPolicies that apply to this proxy.
    #[serde(skip_serializing_if = "crate::authz::Authz::is_empty")]
    pub authz: crate::authz::Authz,
    /// RequestAuthentication JWT providers that apply to this proxy.
    #[serde(skip_serializing_if = "crate::jwt::JwtAuth::is_empty")]
    pub jwt: crate::jwt::JwtAuth,
    /// External authorizers the CUSTOM policies name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ext_authz: Vec<ExtAuthz>,
    /// Server certificates to obtain and renew with ACME.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub acme: Vec<crate::acme::ManagedCert>,
}

/// An external authorizer and the cluster serving it.
#[derive(Debug, Clone, Serialize)]
pub struct ExtAuthz {
    /// Its settings from the mesh config.
    pub provider: crate::ext_authz::Provider,
    /// Index into `Snapshot::clusters`.
    pub cluster: usize,
}

impl Snapshot {
    /// The listener for a Gateway port.
    pub fn listener(&self, port: u16) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.port == port)
    }
}

/// Listener protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    /// Plain HTTP/1.1 (and h2c).
    Http,
    /// TLS-terminated HTTP/1.1 and HTTP/2.
    Https,
    /// Plain TCP, proxied by `tcp` routes.
    Tcp,
    /// TLS passed through unopened, routed by SNI (`tls` routes).
    #[serde(rename = "TLS_PASSTHROUGH")]
    TlsPassthrough,
}

/// One port of the proxy.
#[derive(Debug, Serialize)]
pub struct Listener {
    /// The port as declared in the Gateway (before `--port-map`).
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
    /// For HTTPS: which certificate serves which SNI names.
    pub tls_servers: Vec<TlsServer>,
    /// SNI lookup into `tls_servers`.
    pub sni: HostTable,
    /// Virtual hosts.
    pub virtual_hosts: Vec<VirtualHost>,
    /// Host lookup into `virtual_hosts`.
    pub hosts: HostTable,
    /// TCP and TLS routes, in order (TCP and TLS_PASSTHROUGH listeners).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub l4_routes: Vec<L4Route>,
}

/// A TCP route, or a TLS route matching SNI names.
#[derive(Debug, Clone, Serialize)]
pub struct L4Route {
    /// The resource and rule it came from.
    pub source: String,
    /// SNI names (`*.suffix` allowed) for TLS routes; empty matches every connection.
    pub sni_hosts: Vec<String>,
    /// Destinations with weights.
    pub destinations: Vec<WeightedCluster>,
    /// Sum of the weights.
    pub total_weight: u32,
}

impl L4Route {
    /// Whether a connection with `sni` (lowercase; None when the client sent none) matches.
    pub fn matches_sni(&self, sni: Option<&str>) -> bool {
        self.sni_hosts.is_empty()
            || sni.is_some_and(|sni| {
                self.sni_hosts.iter().any(|h| match h.strip_prefix('*') {
                    Some(suffix) => sni.len() > suffix.len() && sni.ends_with(suffix),
                    None => h == sni,
                })
            })
    }

    /// A destination picked by weight.
    pub fn pick(&self) -> Option<&WeightedCluster> {
        pick_weighted(&self.destinations, self.total_weight).and_then(|i| self.destinations.get(i))
    }
}

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

/// An HTTPS server block: its SNI names and certificate.
#[derive(Debug, Serialize)]
pub struct TlsServer {
    /// Hosts (lowercase, `*.` wildcards allowed).
    pub hosts: Vec<String>,
    /// Index into `Snapshot::certificates`.
    pub certificate: usize,
    /// The Gateway server it came from.
    pub source: String,
    /// Client certificate checking (tls.mode MUTUAL or OPTIONAL_MUTUAL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_auth: Option<ClientAuth>,
    /// Oldest TLS version accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_version: Option<TlsVersion>,
    /// Newest TLS version accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_version: Option<TlsVersion>,
    /// TLS 1.2 cipher suites accepted, by IANA name; empty accepts all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
}

/// How a Gateway server checks client certificates.
#[derive(Debug, Clone, Serialize)]
pub struct ClientAuth {
    /// MUTUAL (a certificate is required) rather than OPTIONAL_MUTUAL.
    pub required: bool,
    /// Roots client certificates must chain to.
    pub ca: PemSource,
    /// Revoked certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crl: Option<PemSource>,
    /// Accepted subject alternative names of the client (empty: any).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

/// A TLS protocol version the gateway serves (rustls has no older ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum TlsVersion {
    /// TLS 1.2.
    #[serde(rename = "TLSV1_2")]
    Tls12,
    /// TLS 1.3.
    #[serde(rename = "TLSV1_3")]
    Tls13,
}

/// Where a certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum CertificateSource {
    /// PEM held in a Secret of the bundle (private key never serialized).
    Inline {
        /// Certificate chain PEM.
        #[serde(skip)]
        cert_pem: Vec<u8>,
        /// Private key PEM.
        #[serde(skip)]
        key_pem: Vec<u8>,
    },
    /// PEM files read by the engine.
    Files {
        /// Certificate chain path.
        cert: String,
        /// Private key path.
        key: String,
    },
    /// A certificate made up by the engine for `hosts`, served until ACME issues one.
    #[serde(rename = "self-signed")]
    SelfSigned {
        /// Names it covers.
        hosts: Vec<String>,
    },
}

/// A server certificate.
#[derive(Debug, Clone, Serialize)]
pub struct Certificate {
    /// e.g. `secret default/app-example-com-tls` or `file /etc/certs/tls.crt`.
    pub name: String,
    /// Where it comes from.
    pub source: CertificateSource,
}

/// Exact, wildcard-suffix and catch-all host lookup.
#[derive(Debug, Default)]
pub struct HostTable {
    exact: HashMap<Box<str>, usize>,
    /// Keyed by the suffix with its dot: `*.example.com` -> `.example.com`.
    suffix: HashMap<Box<str>, usize>,
    any: Option<usize>,
}

impl HostTable {
    /// Adds `host` (lowercase; `*`, `*.suffix` or exact). The first entry for a key wins.
    pub fn insert(&mut self, host: &str, index: usize) -> bool {
        if host == "*" {
            let fresh = self.any.is_none();
            self.any.get_or_insert(index);
            return fresh;
        }
        let (map, key) = match host.strip_prefix('*') {
            Some(rest) => (&mut self.suffix, rest),
            None => (&mut self.exact, host),
        };
        if map.contains_key(key) {
            return false;
        }
        map.insert(key.into(), index);
        true
    }

    /// The most specific entry for `host` (lowercase, without port): exact, then the
    /// longest wildcard suffix, then `*`.
    pub fn lookup(&self, host: &str) -> Option<usize> {
        if let Some(i) = self.exact.get(host) {
            return Some(*i);
        }
        if !self.suffix.is_empty() {
            let mut rest = host;
            while let Some(dot) = rest.find('.') {
                let candidate = &rest[dot..];
                // A wildcard needs at least one character before the suffix.
                if candidate.len() < host.len() {
                    if let Some(i) = self.suffix.get(candidate) {
                        return Some(*i);
                    }
                }
                rest = &rest[dot + 1..];
            }
        }
        self.any
    }
}

impl Serialize for HostTable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut all: Vec<(String, usize)> = self.exact.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        all.extend(self.suffix.iter().map(|(k, v)| (format!("*{k}"), *v)));
        all.extend(self.any.map(|v| ("*".to_string(), v)));
        all.sort();
        s.collect_map(all)
    }
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

/// A redirect answer.
#[derive(Debug, Clone, Serialize)]
pub struct Redirect {
    /// New path (query kept unless it carries its own).
    pub uri: Option<String>,
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

/// An upstream service (host, port, subset) and its endpoints.
#[derive(Debug, Serialize)]
pub struct Cluster {
    /// Istio-style name: `outbound|8080|v1|backend.default.svc.cluster.local`.
    pub name: String,
    /// Service host.
    pub host: String,
    /// Service port.
    pub port: u16,
    /// Subset.
    pub subset: Option<String>,
    /// Endpoints.
    pub endpoints: Vec<Endpoint>,
    /// Load balancing, limits and outlier detection from the DestinationRule.
    pub policy: ClusterPolicy,
    /// A host outside the registry under REGISTRY_ONLY: requests get 502.
    pub blackhole: bool,
    /// Round-robin position; per snapshot, so a reload starts it over.
    #[serde(skip)]
    pub next: AtomicUsize,
}

impl Cluster {
    /// A stable key for the cluster's connection pool: connections are never shared
    /// between clusters (two clusters may reach one address with different TLS roots).
    pub fn pool_key(&self) -> u64 {
        hash_bytes(self.name.as_bytes())
    }
}

/// How a cluster is used: Istio's DestinationRule traffic policy, compiled.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterPolicy {
    /// Endpoint choice.
    pub lb: LoadBalancer,
    /// Connect timeout (the engine's default when None).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_opt_duration")]
    pub connect_timeout: Option<Duration>,
    /// Idle timeout of pooled upstream connections.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_opt_duration")]
    pub idle_timeout: Option<Duration>,
    /// Concurrency limits.
    pub limits: PoolLimits,
    /// Passive health checking.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outlier: Option<Outlier>,
    /// Speak HTTP/2 to the upstream (h2UpgradePolicy UPGRADE).
    pub h2_upstream: bool,
    /// TLS to the upstream (DestinationRule `tls` SIMPLE or MUTUAL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
}

/// TLS origination towards a cluster's endpoints.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamTls {
    /// Server name sent and verified (the DestinationRule's `sni`, else the service host).
    pub sni: String,
    /// Trusted roots (the system's when None).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PemSource>,
    /// Client certificate chain and key for MUTUAL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<(PemSource, PemSource)>,
    /// Skip verifying the server (`insecureSkipVerify`).
    pub insecure_skip_verify: bool,
}

/// PEM from a Secret of the bundle or from a file read by the engine.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum PemSource {
    /// Held in the bundle (a Secret key); never serialized.
    Inline {
        /// e.g. `secret default/client-cert ca.crt`.
        name: String,
        /// The PEM.
        #[serde(skip)]
        pem: Vec<u8>,
    },
    /// A file path.
    File {
        /// Path.
        path: String,
    },
}

/// Endpoint choice.
#[derive(Debug, Clone, Default, Serialize)]
pub enum LoadBalancer {
    /// In turn.
    #[serde(rename = "ROUND_ROBIN")]
    RoundRobin,
    /// The less busy of two random endpoints (Istio's default).
    #[default]
    #[serde(rename = "LEAST_REQUEST")]
    LeastRequest,
    /// At random.
    #[serde(rename = "RANDOM")]
    Random,
    /// The original destination (sidecars); at a gateway, treated as LEAST_REQUEST.
    #[serde(rename = "PASSTHROUGH")]
    Passthrough,
    /// By a hash of the request.
    #[serde(rename = "CONSISTENT_HASH")]
    Hash(Box<HashPolicy>),
}

impl LoadBalancer {
    /// Istio's name of the policy.
    pub fn name(&self) -> &'static str {
        match self {
            LoadBalancer::RoundRobin => "ROUND_ROBIN",
            LoadBalancer::LeastRequest => "LEAST_REQUEST",
            LoadBalancer::Random => "RANDOM",
            LoadBalancer::Passthrough => "PASSTHROUGH",
            LoadBalancer::Hash(_) => "CONSISTENT_HASH",
        }
    }
}

/// Consistent hashing: what is hashed and the table that maps hashes to endpoints.
#[derive(Debug, Clone, Serialize)]
pub struct HashPolicy {
    /// The hashed part of the request.
    pub key: HashKey,
    /// Hash to endpoint.
    pub table: HashTable,
}

/// The part of a request that is hashed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashKey {
    /// A request header.
    Header(#[serde(serialize_with = "ser_name")] HeaderName),
    /// A cookie, set by the gateway when absent if a ttl is given.
    Cookie {
        /// Cookie name.
        name: String,
        /// Cookie path.
        path: Option<String>,
        /// Lifetime of a generated cookie (0: a session cookie).
        #[serde(serialize_with = "ser_opt_duration")]
        ttl: Option<Duration>,
    },
    /// The client address.
    SourceIp,
    /// A query parameter.
    QueryParameter(String),
}

/// Hash to endpoint index.
#[derive(Debug, Clone, Serialize)]
pub enum HashTable {
    /// Ketama ring: sorted (point, endpoint) pairs.
    Ring(#[serde(serialize_with = "ser_len")] Vec<(u64, u32)>),
    /// Maglev lookup table.
    Maglev(#[serde(serialize_with = "ser_len")] Vec<u32>),
}

impl HashTable {
    /// A ring with at least `min_size` points, the same number per endpoint.
    pub fn ring(endpoints: &[Endpoint], min_size: usize) -> HashTable {
        let per = min_size.div_ceil(endpoints.len().max(1));
        let mut ring = Vec::with_capacity(per * endpoints.len());
        for (i, e) in endpoints.iter().enumerate() {
            let name = e.address.to_string();
            for replica in 0..per {
                let point = hash_bytes(format!("{name}_{replica}").as_bytes());
                ring.push((point, u32::try_from(i).unwrap_or(u32::MAX)));
            }
        }
        ring.sort_unstable();
        HashTable::Ring(ring)
    }

    /// A Maglev table of `size` (a prime) entries.
    pub fn maglev(endpoints: &[Endpoint], size: u32) -> HashTable {
        let n = endpoints.len();
        if n == 0 {
            return HashTable::Maglev(Vec::new());
        }
        let m = u64::from(size);
        let perms: Vec<(u64, u64)> = endpoints
            .iter()
            .map(|e| {
                let name = e.address.to_string();
                let offset = hash_bytes(name.as_bytes()) % m;
                let skip = hash_bytes(format!("{name}#skip").as_bytes()) % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        let mut table = vec![u32::MAX; size as usize];
        let mut next = vec![0u64; n];
        let mut filled = 0usize;
        'fill: loop {
            for (i, (offset, skip)) in perms.iter().enumerate() {
                let mut c = (offset + next[i] * skip) % m;
                while table[c as usize] != u32::MAX {
                    next[i] += 1;
                    c = (offset + next[i] * skip) % m;
                }
                table[c as usize] = u32::try_from(i).unwrap_or(u32::MAX);
                next[i] += 1;
                filled += 1;
                if filled == table.len() {
                    break 'fill;
                }
            }
        }
        HashTable::Maglev(table)
    }

    /// The endpoint index for `hash`.
    pub fn lookup(&self, hash: u64) -> Option<usize> {
        match self {
            HashTable::Ring(ring) => {
                let i = ring.partition_point(|(p, _)| *p < hash);
                ring.get(i).or(ring.first()).map(|(_, e)| *e as usize)
            }
            HashTable::Maglev(table) => {
                let len = table.len() as u64;
                (len > 0).then(|| table[(hash % len) as usize] as usize)
            }
        }
    }

    /// The endpoint index for `hash`, skipping endpoints `skip` refuses (ejected or
    /// already tried): the next distinct endpoint along the ring (or table).
    pub fn lookup_where(&self, hash: u64, mut accept: impl FnMut(usize) -> bool) -> Option<usize> {
        match self {
            HashTable::Ring(ring) => {
                let start = ring.partition_point(|(p, _)| *p < hash);
                (0..ring.len().min(4096))
                    .map(|k| ring[(start + k) % ring.len()].1 as usize)
                    .find(|e| accept(*e))
            }
            HashTable::Maglev(table) => {
                let len = table.len();
                let start = (hash % (len.max(1) as u64)) as usize;
                (0..len.min(4096))
                    .map(|k| table[(start + k) % len] as usize)
                    .find(|e| accept(*e))
            }
        }
    }
}

/// A stable 64-bit hash (FNV-1a with a final avalanche): the same key maps to the
/// same endpoint on every replica and after every restart.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Concurrency limits from connectionPool.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PoolLimits {
    /// Connections (= concurrent HTTP/1 requests) to the cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Requests allowed to wait for a connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pending: Option<u32>,
    /// Concurrent requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
    /// Requests per upstream connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<u32>,
    /// Concurrent retries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
}

/// Outlier detection settings.
#[derive(Debug, Clone, Serialize)]
pub struct Outlier {
    /// Consecutive 5xx (and connect failures) before ejection.
    pub consecutive_5xx: Option<u32>,
    /// Consecutive 502/503/504 (and connect failures) before ejection.
    pub consecutive_gateway: Option<u32>,
    /// How often ejections are reviewed.
    #[serde(serialize_with = "ser_duration")]
    pub interval: Duration,
    /// Ejection time, times the number of ejections so far.
    #[serde(serialize_with = "ser_duration")]
    pub base_ejection_time: Duration,
    /// Most endpoints ejected at once, in percent.
    pub max_ejection_percent: u32,
    /// Below this share of healthy endpoints, ejections are ignored.
    pub min_health_percent: u32,
}

impl Cluster {
    /// The next endpoint in round-robin order.
    pub fn pick(&self) -> Option<&Endpoint> {
        self.endpoints.get(self.pick_index()?)
    }

    /// The index of the next endpoint in round-robin order.
    pub fn pick_index(&self) -> Option<usize> {
        match self.endpoints.len() {
            0 => None,
            1 => Some(0),
            _ => self.round_robin(|_| true),
        }
    }

    /// The index of the next endpoint in round-robin order that `accept` takes,
    /// looking at each endpoint at most once.
    pub fn round_robin(&self, accept: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|k| (start + k) % n).find(|i| accept(*i))
    }
}

/// One upstream address.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    /// Address (for DNS endpoints, the unspecified address with the port).
    pub address: SocketAddr,
    /// A name the engine resolves (ServiceEntry resolution DNS), cached for its TTL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Labels.
    pub labels: Labels,
    /// The workload it belongs to, for metrics (a WorkloadEntry's name, as Istio names
    /// it); None when unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
}

fn ser_opt_arc<T: Serialize, S: Serializer>(v: &Option<Arc<T>>, s: S) -> Result<S::Ok, S::Error> {
    v.as_deref().serialize(s)
}

fn ser_len<T, S: Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{} entries", v.len()))
}

/// A duration as `<seconds>s`, Istio's notation.
pub(crate) fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{}s", d.as_secs_f64()))
}

fn ser_opt_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_duration(d, s),
        None => s.serialize_none(),
    }
}

fn ser_opt_value<S: Serializer>(v: &Option<HeaderValue>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_str(&String::from_utf8_lossy(v.as_bytes())),
        None => s.serialize_none(),
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

fn ser_regex<S: Serializer>(r: &Arc<Regex>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.as_str())
}

/// A header name as its text.
pub(crate) fn ser_name<S: Serializer>(n: &HeaderName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(n.as_str())
}

fn ser_names<S: Serializer>(v: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(HeaderName::as_str))
}

fn ser_pairs<S: Serializer>(v: &[(HeaderName, HeaderValue)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(
        v.iter()
            .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v.as_bytes()))),
    )
}

fn ser_body<S: Serializer>(b: &bytes_body::Body, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_table_prefers_exact_then_longest_wildcard() {
        let mut t = HostTable::default();
        t.insert("*", 0);
        t.insert("*.example.com", 1);
        t.insert("*.api.example.com", 2);
        t.insert("app.example.com", 3);
        assert_eq!(t.lookup("app.example.com"), Some(3));
        assert_eq!(t.lookup("x.api.example.com"), Some(2));
        assert_eq!(t.lookup("a.b.example.com"), Some(1));
        assert_eq!(t.lookup("example.com"), Some(0));
        assert_eq!(t.lookup("other.org"), Some(0));
    }

    #[test]
    fn wildcard_does_not_match_bare_suffix() {
        let mut t = HostTable::default();
        t.insert("*.example.com", 1);
        assert_eq!(t.lookup("example.com"), None);
        assert_eq!(t.lookup(".example.com"), None);
    }
}
