//! The parts of a DestinationRule traffic policy that Strait checks as Istio does
//! but does not act on yet: locality and zone-aware balancing, slow start, keep-alives,
//! tunnels, PROXY protocol and cookie attributes. Typed so that their fields can be
//! validated field by field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Locality-weighted balancing and failover.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LocalityLbSetting {
    /// Traffic shares from a locality to others.
    pub distribute: Vec<LocalityDistribute>,
    /// Region to fail over to, per region.
    pub failover: Vec<LocalityFailover>,
    /// Labels whose matching endpoints are preferred, in order.
    pub failover_priority: Vec<String>,
    /// Whether locality balancing is on.
    pub enabled: Option<bool>,
}

/// Shares of traffic from one locality.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LocalityDistribute {
    /// `region/zone/subzone`, with an optional trailing `*`.
    pub from: String,
    /// Locality to percentage (they add up to 100).
    pub to: BTreeMap<String, i64>,
}

/// One failover pair of regions.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LocalityFailover {
    /// The region that fails.
    pub from: String,
    /// The region taking over.
    pub to: String,
}

/// Zone-aware balancing (Envoy's), an alternative to the locality settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ZoneAwareLbSetting {
    /// Whether zone-aware balancing is on.
    pub enabled: Option<bool>,
    /// Smallest cluster balanced by zone.
    pub min_cluster_size: Option<i64>,
    /// Region to fail over to, per region.
    pub failover: Vec<LocalityFailover>,
    /// Labels whose matching endpoints are preferred, in order.
    pub failover_priority: Vec<String>,
}

/// Slow start for new endpoints.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Warmup {
    /// How long an endpoint warms up.
    pub duration: Option<String>,
    /// Share of its weight an endpoint starts with.
    pub minimum_percent: Option<f64>,
    /// How fast the weight grows.
    pub aggression: Option<f64>,
}

/// An attribute of a generated hash cookie.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CookieAttribute {
    /// Attribute name, e.g. `SameSite`.
    pub name: String,
    /// Attribute value.
    pub value: Option<String>,
}

/// HTTP/2 PING keep-alive of upstream connections.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Http2KeepAlive {
    /// Time between PINGs.
    pub interval: Option<String>,
    /// Time to wait for the answer.
    pub timeout: Option<String>,
}

/// TCP keep-alive of upstream connections.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TcpKeepalive {
    /// Probes before the connection is dropped.
    pub probes: Option<i64>,
    /// Idle time before probes start.
    pub time: Option<String>,
    /// Time between probes.
    pub interval: Option<String>,
}

/// Tunnelling upstream connections through a proxy.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Tunnel {
    /// CONNECT (default) or POST.
    pub protocol: Option<String>,
    /// The tunnel's target host.
    pub target_host: Option<String>,
    /// The tunnel's target port.
    pub target_port: Option<i64>,
}

/// PROXY protocol sent to upstreams.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyProtocol {
    /// V1 or V2.
    pub version: Option<String>,
}
