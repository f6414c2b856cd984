//! Upstream clusters of the snapshot: what a cluster is, its traffic policy (load
//! balancing, limits, outlier detection, TLS) and its endpoints.

use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderName;
use serde::Serialize;

use crate::resources::networking::Labels;
use crate::ser::{ser_duration, ser_len, ser_name, ser_opt_duration};

use super::UpstreamTls;

/// An upstream service (host, port, subset); its endpoints are in `Endpoints`.
#[derive(Debug, Clone, Serialize)]
pub struct Cluster {
    /// Istio-style name: `outbound|8080|v1|backend.default.svc.cluster.local`.
    pub name: String,
    /// Service host.
    pub host: String,
    /// Service port.
    pub port: u16,
    /// Subset.
    pub subset: Option<String>,
    /// What it is: where its endpoints come from.
    pub kind: ClusterKind,
    /// Load balancing, limits and outlier detection from the DestinationRule.
    pub policy: ClusterPolicy,
}

/// What a cluster is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClusterKind {
    /// Endpoints with addresses (ServiceEntry STATIC, EndpointSlices, WorkloadEntries).
    Static,
    /// Endpoints named by host, resolved by the engine (ServiceEntry DNS).
    Dns,
    /// The address the client connected to (a sidecar's passthrough).
    OriginalDestination,
    /// The workload beside the proxy, on this port (a sidecar's inbound).
    LocalWorkload,
    /// A host outside the registry under REGISTRY_ONLY: requests get 502.
    Blackhole,
    /// The share of a Gateway API rule's backends that do not resolve: requests get
    /// 500 (connections are closed), as the specification asks.
    InvalidBackend,
}

impl Cluster {
    /// A stable key for the cluster's connection pool: connections are never shared
    /// between clusters (two clusters may reach one address with different TLS roots).
    pub fn pool_key(&self) -> u64 {
        hash_bytes(self.name.as_bytes())
    }
}

/// How a cluster is used: Istio's DestinationRule traffic policy, compiled.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterPolicy {
    /// Endpoint choice.
    pub lb: LoadBalancer,
    /// Connect timeout (the engine's default when None).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_opt_duration")]
    pub connect_timeout: Option<Duration>,
    /// Idle timeout of pooled upstream connections.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_opt_duration")]
    pub idle_timeout: Option<Duration>,
    /// Concurrency limits.
    pub limits: PoolLimits,
    /// Passive health checking.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outlier: Option<Outlier>,
    /// Speak HTTP/2 to the upstream (h2UpgradePolicy UPGRADE).
    pub h2_upstream: bool,
    /// TLS to the upstream (DestinationRule `tls` SIMPLE or MUTUAL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
    /// Whether connections speak the mesh's mTLS (with the proxy's workload identity).
    pub mesh_tls: super::MeshTls,
}

/// Endpoint choice.
#[derive(Debug, Clone, Default, Serialize)]
pub enum LoadBalancer {
    /// In turn.
    #[serde(rename = "ROUND_ROBIN")]
    RoundRobin,
    /// The less busy of two random endpoints (Istio's default).
    #[default]
    #[serde(rename = "LEAST_REQUEST")]
    LeastRequest,
    /// At random.
    #[serde(rename = "RANDOM")]
    Random,
    /// The original destination (sidecars); at a gateway, treated as LEAST_REQUEST.
    #[serde(rename = "PASSTHROUGH")]
    Passthrough,
    /// By a hash of the request.
    #[serde(rename = "CONSISTENT_HASH")]
    Hash(Box<HashPolicy>),
}

impl LoadBalancer {
    /// Istio's name of the policy.
    pub fn name(&self) -> &'static str {
        match self {
            LoadBalancer::RoundRobin => "ROUND_ROBIN",
            LoadBalancer::LeastRequest => "LEAST_REQUEST",
            LoadBalancer::Random => "RANDOM",
            LoadBalancer::Passthrough => "PASSTHROUGH",
            LoadBalancer::Hash(_) => "CONSISTENT_HASH",
        }
    }
}

/// Consistent hashing: what is hashed, and the kind of table that maps hashes to
/// endpoints (the table itself is built from the endpoints: `HashTable`).
#[derive(Debug, Clone, Serialize)]
pub struct HashPolicy {
    /// The hashed part of the request.
    pub key: HashKey,
    /// Hash to endpoint.
    pub table: HashTableKind,
}

/// Which consistent-hash table, with its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashTableKind {
    /// Ketama ring with at least this many points.
    Ring {
        /// Minimum number of points.
        min_size: usize,
    },
    /// Maglev table of this (prime) size.
    Maglev {
        /// Entries.
        size: u32,
    },
}

impl HashTableKind {
    /// The table for `endpoints`.
    pub fn build(self, endpoints: &[Endpoint]) -> HashTable {
        match self {
            HashTableKind::Ring { min_size } => HashTable::ring(endpoints, min_size),
            HashTableKind::Maglev { size } => HashTable::maglev(endpoints, size),
        }
    }
}

/// The part of a request that is hashed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashKey {
    /// A request header.
    Header(#[serde(serialize_with = "ser_name")] HeaderName),
    /// A cookie, set by the gateway when absent if a ttl is given.
    Cookie {
        /// Cookie name.
        name: String,
        /// Cookie path.
        path: Option<String>,
        /// Lifetime of a generated cookie (0: a session cookie).
        #[serde(serialize_with = "ser_opt_duration")]
        ttl: Option<Duration>,
    },
    /// The client address.
    SourceIp,
    /// A query parameter.
    QueryParameter(String),
}

/// Hash to endpoint index.
#[derive(Debug, Clone, Serialize)]
pub enum HashTable {
    /// Ketama ring: sorted (point, endpoint) pairs.
    Ring(#[serde(serialize_with = "ser_len")] Vec<(u64, u32)>),
    /// Maglev lookup table.
    Maglev(#[serde(serialize_with = "ser_len")] Vec<u32>),
}

impl HashTable {
    /// A ring with at least `min_size` points, the same number per endpoint.
    pub fn ring(endpoints: &[Endpoint], min_size: usize) -> HashTable {
        let per = min_size.div_ceil(endpoints.len().max(1));
        let mut ring = Vec::with_capacity(per * endpoints.len());
        for (i, e) in endpoints.iter().enumerate() {
            let name = e.address.to_string();
            for replica in 0..per {
                let point = hash_bytes(format!("{name}_{replica}").as_bytes());
                ring.push((point, u32::try_from(i).unwrap_or(u32::MAX)));
            }
        }
        ring.sort_unstable();
        HashTable::Ring(ring)
    }

    /// A Maglev table of `size` (a prime) entries.
    pub fn maglev(endpoints: &[Endpoint], size: u32) -> HashTable {
        let n = endpoints.len();
        if n == 0 {
            return HashTable::Maglev(Vec::new());
        }
        let m = u64::from(size);
        let perms: Vec<(u64, u64)> = endpoints
            .iter()
            .map(|e| {
                let name = e.address.to_string();
                let offset = hash_bytes(name.as_bytes()) % m;
                let skip = hash_bytes(format!("{name}#skip").as_bytes()) % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        let mut table = vec![u32::MAX; size as usize];
        let mut next = vec![0u64; n];
        let mut filled = 0usize;
        'fill: loop {
            for (i, (offset, skip)) in perms.iter().enumerate() {
                let mut c = (offset + next[i] * skip) % m;
                while table[c as usize] != u32::MAX {
                    next[i] += 1;
                    c = (offset + next[i] * skip) % m;
                }
                table[c as usize] = u32::try_from(i).unwrap_or(u32::MAX);
                next[i] += 1;
                filled += 1;
                if filled == table.len() {
                    break 'fill;
                }
            }
        }
        HashTable::Maglev(table)
    }

    /// The endpoint index for `hash`.
    pub fn lookup(&self, hash: u64) -> Option<usize> {
        match self {
            HashTable::Ring(ring) => {
                let i = ring.partition_point(|(p, _)| *p < hash);
                ring.get(i).or(ring.first()).map(|(_, e)| *e as usize)
            }
            HashTable::Maglev(table) => {
                let len = table.len() as u64;
                (len > 0).then(|| table[(hash % len) as usize] as usize)
            }
        }
    }

    /// The endpoint index for `hash`, skipping endpoints `skip` refuses (ejected or
    /// already tried): the next distinct endpoint along the ring (or table).
    pub fn lookup_where(&self, hash: u64, mut accept: impl FnMut(usize) -> bool) -> Option<usize> {
        match self {
            HashTable::Ring(ring) => {
                let start = ring.partition_point(|(p, _)| *p < hash);
                (0..ring.len().min(4096))
                    .map(|k| ring[(start + k) % ring.len()].1 as usize)
                    .find(|e| accept(*e))
            }
            HashTable::Maglev(table) => {
                let len = table.len();
                let start = (hash % (len.max(1) as u64)) as usize;
                (0..len.min(4096))
                    .map(|k| table[(start + k) % len] as usize)
                    .find(|e| accept(*e))
            }
        }
    }
}

/// A stable 64-bit hash (FNV-1a with a final avalanche): the same key maps to the
/// same endpoint on every replica and after every restart.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Concurrency limits from connectionPool.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PoolLimits {
    /// Connections (= concurrent HTTP/1 requests) to the cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Requests allowed to wait for a connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pending: Option<u32>,
    /// Concurrent requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
    /// Requests per upstream connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<u32>,
    /// Concurrent retries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
}

/// Outlier detection settings.
#[derive(Debug, Clone, Serialize)]
pub struct Outlier {
    /// Consecutive 5xx (and connect failures) before ejection.
    pub consecutive_5xx: Option<u32>,
    /// Consecutive 502/503/504 (and connect failures) before ejection.
    pub consecutive_gateway: Option<u32>,
    /// How often ejections are reviewed.
    #[serde(serialize_with = "ser_duration")]
    pub interval: Duration,
    /// Ejection time, times the number of ejections so far.
    #[serde(serialize_with = "ser_duration")]
    pub base_ejection_time: Duration,
    /// Most endpoints ejected at once, in percent.
    pub max_ejection_percent: u32,
    /// Below this share of healthy endpoints, ejections are ignored.
    pub min_health_percent: u32,
}

/// The endpoints of every cluster of a snapshot, index-aligned with
/// `Snapshot::clusters`. They change on their own (pods come and go), so they are
/// kept and swapped apart from the snapshot: pod churn never rebuilds routes,
/// policies or certificates.
#[derive(Debug, Default, Serialize)]
pub struct Endpoints {
    /// Per cluster, in the snapshot's order.
    pub clusters: Vec<ClusterEndpoints>,
}

/// The endpoints of one cluster.
#[derive(Debug, Default, Serialize)]
pub struct ClusterEndpoints {
    /// The addresses.
    pub endpoints: Vec<Endpoint>,
    /// The consistent-hash table over `endpoints`, for CONSISTENT_HASH clusters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_table: Option<HashTable>,
}

impl ClusterEndpoints {
    /// `endpoints` of a cluster with `policy` (whose balancer may need a table).
    pub fn new(endpoints: Vec<Endpoint>, policy: &ClusterPolicy) -> ClusterEndpoints {
        let hash_table = match &policy.lb {
            LoadBalancer::Hash(h) => Some(h.table.build(&endpoints)),
            _ => None,
        };
        ClusterEndpoints { endpoints, hash_table }
    }
}

/// One upstream address.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    /// Address (for DNS endpoints, the unspecified address with the port).
    pub address: SocketAddr,
    /// A name the engine resolves (ServiceEntry resolution DNS), cached for its TTL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Labels.
    pub labels: Labels,
    /// The workload it belongs to, for metrics (a WorkloadEntry's name, as Istio names
    /// it, or the Pod's behind a Service endpoint, where Istio names the Pod's owner);
    /// None when unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(n: u16) -> Vec<Endpoint> {
        (0..n)
            .map(|i| Endpoint {
                address: ([10, 0, 0, 1], 8000 + i).into(),
                hostname: None,
                labels: Default::default(),
                workload: None,
            })
            .collect()
    }

    #[test]
    fn hash_tables_spread_and_stay_put() {
        for table in [
            HashTable::ring(&endpoints(4), 1024),
            HashTable::maglev(&endpoints(4), 65537),
        ] {
            let mut hits = [0u32; 4];
            for key in 0..4000u64 {
                let i = table.lookup(hash_bytes(&key.to_le_bytes())).expect("endpoint");
                hits[i] += 1;
            }
            assert!(hits.iter().all(|h| (600..=1400).contains(h)), "{hits:?}");
            // One endpoint fewer moves only the keys that were on it (maglev: nearly so).
            let smaller = match &table {
                HashTable::Ring(_) => HashTable::ring(&endpoints(3), 1024),
                HashTable::Maglev(_) => HashTable::maglev(&endpoints(3), 65537),
            };
            let moved = (0..4000u64)
                .filter(|k| {
                    let h = hash_bytes(&k.to_le_bytes());
                    let before = table.lookup(h).expect("endpoint");
                    before != 3 && smaller.lookup(h) != Some(before)
                })
                .count();
            assert!(moved < 400, "{moved} keys moved off surviving endpoints");
        }
    }
}
