//! The security policies that apply to a proxy's workload (Istio's selection: its
//! namespace with a matching selector or none, the root namespace without one),
//! taken from the compile stage's results.

use crate::authz::{Authz, Custom};
use crate::bundle::Entry;
use crate::diag::{Code, Diagnostic, Severity};
use crate::hosts::fqdn;
use crate::jwt::JwtAuth;
use crate::resources::security::{Action, MtlsMode, PeerAuthenticationSpec, WorkloadSelector};
use crate::resources::Spec;
use crate::scope::{selects, Scope, ROOT_NAMESPACE};
use crate::snapshot::{ExtAuthz, InboundMtls, PeerMode};

use super::Translator;

/// Whether a security policy applies to the proxy of `scope`: in its namespace with a
/// matching selector (or none), or in the root namespace without one. Policies with
/// `targetRefs` select Gateway API resources, which Strait does not serve: they are
/// skipped with a warning.
fn applies(
    entry: &Entry,
    selector: Option<&WorkloadSelector>,
    targeted: bool,
    scope: &Scope,
    diags: &mut Vec<Diagnostic>,
) -> bool {
    if targeted {
        diags.push(entry.diag(
            Severity::Warning,
            Code::NotEnforced,
            "spec.targetRefs",
            "targetRefs select Gateway API resources, which this version of Strait does not serve; policy skipped",
        ));
        return false;
    }
    let ns = entry.resource.namespace.as_str();
    match selector {
        Some(sel) => ns == scope.namespace() && selects(&sel.match_labels, scope.labels()),
        None => ns == scope.namespace() || ns == ROOT_NAMESPACE,
    }
}

impl Translator<'_, '_> {
    /// The JWT providers of the RequestAuthentications that apply.
    pub(super) fn jwt_for_workload(&mut self) -> JwtAuth {
        let mut auth = JwtAuth::default();
        for ra in &self.compiled.authentication {
            let targeted = ra.spec.target_ref.is_some() || !ra.spec.target_refs.is_empty();
            if applies(
                ra.entry,
                ra.spec.selector.as_ref(),
                targeted,
                self.scope,
                &mut self.diags,
            ) {
                auth.providers.extend(ra.providers.iter().cloned());
            }
        }
        auth
    }

    /// The AuthorizationPolicies that apply, and the external authorizers their
    /// CUSTOM policies name (each with its cluster).
    pub(super) fn authz_for_workload(&mut self) -> (Authz, Vec<ExtAuthz>) {
        let mut authz = Authz::default();
        let mut ext_authz: Vec<ExtAuthz> = Vec::new();
        for ap in &self.compiled.authorization {
            let (entry, spec) = (ap.entry, ap.spec);
            let targeted = spec.target_ref.is_some() || !spec.target_refs.is_empty();
            if !applies(entry, spec.selector.as_ref(), targeted, self.scope, &mut self.diags) {
                continue;
            }
            let policy = ap.policy.clone();
            match spec.action {
                Action::Allow => authz.allow.push(policy),
                Action::Deny => authz.deny.push(policy),
                Action::Audit => authz.audit.push(policy),
                Action::Custom => {
                    let name = spec.provider.as_ref().and_then(|p| p.name.as_deref()).unwrap_or("");
                    match self.ext_authz_provider(entry, name, &mut ext_authz) {
                        Some(provider) => authz.custom.push(Custom { policy, provider }),
                        None => {
                            // As Istio: a CUSTOM policy without its provider denies what it matches.
                            self.diags.push(entry.diag(
                                Severity::Warning,
                                Code::ReferenceNotFound,
                                "spec.provider.name",
                                format!(
                                    "no envoyExtAuthzHttp extension provider {name:?} in the mesh config: matching requests are denied"
                                ),
                            ));
                            authz.deny.push(policy);
                        }
                    }
                }
            }
        }
        (authz, ext_authz)
    }

    /// The index of the external authorizer `name` in `list`, added (with the cluster
    /// of its service) on first use; None when the mesh config has no such provider.
    fn ext_authz_provider(&mut self, entry: &Entry, name: &str, list: &mut Vec<ExtAuthz>) -> Option<usize> {
        if let Some(i) = list.iter().position(|e| e.provider.name == name) {
            return Some(i);
        }
        let provider = self.scope.mesh.ext_authz.iter().find(|p| p.name == name)?.clone();
        // `[<namespace>/]<hostname>`: a short name is in the policy's namespace.
        let (ns, host) = provider
            .service
            .split_once('/')
            .unwrap_or((entry.resource.namespace.as_str(), provider.service.as_str()));
        let target = crate::compile::virtual_service::Target {
            host: fqdn(host, ns),
            port: Some(i64::from(provider.port)),
            subset: None,
        };
        let cluster = self.cluster(entry, "spec.provider", &target, 0);
        list.push(ExtAuthz { provider, cluster });
        Some(list.len() - 1)
    }
}

impl Translator<'_, '_> {
    /// The cluster of the tracing provider's service, as Istio resolves extension
    /// providers: through the registry (a Service or ServiceEntry), its host taken in
    /// the proxy's namespace when short. A host the registry does not define is
    /// resolved by DNS, with a warning (a collector outside the cluster is fine; a
    /// typo is not).
    pub(super) fn tracing_cluster(&mut self) -> Option<usize> {
        let provider = &self.scope.mesh.tracing.as_ref()?.provider;
        let (ns, host) = provider
            .service
            .split_once('/')
            .unwrap_or((self.scope.namespace(), provider.service.as_str()));
        let host = fqdn(host, ns);
        let port = provider.port;
        if !self.compiled.registry.has_port(&host, port) {
            self.diags.push(Diagnostic {
                severity: Severity::Warning,
                code: Code::ReferenceNotFound,
                file: "mesh config".into(),
                position: Default::default(),
                resource: None,
                field: Some("extensionProviders.opentelemetry.service".into()),
                message: format!(
                    "tracing provider {}: no Service or ServiceEntry defines {host} port {port}; spans go to it by DNS",
                    provider.name
                ),
            });
            return None;
        }
        let target = crate::compile::virtual_service::Target {
            host,
            port: Some(i64::from(port)),
            subset: None,
        };
        Some(self.cluster_of(&target, port).0)
    }

    /// The mTLS the workload accepts: Istio's resolution of the PeerAuthentications
    /// that select it, the workload's (with a selector) over its namespace's over the
    /// root namespace's, a mode of UNSET inheriting the next one's, PERMISSIVE at the
    /// end; port-level modes come from the workload's policy. Of several policies at
    /// one level the first (in file order) decides, with a warning.
    pub(super) fn peer_authentication(&mut self) -> InboundMtls {
        let ns = self.scope.namespace();
        let mut levels: [Option<(&Entry, &PeerAuthenticationSpec)>; 3] = [None, None, None];
        for (entry, spec) in self.compiled.bundle.of(|s| match s {
            Spec::PeerAuthentication(p) => Some(p),
            _ => None,
        }) {
            let in_ns = entry.resource.namespace == ns;
            let level = match &spec.selector {
                Some(sel) if in_ns && selects(&sel.match_labels, self.scope.labels()) => 0,
                None if in_ns => 1,
                None if entry.resource.namespace == ROOT_NAMESPACE => 2,
                _ => continue,
            };
            match levels[level] {
                None => levels[level] = Some((entry, spec)),
                Some((first, _)) => self.diags.push(entry.diag(
                    Severity::Warning,
                    Code::Conflict,
                    "spec",
                    format!(
                        "PeerAuthentication {}/{} also applies to this workload at the same level; it decides, this one is ignored",
                        first.resource.namespace, first.resource.name
                    ),
                )),
            }
        }
        let mut out = InboundMtls::default();
        let mut decided = false;
        for (entry, spec) in levels.iter().flatten() {
            let mode = spec.mtls.as_ref().and_then(|m| peer_mode(m.mode));
            if !decided {
                if let Some(mode) = mode {
                    out.mode = mode;
                    decided = true;
                }
                out.sources
                    .push(format!("{}/{}", entry.resource.namespace, entry.resource.name));
            }
        }
        if let Some((entry, spec)) = levels[0] {
            for (key, mtls) in &spec.port_level_mtls {
                let Ok(port) = key.parse::<u16>() else {
                    self.diags.push(entry.diag(
                        Severity::Warning,
                        Code::InvalidValue,
                        &format!("spec.portLevelMtls.{key}"),
                        format!("{key:?} is not a port number; ignored"),
                    ));
                    continue;
                };
                out.ports.insert(port, peer_mode(mtls.mode).unwrap_or(out.mode));
            }
        }
        out
    }
}

/// A PeerAuthentication mode as the engine applies it (None: UNSET, inherit).
fn peer_mode(mode: MtlsMode) -> Option<PeerMode> {
    match mode {
        MtlsMode::Unset => None,
        MtlsMode::Disable => Some(PeerMode::Disable),
        MtlsMode::Permissive => Some(PeerMode::Permissive),
        MtlsMode::Strict => Some(PeerMode::Strict),
    }
}
