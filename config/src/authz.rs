//! AuthorizationPolicy as the request path applies it: compiled policies (Istio's
//! order: CUSTOM, DENY, ALLOW, with AUDIT logged) and the decision for a request.
//! The compilers are in `compile::authz`.

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;
use serde::Serialize;

use crate::claims::{self, ClaimPath};
use crate::jwt::Verified;

/// The compiled policies that apply to one proxy, by action.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Authz {
    /// CUSTOM policies: a request one matches is checked by its external authorizer.
    pub custom: Vec<Custom>,
    /// DENY policies (and CUSTOM ones whose provider does not exist).
    pub deny: Vec<Arc<Policy>>,
    /// ALLOW policies.
    pub allow: Vec<Arc<Policy>>,
    /// AUDIT policies: matches are logged only.
    pub audit: Vec<Arc<Policy>>,
}

/// A CUSTOM policy and its authorizer.
#[derive(Debug, Clone, Serialize)]
pub struct Custom {
    /// The policy.
    pub policy: Arc<Policy>,
    /// Index into the listener policy's `ext_authz`.
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
    /// Peer service accounts (mTLS), as (namespace, name).
    pub service_accounts: Field<ServiceAccount>,
    /// Trust domains of the peer identity (mTLS).
    pub trust_domains: Field<Value>,
    /// The direct peer address.
    pub ip_blocks: Field<IpBlock>,
    /// The original client address.
    pub remote_ip_blocks: Field<IpBlock>,
}

/// A service account a rule names: `name` in the policy's namespace, or
/// `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceAccount {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ServiceAccount {
    /// Whether SPIFFE identity `principal` (`<td>/ns/<ns>/.../sa/<sa>[/...]`, as
    /// Istio's matcher reads it) is this service account's.
    pub fn matches(&self, principal: &str) -> bool {
        let parts: Vec<&str> = principal.split('/').collect();
        let [td, "ns", ns, rest @ ..] = parts.as_slice() else {
            return false;
        };
        !td.is_empty() && *ns == self.namespace && rest.windows(2).any(|w| w[0] == "sa" && w[1] == self.name)
    }
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
    /// `source.trustDomain`: the trust domain of the client's SPIFFE identity.
    SourceTrustDomain,
    /// `source.serviceAccount`: the client's service account; the values are
    /// `namespace/name`, or `name` in this namespace.
    SourceServiceAccount(String),
    /// `request.auth.principal`: the verified JWT's `iss/sub`.
    RequestPrincipal,
    /// `request.auth.audiences`: the verified JWT's `aud`.
    Audiences,
    /// `request.auth.presenter`: the verified JWT's `azp`.
    Presenter,
    /// `request.auth.claims[...]`: a verified JWT claim.
    Claim(ClaimPath),
    /// An attribute the proxy does not read (`destination.ip`,
    /// `experimental.envoy.filters.*`): conditions on it fail closed.
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
    pub(crate) fn matches(&self, req: &Request<'_>) -> bool {
        self.rules.iter().any(|r| r.matches(req))
    }
}

impl Rule {
    pub(crate) fn matches(&self, req: &Request<'_>) -> bool {
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
    pub(crate) fn matches(&self, s: &str) -> bool {
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
    pub(crate) fn matches(&self, path: &str) -> bool {
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

/// The trust domain of a SPIFFE identity `<trust domain>/ns/...`.
pub fn spiffe_trust_domain(principal: &str) -> Option<&str> {
    principal.split_once('/').map(|(td, _)| td).filter(|td| !td.is_empty())
}

/// The namespace of a SPIFFE identity `<trust domain>/ns/<namespace>/sa/<account>`.
pub fn spiffe_namespace(principal: &str) -> Option<&str> {
    let mut parts = principal.split('/');
    parts.next()?;
    (parts.next()? == "ns").then(|| parts.next()).flatten()
}

impl SourceMatch {
    pub(crate) fn matches(&self, req: &Request<'_>) -> bool {
        let request_principal = req.auth.map(|a| a.principal.as_str());
        self.principals.check(req.peer, |v, a| v.matches(a))
            && self.request_principals.check(request_principal, |v, a| v.matches(a))
            && self
                .namespaces
                .check(req.peer.and_then(spiffe_namespace), |v, a| v.matches(a))
            && self.service_accounts.check(req.peer, |sa, p| sa.matches(p))
            && self
                .trust_domains
                .check(req.peer.and_then(spiffe_trust_domain), |v, a| v.matches(a))
            && self.ip_blocks.check(req.source_ip, |b, ip| b.contains(ip))
            && self.remote_ip_blocks.check(req.remote_ip, |b, ip| b.contains(ip))
    }
}

impl OperationMatch {
    pub(crate) fn matches(&self, req: &Request<'_>) -> bool {
        self.hosts.check(Some(req.host), |v, h| v.matches_ignore_case(h))
            && self.ports.check(Some(req.port), |p, port| *p == port)
            && self.methods.check(Some(req.method), |v, m| v.matches(m))
            && self.paths.check(Some(req.path), |v, p| v.matches(p))
    }
}

impl Cond {
    pub(crate) fn matches(&self, req: &Request<'_>) -> bool {
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
            Key::SourceTrustDomain => self
                .values
                .check(req.peer.and_then(spiffe_trust_domain), |v, a| v.matches(a)),
            Key::SourceServiceAccount(ns) => self.values.check(req.peer, |v, p| match v {
                Value::Exact(x) => service_account(x, ns).matches(p),
                _ => false,
            }),
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

/// The service account `value` (`name` or `namespace/name`) names from a policy
/// in namespace `ns`.
pub fn service_account(value: &str, ns: &str) -> ServiceAccount {
    let (namespace, name) = value.split_once('/').unwrap_or((ns, value));
    ServiceAccount {
        namespace: namespace.to_string(),
        name: name.to_string(),
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
