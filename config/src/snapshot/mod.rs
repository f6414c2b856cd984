//! The compiled, immutable configuration an engine serves from. Everything the
//! request path needs (regexes, weights, header names) is built here, before the
//! swap; it serializes to what `/config_dump` shows.
//!
//! The types sit below the compilers that build them (`compile`, `translate`): this
//! module and its children use only leaves and the other model modules.

mod cluster;
mod host_table;
mod mtls;
mod route;
mod tls;

pub use cluster::*;
pub use host_table::HostTable;
pub use mtls::*;
pub use route::*;
pub use tls::*;

use serde::Serialize;

/// A complete configuration for one proxy.
#[derive(Debug, Default, Serialize)]
pub struct Snapshot {
    /// Increases with every accepted configuration.
    pub version: u64,
    /// The files it was built from.
    pub sources: Vec<String>,
    /// Listeners by port and address.
    pub listeners: Vec<Listener>,
    /// Upstream clusters, referenced by index from routes.
    pub clusters: Vec<Cluster>,
    /// Server certificates, referenced by index from listeners.
    pub certificates: Vec<Certificate>,
    /// HTTP policies, referenced by index from the listeners that apply them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<HttpPolicy>,
    /// Server certificates to obtain and renew with ACME.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub acme: Vec<crate::acme::ManagedCert>,
    /// Answers to the ACME challenges a controller is being asked (gateways answer
    /// them for it).
    #[serde(skip_serializing_if = "crate::acme::Answers::is_empty")]
    pub acme_answers: crate::acme::Answers,
    /// The cluster of the tracing provider's service when the registry defines it
    /// (spans go to its endpoints, as Istio resolves extension providers); None:
    /// the provider's host is resolved by DNS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing_cluster: Option<usize>,
}

/// What a listener checks before routing: RequestAuthentication (JWT), then
/// AuthorizationPolicy with its external authorizers.
#[derive(Debug, Default, Serialize)]
pub struct HttpPolicy {
    /// JWT providers that apply.
    #[serde(skip_serializing_if = "crate::jwt::JwtAuth::is_empty")]
    pub jwt: crate::jwt::JwtAuth,
    /// AuthorizationPolicies that apply.
    #[serde(skip_serializing_if = "crate::authz::Authz::is_empty")]
    pub authz: crate::authz::Authz,
    /// External authorizers the CUSTOM policies name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ext_authz: Vec<ExtAuthz>,
}

impl HttpPolicy {
    /// Whether there is nothing to check.
    pub fn is_empty(&self) -> bool {
        self.jwt.is_empty() && self.authz.is_empty()
    }
}

/// An external authorizer and the cluster serving it.
#[derive(Debug, Clone, Serialize)]
pub struct ExtAuthz {
    /// Its settings from the mesh config.
    pub provider: crate::ext_authz::Provider,
    /// Index into `Snapshot::clusters`.
    pub cluster: usize,
}

impl Snapshot {
    /// The listener for a port (of any address).
    pub fn listener(&self, port: u16) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.port == port)
    }

    /// The HTTP policy `listener` applies, if any.
    pub fn policy(&self, listener: &Listener) -> Option<&HttpPolicy> {
        self.policies.get(listener.policy?)
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
    /// Plain TCP, proxied by `tcp` routes.
    Tcp,
    /// TLS passed through unopened, routed by SNI (`tls` routes).
    #[serde(rename = "TLS_PASSTHROUGH")]
    TlsPassthrough,
}

/// One port (and address) of the proxy.
#[derive(Debug, Serialize)]
pub struct Listener {
    /// The port as declared (for gateways, before `--port-map`).
    pub port: u16,
    /// The address it is for; None: every address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::IpAddr>,
    /// Protocol.
    pub protocol: Protocol,
    /// The HTTP policy it applies: index into `Snapshot::policies`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<usize>,
    /// For HTTPS: which certificate serves which SNI names.
    pub tls_servers: Vec<TlsServer>,
    /// SNI lookup into `tls_servers`.
    pub sni: HostTable,
    /// Virtual hosts.
    pub virtual_hosts: Vec<VirtualHost>,
    /// Host lookup into `virtual_hosts`.
    pub hosts: HostTable,
    /// TCP and TLS routes, in order (TCP and TLS_PASSTHROUGH listeners).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub l4_routes: Vec<L4Route>,
    /// A sidecar's inbound listener: the mTLS its workload accepts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtls: Option<InboundMtls>,
}

impl Listener {
    /// An empty listener on `port` (every address).
    pub fn new(port: u16, protocol: Protocol) -> Listener {
        Listener {
            port,
            address: None,
            protocol,
            policy: None,
            tls_servers: Vec::new(),
            sni: HostTable::default(),
            virtual_hosts: Vec::new(),
            hosts: HostTable::default(),
            l4_routes: Vec::new(),
            mtls: None,
        }
    }
}

/// A TCP route, or a TLS route matching SNI names.
#[derive(Debug, Clone, Serialize)]
pub struct L4Route {
    /// The resource and rule it came from.
    pub source: String,
    /// SNI names (`*.suffix` allowed) for TLS routes; empty matches every connection.
    pub sni_hosts: Vec<String>,
    /// Destinations with weights.
    pub destinations: Vec<WeightedCluster>,
    /// Sum of the weights.
    pub total_weight: u32,
}

impl L4Route {
    /// Whether a connection with `sni` (lowercase; None when the client sent none) matches.
    pub fn matches_sni(&self, sni: Option<&str>) -> bool {
        self.sni_hosts.is_empty()
            || sni.is_some_and(|sni| {
                self.sni_hosts.iter().any(|h| match h.strip_prefix('*') {
                    Some(suffix) => sni.len() > suffix.len() && sni.ends_with(suffix),
                    None => h == sni,
                })
            })
    }

    /// A destination picked by weight.
    pub fn pick(&self) -> Option<&WeightedCluster> {
        pick_weighted(&self.destinations, self.total_weight).and_then(|i| self.destinations.get(i))
    }
}
