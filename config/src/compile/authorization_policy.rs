//! An AuthorizationPolicy checked as a whole as Istio checks it: validation.go
//! `ValidateAuthorizationPolicy` (targets, actions, providers, empty parts) and the
//! CRD rules of AuthorizationPolicy in istio.io/api. What Istio refuses inside
//! sources, operations and conditions is refused where they compile (`authz`).

use crate::bundle::Entry;
use crate::diag::Code;
use crate::resources::security::{Action, AuthorizationPolicySpec, Source};

use super::Compiler;

/// Source fields a CUSTOM policy cannot use (validation.go, `ValidateAuthorizationPolicy`).
fn custom_unsupported(s: &Source) -> Vec<&'static str> {
    [
        ("namespaces", &s.namespaces),
        ("notNamespaces", &s.not_namespaces),
        ("serviceAccounts", &s.service_accounts),
        ("notServiceAccounts", &s.not_service_accounts),
        ("trustDomains", &s.trust_domains),
        ("notTrustDomains", &s.not_trust_domains),
        ("principals", &s.principals),
        ("notPrincipals", &s.not_principals),
        ("requestPrincipals", &s.request_principals),
        ("notRequestPrincipals", &s.not_request_principals),
    ]
    .into_iter()
    .filter(|(_, list)| !list.is_empty())
    .map(|(name, _)| name)
    .collect()
}

/// Whether a source says nothing.
fn is_empty_source(s: &Source) -> bool {
    [
        &s.principals,
        &s.not_principals,
        &s.request_principals,
        &s.not_request_principals,
        &s.namespaces,
        &s.not_namespaces,
        &s.service_accounts,
        &s.not_service_accounts,
        &s.trust_domains,
        &s.not_trust_domains,
        &s.ip_blocks,
        &s.not_ip_blocks,
        &s.remote_ip_blocks,
        &s.not_remote_ip_blocks,
    ]
    .iter()
    .all(|l| l.is_empty())
}

/// Whether a source names something a TCP connection has (all but request principals).
fn has_tcp_attributes(s: &Source) -> bool {
    [
        &s.principals,
        &s.not_principals,
        &s.namespaces,
        &s.not_namespaces,
        &s.service_accounts,
        &s.not_service_accounts,
        &s.ip_blocks,
        &s.not_ip_blocks,
        &s.remote_ip_blocks,
        &s.not_remote_ip_blocks,
    ]
    .iter()
    .any(|l| !l.is_empty())
}

impl Compiler<'_> {
    /// Istio's checks of the policy as a whole; errors are reported, and the
    /// policy's rules are compiled only when there are none.
    pub(super) fn authorization_policy_checks(&mut self, e: &Entry, p: &AuthorizationPolicySpec) {
        self.policy_targets(e, p.selector.as_ref(), p.target_ref.as_ref(), &p.target_refs);
        let provider_name = p.provider.as_ref().and_then(|x| x.name.as_deref()).unwrap_or("");
        match p.action {
            Action::Custom if p.rules.is_empty() => self.err(
                e,
                Code::Required,
                "spec.rules",
                "CUSTOM action without rules is meaningless as it will never be triggered; add an empty rule {} to trigger it for every request",
            ),
            Action::Custom if provider_name.is_empty() => {
                self.err(e, Code::Required, "spec.provider.name", "provider.name must not be empty")
            }
            Action::Deny if p.rules.is_empty() => self.err(
                e,
                Code::Required,
                "spec.rules",
                "DENY action without rules is meaningless as it will never be triggered; add an empty rule {} to trigger it for every request",
            ),
            Action::Custom => {}
            other => {
                if p.provider.is_some() {
                    self.err(
                        e,
                        Code::Conflict,
                        "spec.provider",
                        format!("provider must only be set with action CUSTOM, not {other:?}"),
                    );
                }
            }
        }
        if p.rules.len() > 512 {
            self.err(e, Code::InvalidValue, "spec.rules", "at most 512 rules");
        }
        for (ri, rule) in p.rules.iter().enumerate() {
            let rf = format!("spec.rules[{ri}]");
            if rule.from.len() > 512 {
                self.err(e, Code::InvalidValue, &format!("{rf}.from"), "at most 512 sources");
            }
            let mut tcp_in_from = false;
            for (fi, from) in rule.from.iter().enumerate() {
                let sf = format!("{rf}.from[{fi}].source");
                let Some(src) = &from.source else {
                    self.err(e, Code::Required, &sf, "from.source must not be empty");
                    continue;
                };
                if is_empty_source(src) {
                    self.err(e, Code::Required, &sf, "from.source must not be empty");
                }
                let accounts = !src.service_accounts.is_empty() || !src.not_service_accounts.is_empty();
                let identities = [
                    &src.principals,
                    &src.not_principals,
                    &src.namespaces,
                    &src.not_namespaces,
                ]
                .iter()
                .any(|l| !l.is_empty());
                if accounts && identities {
                    self.err(
                        e,
                        Code::Conflict,
                        &sf,
                        "cannot set serviceAccounts with namespaces or principals",
                    );
                }
                if p.action == Action::Custom {
                    for field in custom_unsupported(src) {
                        self.err(
                            e,
                            Code::InvalidValue,
                            &format!("{sf}.{field}"),
                            format!("{field} is currently not supported with CUSTOM action"),
                        );
                    }
                }
                tcp_in_from |= has_tcp_attributes(src);
            }
            let mut tcp_in_to = false;
            for (ti, to) in rule.to.iter().enumerate() {
                let of = format!("{rf}.to[{ti}].operation");
                let Some(op) = &to.operation else {
                    self.err(e, Code::Required, &of, "to.operation must not be empty");
                    continue;
                };
                let lists = [
                    &op.hosts,
                    &op.not_hosts,
                    &op.ports,
                    &op.not_ports,
                    &op.methods,
                    &op.not_methods,
                    &op.paths,
                    &op.not_paths,
                ];
                if lists.iter().all(|l| l.is_empty()) {
                    self.err(e, Code::Required, &of, "to.operation must not be empty");
                }
                tcp_in_to |= !op.ports.is_empty() || !op.not_ports.is_empty();
            }
            for (wi, when) in rule.when.iter().enumerate() {
                let key = when.key.as_deref().unwrap_or("");
                let kf = format!("{rf}.when[{wi}].key");
                if key.is_empty() {
                    self.err(e, Code::Required, &kf, "key must not be empty");
                } else if p.action == Action::Custom
                    && (matches!(
                        key,
                        "source.namespace" | "source.serviceAccount" | "source.trustDomain" | "source.principal"
                    ) || key.starts_with("request.auth."))
                {
                    self.err(
                        e,
                        Code::InvalidValue,
                        &kf,
                        format!("{key} is currently not supported with CUSTOM action"),
                    );
                }
            }
            let from = !rule.from.is_empty();
            let to = !rule.to.is_empty();
            if p.action == Action::Deny && ((from && !to && !tcp_in_from) || (to && !tcp_in_to)) {
                self.warn(
                    e,
                    Code::InvalidValue,
                    &rf,
                    "this DENY rule uses only HTTP attributes, so it denies all traffic to TCP ports under its scope; name the ports explicitly",
                );
            }
        }
    }
}
