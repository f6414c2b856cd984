//! Annotations Istio's webhook refuses on its resources (validation.go,
//! `validateMetadata`, `checkDryRunAnnotation`): `istio.io/dry-run` only on an
//! ALLOW or DENY AuthorizationPolicy and as a boolean, and the internal
//! annotations istiod sets itself.

use crate::bundle::Entry;
use crate::diag::Code;
use crate::resources::security::Action;
use crate::resources::Spec;

use super::Compiler;

/// Annotations only istiod may set.
const INTERNAL: &[&str] = &[
    "internal.istio.io/webhook-always-reject",
    "internal.istio.io/parent-namespace",
    "internal.istio.io/parents",
];

/// The dry-run annotation.
const DRY_RUN: &str = "istio.io/dry-run";

impl Compiler<'_> {
    /// Checks the annotations of an Istio resource.
    pub(super) fn istio_annotations(&mut self, e: &Entry) {
        let annotations = &e.resource.metadata.annotations;
        for key in INTERNAL.iter().filter(|k| annotations.contains_key(**k)) {
            self.err(
                e,
                Code::InvalidValue,
                &format!("metadata.annotations.{key}"),
                format!("annotation {key:?} may not be set by users"),
            );
        }
        let Some(value) = annotations.get(DRY_RUN) else { return };
        let f = format!("metadata.annotations.{DRY_RUN}");
        match &e.resource.spec {
            Spec::AuthorizationPolicy(p) if matches!(p.action, Action::Allow | Action::Deny) => {
                // Go's strconv.ParseBool.
                let boolean = matches!(
                    value.as_str(),
                    "1" | "t" | "T" | "TRUE" | "true" | "True" | "0" | "f" | "F" | "FALSE" | "false" | "False"
                );
                if !boolean {
                    self.err(
                        e,
                        Code::InvalidValue,
                        &f,
                        format!("{DRY_RUN} must be true or false, not {value:?}"),
                    );
                } else {
                    self.warn(
                        e,
                        Code::NotEnforced,
                        &f,
                        format!(
                            "{DRY_RUN} is accepted but not enforced by this version of Strait: the policy is applied"
                        ),
                    );
                }
            }
            Spec::AuthorizationPolicy(_) => self.err(
                e,
                Code::InvalidValue,
                &f,
                format!("{DRY_RUN} is only supported on ALLOW and DENY AuthorizationPolicies"),
            ),
            _ => self.err(
                e,
                Code::InvalidValue,
                &f,
                format!("{DRY_RUN} is only supported on AuthorizationPolicies"),
            ),
        }
    }
}
