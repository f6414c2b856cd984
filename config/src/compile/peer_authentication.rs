//! PeerAuthentication resources checked as Istio checks them: validation.go
//! `ValidatePeerAuthentication` and the CRD rules of `PeerAuthentication` in
//! istio.io/api. Translation resolves them per workload
//! (`translate::policy::peer_authentication`); nothing here needs compiling.

use crate::bundle::Entry;
use crate::diag::Code;
use crate::resources::security::PeerAuthenticationSpec;

use super::Compiler;

impl Compiler<'_> {
    pub(super) fn peer_authentication(&mut self, e: &Entry, pa: &PeerAuthenticationSpec) {
        self.workload_selector(e, "spec.selector", pa.selector.as_ref());
        let selects = pa.selector.as_ref().is_some_and(|s| !s.match_labels.is_empty());
        // A present but empty map reads as an empty one: Istio refuses both
        // (`minProperties: 1`), so an empty map is refused whatever its origin.
        let written = self.has_field(e, "spec.portLevelMtls");
        if written && pa.port_level_mtls.is_empty() {
            self.err(
                e,
                Code::Required,
                "spec.portLevelMtls",
                "port level mTLS, if defined, must have at least one element",
            );
        }
        if !pa.port_level_mtls.is_empty() && !selects {
            self.err(
                e,
                Code::Required,
                "spec.selector",
                "portLevelMtls requires a selector with matchLabels: mesh and namespace policies cannot have port level mTLS",
            );
        }
        for key in pa.port_level_mtls.keys() {
            if !key.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p)) {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("spec.portLevelMtls.{key}"),
                    format!("port {key:?} must be a number in 1-65535"),
                );
            }
        }
    }
}
