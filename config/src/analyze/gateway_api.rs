//! The Gateway API's status as analyzer findings: what the controller would write
//! as a False condition (a route no listener accepts, a backend that does not
//! resolve, a listener that is not served), reported at the resource's place so
//! `analyze` shows it before anything is applied.

use crate::bundle::Bundle;
use crate::compile::compile;
use crate::diag::{Code, Severity};
use crate::resources::gateway_api::GROUP;
use crate::resources::Spec;

use super::{finding, Finding, Message};

/// Findings about the Gateway API resources of `bundle`.
pub(super) fn gateway_api(bundle: &Bundle, out: &mut Vec<Finding>) {
    let compiled = compile(bundle);
    let api = &compiled.gateway_api;
    for gw in &api.gateways {
        for (i, l) in gw.listeners.iter().enumerate() {
            if l.programmed() {
                continue;
            }
            let why: Vec<String> = l
                .conditions
                .iter()
                .filter(|c| if c.kind == "Conflicted" { c.status } else { !c.status })
                .map(|c| format!("{} {}: {}", c.kind, c.reason, c.message))
                .collect();
            out.push(finding(
                Message::GatewayListenerNotProgrammed,
                gw.entry,
                Severity::Warning,
                Code::NotEnforced,
                &format!("spec.listeners[{i}]"),
                format!("listener {} is not served ({})", l.name, why.join("; ")),
            ));
        }
    }
    for route in &api.routes {
        let e = route.entry;
        let parent_refs = match &e.resource.spec {
            Spec::HttpRoute(r) => &r.parent_refs,
            Spec::GrpcRoute(r) => &r.parent_refs,
            Spec::TlsRoute(r) => &r.parent_refs,
            _ => continue,
        };
        for (i, p) in parent_refs.iter().enumerate() {
            let group = p.group.as_deref().unwrap_or(GROUP);
            if group != GROUP || p.kind.as_deref().unwrap_or("Gateway") != "Gateway" {
                continue;
            }
            let ns = p.namespace.as_deref().unwrap_or(&e.resource.namespace);
            let exists = bundle.entries.iter().any(|x| {
                matches!(x.resource.spec, Spec::KubeGateway(_))
                    && x.resource.namespace == ns
                    && x.resource.name == p.name
            });
            if !exists {
                out.push(finding(
                    Message::ReferencedResourceNotFound,
                    e,
                    Severity::Error,
                    Code::ReferenceNotFound,
                    &format!("spec.parentRefs[{i}]"),
                    format!("Referenced Gateway not found: {ns}/{}", p.name),
                ));
                continue;
            }
            let Some(status) = route.parents.iter().find(|s| s.parent_ref == *p) else {
                continue; // a Gateway of another class
            };
            if !status.accepted.status {
                out.push(finding(
                    Message::GatewayRouteNotAccepted,
                    e,
                    Severity::Error,
                    Code::NotEnforced,
                    &format!("spec.parentRefs[{i}]"),
                    format!(
                        "not accepted by Gateway {ns}/{} ({}): {}",
                        p.name, status.accepted.reason, status.accepted.message
                    ),
                ));
            }
        }
        if let Some((reason, message)) = &route.unresolved {
            out.push(finding(
                Message::GatewayRouteRefsNotResolved,
                e,
                Severity::Warning,
                Code::ReferenceNotFound,
                "spec.rules",
                format!("{reason}: {message}; requests to the rules concerned get 500"),
            ));
        }
    }
}
