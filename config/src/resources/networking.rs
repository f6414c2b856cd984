//! networking.istio.io (v1, v1beta1, v1alpha3) specs: Gateway, VirtualService,
//! DestinationRule, ServiceEntry and WorkloadEntry.
//!
//! The whole schema is modelled so that valid Istio YAML never draws an
//! unknown-field warning; policy blocks that a later part of Strait interprets are
//! kept as raw JSON until then.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    /// TLS routes.
    pub tls: Vec<Value>,
    /// TCP routes.
    pub tcp: Vec<Value>,
    /// Namespaces this is exported to.
    pub export_to: Vec<String>,
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
    pub retries: Option<Value>,
    /// Fault injection.
    pub fault: Option<Value>,
    /// Mirror destination.
    pub mirror: Option<Value>,
    /// Several mirrors.
    pub mirrors: Vec<Value>,
    /// Mirror percentage.
    pub mirror_percentage: Option<Value>,
    /// Deprecated mirror percent.
    pub mirror_percent: Option<Value>,
    /// CORS policy.
    pub cors_policy: Option<Value>,
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

/// DestinationRule spec.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DestinationRuleSpec {
    /// Service host.
    pub host: String,
    /// Traffic policy (interpreted by the traffic-policy part of Strait).
    pub traffic_policy: Option<Value>,
    /// Named subsets.
    pub subsets: Vec<Subset>,
    /// Namespaces this is exported to.
    pub export_to: Vec<String>,
    /// Workloads this applies to.
    pub workload_selector: Option<Value>,
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
    pub traffic_policy: Option<Value>,
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
