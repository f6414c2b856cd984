//! A Gateway's listeners checked: what the CRD refuses is an error; what the API
//! reports on the listener (an unsupported protocol, a certificate that does not
//! resolve, route kinds it cannot serve, two listeners in conflict) becomes its
//! conditions.

use std::collections::HashSet;

use crate::bundle::Entry;
use crate::diag::Code;
use crate::hosts::check_wildcard_domain;
use crate::resources::gateway_api::{KubeGatewaySpec, KubeListener, GROUP};
use crate::resources::kube::secret_value;
use crate::resources::Spec;

use super::{ref_namespace, CompiledListener, Condition, ListenerCertificate, ListenerProtocol, RoutesFrom};
use crate::compile::Compiler;

impl Compiler<'_> {
    /// The listeners of Gateway `e`, checked.
    pub(super) fn listeners(&mut self, e: &Entry, gw: &KubeGatewaySpec) -> Vec<CompiledListener> {
        if gw.gateway_class_name.is_empty() {
            self.err(
                e,
                Code::Required,
                "spec.gatewayClassName",
                "a Gateway needs gatewayClassName",
            );
        }
        if gw.listeners.is_empty() {
            self.err(
                e,
                Code::Required,
                "spec.listeners",
                "a Gateway needs at least one listener",
            );
        }
        let mut names = HashSet::new();
        let mut out: Vec<CompiledListener> = gw
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                if !names.insert(l.name.as_str()) {
                    self.err(
                        e,
                        Code::Conflict,
                        &format!("spec.listeners[{i}].name"),
                        format!("listener name {} is used twice", l.name),
                    );
                }
                self.listener(e, i, l)
            })
            .collect();
        conflicts(&mut out);
        out
    }

    fn listener(&mut self, e: &Entry, i: usize, l: &KubeListener) -> CompiledListener {
        let f = format!("spec.listeners[{i}]");
        if l.name.is_empty() {
            self.err(e, Code::Required, &format!("{f}.name"), "a listener needs a name");
        }
        let port = u16::try_from(l.port).ok().filter(|p| *p > 0).unwrap_or_else(|| {
            self.err(
                e,
                Code::InvalidValue,
                &format!("{f}.port"),
                format!("{} is not a port (1-65535)", l.port),
            );
            0
        });
        let hostname = l.hostname.as_ref().map(|h| h.to_ascii_lowercase());
        if let Some(h) = &hostname {
            if h.parse::<std::net::IpAddr>().is_ok() || check_wildcard_domain(h).is_err() || h == "*" {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.hostname"),
                    format!("{h} is not a host name (an optional `*.` label, then DNS labels; no IPs)"),
                );
            }
        }
        let mode = l.tls.as_ref().and_then(|t| t.mode.as_deref()).unwrap_or("Terminate");
        let mut conditions = vec![Condition::ok("Accepted", "Accepted")];
        let protocol = match (l.protocol.as_str(), mode) {
            ("HTTP", _) => ListenerProtocol::Http,
            ("HTTPS", "Terminate") => ListenerProtocol::Https,
            ("TLS", "Passthrough") => ListenerProtocol::TlsPassthrough,
            ("HTTPS", _) => {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.tls.mode"),
                    "HTTPS listeners terminate TLS (mode Terminate)",
                );
                ListenerProtocol::Unsupported
            }
            (other, _) => {
                conditions[0] = Condition::not(
                    "Accepted",
                    "UnsupportedProtocol",
                    format!("Strait serves HTTP, HTTPS and TLS Passthrough listeners, not {other} ({mode})"),
                );
                ListenerProtocol::Unsupported
            }
        };
        if matches!(protocol, ListenerProtocol::Https | ListenerProtocol::TlsPassthrough) && l.tls.is_none() {
            self.err(
                e,
                Code::Required,
                &format!("{f}.tls"),
                format!("{} listeners need tls", l.protocol),
            );
        }
        let (from, kinds, supported_kinds, refs) = self.allowed(e, &f, l, protocol);
        let mut resolved = refs;
        let certificate = match (protocol, &l.tls) {
            (ListenerProtocol::Https, Some(tls)) => {
                if tls.certificate_refs.is_empty() {
                    self.err(
                        e,
                        Code::Required,
                        &format!("{f}.tls.certificateRefs"),
                        "a Terminate listener needs certificateRefs",
                    );
                }
                match self.listener_certificate(e, &f, tls) {
                    Ok(c) => c,
                    Err(c) => {
                        resolved = Some(c);
                        None
                    }
                }
            }
            _ => None,
        };
        conditions.push(resolved.unwrap_or_else(|| Condition::ok("ResolvedRefs", "ResolvedRefs")));
        conditions.push(Condition::not("Conflicted", "NoConflicts", ""));
        CompiledListener {
            name: l.name.clone(),
            port,
            protocol,
            hostname,
            certificate,
            from,
            kinds,
            supported_kinds,
            conditions,
            attached_routes: 0,
        }
    }

    /// `allowedRoutes`: namespaces, the kinds that may attach, the kinds the API
    /// reports as supported, and a ResolvedRefs condition when some kinds are invalid.
    fn allowed(
        &mut self,
        e: &Entry,
        f: &str,
        l: &KubeListener,
        protocol: ListenerProtocol,
    ) -> (RoutesFrom, Vec<&'static str>, Vec<&'static str>, Option<Condition>) {
        let served: &[&'static str] = match protocol {
            ListenerProtocol::Http | ListenerProtocol::Https => &["HTTPRoute", "GRPCRoute"],
            ListenerProtocol::TlsPassthrough => &["TLSRoute"],
            ListenerProtocol::Unsupported => &[],
        };
        let allowed = l.allowed_routes.as_ref();
        let namespaces = allowed.and_then(|a| a.namespaces.as_ref());
        let from = match namespaces.and_then(|n| n.from.as_deref()).unwrap_or("Same") {
            "Same" => RoutesFrom::Same,
            "All" => RoutesFrom::All,
            "Selector" => match namespaces.and_then(|n| n.selector.clone()) {
                Some(s) => RoutesFrom::Selector(s),
                None => {
                    self.err(
                        e,
                        Code::Required,
                        &format!("{f}.allowedRoutes.namespaces.selector"),
                        "from: Selector needs a selector",
                    );
                    RoutesFrom::Same
                }
            },
            other => {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.allowedRoutes.namespaces.from"),
                    format!("{other:?} is not one of All, Same, Selector"),
                );
                RoutesFrom::Same
            }
        };
        let listed = allowed.map(|a| a.kinds.as_slice()).unwrap_or_default();
        if listed.is_empty() {
            return (from, served.to_vec(), served.to_vec(), None);
        }
        let mut kinds = Vec::new();
        let mut invalid = Vec::new();
        for k in listed {
            let group_ok = k.group.as_deref().is_none_or(|g| g == GROUP);
            match served.iter().find(|s| **s == k.kind) {
                Some(s) if group_ok => kinds.push(*s),
                _ => invalid.push(k.kind.clone()),
            }
        }
        let condition = (!invalid.is_empty()).then(|| {
            Condition::not(
                "ResolvedRefs",
                "InvalidRouteKinds",
                format!(
                    "route kinds {} cannot attach to a {:?} listener",
                    invalid.join(", "),
                    l.protocol
                ),
            )
        });
        (from, kinds.clone(), kinds, condition)
    }

    /// The first certificateRef, read from its kubernetes.io/tls Secret; or the
    /// ResolvedRefs condition saying why it cannot be used.
    fn listener_certificate(
        &mut self,
        e: &Entry,
        f: &str,
        tls: &crate::resources::gateway_api::ListenerTls,
    ) -> Result<Option<ListenerCertificate>, Condition> {
        let Some(r) = tls.certificate_refs.first() else {
            return Ok(None);
        };
        if tls.certificate_refs.len() > 1 {
            self.warn(
                e,
                Code::NotEnforced,
                &format!("{f}.tls.certificateRefs"),
                "only the first certificateRef is served",
            );
        }
        let invalid = |message: String| Condition::not("ResolvedRefs", "InvalidCertificateRef", message);
        let group = r.group.as_deref().unwrap_or("");
        let kind = r.kind.as_deref().unwrap_or("Secret");
        if !group.is_empty() || kind != "Secret" {
            return Err(invalid(format!(
                "certificateRefs to {kind}.{group} are not supported (Secret is)"
            )));
        }
        let own = e.resource.namespace.as_str();
        let ns = ref_namespace(&r.namespace, own);
        if !self.granted("Gateway", own, "", "Secret", ns, &r.name) {
            return Err(Condition::not(
                "ResolvedRefs",
                "RefNotPermitted",
                format!(
                    "no ReferenceGrant in namespace {ns} lets Gateways of {own} use Secret {}",
                    r.name
                ),
            ));
        }
        let found = self
            .bundle
            .of(|s| match s {
                Spec::Secret(b) => Some(b),
                _ => None,
            })
            .find(|(s, _)| s.resource.namespace == ns && s.resource.name == r.name);
        let Some((_, body)) = found else {
            return Err(invalid(format!("Secret {ns}/{} not found", r.name)));
        };
        match (secret_value(body, "tls.crt"), secret_value(body, "tls.key")) {
            (Some(cert_pem), Some(key_pem)) if is_pem(&cert_pem) && is_pem(&key_pem) => Ok(Some(ListenerCertificate {
                secret: format!("{ns}/{}", r.name),
                cert_pem,
                key_pem,
            })),
            _ => Err(invalid(format!(
                "Secret {ns}/{} has no PEM tls.crt and tls.key",
                r.name
            ))),
        }
    }
}

fn is_pem(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok_and(|s| s.contains("-----BEGIN "))
}

/// Listeners on one port with different protocols (ProtocolConflict), or the same
/// protocol and host name (HostnameConflict), are Conflicted.
fn conflicts(listeners: &mut [CompiledListener]) {
    let snapshot: Vec<(u16, ListenerProtocol, Option<String>)> = listeners
        .iter()
        .map(|l| (l.port, l.protocol, l.hostname.clone()))
        .collect();
    for (i, l) in listeners.iter_mut().enumerate() {
        let mut reason = None;
        for (j, (port, protocol, hostname)) in snapshot.iter().enumerate() {
            if i == j || *port != l.port {
                continue;
            }
            // One port is one protocol in a snapshot: HTTPS and TLS Passthrough on
            // one port conflict too.
            if *protocol != l.protocol {
                reason = Some("ProtocolConflict");
                break;
            }
            if *hostname == l.hostname {
                reason = reason.or(Some("HostnameConflict"));
            }
        }
        if let Some(reason) = reason {
            if let Some(c) = l.conditions.iter_mut().find(|c| c.kind == "Conflicted") {
                *c = Condition {
                    kind: "Conflicted",
                    status: true,
                    reason,
                    message: format!("another listener on port {} conflicts with this one", l.port),
                };
            }
        }
    }
}
