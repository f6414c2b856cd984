//! Spec types of the `security.istio.io/v1` (and `v1beta1`) kinds: RequestAuthentication,
//! AuthorizationPolicy and PeerAuthentication.
//!
//! The structs mirror the Istio API field for field so that a valid Istio manifest always
//! deserializes; unknown fields are tolerated here and reported by the loader instead.

use std::collections::BTreeMap;

/// Selects the workloads a policy applies to by their pod labels.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkloadSelector {
    /// Labels a workload must all carry to be selected.
    pub match_labels: BTreeMap<String, String>,
}

/// Reference to a Gateway API resource (usually a Gateway or Service) a policy attaches to.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyTargetReference {
    /// API group of the target, e.g. `gateway.networking.k8s.io`; empty means core.
    pub group: Option<String>,
    /// Kind of the target, e.g. `Gateway`.
    pub kind: Option<String>,
    /// Name of the target.
    pub name: Option<String>,
    /// Namespace of the target; absent means the policy's own namespace.
    pub namespace: Option<String>,
}

/// Spec of a RequestAuthentication: which JWTs a workload accepts.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RequestAuthenticationSpec {
    /// Workloads the policy applies to; absent means every workload in the namespace.
    pub selector: Option<WorkloadSelector>,
    /// Single resource the policy attaches to (deprecated in favour of `target_refs`).
    pub target_ref: Option<PolicyTargetReference>,
    /// Resources the policy attaches to.
    pub target_refs: Vec<PolicyTargetReference>,
    /// Accepted JWT issuers and how their tokens are located and checked.
    pub jwt_rules: Vec<JwtRule>,
}

/// How to locate, validate and forward tokens from one JWT issuer.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JwtRule {
    /// Expected `iss` claim.
    pub issuer: Option<String>,
    /// Accepted `aud` values; empty means the service name is expected.
    pub audiences: Vec<String>,
    /// URL of the issuer's JSON Web Key Set (also spelled `jwks_uri`).
    #[serde(alias = "jwks_uri")]
    pub jwks_uri: Option<String>,
    /// Inline JSON Web Key Set; takes precedence over `jwks_uri`.
    pub jwks: Option<String>,
    /// Headers the token may be read from; empty means `Authorization: Bearer`.
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters the token may be read from.
    pub from_params: Vec<String>,
    /// Cookies the token may be read from.
    pub from_cookies: Vec<String>,
    /// Header that receives the base64url-encoded verified payload.
    pub output_payload_to_header: Option<String>,
    /// Whether the original token is kept on the forwarded request.
    pub forward_original_token: Option<bool>,
    /// Claims copied into request headers after verification.
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// Timeout for fetching the JWKS, as a duration string such as `5s`.
    pub timeout: Option<String>,
    /// OPTIONAL (default) or REQUIRED: whether a request without a token is refused.
    pub presence: Option<String>,
    /// Claims whose values are space-separated lists (besides `scope` and `permission`).
    pub space_delimited_claims: Vec<String>,
}

/// A header a JWT may be carried in.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JwtHeader {
    /// Header name.
    pub name: Option<String>,
    /// Prefix stripped from the value before the token, e.g. `Bearer `.
    pub prefix: Option<String>,
}

/// Copies one JWT claim into a request header.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClaimToHeader {
    /// Name of the header to set.
    pub header: Option<String>,
    /// Claim whose value is copied; nested claims use `.` separators.
    pub claim: Option<String>,
}

/// Spec of an AuthorizationPolicy: access control on workloads.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AuthorizationPolicySpec {
    /// Workloads the policy applies to; absent means every workload in the namespace.
    pub selector: Option<WorkloadSelector>,
    /// Single resource the policy attaches to (deprecated in favour of `target_refs`).
    pub target_ref: Option<PolicyTargetReference>,
    /// Resources the policy attaches to.
    pub target_refs: Vec<PolicyTargetReference>,
    /// Rules matched against a request; any matching rule triggers `action`.
    pub rules: Vec<Rule>,
    /// What to do when a rule matches.
    pub action: Action,
    /// External authorizer used when `action` is `CUSTOM`.
    pub provider: Option<ExtensionProvider>,
}

/// Action an AuthorizationPolicy takes on matching requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    /// Allow matching requests.
    #[default]
    Allow,
    /// Deny matching requests.
    Deny,
    /// Log matching requests without affecting the decision.
    Audit,
    /// Delegate the decision to the extension provider.
    Custom,
}

/// Names an extension provider from the mesh config.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExtensionProvider {
    /// Provider name as declared in the mesh config.
    pub name: Option<String>,
}

/// One authorization rule: all present parts must match.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Rule {
    /// Request sources; any entry may match, empty matches every source.
    pub from: Vec<RuleFrom>,
    /// Request operations; any entry may match, empty matches every operation.
    pub to: Vec<RuleTo>,
    /// Extra conditions; all must match.
    pub when: Vec<Condition>,
}

/// Wraps a source in a rule's `from` list.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RuleFrom {
    /// Source attributes to match.
    pub source: Option<Source>,
}

/// Attributes of the request's origin; all present fields must match.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Source {
    /// Peer identities (mTLS SPIFFE IDs without the `spiffe://` prefix).
    pub principals: Vec<String>,
    /// Peer identities that must not match.
    pub not_principals: Vec<String>,
    /// Request identities as `<iss>/<sub>` from a verified JWT.
    pub request_principals: Vec<String>,
    /// Request identities that must not match.
    pub not_request_principals: Vec<String>,
    /// Namespaces of the peer workload.
    pub namespaces: Vec<String>,
    /// Peer namespaces that must not match.
    pub not_namespaces: Vec<String>,
    /// Service accounts of the peer workload, as `<namespace>/<name>`.
    pub service_accounts: Vec<String>,
    /// Peer service accounts that must not match.
    pub not_service_accounts: Vec<String>,
    /// Trust domains of the peer identity (its SPIFFE ID's first part).
    pub trust_domains: Vec<String>,
    /// Peer trust domains that must not match.
    pub not_trust_domains: Vec<String>,
    /// Peer IPs or CIDR ranges.
    pub ip_blocks: Vec<String>,
    /// Peer IPs or CIDR ranges that must not match.
    pub not_ip_blocks: Vec<String>,
    /// Original client IPs (from X-Forwarded-For or PROXY protocol) or CIDR ranges.
    pub remote_ip_blocks: Vec<String>,
    /// Original client IPs or CIDR ranges that must not match.
    pub not_remote_ip_blocks: Vec<String>,
}

/// Wraps an operation in a rule's `to` list.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RuleTo {
    /// Operation attributes to match.
    pub operation: Option<Operation>,
}

/// Attributes of the request itself; all present fields must match.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Operation {
    /// Hosts (Host / :authority), with optional leading or trailing `*`.
    pub hosts: Vec<String>,
    /// Hosts that must not match.
    pub not_hosts: Vec<String>,
    /// Destination ports, as strings like Istio does.
    pub ports: Vec<String>,
    /// Destination ports that must not match.
    pub not_ports: Vec<String>,
    /// HTTP methods.
    pub methods: Vec<String>,
    /// HTTP methods that must not match.
    pub not_methods: Vec<String>,
    /// Request paths, with optional leading or trailing `*` or `{*}`/`{**}` templates.
    pub paths: Vec<String>,
    /// Request paths that must not match.
    pub not_paths: Vec<String>,
}

/// An additional condition on a request attribute, e.g. `request.headers[x-id]`.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Condition {
    /// Attribute name.
    pub key: Option<String>,
    /// Accepted values.
    pub values: Vec<String>,
    /// Values that must not match.
    pub not_values: Vec<String>,
}

/// Spec of a PeerAuthentication: the mTLS mode a workload accepts.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PeerAuthenticationSpec {
    /// Workloads the policy applies to; absent means every workload in the namespace.
    pub selector: Option<WorkloadSelector>,
    /// mTLS settings for all ports.
    pub mtls: Option<MutualTls>,
    /// Per-port mTLS overrides, keyed by port number (JSON keys are always strings).
    pub port_level_mtls: BTreeMap<String, MutualTls>,
}

/// mTLS settings of a PeerAuthentication.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MutualTls {
    /// Accepted connection mode.
    pub mode: MtlsMode,
}

/// Which connections a workload accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the parent policy (namespace, then mesh; the root default is PERMISSIVE).
    #[default]
    Unset,
    /// Plaintext only.
    Disable,
    /// Both plaintext and mTLS.
    Permissive,
    /// mTLS only.
    Strict,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_authentication_full_sample() -> Result<(), serde_json::Error> {
        let spec: RequestAuthenticationSpec = serde_json::from_value(json!({
            "selector": {"matchLabels": {"app": "httpbin"}},
            "targetRefs": [{
                "group": "gateway.networking.k8s.io",
                "kind": "Gateway",
                "name": "edge"
            }],
            "jwtRules": [{
                "issuer": "https://issuer.example.com",
                "audiences": ["api", "web"],
                "jwksUri": "https://issuer.example.com/.well-known/jwks.json",
                "fromHeaders": [{"name": "x-jwt", "prefix": "Bearer "}],
                "fromParams": ["access_token"],
                "fromCookies": ["session"],
                "outputPayloadToHeader": "x-jwt-payload",
                "forwardOriginalToken": true,
                "outputClaimToHeaders": [{"header": "x-sub", "claim": "sub"}],
                "timeout": "5s"
            }]
        }))?;
        assert_eq!(
            spec.selector
                .as_ref()
                .and_then(|s| s.match_labels.get("app"))
                .map(String::as_str),
            Some("httpbin")
        );
        assert_eq!(spec.target_refs[0].kind.as_deref(), Some("Gateway"));
        assert_eq!(spec.target_refs[0].namespace, None);
        let rule = &spec.jwt_rules[0];
        assert_eq!(rule.issuer.as_deref(), Some("https://issuer.example.com"));
        assert_eq!(rule.audiences, ["api", "web"]);
        assert_eq!(rule.from_headers[0].prefix.as_deref(), Some("Bearer "));
        assert_eq!(rule.forward_original_token, Some(true));
        assert_eq!(rule.output_claim_to_headers[0].claim.as_deref(), Some("sub"));
        assert_eq!(rule.timeout.as_deref(), Some("5s"));
        assert_eq!(rule.jwks, None);
        Ok(())
    }

    #[test]
    fn authorization_policy_full_sample() -> Result<(), serde_json::Error> {
        let spec: AuthorizationPolicySpec = serde_json::from_value(json!({
            "selector": {"matchLabels": {"app": "httpbin"}},
            "action": "DENY",
            "rules": [{
                "from": [{"source": {
                    "principals": ["cluster.local/ns/default/sa/sleep"],
                    "notRequestPrincipals": ["*"],
                    "namespaces": ["default"],
                    "remoteIpBlocks": ["10.0.0.0/8"],
                    "notIpBlocks": ["10.1.0.0/16"]
                }}],
                "to": [{"operation": {
                    "hosts": ["*.example.com"],
                    "ports": ["8080"],
                    "methods": ["GET", "HEAD"],
                    "notPaths": ["/admin/*"]
                }}],
                "when": [{"key": "request.headers[x-tenant]", "values": ["a"], "notValues": ["b"]}]
            }]
        }))?;
        assert_eq!(spec.action, Action::Deny);
        assert_eq!(spec.provider, None);
        let rule = &spec.rules[0];
        let source = rule.from[0].source.as_ref().expect("source present");
        assert_eq!(source.not_request_principals, ["*"]);
        assert_eq!(source.remote_ip_blocks, ["10.0.0.0/8"]);
        assert!(source.not_namespaces.is_empty());
        let operation = rule.to[0].operation.as_ref().expect("operation present");
        assert_eq!(operation.ports, ["8080"]);
        assert_eq!(operation.not_paths, ["/admin/*"]);
        assert_eq!(rule.when[0].key.as_deref(), Some("request.headers[x-tenant]"));
        assert_eq!(rule.when[0].not_values, ["b"]);
        Ok(())
    }

    #[test]
    fn authorization_policy_defaults_and_custom() -> Result<(), serde_json::Error> {
        let allow_nothing: AuthorizationPolicySpec = serde_json::from_value(json!({}))?;
        assert_eq!(allow_nothing.action, Action::Allow);
        assert!(allow_nothing.rules.is_empty());

        let custom: AuthorizationPolicySpec = serde_json::from_value(json!({
            "targetRef": {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "edge"},
            "action": "CUSTOM",
            "provider": {"name": "ext-authz"},
            "rules": [{"to": [{"operation": {"paths": ["/api/*"]}}]}]
        }))?;
        assert_eq!(custom.action, Action::Custom);
        assert_eq!(custom.provider.and_then(|p| p.name).as_deref(), Some("ext-authz"));
        assert_eq!(custom.target_ref.and_then(|t| t.name).as_deref(), Some("edge"));
        Ok(())
    }

    #[test]
    fn peer_authentication_full_sample() -> Result<(), serde_json::Error> {
        let spec: PeerAuthenticationSpec = serde_json::from_value(json!({
            "selector": {"matchLabels": {"app": "finance"}},
            "mtls": {"mode": "STRICT"},
            "portLevelMtls": {"8080": {"mode": "DISABLE"}, "9090": {"mode": "PERMISSIVE"}}
        }))?;
        assert_eq!(spec.mtls.map(|m| m.mode), Some(MtlsMode::Strict));
        assert_eq!(
            spec.port_level_mtls.get("8080").map(|m| m.mode),
            Some(MtlsMode::Disable)
        );
        assert_eq!(
            spec.port_level_mtls.get("9090").map(|m| m.mode),
            Some(MtlsMode::Permissive)
        );

        let unset: PeerAuthenticationSpec = serde_json::from_value(json!({"mtls": {}}))?;
        assert_eq!(unset.mtls.map(|m| m.mode), Some(MtlsMode::Unset));
        Ok(())
    }

    #[test]
    fn unknown_fields_are_tolerated() -> Result<(), serde_json::Error> {
        let spec: PeerAuthenticationSpec =
            serde_json::from_value(json!({"mtls": {"mode": "STRICT"}, "futureField": 1}))?;
        assert_eq!(spec.mtls.map(|m| m.mode), Some(MtlsMode::Strict));
        Ok(())
    }
}
