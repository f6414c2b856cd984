//! AuthorizationPolicy rules compiled from the resource into what the request path
//! evaluates (values, IP blocks, path templates, conditions).

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

/// Why a `paths` template is refused: Istio only takes `{*}` and `{**}` as whole
/// segments, and `{**}` once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum PathTemplateError {
    /// `{*}` or `{**}` sharing a segment with other text.
    #[error("{0:?}: {{*}} and {{**}} must be whole path segments")]
    PartialSegment(String),
    /// `{**}` more than once.
    #[error("{0:?}: {{**}} may appear once")]
    RepeatedDoubleStar(String),
}

/// Why a `when` condition is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum ConditionError {
    /// A value of `source.ip` or `remote.ip` that is not an address or block.
    #[error(transparent)]
    IpBlock(#[from] IpBlockError),
    /// A `request.auth.claims[...]` key that does not name a claim.
    #[error(transparent)]
    Claim(#[from] ClaimPathError),
    /// A key Istio does not define.
    #[error("unknown condition key {0:?}")]
    UnknownKey(String),
    /// Neither `values` nor `notValues`: the condition would say nothing.
    #[error("a condition needs values or notValues")]
    NoValues,
}

/// Parses `1.2.3.4` or `10.0.0.0/8`.
pub fn ip_block(s: &str) -> Result<IpBlock, IpBlockError> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| IpBlockError::NotAnAddress(s.to_string()))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => p
            .trim()
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

fn path_value(s: &str) -> Result<PathValue, PathTemplateError> {
    if s.contains('{') {
        let segments: Vec<String> = s.split('/').map(str::to_string).collect();
        let last_double = segments.iter().rposition(|x| x == "{**}");
        for (i, seg) in segments.iter().enumerate() {
            if seg.contains('{') && seg != "{*}" && seg != "{**}" {
                return Err(PathTemplateError::PartialSegment(s.to_string()));
            }
            if seg == "{**}" && Some(i) != last_double {
                return Err(PathTemplateError::RepeatedDoubleStar(s.to_string()));
            }
        }
        return Ok(PathValue::Template(segments));
    }
    Ok(PathValue::Plain(value(s)))
}

fn source(s: &Source) -> Result<SourceMatch, (String, String)> {
    Ok(SourceMatch {
        principals: values(&s.principals, &s.not_principals),
        request_principals: values(&s.request_principals, &s.not_request_principals),
        namespaces: values(&s.namespaces, &s.not_namespaces),
        ip_blocks: blocks(&s.ip_blocks, &s.not_ip_blocks).map_err(|e| ("ipBlocks".to_string(), e.to_string()))?,
        remote_ip_blocks: blocks(&s.remote_ip_blocks, &s.not_remote_ip_blocks)
            .map_err(|e| ("remoteIpBlocks".to_string(), e.to_string()))?,
    })
}

fn operation(o: &Operation) -> Result<OperationMatch, (String, String)> {
    let ports = |list: &[String]| -> Result<Vec<u16>, (String, String)> {
        list.iter()
            .map(|p| {
                p.parse::<u16>()
                    .map_err(|_| ("ports".to_string(), format!("{p:?} is not a port")))
            })
            .collect()
    };
    let paths = |list: &[String]| -> Result<Vec<PathValue>, (String, String)> {
        list.iter()
            .map(|p| path_value(p).map_err(|e| ("paths".to_string(), e.to_string())))
            .collect()
    };
    Ok(OperationMatch {
        hosts: values(&o.hosts, &o.not_hosts),
        ports: Field {
            any: ports(&o.ports)?,
            not: ports(&o.not_ports)?,
        },
        methods: values(&o.methods, &o.not_methods),
        paths: Field {
            any: paths(&o.paths)?,
            not: paths(&o.not_paths)?,
        },
    })
}

fn condition(c: &Condition) -> Result<Cond, ConditionError> {
    let key = c.key.as_deref().unwrap_or("");
    let vals = values(&c.values, &c.not_values);
    let key = if let Some(h) = key.strip_prefix("request.headers[").and_then(|k| k.strip_suffix(']')) {
        Key::Header(h.to_ascii_lowercase())
    } else {
        match key {
            "source.ip" => Key::SourceIp(blocks(&c.values, &c.not_values)?),
            "remote.ip" => Key::RemoteIp(blocks(&c.values, &c.not_values)?),
            "destination.port" => Key::DestinationPort,
            "connection.sni" => Key::Sni,
            "source.principal" => Key::SourcePrincipal,
            "source.namespace" => Key::SourceNamespace,
            "request.auth.principal" => Key::RequestPrincipal,
            "request.auth.audiences" => Key::Audiences,
            "request.auth.presenter" => Key::Presenter,
            "source.serviceAccount" | "destination.ip" => Key::Unavailable(key.into()),
            k if k.starts_with("request.auth.claims[") => {
                Key::Claim(ClaimPath::parse(&k["request.auth.claims".len()..])?)
            }
            other => return Err(ConditionError::UnknownKey(other.to_string())),
        }
    };
    if c.values.is_empty() && c.not_values.is_empty() {
        return Err(ConditionError::NoValues);
    }
    Ok(Cond { key, values: vals })
}

/// Compiles one policy; errors name the field.
pub fn compile_policy(name: String, spec: &AuthorizationPolicySpec) -> Result<Policy, Vec<(String, String)>> {
    let mut errors = Vec::new();
    let mut rules = Vec::new();
    for (ri, r) in spec.rules.iter().enumerate() {
        let mut rule = Rule::default();
        for (fi, f) in r.from.iter().enumerate() {
            match f.source.as_ref().map(source).transpose() {
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
            match condition(w) {
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
        compile_policy("default/p".into(), &spec).expect("valid")
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
        assert!(compile_policy("p".into(), &spec).is_err(), "unknown condition key");
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
        let errors = compile_policy("p".into(), &spec).expect_err("invalid");
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
                    "\"/a/{**}/b/{**}\": {**} may appear once"
                ),
                ("spec.rules[0].when[0]", "unknown condition key \"request.color\""),
                ("spec.rules[0].when[1]", "\"nope\" is not an IP address or CIDR block"),
                ("spec.rules[0].when[2]", "claim \"[a][b\": unbalanced brackets"),
                ("spec.rules[0].when[3]", "a condition needs values or notValues"),
            ]
        );
        assert_eq!(
            path_value("/x{*}").err(),
            Some(PathTemplateError::PartialSegment("/x{*}".into()))
        );
        assert_eq!(
            PathTemplateError::PartialSegment("/x{*}".into()).to_string(),
            "\"/x{*}\": {*} and {**} must be whole path segments"
        );
    }
}
