//! VirtualServices checked as Istio's webhook checks them and compiled once: HTTP
//! rules (see `http_rule`) and TCP/TLS rules, with destinations named but not yet
//! resolved. Translation binds them to a proxy's listeners and turns destinations
//! into that proxy's clusters.

use std::collections::HashSet;

use crate::bundle::Entry;
use crate::diag::Code;
use crate::hosts::{check_service_host, check_virtual_service_host, fqdn, gateway_ref};
use crate::resources::networking::{Destination, L4RouteSpec, VirtualServiceSpec};
use crate::snapshot::DirectResponse;
use crate::snapshot::{HeaderOps, Redirect, RequestMatch, Rewrite, RoutePolicy};

use super::Compiler;

/// A VirtualService with its rules compiled.
#[derive(Debug)]
pub struct CompiledVirtualService<'a> {
    /// Where it came from.
    pub entry: &'a Entry,
    /// The resource (hosts, gateways).
    pub spec: &'a VirtualServiceSpec,
    /// Its `http` rules, in order.
    pub http: Vec<CompiledRule>,
    /// Its `tcp` rules, in order.
    pub tcp: Vec<CompiledL4Rule>,
    /// Its `tls` rules, in order.
    pub tls: Vec<CompiledL4Rule>,
}

/// One compiled `http` rule.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// `name` of the rule, if any.
    pub name: Option<String>,
    /// e.g. `VirtualService default/app http[1]`.
    pub source: String,
    /// Whether the rule has `match` blocks (then one of them must apply).
    pub has_matches: bool,
    /// Its match blocks.
    pub matches: Vec<CompiledMatch>,
    /// What it does; None for `delegate`, which Strait does not serve.
    pub action: Option<CompiledAction>,
    /// Header operations on the request.
    pub request_headers: HeaderOps,
    /// Header operations on the response.
    pub response_headers: HeaderOps,
    /// Timeout, retries, faults, CORS, rate limit.
    pub policy: RoutePolicy,
}

/// A match block and the gateways it is limited to.
#[derive(Debug, Clone)]
pub struct CompiledMatch {
    /// The conditions.
    pub condition: RequestMatch,
    /// Where it applies.
    pub on: AppliesOn,
}

/// The gateways a match block lists (`match.gateways`); none: all of its resource's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliesOn {
    /// Whether the block lists gateways at all.
    pub listed: bool,
    /// (namespace, name) of the Gateways listed.
    pub gateways: Vec<(String, String)>,
    /// Whether `mesh` is listed.
    pub mesh: bool,
}

impl AppliesOn {
    /// Reads `match.gateways` of a resource in namespace `ns`.
    pub fn of(refs: &[String], ns: &str) -> AppliesOn {
        AppliesOn {
            listed: !refs.is_empty(),
            gateways: refs
                .iter()
                .filter_map(|g| gateway_ref(g, ns))
                .map(|(n, g)| (n.to_string(), g.to_string()))
                .collect(),
            mesh: refs.iter().any(|g| g == "mesh"),
        }
    }

    /// Whether the block applies on Gateway `ns/name` (its resource being bound to it).
    pub fn gateway(&self, ns: &str, name: &str) -> bool {
        !self.listed || self.gateways.iter().any(|(n, g)| n == ns && g == name)
    }

    /// Whether the block applies to sidecars (its resource being bound to the mesh).
    pub fn mesh(&self) -> bool {
        !self.listed || self.mesh
    }
}

/// What a rule does, with destinations named by host.
#[derive(Debug, Clone)]
pub enum CompiledAction {
    /// Proxy to weighted destinations.
    Forward(CompiledForward),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer with a fixed response.
    DirectResponse(DirectResponse),
}

/// Weighted forwarding, destinations not yet resolved.
#[derive(Debug, Clone)]
pub struct CompiledForward {
    /// Destinations with a weight above 0 (or the only one).
    pub destinations: Vec<CompiledDestination>,
    /// Sum of the weights.
    pub total_weight: u32,
    /// URI/authority rewrite.
    pub rewrite: Option<Rewrite>,
    /// Where copies go.
    pub mirrors: Vec<CompiledMirror>,
}

/// A destination of a route.
#[derive(Debug, Clone)]
pub struct CompiledDestination {
    /// Field path of its `destination`, for diagnostics.
    pub field: String,
    /// The service it names.
    pub target: Target,
    /// Relative weight.
    pub weight: u32,
    /// Request header operations for this destination.
    pub request_headers: HeaderOps,
    /// Response header operations for this destination.
    pub response_headers: HeaderOps,
}

/// A mirror of a route.
#[derive(Debug, Clone)]
pub struct CompiledMirror {
    /// Field path of the mirror's destination, for diagnostics.
    pub field: String,
    /// The service copies go to.
    pub target: Target,
    /// Share of requests, 0 to 100.
    pub percent: f64,
}

/// A service a resource names: host (fully qualified), port and subset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host, fully qualified in the namespace of the resource.
    pub host: String,
    /// Port, when given.
    pub port: Option<i64>,
    /// Subset, when given.
    pub subset: Option<String>,
}

impl Target {
    /// The service `dest` names from a resource of namespace `ns`.
    pub fn of(dest: &Destination, ns: &str) -> Target {
        Target {
            host: fqdn(&dest.host, ns),
            port: dest.port.as_ref().and_then(|p| p.number),
            subset: dest.subset.clone(),
        }
    }
}

/// One compiled `tcp` or `tls` rule.
#[derive(Debug, Clone)]
pub struct CompiledL4Rule {
    /// e.g. `VirtualService default/db tcp[0]`.
    pub source: String,
    /// Whether the rule has `match` blocks (then one of them must apply).
    pub has_matches: bool,
    /// Its match blocks.
    pub matches: Vec<CompiledL4Match>,
    /// Destinations with a weight above 0 (or the only one).
    pub destinations: Vec<CompiledDestination>,
    /// Sum of the weights.
    pub total_weight: u32,
}

/// A `tcp`/`tls` match block.
#[derive(Debug, Clone)]
pub struct CompiledL4Match {
    /// Port it applies on, if limited.
    pub port: Option<i64>,
    /// Where it applies.
    pub on: AppliesOn,
    /// SNI names (lowercase), for `tls` rules.
    pub sni_hosts: Vec<String>,
}

/// Why a route destination's weight is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeightError {
    /// Below zero.
    #[error("weight must not be negative")]
    Negative,
    /// Past what Istio's int32 weights can hold.
    #[error("weight {0} is more than 2147483647 (Istio's weights are int32)")]
    TooLarge(i64),
}

/// A route destination's weight: Istio's weights are int32 and not negative.
pub fn route_weight(w: i64) -> Result<u32, WeightError> {
    if w < 0 {
        return Err(WeightError::Negative);
    }
    i32::try_from(w)
        .ok()
        .and_then(|w| u32::try_from(w).ok())
        .ok_or(WeightError::TooLarge(w))
}

/// The sum of a route's weights, taken in u64 so that it cannot wrap; `None` when it
/// passes the u32 a destination is picked with.
pub fn total_weight(weights: impl IntoIterator<Item = u32>) -> Option<u32> {
    u32::try_from(weights.into_iter().map(u64::from).sum::<u64>()).ok()
}

/// Why a route's weights cannot be picked from, when their sum passes `u32::MAX`.
pub const TOTAL_WEIGHT_TOO_LARGE: &str =
    "the weights of this route add up to more than 4294967295; weights are relative: scale them down";

impl<'a> Compiler<'a> {
    pub(super) fn virtual_service(&mut self, e: &'a Entry, vs: &'a VirtualServiceSpec) -> CompiledVirtualService<'a> {
        let ns = e.resource.namespace.clone();
        if vs.hosts.is_empty() {
            self.err(
                e,
                Code::Required,
                "spec.hosts",
                "a VirtualService needs at least one host",
            );
        }
        // Istio checks hosts by what the VirtualService is bound to: gateways only
        // (with SNI routes, generated AUTO_PASSTHROUGH names pass), or the mesh.
        let bound_to_gateway = !vs.gateways.iter().any(|g| g == "mesh");
        let sni = vs.tls.iter().any(|t| t.matches.iter().any(|m| !m.sni_hosts.is_empty()));
        let mut seen = HashSet::new();
        for (i, h) in vs.hosts.iter().enumerate() {
            if let Err(msg) = check_virtual_service_host(h, bound_to_gateway && !vs.gateways.is_empty(), sni) {
                self.err(e, Code::InvalidValue, &format!("spec.hosts[{i}]"), msg.to_string());
            }
            if !seen.insert(fqdn(h, &ns)) {
                self.err(
                    e,
                    Code::DuplicateHost,
                    &format!("spec.hosts[{i}]"),
                    format!("host {h} is listed twice"),
                );
            }
            let mesh_bound = vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh");
            if h == "*" && mesh_bound {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("spec.hosts[{i}]"),
                    "wildcard host * is only allowed for VirtualServices bound to gateways",
                );
            }
        }
        for (i, g) in vs.gateways.iter().enumerate() {
            self.gateway_exists(e, &format!("spec.gateways[{i}]"), g);
        }
        if vs.http.is_empty() && vs.tcp.is_empty() && vs.tls.is_empty() {
            self.err(
                e,
                Code::Required,
                "spec",
                "a VirtualService needs http, tcp or tls routes",
            );
        }
        let http = vs
            .http
            .iter()
            .enumerate()
            .filter_map(|(i, r)| self.http_rule(e, i, r))
            .collect();
        let mut l4 = |kind: &str, routes: &[L4RouteSpec]| -> Vec<CompiledL4Rule> {
            routes
                .iter()
                .enumerate()
                .filter_map(|(i, r)| self.l4_rule(e, kind, i, r, bound_to_gateway))
                .collect()
        };
        let tls = l4("tls", &vs.tls);
        let tcp = l4("tcp", &vs.tcp);
        self.virtual_service_checks(e, vs);
        CompiledVirtualService {
            entry: e,
            spec: vs,
            http,
            tcp,
            tls,
        }
    }

    /// A `tcp` rule, or a `tls` one (whose matches need `sniHosts`); `gateway`: the
    /// VirtualService is not bound to the mesh.
    fn l4_rule(&mut self, e: &Entry, kind: &str, i: usize, r: &L4RouteSpec, gateway: bool) -> Option<CompiledL4Rule> {
        let errors_before = self.error_count();
        let f = format!("spec.{kind}[{i}]");
        let tls = kind == "tls";
        if tls && r.matches.is_empty() {
            self.err(
                e,
                Code::Required,
                &format!("{f}.match"),
                "a tls route needs a match with sniHosts",
            );
        }
        for (j, m) in r.matches.iter().enumerate() {
            if tls && m.sni_hosts.is_empty() {
                self.err(
                    e,
                    Code::Required,
                    &format!("{f}.match[{j}].sniHosts"),
                    "sniHosts is required",
                );
            }
            for (k, h) in m.sni_hosts.iter().enumerate() {
                // IP addresses pass: Istio only warns that clients rarely send them as SNI.
                if let Err(msg) = check_virtual_service_host(h, gateway, true) {
                    self.err(
                        e,
                        Code::InvalidValue,
                        &format!("{f}.match[{j}].sniHosts[{k}]"),
                        msg.to_string(),
                    );
                }
            }
            if !m.destination_subnets.is_empty() || !m.source_labels.is_empty() || m.source_namespace.is_some() {
                self.warn(
                    e,
                    Code::NotEnforced,
                    &format!("{f}.match[{j}]"),
                    "destinationSubnets, sourceLabels and sourceNamespace are accepted but not enforced by this version of Strait",
                );
            }
        }
        if r.route.is_empty() {
            self.err(
                e,
                Code::Required,
                &format!("{f}.route"),
                "a route needs at least one destination",
            );
        }
        for (di, d) in r.route.iter().enumerate() {
            if let Some(dest) = &d.destination {
                self.destination_host(e, &format!("{f}.route[{di}].destination.host"), &dest.host);
            }
        }
        let dests: Vec<_> = r
            .route
            .iter()
            .map(|d| (d.destination.as_ref(), d.weight, None))
            .collect();
        let (destinations, total_weight) = self.weighted(e, &f, dests);
        if self.error_count() > errors_before {
            return None;
        }
        let ns = e.resource.namespace.as_str();
        Some(CompiledL4Rule {
            source: format!("VirtualService {ns}/{} {kind}[{i}]", e.resource.name),
            has_matches: !r.matches.is_empty(),
            matches: r
                .matches
                .iter()
                .map(|m| CompiledL4Match {
                    port: m.port,
                    on: AppliesOn::of(&m.gateways, ns),
                    sni_hosts: m.sni_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
                })
                .collect(),
            destinations,
            total_weight,
        })
    }

    /// A destination's host, when given (a missing one is reported where it is
    /// required): a service name, never `*` alone.
    pub(super) fn destination_host(&mut self, e: &Entry, field: &str, host: &str) {
        if host.is_empty() {
            return;
        }
        if let Err(msg) = check_service_host(host) {
            self.err(e, Code::InvalidValue, field, msg.to_string());
        }
    }

    /// A route's destinations with their weights checked as Istio checks them (each
    /// an int32 that is not negative, one positive when there are several) and a sum
    /// that fits the u32 a destination is picked with. A single destination weighs
    /// 100 when it gives no weight; zero weights are left out.
    pub(super) fn weighted(
        &mut self,
        e: &Entry,
        f: &str,
        dests: Vec<(
            Option<&Destination>,
            Option<i64>,
            Option<&crate::resources::networking::Headers>,
        )>,
    ) -> (Vec<CompiledDestination>, u32) {
        let single = dests.len() == 1;
        let given: Vec<Option<i64>> = dests.iter().map(|(_, w, _)| *w).collect();
        let mut valid = Vec::with_capacity(given.len());
        let mut out = Vec::new();
        for (di, (dest, weight, headers)) in dests.into_iter().enumerate() {
            let weight = match weight.map(route_weight) {
                Some(Ok(w)) => {
                    valid.push(w);
                    w
                }
                Some(Err(msg)) => {
                    self.err(
                        e,
                        Code::InvalidValue,
                        &format!("{f}.route[{di}].weight"),
                        msg.to_string(),
                    );
                    continue;
                }
                None if single => 100,
                None => 0,
            };
            let Some(dest) = dest else { continue };
            if weight == 0 && !single {
                continue;
            }
            let dfield = format!("{f}.route[{di}]");
            let (request_headers, response_headers) = self.header_ops(e, &format!("{dfield}.headers"), headers);
            out.push(CompiledDestination {
                field: format!("{dfield}.destination"),
                target: Target::of(dest, &e.resource.namespace),
                weight,
                request_headers,
                response_headers,
            });
        }
        // A weight refused for being too large was meant to be positive: the sum of
        // the others being 0 says nothing more.
        let too_large = given.iter().flatten().any(|w| *w > 0 && route_weight(*w).is_err());
        let total = match total_weight(valid) {
            None => {
                self.err(e, Code::InvalidValue, &format!("{f}.route"), TOTAL_WEIGHT_TOO_LARGE);
                0
            }
            Some(0) if given.len() > 1 && !too_large => {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.route"),
                    "with several destinations, at least one weight must be positive",
                );
                0
            }
            Some(_) => total_weight(out.iter().map(|d| d.weight)).unwrap_or(0),
        };
        (out, total)
    }

    /// Errors reported so far (a rule whose compilation added some has no result).
    pub(super) fn error_count(&self) -> usize {
        self.diags.iter().filter(|d| d.is_error()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_int32_and_not_negative() {
        assert_eq!(route_weight(0), Ok(0));
        assert_eq!(route_weight(2147483647), Ok(2147483647));
        assert_eq!(route_weight(-1), Err(WeightError::Negative));
        assert_eq!(route_weight(2147483648), Err(WeightError::TooLarge(2147483648)));
        assert_eq!(
            WeightError::TooLarge(2147483648).to_string(),
            "weight 2147483648 is more than 2147483647 (Istio's weights are int32)"
        );
    }
}
