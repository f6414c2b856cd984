//! The compiled, immutable configuration an engine serves from. Everything the
//! request path needs (regexes, weights, header names) is built here, before the
//! swap; it serializes to what `/config_dump` shows.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use regex::Regex;
use serde::{Serialize, Serializer};

use crate::resources::networking::Labels;

/// A complete configuration for one proxy.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    /// Increases with every accepted configuration.
    pub version: u64,
    /// The files it was built from.
    pub sources: Vec<String>,
    /// Listeners by port.
    pub listeners: Vec<Listener>,
    /// Upstream clusters, referenced by index from routes.
    pub clusters: Vec<Cluster>,
    /// Server certificates, referenced by index from listeners.
    pub certificates: Vec<Certificate>,
}

impl Snapshot {
    /// The listener for a Gateway port.
    pub fn listener(&self, port: u16) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.port == port)
    }
}

/// Listener protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    /// Plain HTTP/1.1 (and h2c).
    Http,
    /// TLS-terminated HTTP/1.1 and HTTP/2.
    Https,
}

/// One port of the proxy.
#[derive(Debug, Serialize)]
pub struct Listener {
    /// The port as declared in the Gateway (before `--port-map`).
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
    /// For HTTPS: which certificate serves which SNI names.
    pub tls_servers: Vec<TlsServer>,
    /// SNI lookup into `tls_servers`.
    pub sni: HostTable,
    /// Virtual hosts.
    pub virtual_hosts: Vec<VirtualHost>,
    /// Host lookup into `virtual_hosts`.
    pub hosts: HostTable,
}

/// An HTTPS server block: its SNI names and certificate.
#[derive(Debug, Serialize)]
pub struct TlsServer {
    /// Hosts (lowercase, `*.` wildcards allowed).
    pub hosts: Vec<String>,
    /// Index into `Snapshot::certificates`.
    pub certificate: usize,
    /// The Gateway server it came from.
    pub source: String,
}

/// Where a certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum CertificateSource {
    /// PEM held in a Secret of the bundle (private key never serialized).
    Inline {
        /// Certificate chain PEM.
        #[serde(skip)]
        cert_pem: Vec<u8>,
        /// Private key PEM.
        #[serde(skip)]
        key_pem: Vec<u8>,
    },
    /// PEM files read by the engine.
    Files {
        /// Certificate chain path.
        cert: String,
        /// Private key path.
        key: String,
    },
}

/// A server certificate.
#[derive(Debug, Clone, Serialize)]
pub struct Certificate {
    /// e.g. `secret default/app-example-com-tls` or `file /etc/certs/tls.crt`.
    pub name: String,
    /// Where it comes from.
    pub source: CertificateSource,
}

/// Exact, wildcard-suffix and catch-all host lookup.
#[derive(Debug, Default)]
pub struct HostTable {
    exact: HashMap<Box<str>, usize>,
    /// Keyed by the suffix with its dot: `*.example.com` -> `.example.com`.
    suffix: HashMap<Box<str>, usize>,
    any: Option<usize>,
}

impl HostTable {
    /// Adds `host` (lowercase; `*`, `*.suffix` or exact). The first entry for a key wins.
    pub fn insert(&mut self, host: &str, index: usize) -> bool {
        if host == "*" {
            let fresh = self.any.is_none();
            self.any.get_or_insert(index);
            return fresh;
        }
        let (map, key) = match host.strip_prefix('*') {
            Some(rest) => (&mut self.suffix, rest),
            None => (&mut self.exact, host),
        };
        if map.contains_key(key) {
            return false;
        }
        map.insert(key.into(), index);
        true
    }

    /// The most specific entry for `host` (lowercase, without port): exact, then the
    /// longest wildcard suffix, then `*`.
    pub fn lookup(&self, host: &str) -> Option<usize> {
        if let Some(i) = self.exact.get(host) {
            return Some(*i);
        }
        if !self.suffix.is_empty() {
            let mut rest = host;
            while let Some(dot) = rest.find('.') {
                let candidate = &rest[dot..];
                // A wildcard needs at least one character before the suffix.
                if candidate.len() < host.len() {
                    if let Some(i) = self.suffix.get(candidate) {
                        return Some(*i);
                    }
                }
                rest = &rest[dot + 1..];
            }
        }
        self.any
    }
}

impl Serialize for HostTable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut all: Vec<(String, usize)> = self.exact.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        all.extend(self.suffix.iter().map(|(k, v)| (format!("*{k}"), *v)));
        all.extend(self.any.map(|v| ("*".to_string(), v)));
        all.sort();
        s.collect_map(all)
    }
}

/// Routes for one domain on one listener.
#[derive(Debug, Serialize)]
pub struct VirtualHost {
    /// The domain (`app.example.com`, `*.example.com` or `*`).
    pub domain: String,
    /// For HTTPS listeners, the TLS server (certificate) that owns this domain.
    pub tls_server: Option<usize>,
    /// Plain-HTTP requests are redirected to HTTPS.
    pub https_redirect: bool,
    /// Routes in evaluation order.
    pub routes: Vec<Route>,
}

/// One compiled VirtualService HTTP rule.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    /// `name` of the rule, if any.
    pub name: Option<String>,
    /// The resource and rule it came from, e.g. `VirtualService default/app http[1]`.
    pub source: String,
    /// OR'd match blocks; empty matches everything.
    pub matches: Vec<RequestMatch>,
    /// What to do.
    pub action: Action,
    /// Header operations on the request.
    pub request_headers: HeaderOps,
    /// Header operations on the response.
    pub response_headers: HeaderOps,
}

/// One match block (AND of its conditions).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RequestMatch {
    /// Path match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<StrMatch>,
    /// Case-insensitive path match.
    pub ignore_uri_case: bool,
    /// Scheme match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StrMatch>,
    /// Method match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<StrMatch>,
    /// Authority match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<StrMatch>,
    /// Headers that must match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    /// Headers that must not match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub without_headers: Vec<HeaderMatch>,
    /// Query parameters that must match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<(String, StrMatch)>,
    /// Gateway port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// A header condition.
#[derive(Debug, Clone, Serialize)]
pub struct HeaderMatch {
    /// Lowercase header name.
    #[serde(serialize_with = "ser_name")]
    pub name: HeaderName,
    /// Value condition.
    pub matcher: StrMatch,
}

/// A compiled StringMatch.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StrMatch {
    /// Equal.
    Exact(String),
    /// Starts with (plain string).
    Prefix(String),
    /// Whole-value regex.
    /// Shared: identical patterns compile once, and a clone of a `Regex` would carry
    /// its own cache pool (about 2 KiB).
    Regex(#[serde(serialize_with = "ser_regex")] Arc<Regex>),
    /// Any value, as long as present.
    Present,
}

/// The action of a route.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Proxy to weighted clusters.
    Forward(Forward),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer with a fixed response.
    DirectResponse(DirectResponse),
}

/// Weighted forwarding.
#[derive(Debug, Clone, Serialize)]
pub struct Forward {
    /// Destinations with weights.
    pub destinations: Vec<WeightedCluster>,
    /// Sum of the weights.
    pub total_weight: u32,
    /// URI/authority rewrite.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
}

impl Forward {
    /// Picks a destination by weight with a thread-local random number (no locks).
    pub fn pick(&self) -> Option<&WeightedCluster> {
        self.pick_index().and_then(|i| self.destinations.get(i))
    }

    /// The index of a destination picked by weight.
    pub fn pick_index(&self) -> Option<usize> {
        let last = self.destinations.len().checked_sub(1)?;
        if last == 0 || self.total_weight == 0 {
            return Some(0);
        }
        let mut n = fastrand::u32(0..self.total_weight);
        for (i, d) in self.destinations.iter().enumerate() {
            if n < d.weight {
                return Some(i);
            }
            n -= d.weight;
        }
        Some(last)
    }
}

/// A destination with weight.
#[derive(Debug, Clone, Serialize)]
pub struct WeightedCluster {
    /// Index into `Snapshot::clusters`.
    pub cluster: usize,
    /// Relative weight.
    pub weight: u32,
    /// Request header operations for this destination.
    pub request_headers: HeaderOps,
    /// Response header operations for this destination.
    pub response_headers: HeaderOps,
}

/// A compiled rewrite.
#[derive(Debug, Clone, Serialize)]
pub struct Rewrite {
    /// Replacement for the matched prefix (prefix match) or the whole path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Regex rewrite of the path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri_regex: Option<RegexRewrite>,
    /// New Host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

/// A compiled regex rewrite.
#[derive(Debug, Clone, Serialize)]
pub struct RegexRewrite {
    /// Pattern.
    #[serde(serialize_with = "ser_regex")]
    pub pattern: Arc<Regex>,
    /// Replacement in `regex` crate syntax (`${1}`).
    pub replacement: String,
}

/// A redirect answer.
#[derive(Debug, Clone, Serialize)]
pub struct Redirect {
    /// New path (query kept unless it carries its own).
    pub uri: Option<String>,
    /// New authority.
    pub authority: Option<String>,
    /// New scheme.
    pub scheme: Option<String>,
    /// New port.
    pub port: Option<u16>,
    /// Keep the request's port.
    pub port_from_request: bool,
    /// Status code.
    pub code: u16,
}

/// A fixed answer.
#[derive(Debug, Clone, Serialize)]
pub struct DirectResponse {
    /// Status.
    pub status: u16,
    /// Body.
    #[serde(serialize_with = "ser_body")]
    pub body: bytes_body::Body,
}

/// Body bytes shared without copying per request.
pub mod bytes_body {
    /// An immutable body.
    pub type Body = std::sync::Arc<[u8]>;
}

/// Header operations, compiled to header names and values.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HeaderOps {
    /// Overwrite.
    #[serde(serialize_with = "ser_pairs", skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Append.
    #[serde(serialize_with = "ser_pairs", skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Remove.
    #[serde(serialize_with = "ser_names", skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<HeaderName>,
}

impl HeaderOps {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// An upstream service (host, port, subset) and its endpoints.
#[derive(Debug, Serialize)]
pub struct Cluster {
    /// Istio-style name: `outbound|8080|v1|backend.default.svc.cluster.local`.
    pub name: String,
    /// Service host.
    pub host: String,
    /// Service port.
    pub port: u16,
    /// Subset.
    pub subset: Option<String>,
    /// Endpoints.
    pub endpoints: Vec<Endpoint>,
    /// Round-robin position; per snapshot, so a reload starts it over.
    #[serde(skip)]
    pub next: AtomicUsize,
}

impl Cluster {
    /// The next endpoint in round-robin order.
    pub fn pick(&self) -> Option<&Endpoint> {
        match self.endpoints.len() {
            0 => None,
            1 => self.endpoints.first(),
            n => self.endpoints.get(self.next.fetch_add(1, Ordering::Relaxed) % n),
        }
    }
}

/// One upstream address.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    /// Address.
    pub address: SocketAddr,
    /// Labels.
    pub labels: Labels,
}

fn ser_regex<S: Serializer>(r: &Arc<Regex>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.as_str())
}

fn ser_name<S: Serializer>(n: &HeaderName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(n.as_str())
}

fn ser_names<S: Serializer>(v: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(HeaderName::as_str))
}

fn ser_pairs<S: Serializer>(v: &[(HeaderName, HeaderValue)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(
        v.iter()
            .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v.as_bytes()))),
    )
}

fn ser_body<S: Serializer>(b: &bytes_body::Body, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_table_prefers_exact_then_longest_wildcard() {
        let mut t = HostTable::default();
        t.insert("*", 0);
        t.insert("*.example.com", 1);
        t.insert("*.api.example.com", 2);
        t.insert("app.example.com", 3);
        assert_eq!(t.lookup("app.example.com"), Some(3));
        assert_eq!(t.lookup("x.api.example.com"), Some(2));
        assert_eq!(t.lookup("a.b.example.com"), Some(1));
        assert_eq!(t.lookup("example.com"), Some(0));
        assert_eq!(t.lookup("other.org"), Some(0));
    }

    #[test]
    fn wildcard_does_not_match_bare_suffix() {
        let mut t = HostTable::default();
        t.insert("*.example.com", 1);
        assert_eq!(t.lookup("example.com"), None);
        assert_eq!(t.lookup(".example.com"), None);
    }
}
