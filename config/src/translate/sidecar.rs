//! The listeners of a sidecar, as Istio's sidecar builds them.
//!
//! Outbound (what the application calls, captured on 15001 and dispatched by the
//! original destination's port): one listener per service port of the mesh. HTTP
//! ports get a virtual host per service (its names as a client in the sidecar's
//! namespace writes them, and its VIPs) routed by the VirtualServices bound to the
//! mesh, or straight to the service; anything else goes to the original
//! destination (ALLOW_ANY) or nowhere (REGISTRY_ONLY). TCP ports get the `tcp`
//! rules bound to the mesh, or the service.
//!
//! Inbound (what reaches the workload, captured on 15006): one listener that applies
//! the workload's policy and forwards to the workload on the original port.

use std::collections::BTreeMap;

use crate::compile::virtual_service::{AppliesOn, CompiledVirtualService, Target};
use crate::hosts::fqdn;
use crate::registry::ServiceView;
use crate::snapshot::{
    Action, ClusterKind, Forward, L4Route, Listener, Protocol, Route, RoutePolicy, VirtualHost, WeightedCluster,
};

use super::Translator;

/// The port the sidecar's inbound capture lands on.
pub const INBOUND_PORT: u16 = 15006;
/// Istio's name of the cluster that forwards to where the client was going.
pub const PASSTHROUGH: &str = "PassthroughCluster";
/// Istio's name of the cluster that refuses (outbound policy REGISTRY_ONLY).
pub const BLACKHOLE: &str = "BlackHoleCluster";
/// The cluster of the workload beside the sidecar (the port is the original one).
pub const INBOUND: &str = "inbound|0||";

/// Whether a service port speaks TCP rather than HTTP (an undeclared protocol is
/// taken as HTTP; the engine falls back to TCP for what does not parse as HTTP).
fn is_tcp(protocol: Option<&str>) -> bool {
    matches!(protocol, Some("TCP" | "TLS" | "MONGO" | "MYSQL" | "REDIS" | "HTTPS"))
}

/// The names a client in `client_ns` may use for `service`: its FQDN, the short forms
/// Kubernetes DNS resolves (`name` in the same namespace, `name.ns`, `name.ns.svc`),
/// and its VIPs.
fn domains(service: &ServiceView<'_>, client_ns: &str) -> Vec<String> {
    let mut out = vec![service.host.to_string()];
    if service.kubernetes {
        let mut parts = service.host.splitn(3, '.');
        if let (Some(name), Some(ns)) = (parts.next(), parts.next()) {
            if ns == client_ns {
                out.push(name.to_string());
            }
            out.push(format!("{name}.{ns}"));
            out.push(format!("{name}.{ns}.svc"));
        }
    }
    out.extend(service.addresses.iter().map(|a| a.to_string()));
    out
}

impl Translator<'_, '_> {
    /// Outbound and inbound listeners of a sidecar.
    pub(super) fn sidecar(&mut self) {
        let compiled = self.compiled;
        let services = compiled.registry.services();
        let mesh_bound: Vec<&CompiledVirtualService<'_>> = compiled
            .virtual_services
            .iter()
            .filter(|vs| vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == "mesh"))
            .collect();
        let mut by_port: BTreeMap<u16, Vec<(&ServiceView<'_>, Option<&str>)>> = BTreeMap::new();
        for s in &services {
            for (port, protocol) in &s.ports {
                by_port.entry(*port).or_default().push((s, *protocol));
            }
        }
        for (port, on_port) in by_port {
            if port == INBOUND_PORT {
                continue;
            }
            if on_port.iter().all(|(_, p)| is_tcp(*p)) {
                self.outbound_tcp(port, &on_port, &mesh_bound);
            } else {
                self.outbound_http(port, &on_port, &mesh_bound);
            }
        }
        self.inbound();
    }

    /// The cluster unknown destinations go to: the original destination, or none.
    fn fallback_cluster(&mut self) -> usize {
        if self.scope.mesh.outbound == crate::mesh::OutboundMode::RegistryOnly {
            self.special_cluster(BLACKHOLE, ClusterKind::Blackhole)
        } else {
            self.special_cluster(PASSTHROUGH, ClusterKind::OriginalDestination)
        }
    }

    fn outbound_http(
        &mut self,
        port: u16,
        services: &[(&ServiceView<'_>, Option<&str>)],
        mesh_bound: &[&CompiledVirtualService<'_>],
    ) {
        let mut listener = Listener::new(port, Protocol::Http);
        let client_ns = self.scope.namespace().to_string();
        let on_mesh = |a: &AppliesOn| a.mesh();
        for (service, _) in services {
            let bound: Vec<&&CompiledVirtualService<'_>> = mesh_bound
                .iter()
                .filter(|vs| {
                    let ns = &vs.entry.resource.namespace;
                    vs.spec.hosts.iter().any(|h| names(&fqdn(h, ns), service.host))
                })
                .collect();
            let mut routes = Vec::new();
            // GAMMA: HTTPRoutes whose parent is this Service take its traffic from
            // the VirtualServices (a request no rule matches gets 404).
            let gamma = self.gamma_routes(service, port, &client_ns);
            let gamma_bound = !gamma.is_empty();
            routes.extend(gamma);
            for vs in bound.iter().filter(|_| !gamma_bound) {
                routes.extend(self.routes(vs, &on_mesh, port));
            }
            if bound.is_empty() && !gamma_bound {
                let target = Target {
                    host: service.host.to_string(),
                    port: Some(i64::from(port)),
                    subset: None,
                };
                let (cluster, _) = self.cluster_of(&target, port);
                routes.push(default_route(service.host, cluster));
            }
            let vi = listener.virtual_hosts.len();
            for d in domains(service, &client_ns) {
                listener.hosts.insert(&d, vi);
            }
            listener.virtual_hosts.push(VirtualHost {
                domain: service.host.to_string(),
                tls_server: None,
                https_redirect: false,
                routes,
            });
        }
        let fallback = self.fallback_cluster();
        listener.hosts.insert("*", listener.virtual_hosts.len());
        listener.virtual_hosts.push(VirtualHost {
            domain: "*".into(),
            tls_server: None,
            https_redirect: false,
            routes: vec![default_route("*", fallback)],
        });
        self.listeners.push(listener);
    }

    fn outbound_tcp(
        &mut self,
        port: u16,
        services: &[(&ServiceView<'_>, Option<&str>)],
        mesh_bound: &[&CompiledVirtualService<'_>],
    ) {
        let on_mesh = |a: &AppliesOn| a.mesh();
        for (service, _) in services {
            let mut listener = Listener::new(port, Protocol::Tcp);
            // Services sharing a port are told apart by their VIP.
            if services.len() > 1 {
                listener.address = service.addresses.first().copied();
            }
            for vs in mesh_bound.iter().filter(|vs| {
                let ns = &vs.entry.resource.namespace;
                vs.spec.hosts.iter().any(|h| names(&fqdn(h, ns), service.host))
            }) {
                let routes = self.l4_routes(vs, &on_mesh, port, false);
                listener.l4_routes.extend(routes);
            }
            if listener.l4_routes.is_empty() {
                let target = Target {
                    host: service.host.to_string(),
                    port: Some(i64::from(port)),
                    subset: None,
                };
                let (cluster, _) = self.cluster_of(&target, port);
                listener.l4_routes.push(L4Route {
                    source: format!("service {}", service.host),
                    sni_hosts: Vec::new(),
                    destinations: vec![weighted(cluster)],
                    total_weight: 100,
                });
            }
            self.listeners.push(listener);
        }
    }

    /// The inbound listener: the workload's policy, then the workload.
    fn inbound(&mut self) {
        let cluster = self.special_cluster(INBOUND, ClusterKind::LocalWorkload);
        let mut listener = Listener::new(INBOUND_PORT, Protocol::Http);
        listener.mtls = Some(self.peer_authentication());
        listener.hosts.insert("*", 0);
        listener.virtual_hosts.push(VirtualHost {
            domain: "*".into(),
            tls_server: None,
            https_redirect: false,
            routes: vec![Route {
                // Retries belong to the client's sidecar; the inbound side tries once.
                policy: RoutePolicy {
                    retry: crate::snapshot::RetryPolicy::none(),
                    ..RoutePolicy::default()
                },
                ..default_route("inbound", cluster)
            }],
        });
        self.listeners.push(listener);
    }
}

/// Whether a VirtualService host (fully qualified, `*.` wildcards allowed) names
/// `service`.
fn names(vs_host: &str, service: &str) -> bool {
    match vs_host.strip_prefix('*') {
        Some(suffix) => service.len() > suffix.len() && service.ends_with(suffix),
        None => vs_host == service,
    }
}

fn weighted(cluster: usize) -> WeightedCluster {
    WeightedCluster {
        cluster,
        weight: 100,
        request_headers: Default::default(),
        response_headers: Default::default(),
    }
}

/// A route sending everything to `cluster`, with Istio's default policy.
fn default_route(what: &str, cluster: usize) -> Route {
    Route {
        name: Some("default".into()),
        source: format!("service {what}"),
        matches: Vec::new(),
        action: Action::Forward(Forward {
            destinations: vec![weighted(cluster)],
            total_weight: 100,
            rewrite: None,
            mirrors: Vec::new(),
        }),
        request_headers: Default::default(),
        response_headers: Default::default(),
        policy: RoutePolicy::default(),
    }
}
