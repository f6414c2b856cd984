//! The compile stage: every resource of a bundle checked as Istio's webhook checks
//! it, and compiled once into what snapshots are made of (route matchers and
//! policies with their regexes, traffic policies, authorization policies, JWT
//! providers, rate limits). Translation for any number of proxies reads these
//! results; nothing is compiled again, and nothing falls back to a default because a
//! second compilation disagreed. A resource with errors has no result: its errors
//! reject the bundle before any translation.

mod annotations;
mod authorization_policy;
pub mod authz;
pub mod cluster_policy;
mod destination_rule;
mod gateway;
pub mod gateway_api;
mod http_rule;
pub mod jwt;
mod peer_authentication;
pub mod regex;
mod request_authentication;
pub mod route_checks;
pub mod route_policy;
mod security;
pub mod selector;
pub mod server_tls;
mod service_entry;
pub mod traffic_policy;
pub mod virtual_service;
pub mod workload_entry;

use std::sync::Arc;

use crate::bundle::{Bundle, Entry};
use crate::diag::{Code, Diagnostic, Severity};
use crate::hosts::gateway_ref;
use crate::ratelimit::RateLimit;
use crate::registry::Registry;
use crate::resources::Spec;

pub use destination_rule::ClusterPolicies;
pub use security::{CompiledAuthentication, CompiledAuthorization};
pub use virtual_service::CompiledVirtualService;

/// A bundle, compiled.
#[derive(Debug)]
pub struct Compiled<'a> {
    /// The resources.
    pub bundle: &'a Bundle,
    /// Hosts, ports, endpoints and subsets.
    pub registry: Registry,
    /// VirtualServices with their compiled rules, in bundle order.
    pub virtual_services: Vec<CompiledVirtualService<'a>>,
    /// DestinationRule traffic policies by host, subset and port.
    pub cluster_policies: ClusterPolicies,
    /// AuthorizationPolicies, compiled.
    pub authorization: Vec<CompiledAuthorization<'a>>,
    /// RequestAuthentications, compiled.
    pub authentication: Vec<CompiledAuthentication<'a>>,
    /// The Kubernetes Gateway API's resources, compiled and attached.
    pub gateway_api: gateway_api::GatewayApi<'a>,
    /// Everything found, in no particular order.
    pub diagnostics: Vec<Diagnostic>,
}

/// Checks and compiles every resource of `bundle`.
pub fn compile(bundle: &Bundle) -> Compiled<'_> {
    let mut c = Compiler {
        bundle,
        registry: Registry::new(bundle),
        diags: Vec::new(),
        regexes: regex::RegexCache::default(),
        rate_limits: Vec::new(),
    };
    // Rules find their RateLimit when they compile.
    for (entry, spec) in bundle.of(|s| match s {
        Spec::RateLimit(r) => Some(r),
        _ => None,
    }) {
        c.rate_limit(entry, spec);
    }
    let mut virtual_services = Vec::new();
    let mut cluster_policies = ClusterPolicies::default();
    let mut authorization = Vec::new();
    let mut authentication = Vec::new();
    for entry in &bundle.entries {
        if entry.resource.api_version.contains(".istio.io/") {
            c.istio_annotations(entry);
        }
        match &entry.resource.spec {
            Spec::Gateway(g) => c.gateway(entry, g),
            Spec::VirtualService(vs) => virtual_services.push(c.virtual_service(entry, vs)),
            Spec::DestinationRule(dr) => c.destination_rule(entry, dr, &mut cluster_policies),
            Spec::ServiceEntry(se) => c.service_entry(entry, se),
            Spec::Secret(s) => c.secret(entry, s),
            Spec::AuthorizationPolicy(p) => authorization.extend(c.authorization_policy(entry, p)),
            Spec::RequestAuthentication(r) => authentication.extend(c.request_authentication(entry, r)),
            Spec::WorkloadEntry(w) => c.workload_entry(entry, w),
            Spec::PeerAuthentication(p) => c.peer_authentication(entry, p),
            _ => {}
        }
    }
    let gateway_api = c.gateway_api();
    Compiled {
        bundle,
        registry: c.registry,
        virtual_services,
        cluster_policies,
        authorization,
        authentication,
        gateway_api,
        diagnostics: c.diags,
    }
}

/// What the per-kind compilers share while one bundle compiles.
struct Compiler<'a> {
    bundle: &'a Bundle,
    registry: Registry,
    diags: Vec<Diagnostic>,
    regexes: regex::RegexCache,
    /// RateLimits: (namespace, VirtualService, rule names or all, the limit).
    rate_limits: Vec<(String, String, Vec<String>, Arc<RateLimit>)>,
}

impl Compiler<'_> {
    fn err(&mut self, e: &Entry, code: Code, field: &str, msg: impl Into<String>) {
        self.diags.push(e.diag(Severity::Error, code, field, msg));
    }

    fn warn(&mut self, e: &Entry, code: Code, field: &str, msg: impl Into<String>) {
        self.diags.push(e.diag(Severity::Warning, code, field, msg));
    }

    /// Whether the resource's document wrote `field` (present, even if empty).
    fn has_field(&self, e: &Entry, field: &str) -> bool {
        e.origin.spans.contains(field)
    }

    /// Reports a reference to a Gateway that is not in the bundle.
    fn gateway_exists(&mut self, e: &Entry, field: &str, reference: &str) {
        let Some((ns, name)) = gateway_ref(reference, &e.resource.namespace) else {
            return;
        };
        // A malformed reference is refused as such (`route_checks`).
        if !crate::hosts::is_label(ns) || !crate::hosts::is_label(name) {
            return;
        }
        let found = self.bundle.entries.iter().any(|x| {
            matches!(x.resource.spec, Spec::Gateway(_)) && x.resource.namespace == ns && x.resource.name == name
        });
        if !found {
            self.err(
                e,
                Code::ReferenceNotFound,
                field,
                format!("Gateway {ns}/{name} is not defined"),
            );
        }
    }

    /// The RateLimit on rule `rule` of VirtualService `ns/vs`, if any (the first one).
    fn rate_limit_for(&self, ns: &str, vs: &str, rule: Option<&str>) -> Option<Arc<RateLimit>> {
        self.rate_limits
            .iter()
            .find(|(n, v, routes, _)| {
                n == ns && v == vs && (routes.is_empty() || rule.is_some_and(|r| routes.iter().any(|x| x == r)))
            })
            .map(|(_, _, _, l)| l.clone())
    }
}
