//! AuthorizationPolicy, RequestAuthentication and RateLimit resources, each compiled
//! once; translation picks those that apply to a proxy's workload.

use std::sync::Arc;

use crate::authz::Policy;
use crate::bundle::Entry;
use crate::diag::Code;
use crate::jwt::Provider;
use crate::resources::security::{AuthorizationPolicySpec, RequestAuthenticationSpec};
use crate::resources::Spec;

use super::Compiler;

/// An AuthorizationPolicy and its compiled rules.
#[derive(Debug)]
pub struct CompiledAuthorization<'a> {
    /// Where it came from.
    pub entry: &'a Entry,
    /// The resource (selector, action, provider).
    pub spec: &'a AuthorizationPolicySpec,
    /// Its rules, compiled.
    pub policy: Arc<Policy>,
}

/// A RequestAuthentication and its JWT providers.
#[derive(Debug)]
pub struct CompiledAuthentication<'a> {
    /// Where it came from.
    pub entry: &'a Entry,
    /// The resource (selector).
    pub spec: &'a RequestAuthenticationSpec,
    /// One provider per JWT rule.
    pub providers: Vec<Provider>,
}

impl<'a> Compiler<'a> {
    /// Compiles an AuthorizationPolicy; None (with its errors reported) when invalid.
    pub(super) fn authorization_policy(
        &mut self,
        e: &'a Entry,
        spec: &'a AuthorizationPolicySpec,
    ) -> Option<CompiledAuthorization<'a>> {
        let before = self.error_count();
        self.authorization_policy_checks(e, spec);
        let name = format!("{}/{}", e.resource.namespace, e.resource.name);
        match super::authz::compile_policy(name, &e.resource.namespace, spec) {
            Ok(_) if self.error_count() > before => None,
            Ok(policy) => Some(CompiledAuthorization {
                entry: e,
                spec,
                policy: Arc::new(policy),
            }),
            Err(errors) => {
                for (field, message) in errors {
                    self.err(e, Code::InvalidValue, &field, message);
                }
                None
            }
        }
    }

    /// Compiles a RequestAuthentication; None (with its errors reported) when invalid.
    pub(super) fn request_authentication(
        &mut self,
        e: &'a Entry,
        spec: &'a RequestAuthenticationSpec,
    ) -> Option<CompiledAuthentication<'a>> {
        let before = self.error_count();
        self.request_authentication_checks(e, spec);
        let name = format!("{}/{}", e.resource.namespace, e.resource.name);
        match super::jwt::compile(&name, spec) {
            Ok(_) if self.error_count() > before => None,
            Ok(providers) => Some(CompiledAuthentication {
                entry: e,
                spec,
                providers,
            }),
            Err(errors) => {
                for (field, message) in errors {
                    self.err(e, Code::InvalidValue, &field, message);
                }
                None
            }
        }
    }

    pub(super) fn rate_limit(&mut self, e: &Entry, r: &crate::resources::strait::RateLimitSpec) {
        let id = format!("{}/{}", e.resource.namespace, e.resource.name);
        match crate::ratelimit::compile(id, r) {
            Ok(limit) => self.rate_limits.push((
                e.resource.namespace.clone(),
                r.virtual_service.clone(),
                r.routes.clone(),
                limit,
            )),
            Err(errors) => {
                for (field, message) in errors {
                    self.err(e, Code::InvalidValue, &field, message);
                }
                return;
            }
        }
        let ns = e.resource.namespace.as_str();
        let vs = self.bundle.entries.iter().find_map(|x| match &x.resource.spec {
            Spec::VirtualService(v) if x.resource.namespace == ns && x.resource.name == r.virtual_service => Some(v),
            _ => None,
        });
        match vs {
            None => self.warn(
                e,
                Code::ReferenceNotFound,
                "spec.virtualService",
                format!(
                    "no VirtualService {ns}/{}; this limit applies to nothing",
                    r.virtual_service
                ),
            ),
            Some(vs) => {
                for (i, name) in r.routes.iter().enumerate() {
                    if !vs.http.iter().any(|h| h.name.as_deref() == Some(name.as_str())) {
                        self.warn(
                            e,
                            Code::ReferenceNotFound,
                            &format!("spec.routes[{i}]"),
                            format!(
                                "VirtualService {ns}/{} has no http rule named {name}",
                                r.virtual_service
                            ),
                        );
                    }
                }
            }
        }
    }
}
