//! Cross-resource analyzers that `istioctl analyze` runs and validation does not:
//! destination hosts no ServiceEntry or Service defines, VirtualService hosts that
//! the Gateways they bind to do not serve, and mesh VirtualServices sharing a host.
//! Validation decides whether a proxy accepts a bundle; these findings are advice,
//! at the level Istio gives them, so `analyze` can fail a CI run where a proxy would
//! still start.

mod gateway_api;

use std::collections::BTreeMap;

use crate::bundle::{Bundle, Entry};
use crate::diag::{Code, Diagnostic, Severity};
use crate::hosts::{bind, fqdn, gateway_ref};
use crate::mesh::{MeshConfig, OutboundMode};
use crate::registry::{Registry, ResolveError};
use crate::resources::networking::{Destination, GatewaySpec, VirtualServiceSpec};
use crate::resources::Spec;

/// The Istio analyzer message a finding stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// A destination host that no ServiceEntry or Service defines (Istio's IST0101).
    ReferencedResourceNotFound,
    /// VirtualServices bound to `mesh` that share a host (Istio's IST0109).
    ConflictingMeshGatewayVirtualServiceHosts,
    /// A VirtualService host that a Gateway it binds to does not serve (Istio's IST0132).
    VirtualServiceHostNotFoundInGateway,
    /// A Gateway API route that a parent Gateway does not accept (Accepted False).
    GatewayRouteNotAccepted,
    /// A Gateway API route with backends that do not resolve (ResolvedRefs False).
    GatewayRouteRefsNotResolved,
    /// A Gateway API listener that is not served (Programmed False).
    GatewayListenerNotProgrammed,
}

/// One analyzer finding: the diagnostic, with Strait's code, and Istio's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The Istio message this is.
    pub message: Message,
    /// Where and what, as every other diagnostic.
    pub diagnostic: Diagnostic,
}

/// Every analyzer finding about `bundle`, for proxies running with `mesh` (its
/// outbound policy decides what a request to an unknown host gets).
pub fn analyze(bundle: &Bundle, mesh: &MeshConfig) -> Vec<Finding> {
    let registry = Registry::new(bundle);
    let services: Vec<(&Entry, &VirtualServiceSpec)> = bundle
        .of(|s| match s {
            Spec::VirtualService(v) => Some(v),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for (entry, vs) in &services {
        destination_hosts(&registry, mesh.outbound, entry, vs, &mut out);
        gateway_hosts(bundle, entry, vs, &mut out);
    }
    mesh_host_conflicts(&services, &mut out);
    gateway_api::gateway_api(bundle, &mut out);
    out
}

fn finding(message: Message, entry: &Entry, severity: Severity, code: Code, field: &str, text: String) -> Finding {
    Finding {
        message,
        diagnostic: entry.diag(severity, code, field, text),
    }
}

/// Every destination of every route, mirrors included, with its field path.
fn destinations(vs: &VirtualServiceSpec) -> Vec<(String, &Destination)> {
    let mut out = Vec::new();
    for (i, r) in vs.http.iter().enumerate() {
        for (j, d) in r.route.iter().enumerate() {
            if let Some(dest) = &d.destination {
                out.push((format!("spec.http[{i}].route[{j}].destination"), dest));
            }
        }
        if let Some(m) = &r.mirror {
            out.push((format!("spec.http[{i}].mirror"), m));
        }
        for (j, m) in r.mirrors.iter().enumerate() {
            out.push((format!("spec.http[{i}].mirrors[{j}].destination"), &m.destination));
        }
    }
    for (kind, routes) in [("tls", &vs.tls), ("tcp", &vs.tcp)] {
        for (i, r) in routes.iter().enumerate() {
            for (j, d) in r.route.iter().enumerate() {
                if let Some(dest) = &d.destination {
                    out.push((format!("spec.{kind}[{i}].route[{j}].destination"), dest));
                }
            }
        }
    }
    out
}

/// Istio calls an unknown destination host an error though its proxies accept it:
/// every request routed there fails.
fn destination_hosts(
    registry: &Registry,
    outbound: OutboundMode,
    entry: &Entry,
    vs: &VirtualServiceSpec,
    out: &mut Vec<Finding>,
) {
    // What the proxies answer, as translation says it (`translate::clusters`).
    let answer = match outbound {
        OutboundMode::RegistryOnly => "502, outboundTrafficPolicy REGISTRY_ONLY",
        OutboundMode::AllowAny => "503",
    };
    for (field, dest) in destinations(vs) {
        // An empty host is validation's to report.
        if dest.host.is_empty() {
            continue;
        }
        let host = fqdn(&dest.host, &entry.resource.namespace);
        if let Err(ResolveError::HostNotFound(_)) = registry.resolve(&host, None, None) {
            out.push(finding(
                Message::ReferencedResourceNotFound,
                entry,
                Severity::Error,
                Code::ReferenceNotFound,
                &format!("{field}.host"),
                format!(
                    "Referenced host not found: {host:?}; no ServiceEntry or Service defines it, so requests routed there fail ({answer})"
                ),
            ));
        }
    }
}

/// A host a bound Gateway does not serve is silently left out of that Gateway's
/// routes; missing Gateways are validation's to report.
fn gateway_hosts(bundle: &Bundle, entry: &Entry, vs: &VirtualServiceSpec, out: &mut Vec<Finding>) {
    let vs_ns = entry.resource.namespace.as_str();
    for reference in &vs.gateways {
        let Some((gw_ns, gw_name)) = gateway_ref(reference, vs_ns) else {
            continue;
        };
        let Some(gw) = bundle.entries.iter().find_map(|x| match &x.resource.spec {
            Spec::Gateway(g) if x.resource.namespace == gw_ns && x.resource.name == gw_name => Some(g),
            _ => None,
        }) else {
            continue;
        };
        for (i, host) in vs.hosts.iter().enumerate() {
            if !serves(gw, gw_ns, host, vs_ns) {
                out.push(finding(
                    Message::VirtualServiceHostNotFoundInGateway,
                    entry,
                    Severity::Warning,
                    Code::ReferenceNotFound,
                    &format!("spec.hosts[{i}]"),
                    format!(
                        "host {host} defined in VirtualService {vs_ns}/{} not found in Gateway {gw_ns}/{gw_name}; that gateway does not route it",
                        entry.resource.name
                    ),
                ));
            }
        }
    }
}

fn serves(gw: &GatewaySpec, gw_ns: &str, host: &str, vs_ns: &str) -> bool {
    gw.servers
        .iter()
        .flat_map(|s| &s.hosts)
        .any(|server| bind(server, gw_ns, host, vs_ns).is_some())
}

/// Sidecars cannot merge two VirtualServices for one host as gateways do: which one
/// wins is undefined, so Istio reports each of them.
fn mesh_host_conflicts(services: &[(&Entry, &VirtualServiceSpec)], out: &mut Vec<Finding>) {
    let mut by_host: BTreeMap<String, Vec<(&Entry, usize)>> = BTreeMap::new();
    for (entry, vs) in services {
        let mesh = vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh");
        if !mesh {
            continue;
        }
        for (i, h) in vs.hosts.iter().enumerate() {
            let users = by_host.entry(fqdn(h, &entry.resource.namespace)).or_default();
            // A host listed twice in one VirtualService is validation's to report.
            if !users.iter().any(|(e, _)| std::ptr::eq(*e, *entry)) {
                users.push((entry, i));
            }
        }
    }
    for (host, users) in by_host.into_iter().filter(|(_, u)| u.len() > 1) {
        let names: Vec<String> = users
            .iter()
            .map(|(e, _)| format!("{}/{}", e.resource.namespace, e.resource.name))
            .collect();
        for (entry, i) in users {
            out.push(finding(
                Message::ConflictingMeshGatewayVirtualServiceHosts,
                entry,
                Severity::Error,
                Code::DuplicateHost,
                &format!("spec.hosts[{i}]"),
                format!(
                    "the VirtualServices {} bound to the mesh gateway define the same host {host}, which is undefined behavior; merge them into one",
                    names.join(", ")
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{load_text, Loaded};

    fn findings(text: &str) -> Vec<(Message, String, usize)> {
        let mut l = Loaded::default();
        load_text(&mut l, "t.yaml", text);
        assert!(l.diagnostics.is_empty(), "{:?}", l.diagnostics);
        analyze(&l.bundle, &MeshConfig::default())
            .into_iter()
            .map(|f| {
                let d = f.diagnostic;
                (f.message, d.field.unwrap_or_default(), d.position.line)
            })
            .collect()
    }

    const GATEWAY: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: edge}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*.example.com\"]\n---\n";
    const BACKEND: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: b, namespace: shop}\nspec:\n  hosts: [b.shop.svc.cluster.local]\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints: [{address: 127.0.0.1}]\n---\n";

    #[test]
    fn clean_bundle_has_no_findings() {
        let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a, namespace: shop}\nspec:\n  hosts: [a.example.com]\n  gateways: [edge/gw]\n  http:\n  - route:\n    - destination: {host: b}\n";
        assert_eq!(findings(&format!("{GATEWAY}{BACKEND}{vs}")), []);
    }

    #[test]
    fn unknown_destination_and_mirror_hosts() {
        let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a, namespace: shop}\nspec:\n  hosts: [a.example.com]\n  gateways: [edge/gw]\n  http:\n  - route:\n    - destination: {host: b}\n    mirror: {host: nowhere}\n  tcp:\n  - route:\n    - destination: {host: gone.example.org}\n";
        assert_eq!(
            findings(&format!("{GATEWAY}{BACKEND}{vs}")),
            [
                (
                    Message::ReferencedResourceNotFound,
                    "spec.http[0].mirror.host".into(),
                    28
                ),
                (
                    Message::ReferencedResourceNotFound,
                    "spec.tcp[0].route[0].destination.host".into(),
                    31
                ),
            ]
        );
    }

    #[test]
    fn host_outside_the_gateway_and_missing_gateway() {
        let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a, namespace: shop}\nspec:\n  hosts: [a.example.com, a.example.org]\n  gateways: [edge/gw, edge/absent]\n  http:\n  - route:\n    - destination: {host: b}\n";
        assert_eq!(
            findings(&format!("{GATEWAY}{BACKEND}{vs}")),
            [(Message::VirtualServiceHostNotFoundInGateway, "spec.hosts[1]".into(), 23)]
        );
    }

    #[test]
    fn mesh_virtual_services_sharing_a_host() {
        let vs = |name: &str, ns: &str, host: &str, gateways: &str| {
            format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  hosts: [{host}]\n{gateways}  http:\n  - route:\n    - destination: {{host: b.shop.svc.cluster.local}}\n---\n")
        };
        let text = [
            BACKEND.to_string(),
            vs("one", "shop", "b", ""),
            vs("two", "other", "b.shop.svc.cluster.local", "  gateways: [mesh]\n"),
            // Gateways merge VirtualServices, so this one is no conflict.
            vs("three", "shop", "b", "  gateways: [edge/gw]\n"),
            GATEWAY.to_string(),
        ]
        .concat();
        let found = findings(&text);
        assert_eq!(
            found.iter().map(|f| (f.0, f.2)).collect::<Vec<_>>(),
            [
                (Message::VirtualServiceHostNotFoundInGateway, 33),
                (Message::ConflictingMeshGatewayVirtualServiceHosts, 14),
                (Message::ConflictingMeshGatewayVirtualServiceHosts, 23),
            ],
            "{found:?}"
        );
    }
}
