//! RequestAuthentication: validation.go `ValidateRequestAuthentication`,
//! `validateJwtRule`, `warnPrivateJwksKeys`, `validateOneOfSelectorType`,
//! `validatePolicyTargetReference`, `ValidateStrictHTTPHeaderName`; pkg/config/security
//! `ParseJwksURI`; agent `ValidateDuration`; CRD rules of RequestAuthentication.

use strait_config::Code::*;

use super::*;

fn ra(spec: &str) -> String {
    resource("security.istio.io/v1", "RequestAuthentication", spec)
}

/// A RequestAuthentication with one rule: issuer and JWKS URI, then `extra` fields.
fn jwt(extra: &str) -> String {
    ra(&format!(
        "{{jwtRules: [{{issuer: 'https://issuer.example.com', jwksUri: 'https://issuer.example.com/jwks'{extra}}}]}}"
    ))
}

const JWKS: &str = r#"{"keys": [{"kty": "RSA", "n": "sXch", "e": "AQAB"}]}"#;
const PRIVATE_JWKS: &str = r#"{"keys": [{"kty": "RSA", "n": "sXch", "e": "AQAB", "d": "AQAB"}]}"#;

#[test]
fn request_authentication_rules() {
    run(&[
        (jwt(""), Accepted),
        (jwt(", jwks_uri: 'https://issuer.example.com/jwks2'"), Error(Schema, "spec.jwtRules[0]")),
        (
            ra("{jwtRules: [{issuer: 'https://issuer.example.com', jwks_uri: 'https://issuer.example.com/jwks'}]}"),
            Accepted,
        ),
        // Targets: validateOneOfSelectorType, validatePolicyTargetReference, CRD rules.
        (
            ra("{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: edge}], jwtRules: []}"),
            Accepted,
        ),
        (
            ra("{targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: edge}, targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: e2}]}"),
            Error(Conflict, "spec"),
        ),
        (
            ra("{selector: {matchLabels: {app: a}}, targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: edge}}"),
            Error(Conflict, "spec"),
        ),
        (ra("{targetRef: {kind: Gateway, group: gateway.networking.k8s.io}}"), Error(Required, "spec.targetRef.name")),
        (
            ra("{targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: edge, namespace: other}}"),
            Error(InvalidValue, "spec.targetRef.namespace"),
        ),
        (ra("{targetRef: {kind: Gateway, group: 'bad group', name: edge}}"), Error(InvalidValue, "spec.targetRef")),
        (ra("{targetRef: {kind: 'Bad-', group: gateway.networking.k8s.io, name: edge}}"), Error(InvalidValue, "spec.targetRef")),
        (ra("{selector: {matchLabels: {'': a}}}"), Error(InvalidValue, "spec.selector.matchLabels")),
        // validateJwtRule and the CRD's jwtRule fields.
        (jwt(", audiences: [api, '']"), Error(InvalidValue, "spec.jwtRules[0].audiences[1]")),
        (ra("{jwtRules: [{jwksUri: 'https://issuer.example.com/jwks'}]}"), Error(InvalidValue, "spec.jwtRules[0].issuer")),
        (ra("{jwtRules: [{issuer: '', jwksUri: 'https://i.example.com/jwks'}]}"), Error(InvalidValue, "spec.jwtRules[0].issuer")),
        (ra("{jwtRules: [{issuer: iss, jwksUri: 'ftp://i.example.com/jwks'}]}"), Error(InvalidValue, "spec.jwtRules[0].jwksUri")),
        (ra(&format!("{{jwtRules: [{{issuer: iss, jwks: '{JWKS}'}}]}}")), Accepted),
        (
            ra(&format!("{{jwtRules: [{{issuer: iss, jwks: '{JWKS}', jwksUri: 'https://i.example.com/jwks'}}]}}")),
            Error(InvalidValue, "spec.jwtRules[0].jwks"),
        ),
        (ra("{jwtRules: [{issuer: iss, jwks: 'not json'}]}"), Error(InvalidValue, "spec.jwtRules[0].jwks")),
        (
            ra(&format!("{{jwtRules: [{{issuer: iss, jwks: '{PRIVATE_JWKS}'}}]}}")),
            Warning(InvalidValue, "spec.jwtRules[0].jwks"),
        ),
        (jwt(", fromHeaders: [{name: x-jwt, prefix: 'Bearer '}]"), Accepted),
        (jwt(", fromHeaders: [{name: ''}]"), Error(InvalidValue, "spec.jwtRules[0].fromHeaders[0].name")),
        (jwt(", fromHeaders: [{prefix: 'Bearer '}]"), Error(InvalidValue, "spec.jwtRules[0].fromHeaders[0].name")),
        (jwt(", fromParams: ['']"), Error(InvalidValue, "spec.jwtRules[0].fromParams[0]")),
        (jwt(", fromCookies: [session, '']"), Error(InvalidValue, "spec.jwtRules[0].fromCookies[1]")),
        (jwt(", outputClaimToHeaders: [{header: x-sub, claim: sub}]"), Accepted),
        (
            jwt(", outputClaimToHeaders: [{header: 'x.sub', claim: sub}]"),
            Error(InvalidValue, "spec.jwtRules[0].outputClaimToHeaders[0].header"),
        ),
        (
            jwt(", outputClaimToHeaders: [{claim: sub}]"),
            Error(InvalidValue, "spec.jwtRules[0].outputClaimToHeaders[0].header"),
        ),
        (
            jwt(", outputClaimToHeaders: [{header: x-sub, claim: ''}]"),
            Error(InvalidValue, "spec.jwtRules[0].outputClaimToHeaders[0].claim"),
        ),
        (jwt(", timeout: 10s"), Accepted),
        (jwt(", timeout: 0s"), Error(InvalidValue, "spec.jwtRules[0].timeout")),
        (jwt(", timeout: 500us"), Error(InvalidValue, "spec.jwtRules[0].timeout")),
        (jwt(", timeout: 1500us"), Error(InvalidValue, "spec.jwtRules[0].timeout")),
        // presence and spaceDelimitedClaims (istio.io/api 1.2x).
        (jwt(", presence: OPTIONAL"), Accepted),
        (jwt(", presence: REQUIRED"), Warning(NotEnforced, "spec.jwtRules[0].presence")),
        (jwt(", presence: MANDATORY"), Error(InvalidValue, "spec.jwtRules[0].presence")),
        (jwt(", spaceDelimitedClaims: [roles]"), Warning(NotEnforced, "spec.jwtRules[0].spaceDelimitedClaims")),
        (jwt(", spaceDelimitedClaims: ['']"), Error(InvalidValue, "spec.jwtRules[0].spaceDelimitedClaims[0]")),
    ]);
}
