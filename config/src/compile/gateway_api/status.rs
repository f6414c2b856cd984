//! The status the Gateway API asks of a controller, computed from a compiled bundle:
//! GatewayClass Accepted; Gateway Accepted and Programmed with each listener's
//! conditions, supported kinds and attached routes; each route's parents with
//! Accepted and ResolvedRefs. Pure: the controller writes what this returns.

use serde_json::{json, Value};

use crate::bundle::Entry;
use crate::resources::gateway_api::{ParentRef, CONTROLLER_NAME, GROUP};
use crate::resources::Spec;

use super::{Condition, GatewayApi, ListenerProtocol};

/// The status of one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceStatus {
    /// Kind (the group is gateway.networking.k8s.io).
    pub kind: &'static str,
    /// Namespace (empty for GatewayClass).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The `status` object.
    pub status: Value,
}

/// The status of every Gateway API resource Strait controls; `now` (RFC 3339) is
/// each condition's lastTransitionTime.
pub fn status(api: &GatewayApi<'_>, now: &str) -> Vec<ResourceStatus> {
    let mut out = Vec::new();
    let cond = |e: &Entry, c: &Condition| condition(e, c, now);
    for class in &api.classes {
        out.push(ResourceStatus {
            kind: "GatewayClass",
            namespace: String::new(),
            name: class.resource.name.clone(),
            status: json!({"conditions": [cond(class, &Condition::ok("Accepted", "Accepted"))]}),
        });
    }
    for gw in &api.gateways {
        let e = gw.entry;
        let listeners: Vec<Value> = gw
            .listeners
            .iter()
            .map(|l| {
                let mut conditions: Vec<Value> = l.conditions.iter().map(|c| cond(e, c)).collect();
                let programmed = if l.programmed() {
                    Condition::ok("Programmed", "Programmed")
                } else {
                    Condition::not("Programmed", "Invalid", "the listener is not served; see its other conditions")
                };
                conditions.push(cond(e, &programmed));
                json!({
                    "name": l.name,
                    "supportedKinds": l.supported_kinds.iter().map(|k| json!({"group": GROUP, "kind": k})).collect::<Vec<_>>(),
                    "attachedRoutes": l.attached_routes,
                    "conditions": conditions,
                })
            })
            .collect();
        let valid = gw.listeners.iter().filter(|l| l.programmed()).count();
        let all_supported = gw.listeners.iter().all(|l| l.protocol != ListenerProtocol::Unsupported);
        let accepted = if all_supported && valid == gw.listeners.len() {
            Condition::ok("Accepted", "Accepted")
        } else if valid > 0 {
            Condition {
                message: "some listeners are not valid".into(),
                ..Condition::ok("Accepted", "ListenersNotValid")
            }
        } else {
            Condition::not("Accepted", "ListenersNotValid", "no listener is valid")
        };
        let programmed = if valid > 0 {
            Condition::ok("Programmed", "Programmed")
        } else {
            Condition::not("Programmed", "Invalid", "no listener is served")
        };
        out.push(ResourceStatus {
            kind: "Gateway",
            namespace: e.resource.namespace.clone(),
            name: e.resource.name.clone(),
            status: json!({
                "conditions": [cond(e, &accepted), cond(e, &programmed)],
                "listeners": listeners,
            }),
        });
    }
    for route in &api.routes {
        let e = route.entry;
        let services = service_parents(e);
        if route.parents.is_empty() && services.is_empty() {
            continue;
        }
        let resolved = match &route.unresolved {
            None => Condition::ok("ResolvedRefs", "ResolvedRefs"),
            Some((reason, message)) => Condition::not("ResolvedRefs", reason, message.clone()),
        };
        // GAMMA: a Service parent is the mesh's, programmed in the sidecars.
        let mesh = Condition {
            message: "programmed in the sidecars of the mesh".into(),
            ..Condition::ok("Accepted", "Accepted")
        };
        let in_mesh = services.into_iter().map(|p| {
            let mut parent_ref = serde_json::to_value(p).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut parent_ref {
                m.retain(|_, v| !v.is_null());
            }
            json!({
                "parentRef": parent_ref,
                "controllerName": CONTROLLER_NAME,
                "conditions": [cond(e, &mesh), cond(e, &resolved)],
            })
        });
        let parents: Vec<Value> = route
            .parents
            .iter()
            .map(|p| {
                let mut parent_ref = serde_json::to_value(&p.parent_ref).unwrap_or(Value::Null);
                if let Value::Object(m) = &mut parent_ref {
                    m.retain(|_, v| !v.is_null());
                    m.entry("group").or_insert_with(|| json!(GROUP));
                    m.entry("kind").or_insert_with(|| json!("Gateway"));
                }
                json!({
                    "parentRef": parent_ref,
                    "controllerName": CONTROLLER_NAME,
                    "conditions": [cond(e, &p.accepted), cond(e, &resolved)],
                })
            })
            .chain(in_mesh)
            .collect();
        out.push(ResourceStatus {
            kind: route.kind.name(),
            namespace: e.resource.namespace.clone(),
            name: e.resource.name.clone(),
            status: json!({"parents": parents}),
        });
    }
    out
}

/// A route's parentRefs to Services (GAMMA).
fn service_parents(e: &Entry) -> Vec<&ParentRef> {
    let parents = match &e.resource.spec {
        Spec::HttpRoute(r) => &r.parent_refs,
        Spec::GrpcRoute(r) => &r.parent_refs,
        _ => return Vec::new(),
    };
    parents
        .iter()
        .filter(|p| p.kind.as_deref() == Some("Service") && p.group.as_deref().unwrap_or("").is_empty())
        .collect()
}

fn condition(e: &Entry, c: &Condition, now: &str) -> Value {
    let generation = e
        .resource
        .metadata
        .other
        .get("generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    json!({
        "type": c.kind,
        "status": if c.status { "True" } else { "False" },
        "reason": c.reason,
        "message": c.message,
        "observedGeneration": generation,
        "lastTransitionTime": now,
    })
}
