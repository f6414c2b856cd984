//! A RequestAuthentication checked as a whole as Istio checks it: validation.go
//! `ValidateRequestAuthentication` (targets, `warnPrivateJwksKeys`) and the CRD rules
//! of RequestAuthentication in istio.io/api (`presence`, `spaceDelimitedClaims`).
//! What Istio refuses inside a jwtRule is refused where it compiles (`jwt`).

use crate::bundle::Entry;
use crate::diag::Code;
use crate::resources::security::{JwtRule, RequestAuthenticationSpec};

use super::Compiler;

/// Whether a JSON Web Key carries private material: `d` of RSA, EC and OKP keys,
/// or a symmetric (`oct`) key.
fn is_private_key(key: &serde_json::Value) -> bool {
    key.get("d").is_some() || key.get("kty").and_then(|k| k.as_str()) == Some("oct")
}

impl Compiler<'_> {
    pub(super) fn request_authentication_checks(&mut self, e: &Entry, ra: &RequestAuthenticationSpec) {
        self.policy_targets(e, ra.selector.as_ref(), ra.target_ref.as_ref(), &ra.target_refs);
        if ra.jwt_rules.len() > 4096 {
            self.err(e, Code::InvalidValue, "spec.jwtRules", "at most 4096 jwtRules");
        }
        for (i, rule) in ra.jwt_rules.iter().enumerate() {
            self.jwt_rule_checks(e, &format!("spec.jwtRules[{i}]"), rule);
        }
    }

    fn jwt_rule_checks(&mut self, e: &Entry, f: &str, rule: &JwtRule) {
        match rule.presence.as_deref() {
            None | Some("OPTIONAL") => {}
            Some("REQUIRED") => self.warn(
                e,
                Code::NotEnforced,
                &format!("{f}.presence"),
                "presence REQUIRED is accepted but not enforced by this version of Strait: a request without a token is not refused; require requestPrincipals in an AuthorizationPolicy",
            ),
            Some(other) => self.err(
                e,
                Code::InvalidValue,
                &format!("{f}.presence"),
                format!("presence {other:?} is not OPTIONAL or REQUIRED"),
            ),
        }
        if rule.space_delimited_claims.len() > 64 {
            self.err(
                e,
                Code::InvalidValue,
                &format!("{f}.spaceDelimitedClaims"),
                "at most 64 spaceDelimitedClaims",
            );
        }
        for (i, c) in rule.space_delimited_claims.iter().enumerate() {
            if c.is_empty() {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.spaceDelimitedClaims[{i}]"),
                    "must be a non-empty string",
                );
            }
        }
        if !rule.space_delimited_claims.is_empty() {
            self.warn(
                e,
                Code::NotEnforced,
                &format!("{f}.spaceDelimitedClaims"),
                "spaceDelimitedClaims is accepted but not enforced by this version of Strait: these claims are matched as whole strings",
            );
        }
        // Istio warns, as keys are published: only public ones are needed.
        let keys = rule
            .jwks
            .as_deref()
            .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok());
        let keys = keys.as_ref().and_then(|v| v.get("keys")).and_then(|k| k.as_array());
        for (i, key) in keys.into_iter().flatten().enumerate() {
            if is_private_key(key) {
                self.warn(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.jwks"),
                    format!("jwks key at index {i} contains private key material; only public keys are used for verification"),
                );
            }
        }
    }
}
