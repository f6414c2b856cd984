//! PeerAuthentication: validation.go `ValidatePeerAuthentication`,
//! `validateWorkloadSelector`; CRD rules of PeerAuthentication (portLevelMtls needs
//! a selector, at least one entry, ports 1-65535; modes).

use strait_config::Code::*;

use super::*;

fn pa(spec: &str) -> String {
    resource("security.istio.io/v1", "PeerAuthentication", spec)
}

#[test]
fn peer_authentication_rules() {
    run(&[
        (pa("{mtls: {mode: STRICT}}"), Accepted),
        (pa("{}"), Accepted),
        (pa("{mtls: {mode: UNSET}}"), Accepted),
        // The modes are an enum.
        (pa("{mtls: {mode: BLAH}}"), Error(Schema, "spec.mtls.mode")),
        (pa("{mtls: {mode: strict}}"), Error(Schema, "spec.mtls.mode")),
        // Port-level mTLS only for a workload (a selector with labels).
        (
            pa("{selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}, portLevelMtls: {'8080': {mode: DISABLE}}}"),
            Accepted,
        ),
        (
            pa("{portLevelMtls: {'80': {mode: STRICT}}}"),
            Error(Required, "spec.selector"),
        ),
        (
            pa("{selector: {}, portLevelMtls: {'80': {mode: STRICT}}}"),
            Error(Required, "spec.selector"),
        ),
        (
            pa("{selector: {matchLabels: {app: web}}, portLevelMtls: {}}"),
            Error(Required, "spec.portLevelMtls"),
        ),
        (
            pa("{selector: {matchLabels: {app: web}}, portLevelMtls: {'0': {mode: STRICT}}}"),
            Error(InvalidValue, "spec.portLevelMtls.0"),
        ),
        (
            pa("{selector: {matchLabels: {app: web}}, portLevelMtls: {'42949672': {mode: STRICT}}}"),
            Error(InvalidValue, "spec.portLevelMtls.42949672"),
        ),
        (
            pa("{selector: {matchLabels: {app: web}}, portLevelMtls: {acd: {mode: STRICT}}}"),
            Error(InvalidValue, "spec.portLevelMtls.acd"),
        ),
        (
            pa("{selector: {matchLabels: {app: web}}, portLevelMtls: {'80': {mode: SOMETIMES}}}"),
            Error(Schema, "spec.portLevelMtls.80.mode"),
        ),
        // validateWorkloadSelector: no wildcards, no empty key; no labels is a warning.
        (
            pa("{selector: {matchLabels: {app: 'web*'}}}"),
            Error(InvalidValue, "spec.selector.matchLabels.app"),
        ),
        (
            pa("{selector: {matchLabels: {'*': web}}}"),
            Error(InvalidValue, "spec.selector.matchLabels.*"),
        ),
        (
            pa("{selector: {matchLabels: {'': web}}}"),
            Error(InvalidValue, "spec.selector.matchLabels"),
        ),
        (
            pa("{selector: {matchLabels: {}}}"),
            Warning(InvalidValue, "spec.selector"),
        ),
        (
            pa(&format!("{{selector: {{matchLabels: {{app: {}}}}}}}", "v".repeat(64))),
            Error(InvalidValue, "spec.selector.matchLabels.app"),
        ),
    ]);
}
