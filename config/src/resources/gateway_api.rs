//! gateway.networking.k8s.io (v1, and the v1beta1/v1alpha2 versions of the same
//! kinds) specs: GatewayClass, Gateway, HTTPRoute, GRPCRoute, TLSRoute and
//! ReferenceGrant.
//!
//! The whole standard-channel schema is modelled, so valid Gateway API YAML never
//! draws an unknown-field warning; fields Strait does not interpret are kept as raw
//! JSON (`Option<Value>`) and reported where they change behaviour.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::networking::Labels;

/// The `controllerName` of GatewayClasses Strait serves.
pub const CONTROLLER_NAME: &str = "strait.io/gateway-controller";

/// The label Istio's automated deployment puts on a Gateway's pods; a proxy with it
/// serves only the Gateway of that name in its namespace.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// The API group of the Gateway API kinds.
pub const GROUP: &str = "gateway.networking.k8s.io";

/// GatewayClass spec.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewayClassSpec {
    /// The controller that manages Gateways of this class.
    pub controller_name: String,
    /// Implementation-specific parameters (not used by Strait).
    pub parameters_ref: Option<Value>,
    /// Free text.
    pub description: Option<String>,
}

/// Gateway spec (the Gateway API kind, not Istio's).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeGatewaySpec {
    /// The GatewayClass.
    pub gateway_class_name: String,
    /// Listeners (1 to 64).
    pub listeners: Vec<KubeListener>,
    /// Requested addresses (not used by Strait).
    pub addresses: Vec<Value>,
    /// Infrastructure labels and annotations (not used by Strait).
    pub infrastructure: Option<Value>,
    /// Client TLS towards backends (not used by Strait).
    #[serde(rename = "backendTLS")]
    pub backend_tls: Option<Value>,
    /// ListenerSets allowed to attach (not used by Strait).
    pub allowed_listeners: Option<Value>,
    /// Gateway-level TLS settings (not used by Strait).
    pub tls: Option<Value>,
    /// Default scope (experimental; not used by Strait).
    pub default_scope: Option<Value>,
}

/// One listener of a Gateway.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeListener {
    /// Unique name within the Gateway (a route's `sectionName`).
    pub name: String,
    /// Hostname (`*.` prefix allowed); none: every host.
    pub hostname: Option<String>,
    /// Port.
    pub port: i64,
    /// HTTP, HTTPS, TLS, TCP or UDP.
    pub protocol: String,
    /// TLS settings (HTTPS and TLS listeners).
    pub tls: Option<ListenerTls>,
    /// Which routes may attach.
    pub allowed_routes: Option<AllowedRoutes>,
}

/// A listener's TLS settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ListenerTls {
    /// Terminate (default) or Passthrough.
    pub mode: Option<String>,
    /// Certificates (kubernetes.io/tls Secrets); the first is served.
    pub certificate_refs: Vec<ObjectRef>,
    /// Client certificate validation (not used by Strait).
    pub frontend_validation: Option<Value>,
    /// Implementation-specific options (not used by Strait).
    pub options: Labels,
}

/// `allowedRoutes` of a listener.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AllowedRoutes {
    /// Namespaces routes may come from.
    pub namespaces: Option<RouteNamespaces>,
    /// Kinds that may attach; empty: those of the listener's protocol.
    pub kinds: Vec<RouteGroupKind>,
}

/// `allowedRoutes.namespaces`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RouteNamespaces {
    /// Same (default), All or Selector.
    pub from: Option<String>,
    /// Namespace labels, for `from: Selector`.
    pub selector: Option<LabelSelector>,
}

/// A Kubernetes label selector.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelSelector {
    /// Labels that must be present with these values.
    pub match_labels: Labels,
    /// Set-based requirements.
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One requirement of a label selector.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelSelectorRequirement {
    /// Label key.
    pub key: String,
    /// In, NotIn, Exists or DoesNotExist.
    pub operator: String,
    /// Values for In and NotIn.
    pub values: Vec<String>,
}

impl LabelSelector {
    /// Whether `labels` satisfy the selector (an unknown operator selects nothing).
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator.as_str() {
                    "In" => value.is_some_and(|v| r.values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !r.values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }
}

/// A route kind (`group` defaults to the Gateway API group).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RouteGroupKind {
    /// API group; none: gateway.networking.k8s.io.
    pub group: Option<String>,
    /// Kind.
    pub kind: String,
}

/// A reference to an object by group, kind, name and namespace (certificateRefs,
/// backendRefs, parentRefs share this shape; each defaults group and kind its way).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectRef {
    /// API group ("" is core).
    pub group: Option<String>,
    /// Kind.
    pub kind: Option<String>,
    /// Name.
    pub name: String,
    /// Namespace; none: the referring resource's.
    pub namespace: Option<String>,
    /// Port (backendRefs, parentRefs).
    pub port: Option<i64>,
}

/// A route's reference to the Gateway (listener) it attaches to.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ParentRef {
    /// API group; none: gateway.networking.k8s.io.
    pub group: Option<String>,
    /// Kind; none: Gateway.
    pub kind: Option<String>,
    /// Namespace; none: the route's.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// Listener name.
    pub section_name: Option<String>,
    /// Listener port.
    pub port: Option<i64>,
}

/// HTTPRoute spec.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRouteSpec {
    /// Where it attaches.
    pub parent_refs: Vec<ParentRef>,
    /// Host names (`*.` prefix allowed).
    pub hostnames: Vec<String>,
    /// Rules.
    pub rules: Vec<HttpRouteRule>,
}

/// One HTTPRoute rule.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRouteRule {
    /// Name.
    pub name: Option<String>,
    /// OR'd matches; none: PathPrefix `/`.
    pub matches: Vec<HttpRouteMatch>,
    /// Filters, in order.
    pub filters: Vec<HttpRouteFilter>,
    /// Weighted backends.
    pub backend_refs: Vec<HttpBackendRef>,
    /// Timeouts.
    pub timeouts: Option<HttpRouteTimeouts>,
    /// Retries.
    pub retry: Option<HttpRouteRetry>,
    /// Session persistence (not used by Strait).
    pub session_persistence: Option<Value>,
}

/// One match of a rule (AND of its conditions).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRouteMatch {
    /// Path; none: PathPrefix `/`.
    pub path: Option<PathMatch>,
    /// Headers.
    pub headers: Vec<ValueMatch>,
    /// Query parameters.
    pub query_params: Vec<ValueMatch>,
    /// Method.
    pub method: Option<String>,
}

/// A path match.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PathMatch {
    /// Exact, PathPrefix (default) or RegularExpression.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The path (default `/`).
    pub value: Option<String>,
}

/// A header or query parameter match.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ValueMatch {
    /// Exact (default) or RegularExpression.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// A filter of a rule or backend.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRouteFilter {
    /// Which filter.
    #[serde(rename = "type")]
    pub kind: String,
    /// RequestHeaderModifier.
    pub request_header_modifier: Option<HeaderModifier>,
    /// ResponseHeaderModifier.
    pub response_header_modifier: Option<HeaderModifier>,
    /// RequestMirror.
    pub request_mirror: Option<RequestMirror>,
    /// RequestRedirect.
    pub request_redirect: Option<RequestRedirect>,
    /// URLRewrite.
    pub url_rewrite: Option<UrlRewrite>,
    /// CORS.
    pub cors: Option<CorsFilter>,
    /// ExternalAuth (not used by Strait).
    pub external_auth: Option<Value>,
    /// ExtensionRef (not used by Strait).
    pub extension_ref: Option<Value>,
}

/// Header set/add/remove.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HeaderModifier {
    /// Overwrite.
    pub set: Vec<HeaderValue>,
    /// Append.
    pub add: Vec<HeaderValue>,
    /// Remove.
    pub remove: Vec<String>,
}

/// A header name and value.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HeaderValue {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// RequestMirror.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RequestMirror {
    /// Where copies go.
    pub backend_ref: ObjectRef,
    /// Share of requests in percent.
    pub percent: Option<i64>,
    /// Share of requests as a fraction.
    pub fraction: Option<Fraction>,
}

/// A fraction.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Fraction {
    /// Numerator.
    pub numerator: i64,
    /// Denominator (default 100).
    pub denominator: Option<i64>,
}

/// RequestRedirect.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RequestRedirect {
    /// http or https.
    pub scheme: Option<String>,
    /// Host name.
    pub hostname: Option<String>,
    /// Path change.
    pub path: Option<PathModifier>,
    /// Port.
    pub port: Option<i64>,
    /// 301, 302 (default), 303, 307 or 308.
    pub status_code: Option<i64>,
}

/// URLRewrite.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UrlRewrite {
    /// New Host.
    pub hostname: Option<String>,
    /// Path change.
    pub path: Option<PathModifier>,
}

/// A path change.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PathModifier {
    /// ReplaceFullPath or ReplacePrefixMatch.
    #[serde(rename = "type")]
    pub kind: String,
    /// The new path.
    pub replace_full_path: Option<String>,
    /// What replaces the matched prefix.
    pub replace_prefix_match: Option<String>,
}

/// CORS filter.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CorsFilter {
    /// Origins (`*`, or scheme://host with a `*` label).
    pub allow_origins: Vec<String>,
    /// Credentials allowed.
    pub allow_credentials: Option<bool>,
    /// Methods.
    pub allow_methods: Vec<String>,
    /// Request headers.
    pub allow_headers: Vec<String>,
    /// Response headers exposed.
    pub expose_headers: Vec<String>,
    /// Preflight cache seconds (default 5).
    pub max_age: Option<i64>,
}

/// A weighted backend of an HTTPRoute or GRPCRoute rule.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpBackendRef {
    /// The backend.
    #[serde(flatten)]
    pub backend: ObjectRef,
    /// Relative weight (default 1).
    pub weight: Option<i64>,
    /// Filters for requests to this backend.
    pub filters: Vec<HttpRouteFilter>,
}

/// HTTPRoute timeouts.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRouteTimeouts {
    /// Whole request, retries included.
    pub request: Option<String>,
    /// Each try to a backend.
    pub backend_request: Option<String>,
}

/// HTTPRoute retry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRouteRetry {
    /// Status codes retried.
    pub codes: Vec<i64>,
    /// Tries after the first.
    pub attempts: Option<i64>,
    /// Back-off between tries (Strait uses its own).
    pub backoff: Option<String>,
}

/// GRPCRoute spec.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GrpcRouteSpec {
    /// Where it attaches.
    pub parent_refs: Vec<ParentRef>,
    /// Host names.
    pub hostnames: Vec<String>,
    /// Rules.
    pub rules: Vec<GrpcRouteRule>,
}

/// One GRPCRoute rule.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GrpcRouteRule {
    /// Name.
    pub name: Option<String>,
    /// OR'd matches; none: every gRPC request.
    pub matches: Vec<GrpcRouteMatch>,
    /// Filters (header modifiers, mirror).
    pub filters: Vec<HttpRouteFilter>,
    /// Weighted backends.
    pub backend_refs: Vec<HttpBackendRef>,
    /// Session persistence (not used by Strait).
    pub session_persistence: Option<Value>,
}

/// One GRPCRoute match.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GrpcRouteMatch {
    /// Service and method.
    pub method: Option<GrpcMethodMatch>,
    /// Headers.
    pub headers: Vec<ValueMatch>,
}

/// A gRPC service/method match.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GrpcMethodMatch {
    /// Exact (default) or RegularExpression.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Fully qualified service, e.g. `grpc.health.v1.Health`.
    pub service: Option<String>,
    /// Method, e.g. `Check`.
    pub method: Option<String>,
}

/// TLSRoute spec.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TlsRouteSpec {
    /// Where it attaches.
    pub parent_refs: Vec<ParentRef>,
    /// SNI names.
    pub hostnames: Vec<String>,
    /// Rules (one in practice).
    pub rules: Vec<TlsRouteRule>,
}

/// One TLSRoute rule.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TlsRouteRule {
    /// Name.
    pub name: Option<String>,
    /// Weighted backends.
    pub backend_refs: Vec<HttpBackendRef>,
}

/// ReferenceGrant spec.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ReferenceGrantSpec {
    /// Who may refer.
    pub from: Vec<GrantFrom>,
    /// To what in this namespace.
    pub to: Vec<GrantTo>,
}

/// A grant's `from`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GrantFrom {
    /// API group.
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
}

/// A grant's `to`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GrantTo {
    /// API group ("" is core).
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Name; none: every object of the kind.
    pub name: Option<String>,
}
