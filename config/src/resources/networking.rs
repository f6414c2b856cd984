//! networking.istio.io (v1, v1beta1, v1alpha3) specs: Gateway, VirtualService,
//! DestinationRule, ServiceEntry and WorkloadEntry.
//!
//! The whole schema is modelled so that valid Istio YAML never draws an
//! unknown-field warning; policy blocks that a later part of Strait interprets are
//! kept as raw JSON until then.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use super::traffic_policy::{
    CookieAttribute, Http2KeepAlive, LocalityLbSetting, ProxyProtocol, TcpKeepalive, Tunnel, Warmup, ZoneAwareLbSetting,
};

/// Labels or selectors.
pub type Labels = BTreeMap<String, String>;

/// Gateway spec.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewaySpec {
    /// Servers (listeners) of the gateway.
    pub servers: Vec<Server>,
    /// Labels of the gateway workloads this applies to.
    pub selector: Labels,
}

/// One server of a Gateway.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Server {
    /// The port to listen on.
    pub port: Option<Port>,
    /// Bind address (unused by the edge gateway).
    pub bind: Option<String>,
    /// Hosts exposed, optionally `namespace/host`.
    pub hosts: Vec<String>,
    /// TLS settings.
    pub tls: Option<ServerTls>,
    /// Default endpoint (sidecar ingress only).
    pub default_endpoint: Option<String>,
    /// Optional server name.
    pub name: Option<String>,
}

/// A port with protocol (Gateway servers and ServiceEntries).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Port {
    /// Port number.
    pub number: Option<i64>,
    /// HTTP|HTTPS|GRPC|HTTP2|MONGO|TCP|TLS.
    pub protocol: Option<String>,
    /// Port name.
    pub name: Option<String>,
    /// Port on the endpoints (ServiceEntry); deprecated on Gateway servers.
    pub target_port: Option<i64>,
}

/// Gateway server TLS settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServerTls {
    /// Redirect plain HTTP to HTTPS.
    pub https_redirect: bool,
    /// PASSTHROUGH|SIMPLE|MUTUAL|AUTO_PASSTHROUGH|ISTIO_MUTUAL|OPTIONAL_MUTUAL.
    pub mode: Option<String>,
    /// Certificate file.
    pub server_certificate: Option<String>,
    /// Key file.
    pub private_key: Option<String>,
    /// CA file for client certificates.
    pub ca_certificates: Option<String>,
    /// CRL file.
    pub ca_crl: Option<String>,
    /// Secret holding the certificate.
    pub credential_name: Option<String>,
    /// Several secrets (RSA + ECDSA).
    pub credential_names: Vec<String>,
    /// Several certificate pairs.
    pub tls_certificates: Vec<Value>,
    /// Allowed client SANs.
    pub subject_alt_names: Vec<String>,
    /// Client certificate pins.
    pub verify_certificate_spki: Vec<String>,
    /// Client certificate hashes.
    pub verify_certificate_hash: Vec<String>,
    /// Minimum TLS version.
    pub min_protocol_version: Option<String>,
    /// Maximum TLS version.
    pub max_protocol_version: Option<String>,
    /// Cipher suites.
    pub cipher_suites: Vec<String>,
    /// ECDH curves.
    pub ecdh_curves: Vec<String>,
    /// ALPN protocols offered.
    pub alpn_protocols: Vec<String>,
    /// Secret holding the CA bundle for client certificates.
    pub ca_cert_credential_name: Option<String>,
    /// Accept client certificates without verifying them.
    pub insecure_skip_verify: Option<bool>,
}

/// VirtualService spec.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VirtualServiceSpec {
    /// Hosts this applies to.
    pub hosts: Vec<String>,
    /// Gateways (and `mesh`) this binds to.
    pub gateways: Vec<String>,
    /// HTTP routes, in order.
    pub http: Vec<HttpRoute>,
    /// TLS routes (passthrough, by SNI).
    pub tls: Vec<TlsRoute>,
    /// TCP routes.
    pub tcp: Vec<TcpRoute>,
    /// Namespaces this is exported to.
    pub export_to: Vec<String>,
}

/// A TCP route, or a TLS route (whose matches carry `sniHosts`): Istio's TCPRoute
/// and TLSRoute have the same shape.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct L4RouteSpec {
    /// Match conditions, OR'd.
    #[serde(rename = "match")]
    pub matches: Vec<L4Match>,
    /// Weighted destinations.
    pub route: Vec<RouteDestination>,
}

/// A TLS route: connections whose SNI matches go to the destinations, unopened.
pub type TlsRoute = L4RouteSpec;

/// A TCP route.
pub type TcpRoute = L4RouteSpec;

/// Istio's TLSMatchAttributes and L4MatchAttributes (sniHosts only for TLS).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct L4Match {
    /// SNI names (TLS routes).
    pub sni_hosts: Vec<String>,
    /// Destination IP ranges.
    pub destination_subnets: Vec<String>,
    /// Gateway port.
    pub port: Option<i64>,
    /// Source workload labels (sidecars).
    pub source_labels: Labels,
    /// Gateways this match applies to.
    pub gateways: Vec<String>,
    /// Source namespace (sidecars).
    pub source_namespace: Option<String>,
    /// Source IP range (deprecated by Istio, never implemented).
    pub source_subnet: Option<String>,
}

/// A weighted destination of a TCP or TLS route.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RouteDestination {
    /// Where to send.
    pub destination: Option<Destination>,
    /// Relative weight.
    pub weight: Option<i64>,
}

/// One HTTP route rule.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRoute {
    /// Route name.
    pub name: Option<String>,
    /// Match conditions, OR'd.
    #[serde(rename = "match")]
    pub matches: Vec<HttpMatchRequest>,
    /// Weighted destinations.
    pub route: Vec<HttpRouteDestination>,
    /// Redirect instead of forwarding.
    pub redirect: Option<HttpRedirect>,
    /// Answer directly.
    pub direct_response: Option<HttpDirectResponse>,
    /// Delegate to another VirtualService.
    pub delegate: Option<Value>,
    /// URI/authority rewrite.
    pub rewrite: Option<HttpRewrite>,
    /// Whole-request timeout.
    pub timeout: Option<String>,
    /// Retry policy.
    pub retries: Option<HttpRetry>,
    /// Fault injection.
    pub fault: Option<HttpFaultInjection>,
    /// Mirror destination.
    pub mirror: Option<Destination>,
    /// Several mirrors.
    pub mirrors: Vec<HttpMirrorPolicy>,
    /// Mirror percentage.
    pub mirror_percentage: Option<Percent>,
    /// Deprecated mirror percent (also spelled `mirror_percent`).
    #[serde(alias = "mirror_percent")]
    pub mirror_percent: Option<i64>,
    /// CORS policy.
    pub cors_policy: Option<CorsPolicy>,
    /// Header manipulation.
    pub headers: Option<Headers>,
}

/// One match block; fields are AND'd.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpMatchRequest {
    /// Match name.
    pub name: Option<String>,
    /// URI (path) match.
    pub uri: Option<StringMatch>,
    /// Scheme match.
    pub scheme: Option<StringMatch>,
    /// Method match.
    pub method: Option<StringMatch>,
    /// Authority (Host) match.
    pub authority: Option<StringMatch>,
    /// Header matches (lowercase names).
    pub headers: BTreeMap<String, StringMatch>,
    /// Port match.
    pub port: Option<i64>,
    /// Source label selector (sidecars).
    pub source_labels: Labels,
    /// Gateways this match applies to.
    pub gateways: Vec<String>,
    /// Query parameter matches.
    pub query_params: BTreeMap<String, StringMatch>,
    /// Case-insensitive URI match.
    pub ignore_uri_case: bool,
    /// Headers that must be absent.
    pub without_headers: BTreeMap<String, StringMatch>,
    /// Source namespace (sidecars).
    pub source_namespace: Option<String>,
    /// Stat prefix.
    pub stat_prefix: Option<String>,
}

/// Istio's StringMatch: one of exact, prefix, regex; empty means "present".
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StringMatch {
    /// Exact value.
    pub exact: Option<String>,
    /// Plain-string prefix.
    pub prefix: Option<String>,
    /// RE2 regex, matched against the whole value.
    pub regex: Option<String>,
}

/// One weighted destination.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRouteDestination {
    /// Where to send.
    pub destination: Option<Destination>,
    /// Relative weight.
    pub weight: Option<i64>,
    /// Header manipulation for this destination.
    pub headers: Option<Headers>,
}

/// A service (and optional subset/port).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Destination {
    /// Service host, short or fully qualified.
    pub host: String,
    /// DestinationRule subset.
    pub subset: Option<String>,
    /// Service port.
    pub port: Option<PortSelector>,
}

/// A port selector.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PortSelector {
    /// Port number.
    pub number: Option<i64>,
}

/// Redirect settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRedirect {
    /// New path.
    pub uri: Option<String>,
    /// New authority.
    pub authority: Option<String>,
    /// New port.
    pub port: Option<i64>,
    /// FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT.
    pub derive_port: Option<String>,
    /// New scheme.
    pub scheme: Option<String>,
    /// Status code, default 301.
    pub redirect_code: Option<i64>,
    /// Replacement for the matched prefix (Istio 1.26+).
    pub prefix_rewrite: Option<String>,
}

/// Direct response settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpDirectResponse {
    /// Status code.
    pub status: Option<i64>,
    /// Body.
    pub body: Option<HttpBody>,
}

/// A direct response body.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpBody {
    /// Text body.
    pub string: Option<String>,
    /// Base64 body.
    pub bytes: Option<String>,
}

/// Rewrite settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRewrite {
    /// Replacement for the matched path or prefix.
    pub uri: Option<String>,
    /// New authority.
    pub authority: Option<String>,
    /// Regex rewrite of the path.
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// A regex rewrite.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RegexRewrite {
    /// The regex.
    #[serde(rename = "match")]
    pub pattern: Option<String>,
    /// The replacement, with `\1` style groups.
    pub rewrite: Option<String>,
}

/// Request and response header operations.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Headers {
    /// Operations on the request.
    pub request: Option<HeaderOperations>,
    /// Operations on the response.
    pub response: Option<HeaderOperations>,
}

/// Header operations.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HeaderOperations {
    /// Overwrite.
    pub set: BTreeMap<String, String>,
    /// Append.
    pub add: BTreeMap<String, String>,
    /// Remove.
    pub remove: Vec<String>,
}

/// One of several mirrors.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpMirrorPolicy {
    /// Where copies go.
    pub destination: Destination,
    /// Share of requests copied (all when absent).
    pub percentage: Option<Percent>,
}

/// Retry policy of a route.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRetry {
    /// Attempts after the first try; 0 disables retries.
    pub attempts: Option<i64>,
    /// Timeout of each try.
    pub per_try_timeout: Option<String>,
    /// Comma-separated conditions (Envoy's x-envoy-retry-on values and status codes).
    pub retry_on: Option<String>,
    /// Prefer other localities on retry.
    pub retry_remote_localities: Option<bool>,
    /// Do not retry on a host tried before.
    pub retry_ignore_previous_hosts: Option<bool>,
    /// Base interval between retries.
    pub backoff: Option<String>,
}

/// Fault injection of a route.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpFaultInjection {
    /// Delay before forwarding.
    pub delay: Option<FaultDelay>,
    /// Answer with an error instead of forwarding.
    pub abort: Option<FaultAbort>,
}

/// A fault delay.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FaultDelay {
    /// How long.
    pub fixed_delay: Option<String>,
    /// Exponential delay (not supported by Istio either).
    pub exponential_delay: Option<String>,
    /// Share of requests delayed.
    pub percentage: Option<Percent>,
    /// Deprecated integer share.
    pub percent: Option<i64>,
}

/// A fault abort.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FaultAbort {
    /// HTTP status to answer with.
    pub http_status: Option<i64>,
    /// gRPC status name (e.g. UNAVAILABLE) to answer with.
    pub grpc_status: Option<String>,
    /// HTTP/2 error (not supported by Istio either).
    pub http2_error: Option<String>,
    /// Share of requests aborted.
    pub percentage: Option<Percent>,
}

/// A percentage in [0, 100].
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Percent {
    /// The value.
    pub value: Option<f64>,
}

/// CORS policy of a route.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CorsPolicy {
    /// Origins allowed, as string matches.
    pub allow_origins: Vec<StringMatch>,
    /// Deprecated exact origins.
    pub allow_origin: Vec<String>,
    /// Methods allowed.
    pub allow_methods: Vec<String>,
    /// Request headers allowed.
    pub allow_headers: Vec<String>,
    /// Response headers the browser may read.
    pub expose_headers: Vec<String>,
    /// How long the preflight answer may be cached.
    pub max_age: Option<String>,
    /// Whether credentials are allowed.
    pub allow_credentials: Option<bool>,
    /// FORWARD (default) or IGNORE preflights whose origin is not allowed.
    pub unmatched_preflights: Option<String>,
}

/// DestinationRule traffic policy (also per subset and per port).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TrafficPolicy {
    /// Load balancing.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection limits and timeouts.
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Passive health checking.
    pub outlier_detection: Option<OutlierDetection>,
    /// Upstream TLS.
    pub tls: Option<ClientTlsSettings>,
    /// Per-port overrides.
    pub port_level_settings: Vec<PortTrafficPolicy>,
    /// PROXY protocol to upstreams.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Tunnel settings.
    pub tunnel: Option<Tunnel>,
    /// Budget of concurrent retries.
    pub retry_budget: Option<Value>,
}

/// Per-port traffic policy.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PortTrafficPolicy {
    /// The port.
    pub port: Option<PortSelector>,
    /// Load balancing.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection limits and timeouts.
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Passive health checking.
    pub outlier_detection: Option<OutlierDetection>,
    /// Upstream TLS.
    pub tls: Option<ClientTlsSettings>,
}

/// Load balancer settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LoadBalancerSettings {
    /// ROUND_ROBIN, LEAST_REQUEST, LEAST_CONN, RANDOM, PASSTHROUGH, UNSPECIFIED.
    pub simple: Option<String>,
    /// Session affinity by hash.
    pub consistent_hash: Option<ConsistentHashLb>,
    /// Locality settings.
    pub locality_lb_setting: Option<LocalityLbSetting>,
    /// Zone-aware settings (instead of locality settings).
    pub zone_aware_lb_setting: Option<ZoneAwareLbSetting>,
    /// Weights from the endpoints' reported utilization.
    pub backend_utilization: Option<Value>,
    /// Slow start.
    pub warmup_duration_secs: Option<String>,
    /// Slow start (newer form).
    pub warmup: Option<Warmup>,
}

/// Consistent hashing.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsistentHashLb {
    /// Hash this request header.
    pub http_header_name: Option<String>,
    /// Hash this cookie (set by the proxy when absent).
    pub http_cookie: Option<HttpCookie>,
    /// Hash the client address.
    pub use_source_ip: Option<bool>,
    /// Hash this query parameter.
    pub http_query_parameter_name: Option<String>,
    /// Ring hash settings.
    pub ring_hash: Option<RingHash>,
    /// Maglev settings.
    pub maglev: Option<Maglev>,
    /// Deprecated ring size.
    pub minimum_ring_size: Option<i64>,
}

/// A hash cookie.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpCookie {
    /// Cookie name.
    pub name: String,
    /// Cookie path.
    pub path: Option<String>,
    /// Lifetime of a generated cookie.
    pub ttl: Option<String>,
    /// Extra attributes.
    pub attributes: Vec<CookieAttribute>,
}

/// Ring hash settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RingHash {
    /// Minimum ring size.
    pub minimum_ring_size: Option<i64>,
}

/// Maglev settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Maglev {
    /// Table size (a prime).
    pub table_size: Option<i64>,
}

/// Connection pool settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConnectionPoolSettings {
    /// TCP settings.
    pub tcp: Option<TcpSettings>,
    /// HTTP settings.
    pub http: Option<HttpPoolSettings>,
}

/// TCP connection pool settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TcpSettings {
    /// Maximum connections to the destination.
    pub max_connections: Option<i64>,
    /// Connect timeout.
    pub connect_timeout: Option<String>,
    /// TCP keep-alive.
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Maximum connection lifetime.
    pub max_connection_duration: Option<String>,
    /// Idle timeout of upstream connections.
    pub idle_timeout: Option<String>,
}

/// HTTP connection pool settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpPoolSettings {
    /// Requests waiting for a connection.
    pub http1_max_pending_requests: Option<i64>,
    /// Concurrent requests.
    pub http2_max_requests: Option<i64>,
    /// Requests per connection before it is closed.
    pub max_requests_per_connection: Option<i64>,
    /// Concurrent retries.
    pub max_retries: Option<i64>,
    /// Idle timeout of upstream connections.
    pub idle_timeout: Option<String>,
    /// DEFAULT, DO_NOT_UPGRADE or UPGRADE (to HTTP/2).
    pub h2_upgrade_policy: Option<String>,
    /// Use the client's protocol upstream.
    pub use_client_protocol: Option<bool>,
    /// HTTP/2 concurrent streams per connection.
    pub max_concurrent_streams: Option<i64>,
    /// HTTP/2 PING keep-alive.
    pub http2_keep_alive: Option<Http2KeepAlive>,
}

/// Outlier detection.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OutlierDetection {
    /// Consecutive 5xx (and connect failures) before ejection.
    #[serde(rename = "consecutive5xxErrors")]
    pub consecutive_5xx_errors: Option<i64>,
    /// Consecutive 502/503/504 (and connect failures) before ejection.
    pub consecutive_gateway_errors: Option<i64>,
    /// Deprecated alias of consecutiveGatewayErrors.
    pub consecutive_errors: Option<i64>,
    /// Local-origin failures before ejection.
    pub consecutive_local_origin_failures: Option<i64>,
    /// Count local-origin failures apart.
    pub split_external_local_origin_errors: Option<bool>,
    /// How often ejections are reviewed.
    pub interval: Option<String>,
    /// Ejection time, multiplied by the number of ejections.
    pub base_ejection_time: Option<String>,
    /// At most this share of endpoints ejected.
    pub max_ejection_percent: Option<i64>,
    /// Below this share of healthy endpoints, ejections are ignored.
    pub min_health_percent: Option<i64>,
    /// Eject endpoints whose failure rate passes this percentage.
    pub failure_percentage_threshold: Option<i64>,
    /// Status codes that count as errors.
    pub outlier_detection_http_error_codes: Vec<i64>,
}

/// Upstream TLS settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClientTlsSettings {
    /// DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL.
    pub mode: Option<String>,
    /// Client certificate file.
    pub client_certificate: Option<String>,
    /// Client key file.
    pub private_key: Option<String>,
    /// CA bundle file.
    pub ca_certificates: Option<String>,
    /// CRL file.
    pub ca_crl: Option<String>,
    /// Secret holding the client certificate (and CA).
    pub credential_name: Option<String>,
    /// Accepted server names.
    pub subject_alt_names: Vec<String>,
    /// SNI to send.
    pub sni: Option<String>,
    /// Skip server verification.
    pub insecure_skip_verify: Option<bool>,
    /// Secret holding only the CA bundle.
    pub ca_cert_credential_name: Option<String>,
}

/// DestinationRule spec.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DestinationRuleSpec {
    /// Service host.
    pub host: String,
    /// Traffic policy for every subset and port.
    pub traffic_policy: Option<Box<TrafficPolicy>>,
    /// Named subsets.
    pub subsets: Vec<Subset>,
    /// Namespaces this is exported to.
    pub export_to: Vec<String>,
    /// Workloads this applies to.
    pub workload_selector: Option<crate::resources::security::WorkloadSelector>,
}

/// A named subset of a service's endpoints.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Subset {
    /// Name.
    pub name: String,
    /// Endpoint labels.
    pub labels: Labels,
    /// Traffic policy override.
    pub traffic_policy: Option<Box<TrafficPolicy>>,
}

/// ServiceEntry spec.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceEntrySpec {
    /// Hosts.
    pub hosts: Vec<String>,
    /// Virtual IPs.
    pub addresses: Vec<String>,
    /// Ports.
    pub ports: Vec<ServicePort>,
    /// MESH_EXTERNAL or MESH_INTERNAL.
    pub location: Option<String>,
    /// NONE, STATIC, DNS, DNS_ROUND_ROBIN.
    pub resolution: Option<String>,
    /// Static endpoints.
    pub endpoints: Vec<WorkloadEntrySpec>,
    /// WorkloadEntries selected by label.
    pub workload_selector: Option<WorkloadSelector>,
    /// Namespaces this is exported to.
    pub export_to: Vec<String>,
    /// SANs for mTLS.
    pub subject_alt_names: Vec<String>,
}

/// A ServiceEntry port: the same fields as a Gateway server's.
pub type ServicePort = Port;

/// Selects workloads by labels.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkloadSelector {
    /// Labels.
    pub labels: Labels,
}

/// WorkloadEntry spec (also a ServiceEntry's static endpoint).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkloadEntrySpec {
    /// IP or hostname.
    pub address: Option<String>,
    /// Port name to number.
    pub ports: BTreeMap<String, i64>,
    /// Labels.
    pub labels: Labels,
    /// Network.
    pub network: Option<String>,
    /// Locality.
    pub locality: Option<String>,
    /// Weight.
    pub weight: Option<i64>,
    /// Service account.
    pub service_account: Option<String>,
}
