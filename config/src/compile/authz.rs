//! AuthorizationPolicy rules compiled from the resource into what the request path
//! evaluates (values, IP blocks, path templates, conditions), refusing what Istio's
//! `pkg/config/security` refuses in them (`ValidateIPs`, `ValidatePorts`,
//! `CheckValidPathTemplate`, `ValidateAttribute`). The checks of the policy as a
//! whole are in `authorization_policy`.

use std::net::IpAddr;

use crate::authz::*;
use crate::claims::{ClaimPath, ClaimPathError};
use crate::resources::security::{AuthorizationPolicySpec, Condition, Operation, Source};

fn value(s: &str) -> Value {
    if s == "*" {
        Value::Any
    } else if let Some(p) = s.strip_suffix('*') {
        Value::Prefix(p.to_string())
    } else if let Some(x) = s.strip_prefix('*') {
        Value::Suffix(x.to_string())
    } else {
        Value::Exact(s.to_string())
    }
}

fn values(any: &[String], not: &[String]) -> Field<Value> {
    Field {
        any: any.iter().map(|s| value(s)).collect(),
        not: not.iter().map(|s| value(s)).collect(),
    }
}

/// Why an entry of `ipBlocks`, `remoteIpBlocks` or an IP condition is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpBlockError {
    /// Neither an address nor `address/prefix`.
    #[error("{0:?} is not an IP address or CIDR block")]
    NotAnAddress(String),
    /// A prefix that is not a number up to the address's bit length.
    #[error("{0:?} has an invalid prefix length")]
    BadPrefix(String),
}

/// Why a `paths` entry is refused (security.go, `CheckValidPathTemplate`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum PathTemplateError {
    /// `{` or `}` other than in a whole `{*}` or `{**}` segment.
    #[error(
        "{0:?}: contains '{{' or '}}' beyond a supported path template ({{*}} and {{**}} must be whole path segments)"
    )]
    PartialSegment(String),
    /// `{*}` or `{**}` after a `{**}`.
    #[error("{0:?}: {{**}} is not the last operator")]
    AfterDoubleStar(String),
    /// A segment beside a template with characters a path segment cannot have.
    #[error("{0:?}: segment {1:?} is not a valid path literal")]
    Literal(String, String),
}

/// Why a `when` condition is refused (security.go, `ValidateAttribute`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum ConditionError {
    /// A value of `source.ip`, `remote.ip` or `destination.ip` that is not an address or block.
    #[error(transparent)]
    IpBlock(#[from] IpBlockError),
    /// A `request.auth.claims[...]` key that does not name a claim.
    #[error(transparent)]
    Claim(#[from] ClaimPathError),
    /// A `source.serviceAccount` value that is not `name` or `namespace/name`.
    #[error(transparent)]
    ServiceAccount(#[from] ServiceAccountError),
    /// A `source.trustDomain` value with a wildcard inside.
    #[error(transparent)]
    Wildcard(#[from] WildcardError),
    /// A `destination.port` value that is not a port.
    #[error("{0:?} is not a port")]
    Port(String),
    /// `name[key]` expected.
    #[error("bad key {0:?}: should have format a[b]")]
    MapKey(String),
    /// An empty string among the values.
    #[error("empty value not allowed for key {0}")]
    EmptyValue(String),
    /// A key Istio replaced or dropped.
    #[error("attribute {0} is not supported: {1}")]
    Replaced(String, &'static str),
    /// A key Istio does not define.
    #[error("unknown condition key {0:?}")]
    UnknownKey(String),
    /// Neither `values` nor `notValues`: the condition would say nothing.
    #[error("a condition needs values or notValues")]
    NoValues,
}

/// Why a `serviceAccounts` entry is refused (security.go, `CheckServiceAccount`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceAccountError {
    /// More than 16 entries.
    #[error("may not have more than 16 values")]
    TooMany,
    /// An empty entry.
    #[error("empty value not allowed")]
    Empty,
    /// A `*`.
    #[error("wildcard not allowed in {0:?}")]
    Wildcard(String),
    /// Not `name` or `namespace/name` with both parts.
    #[error("expected format 'serviceAccount' or 'namespace/serviceAccount', found {0:?}")]
    Format(String),
    /// More than 320 characters.
    #[error("value cannot exceed 320 characters, found {0:?}")]
    TooLong(String),
}

/// Why a wildcard value (trust domains) is refused (security.go, `CheckWildcardValues`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WildcardError {
    /// An empty entry.
    #[error("empty value not allowed")]
    Empty,
    /// More than one `*`.
    #[error("at most one wildcard is allowed, found {0:?}")]
    Several(String),
    /// A `*` inside.
    #[error("wildcard is only allowed at the start or end, found {0:?}")]
    Inside(String),
    /// A `/` in a trust domain.
    #[error("trust domain must not contain '/', found {0:?}")]
    Slash(String),
}

/// Parses `1.2.3.4` or `10.0.0.0/8` (Istio's `ValidateIPs`: no spaces).
pub fn ip_block(s: &str) -> Result<IpBlock, IpBlockError> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| IpBlockError::NotAnAddress(s.to_string()))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| IpBlockError::BadPrefix(s.to_string()))?,
    };
    Ok(IpBlock { addr, prefix })
}

fn blocks(any: &[String], not: &[String]) -> Result<Field<IpBlock>, IpBlockError> {
    Ok(Field {
        any: any.iter().map(|s| ip_block(s)).collect::<Result<_, _>>()?,
        not: not.iter().map(|s| ip_block(s)).collect::<Result<_, _>>()?,
    })
}

/// A port as Istio's `ValidatePorts` reads it: a decimal number up to 65535.
pub fn port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `name` or `namespace/name` (security.go, `CheckServiceAccount`).
pub fn check_service_accounts(list: &[String]) -> Result<(), ServiceAccountError> {
    if list.len() > 16 {
        return Err(ServiceAccountError::TooMany);
    }
    for v in list {
        if v.is_empty() {
            return Err(ServiceAccountError::Empty);
        }
        if v.contains('*') {
            return Err(ServiceAccountError::Wildcard(v.clone()));
        }
        let parts: Vec<&str> = v.split('/').collect();
        if parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
            return Err(ServiceAccountError::Format(v.clone()));
        }
        if v.len() > 320 {
            return Err(ServiceAccountError::TooLong(v.clone()));
        }
    }
    Ok(())
}

/// Values with at most one `*`, at either end (security.go, `CheckWildcardValues`);
/// with `trust_domain`, no `/` either (`CheckTrustDomainValues`).
pub fn check_wildcard_values(list: &[String], trust_domain: bool) -> Result<(), WildcardError> {
    for v in list {
        if v.is_empty() {
            return Err(WildcardError::Empty);
        }
        match v.matches('*').count() {
            0 => {}
            1 if v == "*" || v.starts_with('*') || v.ends_with('*') => {}
            1 => return Err(WildcardError::Inside(v.clone())),
            _ => return Err(WildcardError::Several(v.clone())),
        }
        if trust_domain && v.contains('/') {
            return Err(WildcardError::Slash(v.clone()));
        }
    }
    Ok(())
}

/// A pchar of RFC 3986 (without `/`), as Istio's path literals allow them.
fn is_path_literal(segment: &str) -> bool {
    !segment.is_empty()
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&b))
}

/// A `paths` entry: a string match, or a template of whole `{*}` and `{**}`
/// segments, nothing after `{**}` but literals (security.go, `CheckValidPathTemplate`).
fn path_value(s: &str) -> Result<PathValue, PathTemplateError> {
    let template = s.contains("{*}") || s.contains("{**}");
    let mut double_star = false;
    for glob in s.trim_matches('/').split('/') {
        match glob {
            "{*}" | "{**}" if double_star => return Err(PathTemplateError::AfterDoubleStar(s.to_string())),
            "{*}" => continue,
            "{**}" => {
                double_star = true;
                continue;
            }
            _ => {}
        }
        if glob.contains(['{', '}']) {
            return Err(PathTemplateError::PartialSegment(s.to_string()));
        }
        if template && !is_path_literal(glob) {
            return Err(PathTemplateError::Literal(s.to_string(), glob.to_string()));
        }
    }
    if template {
        return Ok(PathValue::Template(s.split('/').map(str::to_string).collect()));
    }
    Ok(PathValue::Plain(value(s)))
}

/// An error about `field` of a source or operation: (field, message).
type FieldError = (String, String);

fn no_empty(field: &str, list: &[String]) -> Result<(), FieldError> {
    if list.iter().any(String::is_empty) {
        return Err((field.to_string(), format!("empty value not allowed in {field}")));
    }
    Ok(())
}

fn source(s: &Source, ns: &str) -> Result<SourceMatch, FieldError> {
    for (field, list) in [
        ("principals", &s.principals),
        ("notPrincipals", &s.not_principals),
        ("requestPrincipals", &s.request_principals),
        ("notRequestPrincipals", &s.not_request_principals),
        ("namespaces", &s.namespaces),
        ("notNamespaces", &s.not_namespaces),
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
    ] {
        no_empty(field, list)?;
    }
    for (field, list) in [
        ("serviceAccounts", &s.service_accounts),
        ("notServiceAccounts", &s.not_service_accounts),
    ] {
        check_service_accounts(list).map_err(|e| (field.to_string(), e.to_string()))?;
    }
    for (field, list) in [
        ("trustDomains", &s.trust_domains),
        ("notTrustDomains", &s.not_trust_domains),
    ] {
        check_wildcard_values(list, true).map_err(|e| (field.to_string(), e.to_string()))?;
    }
    let ip = |field: &str, any, not| blocks(any, not).map_err(|e| (field.to_string(), e.to_string()));
    let accounts = |list: &[String]| list.iter().map(|v| service_account(v, ns)).collect();
    Ok(SourceMatch {
        principals: values(&s.principals, &s.not_principals),
        request_principals: values(&s.request_principals, &s.not_request_principals),
        namespaces: values(&s.namespaces, &s.not_namespaces),
        service_accounts: Field {
            any: accounts(&s.service_accounts),
            not: accounts(&s.not_service_accounts),
        },
        trust_domains: values(&s.trust_domains, &s.not_trust_domains),
        ip_blocks: ip("ipBlocks", &s.ip_blocks, &s.not_ip_blocks)?,
        remote_ip_blocks: ip("remoteIpBlocks", &s.remote_ip_blocks, &s.not_remote_ip_blocks)?,
    })
}

fn operation(o: &Operation) -> Result<OperationMatch, FieldError> {
    for (field, list) in [
        ("hosts", &o.hosts),
        ("notHosts", &o.not_hosts),
        ("ports", &o.ports),
        ("notPorts", &o.not_ports),
        ("methods", &o.methods),
        ("notMethods", &o.not_methods),
        ("paths", &o.paths),
        ("notPaths", &o.not_paths),
    ] {
        no_empty(field, list)?;
    }
    let ports = |field: &str, list: &[String]| -> Result<Vec<u16>, FieldError> {
        list.iter()
            .map(|p| port(p).ok_or_else(|| (field.to_string(), format!("{p:?} is not a port"))))
            .collect()
    };
    let paths = |field: &str, list: &[String]| -> Result<Vec<PathValue>, FieldError> {
        list.iter()
            .map(|p| path_value(p).map_err(|e| (field.to_string(), e.to_string())))
            .collect()
    };
    Ok(OperationMatch {
        hosts: values(&o.hosts, &o.not_hosts),
        ports: Field {
            any: ports("ports", &o.ports)?,
            not: ports("notPorts", &o.not_ports)?,
        },
        methods: values(&o.methods, &o.not_methods),
        paths: Field {
            any: paths("paths", &o.paths)?,
            not: paths("notPaths", &o.not_paths)?,
        },
    })
}

/// The inside of `name[inside]` after `prefix`, not empty (security.go, `validateMapKey`).
fn map_key<'a>(key: &'a str, prefix: &str) -> Result<&'a str, ConditionError> {
    key.strip_prefix(prefix)
        .and_then(|k| k.strip_prefix('['))
        .and_then(|k| k.strip_suffix(']'))
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ConditionError::MapKey(key.to_string()))
}

fn condition(c: &Condition, ns: &str) -> Result<Cond, ConditionError> {
    let key = c.key.as_deref().unwrap_or("");
    if c.values.is_empty() && c.not_values.is_empty() {
        return Err(ConditionError::NoValues);
    }
    if c.values.iter().chain(&c.not_values).any(String::is_empty) {
        return Err(ConditionError::EmptyValue(key.to_string()));
    }
    let vals = values(&c.values, &c.not_values);
    let both = || c.values.iter().chain(&c.not_values);
    let key = match key {
        k if k.starts_with("request.headers") => Key::Header(map_key(k, "request.headers")?.to_ascii_lowercase()),
        "source.ip" => Key::SourceIp(blocks(&c.values, &c.not_values)?),
        "remote.ip" => Key::RemoteIp(blocks(&c.values, &c.not_values)?),
        "destination.ip" => {
            blocks(&c.values, &c.not_values)?;
            Key::Unavailable(key.into())
        }
        "destination.port" => {
            if let Some(bad) = both().find(|p| port(p).is_none()) {
                return Err(ConditionError::Port(bad.clone()));
            }
            Key::DestinationPort
        }
        "connection.sni" => Key::Sni,
        "source.principal" => Key::SourcePrincipal,
        "source.namespace" => Key::SourceNamespace,
        "source.trustDomain" => {
            check_wildcard_values(&c.values, false)?;
            check_wildcard_values(&c.not_values, false)?;
            Key::SourceTrustDomain
        }
        "source.serviceAccount" => {
            check_service_accounts(&c.values)?;
            check_service_accounts(&c.not_values)?;
            Key::SourceServiceAccount(ns.to_string())
        }
        "request.auth.principal" => Key::RequestPrincipal,
        "request.auth.audiences" => Key::Audiences,
        "request.auth.presenter" => Key::Presenter,
        k if k.starts_with("request.auth.claims") => {
            map_key(k, "request.auth.claims")?;
            Key::Claim(ClaimPath::parse(&k["request.auth.claims".len()..])?)
        }
        k if k.starts_with("experimental.envoy.filters.") => {
            map_key(k, k.split('[').next().unwrap_or(k))?;
            Key::Unavailable(key.into())
        }
        "destination.namespace" => {
            return Err(ConditionError::Replaced(
                key.into(),
                "replaced by the policy's namespace",
            ))
        }
        k if k.starts_with("destination.labels") => {
            return Err(ConditionError::Replaced(
                key.into(),
                "replaced by the workload selector",
            ))
        }
        "destination.name" | "destination.user" => {
            return Err(ConditionError::Replaced(key.into(), "deprecated, only in v1alpha1"))
        }
        other => return Err(ConditionError::UnknownKey(other.to_string())),
    };
    Ok(Cond { key, values: vals })
}

/// Compiles one policy of namespace `ns`; errors name the field.
pub fn compile_policy(name: String, ns: &str, spec: &AuthorizationPolicySpec) -> Result<Policy, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut rules = Vec::new();
    for (ri, r) in spec.rules.iter().enumerate() {
        let mut rule = Rule::default();
        for (fi, f) in r.from.iter().enumerate() {
            match f.source.as_ref().map(|s| source(s, ns)).transpose() {
                Ok(s) => rule.from.push(s.unwrap_or_default()),
                Err((field, e)) => errors.push((format!("spec.rules[{ri}].from[{fi}].source.{field}"), e)),
            }
        }
        for (ti, t) in r.to.iter().enumerate() {
            match t.operation.as_ref().map(operation).transpose() {
                Ok(o) => rule.to.push(o.unwrap_or_default()),
                Err((field, e)) => errors.push((format!("spec.rules[{ri}].to[{ti}].operation.{field}"), e)),
            }
        }
        for (wi, w) in r.when.iter().enumerate() {
            // An empty key is the whole policy's check (`authorization_policy`).
            if w.key.as_deref().is_none_or(str::is_empty) {
                continue;
            }
            match condition(w, ns) {
                Ok(c) => rule.when.push(c),
                Err(e) => errors.push((format!("spec.rules[{ri}].when[{wi}]"), e.to_string())),
            }
        }
        rules.push(rule);
    }
    if errors.is_empty() {
        Ok(Policy { name, rules })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::jwt::Verified;
    use http::HeaderMap;

    fn policy(yaml: &str) -> Policy {
        let value = crate::yaml::parse_documents(yaml).expect("yaml").remove(0).value;
        let spec: AuthorizationPolicySpec = serde_json::from_value(value).expect("spec");
        compile_policy("default/p".into(), "default", &spec).expect("valid")
    }

    fn req<'a>(path: &'a str, headers: &'a HeaderMap) -> Request<'a> {
        Request {
            host: "app.example.com",
            port: 8080,
            method: "GET",
            path,
            headers,
            source_ip: Some("10.1.2.3".parse().expect("ip")),
            remote_ip: Some("203.0.113.9".parse().expect("ip")),
            sni: None,
            peer: None,
            auth: None,
        }
    }

    #[test]
    fn evaluation_order_and_defaults() {
        let h = HeaderMap::new();
        let deny_admin = policy("action: DENY\nrules: [{to: [{operation: {paths: [/admin*]}}]}]");
        let allow_api = policy("rules: [{to: [{operation: {paths: [/api/*], methods: [GET]}}]}]");
        let allow_nothing = policy("{}");
        let mut a = Authz::default();
        assert_eq!(a.decide(&req("/x", &h), |_| {}), Decision::Allow, "no policy: allow");
        a.deny.push(Arc::new(deny_admin));
        assert!(matches!(a.decide(&req("/admin/x", &h), |_| {}), Decision::Deny(_)));
        assert_eq!(
            a.decide(&req("/x", &h), |_| {}),
            Decision::Allow,
            "DENY only: the rest passes"
        );
        a.allow.push(Arc::new(allow_api));
        assert_eq!(a.decide(&req("/api/v1", &h), |_| {}), Decision::Allow);
        assert!(
            matches!(a.decide(&req("/other", &h), |_| {}), Decision::Deny(_)),
            "ALLOW exists, none matched"
        );
        let mut only_empty = Authz::default();
        only_empty.allow.push(Arc::new(allow_nothing));
        assert!(
            matches!(only_empty.decide(&req("/api/v1", &h), |_| {}), Decision::Deny(_)),
            "empty ALLOW denies all"
        );
    }

    #[test]
    fn sources_conditions_and_templates() {
        let mut h = HeaderMap::new();
        h.insert("x-env", "prod".parse().expect("value"));
        let p = policy(
            "rules:\n- from: [{source: {remoteIpBlocks: [203.0.113.0/24], notIpBlocks: [10.9.0.0/16]}}]\n  \
             to: [{operation: {paths: ['/users/{*}/profile', '/files/{**}'], notMethods: [DELETE]}}]\n  \
             when: [{key: 'request.headers[x-env]', values: [prod]}]",
        );
        assert!(p.matches(&req("/users/42/profile", &h)));
        assert!(p.matches(&req("/files/a/b/c", &h)));
        assert!(!p.matches(&req("/users/42/x/profile", &h)), "{{*}} is one segment");
        assert!(
            !p.matches(&req("/users/42/profile", &HeaderMap::new())),
            "condition on a header"
        );
        let jwt = policy("rules: [{from: [{source: {requestPrincipals: ['*']}}]}]");
        assert!(!jwt.matches(&req("/x", &h)), "no JWT, no request principal");
        let not_jwt = policy("rules: [{from: [{source: {notRequestPrincipals: ['*']}}]}]");
        assert!(not_jwt.matches(&req("/x", &h)));
        assert!(ip_block("10.0.0.0/33").is_err() && ip_block("nope").is_err());
        assert_eq!(
            ip_block("10.0.0.0/33").err(),
            Some(IpBlockError::BadPrefix("10.0.0.0/33".into()))
        );
        assert_eq!(ip_block("nope").err(), Some(IpBlockError::NotAnAddress("nope".into())));

        let token = Verified {
            principal: "https://issuer/alice".into(),
            claims: serde_json::json!({"sub": "alice", "aud": ["api", "web"], "azp": "spa",
                                       "groups": ["dev", "ops"], "org": {"tier": "gold"}}),
            payload_segment: String::new(),
        };
        let authed = Request {
            auth: Some(&token),
            peer: Some("cluster.local/ns/shop/sa/web"),
            ..req("/x", &h)
        };
        assert!(jwt.matches(&authed), "a verified token gives a request principal");
        assert!(!not_jwt.matches(&authed));
        let claims = policy(
            "rules:\n- from: [{source: {requestPrincipals: ['https://issuer/*'], namespaces: [shop]}}]\n  \
             when:\n  - {key: 'request.auth.claims[groups]', values: [ops]}\n  \
             - {key: 'request.auth.claims[org][tier]', values: [gold]}\n  \
             - {key: request.auth.audiences, values: [web], notValues: [admin]}\n  \
             - {key: request.auth.presenter, values: [spa]}\n  \
             - {key: source.principal, values: ['*/sa/web']}",
        );
        assert!(claims.matches(&authed));
        assert!(!claims.matches(&req("/x", &h)), "no token, no claims");
        let not_group = policy("rules: [{when: [{key: 'request.auth.claims[groups]', notValues: [ops]}]}]");
        assert!(
            !not_group.matches(&authed),
            "notValues: no element of a list claim may match"
        );
        let spec: AuthorizationPolicySpec = serde_json::from_value(
            serde_json::json!({"rules": [{"when": [{"key": "request.color", "values": ["x"]}]}]}),
        )
        .expect("spec");
        assert!(
            compile_policy("p".into(), "default", &spec).is_err(),
            "unknown condition key"
        );
    }

    #[test]
    fn errors_name_the_field_and_the_value() {
        let spec: AuthorizationPolicySpec = serde_json::from_value(serde_json::json!({"rules": [{
            "from": [{"source": {"notRemoteIpBlocks": ["10.0.0.0/40"]}}],
            "to": [{"operation": {"paths": ["/a/{**}/b/{**}", "/x{*}"]}}],
            "when": [{"key": "request.color", "values": ["x"]}, {"key": "source.ip", "values": ["nope"]},
                     {"key": "request.auth.claims[a][b", "values": ["x"]}, {"key": "source.principal"}]
        }]}))
        .expect("spec");
        let errors = compile_policy("p".into(), "default", &spec).expect_err("invalid");
        let errors: Vec<(&str, &str)> = errors.iter().map(|(f, m)| (f.as_str(), m.as_str())).collect();
        assert_eq!(
            errors,
            [
                (
                    "spec.rules[0].from[0].source.remoteIpBlocks",
                    "\"10.0.0.0/40\" has an invalid prefix length"
                ),
                (
                    "spec.rules[0].to[0].operation.paths",
                    "\"/a/{**}/b/{**}\": {**} is not the last operator"
                ),
                ("spec.rules[0].when[0]", "unknown condition key \"request.color\""),
                ("spec.rules[0].when[1]", "\"nope\" is not an IP address or CIDR block"),
                (
                    "spec.rules[0].when[2]",
                    "bad key \"request.auth.claims[a][b\": should have format a[b]"
                ),
                ("spec.rules[0].when[3]", "a condition needs values or notValues"),
            ]
        );
        assert_eq!(
            path_value("/x{*}").err(),
            Some(PathTemplateError::PartialSegment("/x{*}".into()))
        );
        assert_eq!(
            PathTemplateError::PartialSegment("/x{*}".into()).to_string(),
            "\"/x{*}\": contains '{' or '}' beyond a supported path template ({*} and {**} must be whole path segments)"
        );
    }

    #[test]
    fn trust_domains_and_service_accounts_are_matched() {
        let h = HeaderMap::new();
        let from = |peer: &'static str| Request {
            peer: Some(peer),
            ..req("/x", &h)
        };
        let p = policy("rules: [{from: [{source: {trustDomains: ['*.corp'], serviceAccounts: [web, ops/admin]}}]}]");
        assert!(p.matches(&from("east.corp/ns/default/sa/web")));
        assert!(p.matches(&from("west.corp/ns/ops/sa/admin")));
        assert!(
            !p.matches(&from("cluster.local/ns/default/sa/web")),
            "other trust domain"
        );
        assert!(!p.matches(&from("east.corp/ns/default/sa/web-2")), "other account");
        assert!(
            !p.matches(&from("east.corp/ns/shop/sa/web")),
            "web of another namespace"
        );
        assert!(!p.matches(&req("/x", &h)), "no peer identity");
        let not_td = policy("rules: [{from: [{source: {notTrustDomains: [cluster.local]}}]}]");
        assert!(!not_td.matches(&from("cluster.local/ns/a/sa/b")));
        assert!(not_td.matches(&from("other/ns/a/sa/b")));
        let cond = policy(
            "rules: [{when: [{key: source.trustDomain, values: [cluster.local]}, {key: source.serviceAccount, values: [web]}]}]",
        );
        assert!(cond.matches(&from("cluster.local/ns/default/sa/web")));
        assert!(!cond.matches(&from("cluster.local/ns/default/sa/api")));
        assert!(!cond.matches(&from("td2/ns/default/sa/web")));
    }
}
