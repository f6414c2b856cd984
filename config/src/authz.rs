//! AuthorizationPolicy for one proxy: the policies that select it, compiled, and
//! Istio's evaluation (CUSTOM, then DENY, then ALLOW; no ALLOW policy allows all;
//! an ALLOW policy without rules allows nothing).

use std::net::IpAddr;

use http::HeaderMap;
use serde::Serialize;

use crate::bundle::{Bundle, Entry};
use crate::claims::{self, ClaimPath};
use crate::diag::{Code, Diagnostic, Severity};
use crate::jwt::Verified;
use crate::registry::selects;
use crate::resources::security::{Action, AuthorizationPolicySpec, Condition, Operation, Source, WorkloadSelector};
use crate::resources::Spec;
use crate::translate::Scope;

/// Istio's default root namespace: policies there without a selector apply mesh-wide.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// The compiled policies that apply to one proxy, by action.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Authz {
    /// CUSTOM policies: a request one matches is checked by its external authorizer.
    pub custom: Vec<Custom>,
    /// DENY policies (and CUSTOM ones whose provider does not exist).
    pub deny: Vec<Policy>,
    /// ALLOW policies.
    pub allow: Vec<Policy>,
    /// AUDIT policies: matches are logged only.
    pub audit: Vec<Policy>,
}

/// A CUSTOM policy and its authorizer.
#[derive(Debug, Clone, Serialize)]
pub struct Custom {
    /// The policy.
    pub policy: Policy,
    /// Index into `Snapshot::ext_authz`.
    pub provider: usize,
}

/// One policy.
#[derive(Debug, Clone, Serialize)]
pub struct Policy {
    /// `namespace/name`.
    pub name: String,
    /// OR'd rules.
    pub rules: Vec<Rule>,
}

/// A rule: any `from`, any `to`, every `when`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rule {
    /// Sources, OR'd (empty: any).
    pub from: Vec<SourceMatch>,
    /// Operations, OR'd (empty: any).
    pub to: Vec<OperationMatch>,
    /// Conditions, AND'd.
    pub when: Vec<Cond>,
}

/// Values an attribute must (or must not) have.
#[derive(Debug, Clone, Serialize)]
pub struct Field<T> {
    /// One must match (empty: no constraint).
    pub any: Vec<T>,
    /// None may match.
    pub not: Vec<T>,
}

impl<T> Default for Field<T> {
    fn default() -> Self {
        Field {
            any: Vec::new(),
            not: Vec::new(),
        }
    }
}

/// Istio's string match: exact, `prefix*`, `*suffix` or `*`.
#[derive(Debug, Clone, Serialize)]
pub enum Value {
    /// Equal.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Ends with.
    Suffix(String),
    /// Any value, as long as there is one.
    Any,
}

/// A path: a string match, or a template with `{*}` (one segment) and `{**}` (any).
#[derive(Debug, Clone, Serialize)]
pub enum PathValue {
    /// A string match.
    Plain(Value),
    /// Template segments.
    Template(Vec<String>),
}

/// An IP block.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct IpBlock {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

/// A compiled `from.source`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceMatch {
    /// Peer identities (mTLS).
    pub principals: Field<Value>,
    /// JWT `iss/sub`.
    pub request_principals: Field<Value>,
    /// Peer namespaces (mTLS).
    pub namespaces: Field<Value>,
    /// The direct peer address.
    pub ip_blocks: Field<IpBlock>,
    /// The original client address.
    pub remote_ip_blocks: Field<IpBlock>,
}

/// A compiled `to.operation`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OperationMatch {
    /// Host header (case-insensitive, port ignored).
    pub hosts: Field<Value>,
    /// Listener port.
    pub ports: Field<u16>,
    /// Methods.
    pub methods: Field<Value>,
    /// Normalized paths.
    pub paths: Field<PathValue>,
}

/// A compiled `when` condition.
#[derive(Debug, Clone, Serialize)]
pub struct Cond {
    /// The attribute.
    pub key: Key,
    /// Its values.
    pub values: Field<Value>,
}

/// Attributes a condition can test.
#[derive(Debug, Clone, Serialize)]
pub enum Key {
    /// `request.headers[name]`.
    Header(String),
    /// `source.ip`.
    SourceIp(Field<IpBlock>),
    /// `remote.ip`.
    RemoteIp(Field<IpBlock>),
    /// `destination.port`.
    DestinationPort,
    /// `connection.sni`.
    Sni,
    /// `source.principal`: the client certificate's identity.
    SourcePrincipal,
    /// `source.namespace`: the namespace of the client's SPIFFE identity.
    SourceNamespace,
    /// `request.auth.principal`: the verified JWT's `iss/sub`.
    RequestPrincipal,
    /// `request.auth.audiences`: the verified JWT's `aud`.
    Audiences,
    /// `request.auth.presenter`: the verified JWT's `azp`.
    Presenter,
    /// `request.auth.claims[...]`: a verified JWT claim.
    Claim(ClaimPath),
    /// An attribute the gateway never has (`source.serviceAccount` without mesh
    /// identities, `destination.ip`): conditions on it fail closed.
    Unavailable(String),
}

/// What the proxy knows of a request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Host, lowercase, without port.
    pub host: &'a str,
    /// Listener port the request arrived on.
    pub port: u16,
    /// Method.
    pub method: &'a str,
    /// Normalized path without query.
    pub path: &'a str,
    /// Headers.
    pub headers: &'a HeaderMap,
    /// The direct peer.
    pub source_ip: Option<IpAddr>,
    /// The original client.
    pub remote_ip: Option<IpAddr>,
    /// TLS SNI.
    pub sni: Option<&'a str>,
    /// The client certificate's identity (SPIFFE ID without `spiffe://`), if verified.
    pub peer: Option<&'a str>,
    /// The verified JWT, if any.
    pub auth: Option<&'a Verified>,
}

/// The outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on.
    Allow,
    /// 403, naming the policy (or "no ALLOW policy matched").
    Deny(String),
}

impl Authz {
    /// Whether no policy applies.
    pub fn is_empty(&self) -> bool {
        self.custom.is_empty() && self.deny.is_empty() && self.allow.is_empty() && self.audit.is_empty()
    }

    /// The external authorizer to ask, if a CUSTOM policy matches (Istio asks it
    /// before DENY and ALLOW policies are looked at).
    pub fn custom_provider(&self, req: &Request<'_>) -> Option<usize> {
        self.custom.iter().find(|c| c.policy.matches(req)).map(|c| c.provider)
    }

    /// Istio's evaluation; `audit` receives the names of AUDIT policies that matched.
    pub fn decide(&self, req: &Request<'_>, mut audit: impl FnMut(&str)) -> Decision {
        for p in &self.audit {
            if p.matches(req) {
                audit(&p.name);
            }
        }
        if let Some(p) = self.deny.iter().find(|p| p.matches(req)) {
            return Decision::Deny(p.name.clone());
        }
        if self.allow.is_empty() || self.allow.iter().any(|p| p.matches(req)) {
            Decision::Allow
        } else {
            Decision::Deny("no ALLOW policy matched".into())
        }
    }
}

impl Policy {
    fn matches(&self, req: &Request<'_>) -> bool {
        self.rules.iter().any(|r| r.matches(req))
    }
}

impl Rule {
    fn matches(&self, req: &Request<'_>) -> bool {
        (self.from.is_empty() || self.from.iter().any(|s| s.matches(req)))
            && (self.to.is_empty() || self.to.iter().any(|o| o.matches(req)))
            && self.when.iter().all(|c| c.matches(req))
    }
}

impl<T> Field<T> {
    /// Whether `attr` (None: absent) satisfies the field, with `eq` testing one value.
    fn check<A: Copy>(&self, attr: Option<A>, eq: impl Fn(&T, A) -> bool) -> bool {
        let positive = self.any.is_empty() || attr.is_some_and(|a| self.any.iter().any(|v| eq(v, a)));
        let negative = attr.is_none_or(|a| !self.not.iter().any(|v| eq(v, a)));
        positive && negative
    }
}

impl Value {
    fn matches(&self, s: &str) -> bool {
        match self {
            Value::Exact(e) => e == s,
            Value::Prefix(p) => s.starts_with(p.as_str()),
            Value::Suffix(x) => s.ends_with(x.as_str()),
            Value::Any => true,
        }
    }

    fn matches_ignore_case(&self, s: &str) -> bool {
        match self {
            Value::Exact(e) => e.eq_ignore_ascii_case(s),
            Value::Prefix(p) => s.len() >= p.len() && s[..p.len()].eq_ignore_ascii_case(p),
            Value::Suffix(x) => s.len() >= x.len() && s[s.len() - x.len()..].eq_ignore_ascii_case(x),
            Value::Any => true,
        }
    }
}

impl PathValue {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathValue::Plain(v) => v.matches(path),
            PathValue::Template(t) => template_matches(t, &path.split('/').collect::<Vec<_>>()),
        }
    }
}

fn template_matches(template: &[String], segments: &[&str]) -> bool {
    match (template.first().map(String::as_str), segments.first()) {
        (None, None) => true,
        (Some("{**}"), _) => {
            // `{**}` matches one or more segments.
            (1..=segments.len()).any(|k| template_matches(&template[1..], &segments[k..]))
        }
        (Some("{*}"), Some(s)) => !s.is_empty() && template_matches(&template[1..], &segments[1..]),
        (Some(t), Some(s)) => t == *s && template_matches(&template[1..], &segments[1..]),
        _ => false,
    }
}

impl IpBlock {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The namespace of a SPIFFE identity `<trust domain>/ns/<namespace>/sa/<account>`.
pub fn spiffe_namespace(principal: &str) -> Option<&str> {
    let mut parts = principal.split('/');
    parts.next()?;
    (parts.next()? == "ns").then(|| parts.next()).flatten()
}

impl SourceMatch {
    fn matches(&self, req: &Request<'_>) -> bool {
        let request_principal = req.auth.map(|a| a.principal.as_str());
        self.principals.check(req.peer, |v, a| v.matches(a))
            && self.request_principals.check(request_principal, |v, a| v.matches(a))
            && self
                .namespaces
                .check(req.peer.and_then(spiffe_namespace), |v, a| v.matches(a))
            && self.ip_blocks.check(req.source_ip, |b, ip| b.contains(ip))
            && self.remote_ip_blocks.check(req.remote_ip, |b, ip| b.contains(ip))
    }
}

impl OperationMatch {
    fn matches(&self, req: &Request<'_>) -> bool {
        self.hosts.check(Some(req.host), |v, h| v.matches_ignore_case(h))
            && self.ports.check(Some(req.port), |p, port| *p == port)
            && self.methods.check(Some(req.method), |v, m| v.matches(m))
            && self.paths.check(Some(req.path), |v, p| v.matches(p))
    }
}

impl Cond {
    fn matches(&self, req: &Request<'_>) -> bool {
        match &self.key {
            Key::Header(name) => {
                let value = req.headers.get(name.as_str()).and_then(|v| v.to_str().ok());
                self.values.check(value, |v, a| v.matches(a))
            }
            Key::SourceIp(blocks) => blocks.check(req.source_ip, |b, ip| b.contains(ip)),
            Key::RemoteIp(blocks) => blocks.check(req.remote_ip, |b, ip| b.contains(ip)),
            Key::DestinationPort => {
                let port = req.port.to_string();
                self.values.check(Some(port.as_str()), |v, a| v.matches(a))
            }
            Key::Sni => self.values.check(req.sni, |v, a| v.matches(a)),
            Key::SourcePrincipal => self.values.check(req.peer, |v, a| v.matches(a)),
            Key::SourceNamespace => self
                .values
                .check(req.peer.and_then(spiffe_namespace), |v, a| v.matches(a)),
            Key::RequestPrincipal => self
                .values
                .check(req.auth.map(|a| a.principal.as_str()), |v, a| v.matches(a)),
            Key::Presenter => self
                .values
                .check(req.auth.and_then(Verified::presenter), |v, a| v.matches(a)),
            Key::Audiences => {
                let auds = req.auth.map(Verified::audiences);
                self.any_of(auds.as_deref().filter(|a| !a.is_empty()), |list, v| {
                    list.iter().any(|a| v.matches(a))
                })
            }
            Key::Claim(path) => {
                let claim = req.auth.and_then(|a| path.lookup(&a.claims));
                self.any_of(claim, |c, v| claims::any_value(c, |s| v.matches(s)))
            }
            Key::Unavailable(_) => self.values.check(None::<&str>, |v, a| v.matches(a)),
        }
    }
}

impl Cond {
    /// Like `Field::check` for an attribute with several values (a list claim,
    /// audiences): `values` needs one of them to match, `notValues` none.
    fn any_of<A: ?Sized>(&self, attr: Option<&A>, has: impl Fn(&A, &Value) -> bool) -> bool {
        let positive = self.values.any.is_empty() || attr.is_some_and(|a| self.values.any.iter().any(|v| has(a, v)));
        let negative = attr.is_none_or(|a| !self.values.not.iter().any(|v| has(a, v)));
        positive && negative
    }
}

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

/// Parses `1.2.3.4` or `10.0.0.0/8`.
pub fn ip_block(s: &str) -> Result<IpBlock, String> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => p
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{s:?} has an invalid prefix length"))?,
    };
    Ok(IpBlock { addr, prefix })
}

fn blocks(any: &[String], not: &[String]) -> Result<Field<IpBlock>, String> {
    Ok(Field {
        any: any.iter().map(|s| ip_block(s)).collect::<Result<_, _>>()?,
        not: not.iter().map(|s| ip_block(s)).collect::<Result<_, _>>()?,
    })
}

fn path_value(s: &str) -> Result<PathValue, String> {
    if s.contains('{') {
        let segments: Vec<String> = s.split('/').map(str::to_string).collect();
        let last_double = segments.iter().rposition(|x| x == "{**}");
        for (i, seg) in segments.iter().enumerate() {
            if seg.contains('{') && seg != "{*}" && seg != "{**}" {
                return Err(format!("{s:?}: {{*}} and {{**}} must be whole path segments"));
            }
            if seg == "{**}" && Some(i) != last_double {
                return Err(format!("{s:?}: {{**}} may appear once"));
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
        ip_blocks: blocks(&s.ip_blocks, &s.not_ip_blocks).map_err(|e| ("ipBlocks".to_string(), e))?,
        remote_ip_blocks: blocks(&s.remote_ip_blocks, &s.not_remote_ip_blocks)
            .map_err(|e| ("remoteIpBlocks".to_string(), e))?,
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
            .map(|p| path_value(p).map_err(|e| ("paths".to_string(), e)))
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

fn condition(c: &Condition) -> Result<Cond, String> {
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
            other => return Err(format!("unknown condition key {other:?}")),
        }
    };
    if c.values.is_empty() && c.not_values.is_empty() {
        return Err("a condition needs values or notValues".into());
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
                Err(e) => errors.push((format!("spec.rules[{ri}].when[{wi}]"), e)),
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

/// Whether a security policy applies to the proxy of `scope`: in its namespace with a
/// matching selector (or none), or in the root namespace without one. Policies with
/// `targetRefs` select Gateway API resources, which Strait does not serve: they are
/// skipped with a warning.
pub(crate) fn applies(
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
        Some(sel) => ns == scope.namespace && selects(&sel.match_labels, &scope.labels),
        None => ns == scope.namespace || ns == ROOT_NAMESPACE,
    }
}

/// The policies of `bundle` that apply to the proxy of `scope`: those in its namespace
/// whose selector matches its labels (or that have none), and those in the root
/// namespace without a selector. `provider` gives the index of the external
/// authorizer a CUSTOM policy names, if it exists.
pub fn for_scope(
    bundle: &Bundle,
    scope: &Scope,
    mut provider: impl FnMut(&Entry, &str) -> Option<usize>,
) -> (Authz, Vec<Diagnostic>) {
    let mut authz = Authz::default();
    let mut diags = Vec::new();
    let policies: Vec<(&Entry, &AuthorizationPolicySpec)> = bundle
        .of(|s| match s {
            Spec::AuthorizationPolicy(p) => Some(p),
            _ => None,
        })
        .collect();
    for (entry, spec) in policies {
        let targeted = spec.target_ref.is_some() || !spec.target_refs.is_empty();
        if !applies(entry, spec.selector.as_ref(), targeted, scope, &mut diags) {
            continue;
        }
        let name = format!("{}/{}", entry.resource.namespace, entry.resource.name);
        let policy = match compile_policy(name, spec) {
            Ok(p) => p,
            Err(errors) => {
                // Validation reports these; a bundle with them never gets here.
                for (field, e) in errors {
                    diags.push(entry.diag(Severity::Error, Code::InvalidValue, &field, e));
                }
                continue;
            }
        };
        match spec.action {
            Action::Allow => authz.allow.push(policy),
            Action::Deny => authz.deny.push(policy),
            Action::Audit => authz.audit.push(policy),
            Action::Custom => {
                let name = spec.provider.as_ref().and_then(|p| p.name.as_deref()).unwrap_or("");
                match provider(entry, name) {
                    Some(index) => authz.custom.push(Custom {
                        policy,
                        provider: index,
                    }),
                    None => {
                        // As Istio: a CUSTOM policy without its provider denies what it matches.
                        diags.push(entry.diag(
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
    (authz, diags)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        a.deny.push(deny_admin);
        assert!(matches!(a.decide(&req("/admin/x", &h), |_| {}), Decision::Deny(_)));
        assert_eq!(
            a.decide(&req("/x", &h), |_| {}),
            Decision::Allow,
            "DENY only: the rest passes"
        );
        a.allow.push(allow_api);
        assert_eq!(a.decide(&req("/api/v1", &h), |_| {}), Decision::Allow);
        assert!(
            matches!(a.decide(&req("/other", &h), |_| {}), Decision::Deny(_)),
            "ALLOW exists, none matched"
        );
        let mut only_empty = Authz::default();
        only_empty.allow.push(allow_nothing);
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
}
