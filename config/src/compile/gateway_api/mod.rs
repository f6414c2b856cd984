//! The Kubernetes Gateway API compiled once per bundle: the GatewayClasses Strait
//! controls, their Gateways with checked listeners (certificates resolved, allowed
//! routes), and HTTPRoutes, GRPCRoutes and TLSRoutes with their rules compiled and
//! attached to listeners, each with the conditions the API's status reports.
//!
//! What the CRDs' schema and validation rules refuse is an error, as the API server
//! would refuse it; what the API reports in status instead (a Service not found, a
//! cross-namespace reference without a ReferenceGrant, a route no listener allows)
//! is kept here as conditions, and the affected parts are left out of snapshots.

mod attach;
mod filters;
mod listeners;
mod rules;
pub mod status;

use crate::bundle::Entry;
use crate::resources::gateway_api::{ParentRef, CONTROLLER_NAME, GROUP};
use crate::resources::networking::Labels;
use crate::resources::Spec;
use crate::snapshot::{HeaderOps, RequestMatch, RoutePolicy};

use super::virtual_service::{CompiledAction, CompiledDestination};
use super::Compiler;

/// The host of a backendRef that does not resolve: not a DNS name, so it names no
/// service. Translation sends its share of the rule's traffic to a cluster that
/// answers 500.
pub const INVALID_BACKEND: &str = "<invalid backendRef>";

/// Whether a compiled destination is an invalid backendRef's share.
pub fn is_invalid(d: &CompiledDestination) -> bool {
    d.target.host == INVALID_BACKEND
}

/// The Gateway API resources of a bundle, compiled.
#[derive(Debug, Default)]
pub struct GatewayApi<'a> {
    /// GatewayClasses of Strait's controller.
    pub classes: Vec<&'a Entry>,
    /// Gateways of those classes.
    pub gateways: Vec<CompiledGateway<'a>>,
    /// Routes of every kind, in bundle order.
    pub routes: Vec<CompiledRoute<'a>>,
}

/// A condition as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// Type, e.g. `Accepted`.
    pub kind: &'static str,
    /// Status True or False.
    pub status: bool,
    /// Reason, e.g. `NotAllowedByListeners`.
    pub reason: &'static str,
    /// For people.
    pub message: String,
}

impl Condition {
    /// A condition that holds.
    pub fn ok(kind: &'static str, reason: &'static str) -> Condition {
        Condition {
            kind,
            status: true,
            reason,
            message: String::new(),
        }
    }

    /// A condition that does not hold.
    pub fn not(kind: &'static str, reason: &'static str, message: impl Into<String>) -> Condition {
        Condition {
            kind,
            status: false,
            reason,
            message: message.into(),
        }
    }
}

/// A Gateway of a Strait GatewayClass.
#[derive(Debug)]
pub struct CompiledGateway<'a> {
    /// The resource.
    pub entry: &'a Entry,
    /// Its listeners, in order.
    pub listeners: Vec<CompiledListener>,
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerProtocol {
    /// Plain HTTP.
    Http,
    /// TLS terminated, then HTTP.
    Https,
    /// TLS passed through by SNI.
    TlsPassthrough,
    /// Anything Strait does not serve (TCP, UDP, TLS Terminate, unknown).
    Unsupported,
}

/// Where routes may attach from.
#[derive(Debug, Clone, PartialEq)]
pub enum RoutesFrom {
    /// The Gateway's namespace.
    Same,
    /// Every namespace.
    All,
    /// Namespaces whose labels match.
    Selector(crate::resources::gateway_api::LabelSelector),
}

/// A listener's certificate, read from its Secret.
#[derive(Debug, Clone)]
pub struct ListenerCertificate {
    /// `namespace/name` of the Secret.
    pub secret: String,
    /// PEM chain.
    pub cert_pem: Vec<u8>,
    /// PEM key.
    pub key_pem: Vec<u8>,
}

/// A checked listener.
#[derive(Debug, Clone)]
pub struct CompiledListener {
    /// Name (a route's `sectionName`).
    pub name: String,
    /// Port.
    pub port: u16,
    /// Protocol.
    pub protocol: ListenerProtocol,
    /// Hostname, lowercase; None: every host.
    pub hostname: Option<String>,
    /// The certificate of an HTTPS listener, when it resolved.
    pub certificate: Option<ListenerCertificate>,
    /// Namespaces routes may come from.
    pub from: RoutesFrom,
    /// Route kinds that may attach.
    pub kinds: Vec<&'static str>,
    /// Route kinds the listener allows, as the API reports them.
    pub supported_kinds: Vec<&'static str>,
    /// Accepted, ResolvedRefs, Conflicted (Programmed is derived).
    pub conditions: Vec<Condition>,
    /// Routes attached.
    pub attached_routes: u32,
}

impl CompiledListener {
    /// Whether the listener is served: accepted, its references resolved, no conflict.
    pub fn programmed(&self) -> bool {
        self.conditions
            .iter()
            .all(|c| if c.kind == "Conflicted" { !c.status } else { c.status })
    }
}

/// Which route kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// HTTPRoute.
    Http,
    /// GRPCRoute.
    Grpc,
    /// TLSRoute.
    Tls,
}

impl RouteKind {
    /// The kind's name.
    pub fn name(self) -> &'static str {
        match self {
            RouteKind::Http => "HTTPRoute",
            RouteKind::Grpc => "GRPCRoute",
            RouteKind::Tls => "TLSRoute",
        }
    }
}

/// A route with its rules compiled and its parents resolved.
#[derive(Debug)]
pub struct CompiledRoute<'a> {
    /// The resource.
    pub entry: &'a Entry,
    /// Its kind.
    pub kind: RouteKind,
    /// Host names, lowercase; empty: the listener's.
    pub hostnames: Vec<String>,
    /// Rules, in order.
    pub rules: Vec<GatewayRule>,
    /// One per parentRef of a Strait Gateway.
    pub parents: Vec<ParentStatus>,
    /// Why some references did not resolve (ResolvedRefs False); None: all did.
    pub unresolved: Option<(&'static str, String)>,
    /// Creation time (RFC 3339, as written) and `namespace/name`: the tie-breakers.
    pub order: (String, String),
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct GatewayRule {
    /// Name.
    pub name: Option<String>,
    /// e.g. `HTTPRoute default/app rules[1]`.
    pub source: String,
    /// Matches with their precedence (lower sorts first); none for TLSRoute.
    pub matches: Vec<(RequestMatch, Precedence)>,
    /// What it does; `None` when it has no valid backend (500) for HTTP kinds.
    pub action: CompiledAction,
    /// Request header operations.
    pub request_headers: HeaderOps,
    /// Response header operations.
    pub response_headers: HeaderOps,
    /// Timeouts, retries, CORS.
    pub policy: RoutePolicy,
    /// Destinations for TLSRoute rules (HTTP kinds keep theirs in the action).
    pub l4: Vec<CompiledDestination>,
    /// A GRPCRoute's backends speak HTTP/2.
    pub h2: bool,
}

/// Precedence of a match among those of a virtual host: smaller first.
pub type Precedence = [i64; 6];

/// A route's attachment to one parentRef.
#[derive(Debug, Clone)]
pub struct ParentStatus {
    /// The reference as written.
    pub parent_ref: ParentRef,
    /// Index into `GatewayApi::gateways`.
    pub gateway: usize,
    /// Listeners attached to, with the host names served on each.
    pub listeners: Vec<(usize, Vec<String>)>,
    /// Accepted condition.
    pub accepted: Condition,
}

impl<'a> Compiler<'a> {
    /// Compiles the Gateway API resources of the bundle.
    pub(super) fn gateway_api(&mut self) -> GatewayApi<'a> {
        let bundle = self.bundle;
        let classes: Vec<&'a Entry> = bundle
            .of(|s| match s {
                Spec::GatewayClass(c) => Some(c),
                _ => None,
            })
            .filter(|(_, c)| c.controller_name == CONTROLLER_NAME)
            .map(|(e, _)| e)
            .collect();
        let mut api = GatewayApi {
            classes,
            ..GatewayApi::default()
        };
        for (entry, gw) in bundle.of(|s| match s {
            Spec::KubeGateway(g) => Some(g),
            _ => None,
        }) {
            let ours = api.classes.iter().any(|c| c.resource.name == gw.gateway_class_name);
            let listeners = self.listeners(entry, gw);
            if ours {
                api.gateways.push(CompiledGateway { entry, listeners });
            }
        }
        for entry in &bundle.entries {
            let route = match &entry.resource.spec {
                Spec::HttpRoute(r) => self.http_route(entry, r),
                Spec::GrpcRoute(r) => self.grpc_route(entry, r),
                Spec::TlsRoute(r) => self.tls_route(entry, r),
                _ => continue,
            };
            api.routes.push(route);
        }
        for ri in 0..api.routes.len() {
            attach::attach(self, &mut api, ri);
        }
        api
    }

    /// Whether a ReferenceGrant in `to_ns` lets a `from_kind` of `from_ns` refer to
    /// the `to_group`/`to_kind` named `to_name`.
    fn granted(
        &self,
        from_kind: &str,
        from_ns: &str,
        to_group: &str,
        to_kind: &str,
        to_ns: &str,
        to_name: &str,
    ) -> bool {
        if from_ns == to_ns {
            return true;
        }
        self.bundle
            .of(|s| match s {
                Spec::ReferenceGrant(g) => Some(g),
                _ => None,
            })
            .filter(|(e, _)| e.resource.namespace == to_ns)
            .any(|(_, g)| {
                g.from
                    .iter()
                    .any(|f| f.group == GROUP && f.kind == from_kind && f.namespace == from_ns)
                    && g.to.iter().any(|t| {
                        t.group == to_group && t.kind == to_kind && t.name.as_deref().is_none_or(|n| n == to_name)
                    })
            })
    }

    /// The labels of namespace `ns`: those of its Namespace resource, with the
    /// `kubernetes.io/metadata.name` label Kubernetes sets on every namespace.
    fn namespace_labels(&self, ns: &str) -> Labels {
        let mut labels = self
            .bundle
            .of(|s| match s {
                Spec::Namespace(n) => Some(n),
                _ => None,
            })
            .find(|(e, _)| e.resource.name == ns)
            .map(|(e, _)| e.resource.metadata.labels.clone())
            .unwrap_or_default();
        labels.insert("kubernetes.io/metadata.name".into(), ns.to_string());
        labels
    }
}

/// The namespace a reference names, or the referrer's.
fn ref_namespace<'a>(ns: &'a Option<String>, own: &'a str) -> &'a str {
    ns.as_deref().filter(|n| !n.is_empty()).unwrap_or(own)
}
