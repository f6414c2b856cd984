//! Strait's own kinds (`strait.io/v1alpha1`), for what Istio has no API for.

use serde::{Deserialize, Serialize};

/// A local rate limit on the routes of a VirtualService: a token bucket of
/// `requests` per `per` for each key (client address by default).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RateLimitSpec {
    /// The VirtualService, in the same namespace.
    pub virtual_service: String,
    /// Names of its `http` rules to limit; all of them when empty.
    pub routes: Vec<String>,
    /// Requests allowed per period, per key (also the burst).
    pub requests: Option<i64>,
    /// The period, e.g. `1s`, `1m`.
    pub per: Option<String>,
    /// What the buckets are kept per.
    pub key: Option<RateLimitKey>,
}

/// The key of the buckets: exactly one field.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RateLimitKey {
    /// One bucket per client address (`remote.ip`).
    pub client_ip: Option<bool>,
    /// One bucket per value of this request header.
    pub header: Option<String>,
    /// One bucket per value of this JWT claim.
    pub claim: Option<String>,
}
