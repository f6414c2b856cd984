//! The listeners of a gateway from the Kubernetes Gateway API: the Gateways of
//! Strait's GatewayClasses this proxy serves (the one its
//! `gateway.networking.k8s.io/gateway-name` label names, else all of them), each
//! programmed listener with its certificate, and the routes attached to it, sorted
//! within each virtual host by the API's precedence.

use std::collections::BTreeMap;

use crate::compile::gateway_api::{
    is_invalid, CompiledGateway, CompiledListener, CompiledRoute, GatewayRule, ListenerProtocol, Precedence, RouteKind,
};
use crate::compile::virtual_service::CompiledAction;
use crate::diag::{Code, Severity};
use crate::hosts::fqdn;
use crate::resources::gateway_api::GATEWAY_NAME_LABEL;
use crate::resources::Spec;
use crate::snapshot::{
    Action, CertificateSource, ClusterKind, Forward, L4Route, Listener, Mirror, Protocol, Route, TlsServer,
    VirtualHost, WeightedCluster,
};

use super::Translator;

/// The cluster of the invalid backendRefs' share of a rule: requests get 500.
pub const INVALID_BACKEND_CLUSTER: &str = "InvalidBackendCluster";

/// Where a route sorts in its virtual host: precedence, creation time,
/// `namespace/name`, rule and match index.
type SortKey = (Precedence, String, String, usize, usize);

impl Translator<'_, '_> {
    /// Adds the Gateway API listeners and routes this proxy serves.
    pub(super) fn gateway_api(&mut self) {
        let api = &self.compiled.gateway_api;
        let named = self.scope.labels().get(GATEWAY_NAME_LABEL).cloned();
        let mut pending: BTreeMap<(usize, usize), Vec<(SortKey, Route)>> = BTreeMap::new();
        for (gi, gw) in api.gateways.iter().enumerate() {
            if let Some(name) = &named {
                if gw.entry.resource.name != *name || gw.entry.resource.namespace != self.scope.namespace() {
                    continue;
                }
            }
            for (li, l) in gw.listeners.iter().enumerate() {
                if l.programmed() {
                    self.kube_listener(gw, gi, li, l, &mut pending);
                }
            }
        }
        for ((sli, vi), mut routes) in pending {
            routes.sort_by(|a, b| a.0.cmp(&b.0));
            self.listeners[sli].virtual_hosts[vi]
                .routes
                .extend(routes.into_iter().map(|(_, r)| r));
        }
        for l in &mut self.listeners {
            // Exact SNI names before wildcards, the catch-all last.
            l.l4_routes
                .sort_by_key(|r| (r.sni_hosts.is_empty(), r.sni_hosts.iter().any(|h| h.starts_with('*'))));
        }
        self.listeners.sort_by_key(|l| l.port);
    }

    fn kube_listener(
        &mut self,
        gw: &CompiledGateway<'_>,
        gi: usize,
        li: usize,
        l: &CompiledListener,
        pending: &mut BTreeMap<(usize, usize), Vec<(SortKey, Route)>>,
    ) {
        let protocol = match l.protocol {
            ListenerProtocol::Http => Protocol::Http,
            ListenerProtocol::Https => Protocol::Https,
            ListenerProtocol::TlsPassthrough => Protocol::TlsPassthrough,
            ListenerProtocol::Unsupported => return,
        };
        let field = format!("spec.listeners[{li}]");
        let sli = match self.listeners.iter().position(|x| x.port == l.port) {
            Some(i) if self.listeners[i].protocol != protocol => {
                self.diags.push(gw.entry.diag(
                    Severity::Warning,
                    Code::Conflict,
                    &format!("{field}.port"),
                    format!(
                        "port {} is already served as {:?} by another Gateway; listener {} skipped",
                        l.port, self.listeners[i].protocol, l.name
                    ),
                ));
                return;
            }
            Some(i) => i,
            None => {
                self.listeners.push(Listener::new(l.port, protocol));
                self.listeners.len() - 1
            }
        };
        let source = format!(
            "Gateway {}/{} listeners[{}]",
            gw.entry.resource.namespace, gw.entry.resource.name, l.name
        );
        let host = l.hostname.clone().unwrap_or_else(|| "*".to_string());
        let tls_server = match &l.certificate {
            Some(cert) if protocol == Protocol::Https => {
                let anchor = gw.entry.anchor(&format!("{field}.tls.certificateRefs[0]"));
                let source_cert = CertificateSource::Inline {
                    cert_pem: cert.cert_pem.clone(),
                    key_pem: cert.key_pem.clone(),
                };
                let index = self.add_certificate(format!("secret {}", cert.secret), source_cert, anchor);
                let listener = &mut self.listeners[sli];
                let ti = listener.tls_servers.len();
                listener.sni.insert(&host, ti);
                listener.tls_servers.push(TlsServer {
                    hosts: vec![host.clone()],
                    certificate: index,
                    source: source.clone(),
                    client_auth: None,
                    min_version: None,
                    max_version: None,
                    cipher_suites: Vec::new(),
                });
                Some(ti)
            }
            _ => None,
        };
        let compiled = self.compiled;
        for route in &compiled.gateway_api.routes {
            let domains: Vec<&String> = route
                .parents
                .iter()
                .filter(|p| p.gateway == gi)
                .flat_map(|p| p.listeners.iter().filter(|(x, _)| *x == li).flat_map(|(_, d)| d))
                .collect();
            if domains.is_empty() {
                continue;
            }
            match (route.kind, protocol) {
                (RouteKind::Tls, Protocol::TlsPassthrough) => {
                    let sni_hosts: Vec<String> = domains
                        .iter()
                        .filter(|d| d.as_str() != "*")
                        .map(|d| d.to_string())
                        .collect();
                    for rule in &route.rules {
                        let destinations = self.gw_destinations(route, &rule.l4, l.port, false);
                        let total_weight = destinations.iter().map(|d| d.weight).sum();
                        self.listeners[sli].l4_routes.push(L4Route {
                            source: rule.source.clone(),
                            sni_hosts: sni_hosts.clone(),
                            destinations,
                            total_weight,
                        });
                    }
                }
                (RouteKind::Http | RouteKind::Grpc, Protocol::Http | Protocol::Https) => {
                    let routes = self.gw_routes(route, l.port);
                    for domain in domains {
                        let listener = &mut self.listeners[sli];
                        let vi = match listener.virtual_hosts.iter().position(|v| v.domain == *domain) {
                            Some(i) => i,
                            None => {
                                listener.hosts.insert(domain, listener.virtual_hosts.len());
                                listener.virtual_hosts.push(VirtualHost {
                                    domain: domain.clone(),
                                    tls_server,
                                    https_redirect: false,
                                    routes: Vec::new(),
                                });
                                listener.virtual_hosts.len() - 1
                            }
                        };
                        pending.entry((sli, vi)).or_default().extend(routes.iter().cloned());
                    }
                }
                _ => {}
            }
        }
    }

    /// A route's rules as snapshot routes, one per match, with their sort keys.
    fn gw_routes(&mut self, route: &CompiledRoute<'_>, port: u16) -> Vec<(SortKey, Route)> {
        let mut out = Vec::new();
        for (ri, rule) in route.rules.iter().enumerate() {
            let action = self.gw_action(route, rule, port);
            for (mi, (condition, precedence)) in rule.matches.iter().enumerate() {
                let key = (*precedence, route.order.0.clone(), route.order.1.clone(), ri, mi);
                out.push((
                    key,
                    Route {
                        name: rule.name.clone(),
                        source: rule.source.clone(),
                        matches: vec![condition.clone()],
                        action: action.clone(),
                        request_headers: rule.request_headers.clone(),
                        response_headers: rule.response_headers.clone(),
                        policy: rule.policy.clone(),
                    },
                ));
            }
        }
        out
    }

    fn gw_action(&mut self, route: &CompiledRoute<'_>, rule: &GatewayRule, port: u16) -> Action {
        match &rule.action {
            CompiledAction::DirectResponse(d) => Action::DirectResponse(d.clone()),
            CompiledAction::Redirect(r) => {
                let mut r = r.clone();
                // No scheme and no port: the listener's port (dropped from the
                // Location when it is the scheme's own).
                if r.scheme.is_none() && r.port.is_none() {
                    r.port = Some(port);
                }
                Action::Redirect(r)
            }
            CompiledAction::Forward(f) => {
                let destinations = self.gw_destinations(route, &f.destinations, port, rule.h2);
                let mirrors = f
                    .mirrors
                    .iter()
                    .map(|m| Mirror {
                        cluster: self.cluster(route.entry, &m.field, &m.target, port),
                        percent: m.percent,
                    })
                    .collect();
                Action::Forward(Forward {
                    destinations,
                    total_weight: f.total_weight,
                    rewrite: f.rewrite.clone(),
                    mirrors,
                })
            }
        }
    }

    fn gw_destinations(
        &mut self,
        route: &CompiledRoute<'_>,
        destinations: &[crate::compile::virtual_service::CompiledDestination],
        port: u16,
        h2: bool,
    ) -> Vec<WeightedCluster> {
        destinations
            .iter()
            .map(|d| {
                let cluster = if is_invalid(d) {
                    self.special_cluster(INVALID_BACKEND_CLUSTER, ClusterKind::InvalidBackend)
                } else {
                    self.cluster(route.entry, &d.field, &d.target, port)
                };
                if h2 {
                    // GRPCRoute backends speak HTTP/2 (cleartext unless TLS is set).
                    if let Some(c) = self.clusters.get_mut(cluster) {
                        c.policy.h2_upstream = true;
                    }
                }
                WeightedCluster {
                    cluster,
                    weight: d.weight,
                    request_headers: d.request_headers.clone(),
                    response_headers: d.response_headers.clone(),
                }
            })
            .collect()
    }

    /// GAMMA: the routes of the HTTPRoutes and GRPCRoutes whose parentRef is the
    /// Service `service` (on `port`, or on every port when the ref names none), in
    /// the API's precedence. A route in the Service's namespace applies to every
    /// client (a producer route); one elsewhere only to clients of its own namespace
    /// (a consumer route).
    pub(super) fn gamma_routes(
        &mut self,
        service: &crate::registry::ServiceView<'_>,
        port: u16,
        client_ns: &str,
    ) -> Vec<Route> {
        let compiled = self.compiled;
        let mut found: Vec<(SortKey, Route)> = Vec::new();
        for route in &compiled.gateway_api.routes {
            let parents = match &route.entry.resource.spec {
                Spec::HttpRoute(r) => &r.parent_refs,
                Spec::GrpcRoute(r) => &r.parent_refs,
                _ => continue,
            };
            let route_ns = route.entry.resource.namespace.as_str();
            let names_it = parents.iter().any(|p| {
                let ns = p.namespace.as_deref().unwrap_or(route_ns);
                p.kind.as_deref() == Some("Service")
                    && p.group.as_deref().unwrap_or("").is_empty()
                    && fqdn(&p.name, ns) == service.host
                    && p.port.is_none_or(|p| p == i64::from(port))
                    && (route_ns == service.namespace || route_ns == client_ns)
            });
            if names_it {
                found.extend(self.gw_routes(route, port));
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found.into_iter().map(|(_, r)| r).collect()
    }
}
