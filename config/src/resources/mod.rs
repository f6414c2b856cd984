//! The resource kinds Strait understands, and the Kubernetes envelope around them.

pub mod gateway_api;
pub mod kube;
pub mod networking;
pub mod security;
pub mod strait;
pub mod traffic_policy;

use serde::{Deserialize, Serialize};

use self::networking::Labels;

/// `metadata` of a resource.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectMeta {
    /// Name.
    pub name: Option<String>,
    /// Namespace (`default` when absent).
    pub namespace: Option<String>,
    /// Labels.
    pub labels: Labels,
    /// Annotations.
    pub annotations: Labels,
    /// Any other metadata (uid, resourceVersion, ...), kept but unused.
    #[serde(flatten)]
    pub other: std::collections::BTreeMap<String, serde_json::Value>,
}

/// The typed body of a resource.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", content = "spec")]
pub enum Spec {
    /// networking.istio.io Gateway.
    Gateway(networking::GatewaySpec),
    /// networking.istio.io VirtualService.
    VirtualService(networking::VirtualServiceSpec),
    /// networking.istio.io DestinationRule.
    DestinationRule(networking::DestinationRuleSpec),
    /// networking.istio.io ServiceEntry.
    ServiceEntry(networking::ServiceEntrySpec),
    /// networking.istio.io WorkloadEntry.
    WorkloadEntry(networking::WorkloadEntrySpec),
    /// security.istio.io RequestAuthentication.
    RequestAuthentication(security::RequestAuthenticationSpec),
    /// security.istio.io AuthorizationPolicy.
    AuthorizationPolicy(security::AuthorizationPolicySpec),
    /// security.istio.io PeerAuthentication.
    PeerAuthentication(security::PeerAuthenticationSpec),
    /// core/v1 Service.
    Service(kube::ServiceSpec),
    /// discovery.k8s.io/v1 EndpointSlice.
    EndpointSlice(kube::EndpointSliceBody),
    /// core/v1 Secret.
    Secret(kube::SecretBody),
    /// core/v1 Pod.
    Pod(kube::PodBody),
    /// core/v1 Namespace.
    Namespace(kube::NamespaceBody),
    /// strait.io RateLimit.
    RateLimit(strait::RateLimitSpec),
    /// gateway.networking.k8s.io GatewayClass.
    GatewayClass(gateway_api::GatewayClassSpec),
    /// gateway.networking.k8s.io Gateway (Istio's Gateway is `Gateway`).
    KubeGateway(gateway_api::KubeGatewaySpec),
    /// gateway.networking.k8s.io HTTPRoute.
    HttpRoute(gateway_api::HttpRouteSpec),
    /// gateway.networking.k8s.io GRPCRoute.
    GrpcRoute(gateway_api::GrpcRouteSpec),
    /// gateway.networking.k8s.io TLSRoute.
    TlsRoute(gateway_api::TlsRouteSpec),
    /// gateway.networking.k8s.io ReferenceGrant.
    ReferenceGrant(gateway_api::ReferenceGrantSpec),
}

/// Where a kind's body lives in the document.
pub(crate) enum Body {
    /// Under `spec`.
    Spec,
    /// At the top level, beside `metadata` (EndpointSlice, Secret).
    TopLevel,
    /// The whole object, of which Strait reads a few fields and ignores the rest
    /// silently (Pod, Namespace: Kubernetes writes them, users do not).
    Object,
}

/// The API groups accepted for each kind, and where its body lives.
pub(crate) fn kind_info(api_version: &str, kind: &str) -> Option<Body> {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let version = api_version.rsplit('/').next().unwrap_or("");
    let istio_net = group == "networking.istio.io" && matches!(version, "v1" | "v1beta1" | "v1alpha3");
    let istio_sec = group == "security.istio.io" && matches!(version, "v1" | "v1beta1");
    let strait = group == "strait.io" && version == "v1alpha1";
    let gateway_api = group == gateway_api::GROUP && matches!(version, "v1" | "v1beta1" | "v1alpha2");
    match kind {
        "Gateway" | "VirtualService" | "DestinationRule" | "ServiceEntry" | "WorkloadEntry" if istio_net => {
            Some(Body::Spec)
        }
        "RequestAuthentication" | "AuthorizationPolicy" | "PeerAuthentication" if istio_sec => Some(Body::Spec),
        "RateLimit" if strait => Some(Body::Spec),
        "GatewayClass" | "Gateway" | "HTTPRoute" | "GRPCRoute" | "TLSRoute" | "ReferenceGrant" if gateway_api => {
            Some(Body::Spec)
        }
        "Service" if api_version == "v1" => Some(Body::Spec),
        "Secret" if api_version == "v1" => Some(Body::TopLevel),
        "EndpointSlice" if api_version == "discovery.k8s.io/v1" => Some(Body::TopLevel),
        "Pod" | "Namespace" if api_version == "v1" => Some(Body::Object),
        _ => None,
    }
}

/// A resource with its identity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resource {
    /// apiVersion as written.
    pub api_version: String,
    /// Name.
    pub name: String,
    /// Namespace (defaulted).
    pub namespace: String,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Typed body.
    #[serde(flatten)]
    pub spec: Spec,
}

impl Resource {
    /// The kind's name, e.g. `VirtualService`.
    pub fn kind(&self) -> &'static str {
        match &self.spec {
            Spec::Gateway(_) => "Gateway",
            Spec::VirtualService(_) => "VirtualService",
            Spec::DestinationRule(_) => "DestinationRule",
            Spec::ServiceEntry(_) => "ServiceEntry",
            Spec::WorkloadEntry(_) => "WorkloadEntry",
            Spec::RequestAuthentication(_) => "RequestAuthentication",
            Spec::AuthorizationPolicy(_) => "AuthorizationPolicy",
            Spec::PeerAuthentication(_) => "PeerAuthentication",
            Spec::Service(_) => "Service",
            Spec::EndpointSlice(_) => "EndpointSlice",
            Spec::Secret(_) => "Secret",
            Spec::Pod(_) => "Pod",
            Spec::Namespace(_) => "Namespace",
            Spec::RateLimit(_) => "RateLimit",
            Spec::GatewayClass(_) => "GatewayClass",
            Spec::KubeGateway(_) => "Gateway",
            Spec::HttpRoute(_) => "HTTPRoute",
            Spec::GrpcRoute(_) => "GRPCRoute",
            Spec::TlsRoute(_) => "TLSRoute",
            Spec::ReferenceGrant(_) => "ReferenceGrant",
        }
    }

    /// The API group of its apiVersion (`""` for core kinds).
    pub fn group(&self) -> &str {
        self.api_version.rsplit_once('/').map_or("", |(g, _)| g)
    }
}
