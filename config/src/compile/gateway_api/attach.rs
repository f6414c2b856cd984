//! Attaching a route to the listeners its parentRefs name: the listener's
//! `allowedRoutes` (namespaces, kinds) must admit it and their host names must
//! intersect; each parentRef gets its Accepted condition with the API's reason.

use crate::hosts::intersect;
use crate::resources::gateway_api::GROUP;

use super::{Condition, GatewayApi, ListenerProtocol, ParentStatus, RoutesFrom};
use crate::compile::Compiler;

/// Attaches route `ri` of `api` to its parents' listeners.
pub(super) fn attach(c: &Compiler<'_>, api: &mut GatewayApi<'_>, ri: usize) {
    let route = &api.routes[ri];
    let entry = route.entry;
    let route_ns = entry.resource.namespace.as_str();
    let parent_refs = match &entry.resource.spec {
        crate::resources::Spec::HttpRoute(r) => &r.parent_refs,
        crate::resources::Spec::GrpcRoute(r) => &r.parent_refs,
        crate::resources::Spec::TlsRoute(r) => &r.parent_refs,
        _ => return,
    };
    let kind = route.kind;
    let hostnames = route.hostnames.clone();
    let mut parents = Vec::new();
    for p in parent_refs {
        let group = p.group.as_deref().unwrap_or(GROUP);
        let pkind = p.kind.as_deref().unwrap_or("Gateway");
        if group != GROUP || pkind != "Gateway" {
            continue;
        }
        let ns = p.namespace.as_deref().filter(|n| !n.is_empty()).unwrap_or(route_ns);
        let Some(gi) = api
            .gateways
            .iter()
            .position(|g| g.entry.resource.namespace == ns && g.entry.resource.name == p.name)
        else {
            continue; // not a Gateway of Strait's: another controller reports on it
        };
        let gw = &mut api.gateways[gi];
        let gw_ns = gw.entry.resource.namespace.clone();
        let (mut named, mut allowed) = (false, false);
        let mut attached = Vec::new();
        for (li, l) in gw.listeners.iter_mut().enumerate() {
            if p.section_name.as_ref().is_some_and(|s| *s != l.name)
                || p.port.is_some_and(|port| port != i64::from(l.port))
            {
                continue;
            }
            named = true;
            if l.protocol == ListenerProtocol::Unsupported || !l.kinds.contains(&kind.name()) {
                continue;
            }
            let ns_ok = match &l.from {
                RoutesFrom::Same => route_ns == gw_ns,
                RoutesFrom::All => true,
                RoutesFrom::Selector(s) => s.matches(&c.namespace_labels(route_ns)),
            };
            if !ns_ok {
                continue;
            }
            allowed = true;
            let domains = domains(l.hostname.as_deref(), &hostnames);
            if domains.is_empty() {
                continue;
            }
            l.attached_routes += 1;
            attached.push((li, domains));
        }
        let accepted = if !attached.is_empty() {
            Condition::ok("Accepted", "Accepted")
        } else if !named {
            Condition::not(
                "Accepted",
                "NoMatchingParent",
                "no listener of the Gateway has this sectionName or port",
            )
        } else if !allowed {
            Condition::not(
                "Accepted",
                "NotAllowedByListeners",
                format!("no listener allows {}s from namespace {route_ns}", kind.name()),
            )
        } else {
            Condition::not(
                "Accepted",
                "NoMatchingListenerHostname",
                "no host name of the route matches a listener's",
            )
        };
        parents.push(ParentStatus {
            parent_ref: p.clone(),
            gateway: gi,
            listeners: attached,
            accepted,
        });
    }
    api.routes[ri].parents = parents;
}

/// The host names a route serves on a listener: the intersections of its host
/// names with the listener's (the more specific of each pair), or the listener's
/// when the route has none; `*` when neither has any.
fn domains(listener: Option<&str>, route: &[String]) -> Vec<String> {
    match (listener, route.is_empty()) {
        (None, true) => vec!["*".to_string()],
        (Some(l), true) => vec![l.to_string()],
        (None, false) => route.to_vec(),
        (Some(l), false) => {
            let mut out: Vec<String> = Vec::new();
            for h in route {
                if let Some(d) = intersect(h, l) {
                    if !out.contains(&d) {
                        out.push(d);
                    }
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_intersect_as_the_spec_says() {
        let d = |l: Option<&str>, r: &[&str]| domains(l, &r.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(d(None, &[]), ["*"]);
        assert_eq!(d(Some("test.example.com"), &[]), ["test.example.com"]);
        assert_eq!(d(Some("test.example.com"), &["*.example.com"]), ["test.example.com"]);
        assert_eq!(
            d(
                Some("*.example.com"),
                &["test.example.com", "foo.test.example.com", "test.example.net"]
            ),
            ["test.example.com", "foo.test.example.com"]
        );
        assert!(d(Some("*.example.com"), &["example.com"]).is_empty());
        assert_eq!(d(Some("*.example.com"), &["*.example.com"]), ["*.example.com"]);
    }
}
