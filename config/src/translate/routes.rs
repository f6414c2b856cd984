//! A VirtualService's compiled rules bound to one Gateway server: the match blocks
//! that apply on that gateway, and destinations resolved to this snapshot's clusters.

use crate::compile::virtual_service::{AppliesOn, CompiledAction, CompiledDestination, CompiledVirtualService};
use crate::snapshot::{Action, Forward, L4Route, Mirror, Route, WeightedCluster};

use super::Translator;

impl Translator<'_, '_> {
    /// The HTTP routes of `vs` on a listener of `port`, keeping the match blocks for
    /// which `on` holds (this gateway's, or the mesh's).
    pub(super) fn routes(
        &mut self,
        vs: &CompiledVirtualService<'_>,
        on: &dyn Fn(&AppliesOn) -> bool,
        port: u16,
    ) -> Vec<Route> {
        let mut routes = Vec::new();
        for rule in &vs.http {
            let matches: Vec<_> = rule
                .matches
                .iter()
                .filter(|m| on(&m.on))
                .map(|m| m.condition.clone())
                .collect();
            if rule.has_matches && matches.is_empty() {
                continue;
            }
            let action = match &rule.action {
                None => continue,
                Some(CompiledAction::Redirect(r)) => Action::Redirect(r.clone()),
                Some(CompiledAction::DirectResponse(d)) => Action::DirectResponse(d.clone()),
                Some(CompiledAction::Forward(f)) => {
                    let mirrors = f
                        .mirrors
                        .iter()
                        .map(|m| Mirror {
                            cluster: self.cluster(vs.entry, &m.field, &m.target, port),
                            percent: m.percent,
                        })
                        .collect();
                    Action::Forward(Forward {
                        destinations: self.destinations(vs, &f.destinations, port),
                        total_weight: f.total_weight,
                        rewrite: f.rewrite.clone(),
                        mirrors,
                    })
                }
            };
            routes.push(Route {
                name: rule.name.clone(),
                source: rule.source.clone(),
                matches,
                action,
                request_headers: rule.request_headers.clone(),
                response_headers: rule.response_headers.clone(),
                policy: rule.policy.clone(),
            });
        }
        routes
    }

    /// The `tcp` (or, for TLS passthrough, `tls`) routes of `vs` on one port, keeping
    /// the match blocks for which `on` holds.
    pub(super) fn l4_routes(
        &mut self,
        vs: &CompiledVirtualService<'_>,
        on: &dyn Fn(&AppliesOn) -> bool,
        port: u16,
        tls: bool,
    ) -> Vec<L4Route> {
        let rules = if tls { &vs.tls } else { &vs.tcp };
        let mut out = Vec::new();
        for rule in rules {
            let applicable: Vec<_> = rule
                .matches
                .iter()
                .filter(|m| m.port.is_none_or(|p| p == i64::from(port)))
                .filter(|m| on(&m.on))
                .collect();
            if rule.has_matches && applicable.is_empty() {
                continue;
            }
            let mut sni_hosts: Vec<String> = applicable.iter().flat_map(|m| m.sni_hosts.iter().cloned()).collect();
            sni_hosts.dedup();
            out.push(L4Route {
                source: rule.source.clone(),
                sni_hosts,
                destinations: self.destinations(vs, &rule.destinations, port),
                total_weight: rule.total_weight,
            });
        }
        out
    }

    /// Destinations with their clusters.
    fn destinations(
        &mut self,
        vs: &CompiledVirtualService<'_>,
        destinations: &[CompiledDestination],
        port: u16,
    ) -> Vec<WeightedCluster> {
        destinations
            .iter()
            .map(|d| WeightedCluster {
                cluster: self.cluster(vs.entry, &d.field, &d.target, port),
                weight: d.weight,
                request_headers: d.request_headers.clone(),
                response_headers: d.response_headers.clone(),
            })
            .collect()
    }
}
