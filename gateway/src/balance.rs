//! Endpoint choice by the cluster's load balancer, skipping ejected endpoints
//! (unless too few are healthy) and, for retries, endpoints already tried.

use std::sync::atomic::Ordering;

use strait_config::snapshot::{Cluster, ClusterEndpoints, LoadBalancer};

use crate::upstreams::{now_ms, ClusterState};

/// Picks an endpoint index. `hash` is the request's hash for consistent hashing
/// (None: no key, pick at random as Envoy does); `tried` tells endpoints already
/// used by this request.
pub fn choose(
    cluster: &Cluster,
    endpoints: &ClusterEndpoints,
    state: &ClusterState,
    hash: Option<u64>,
    tried: impl Fn(usize) -> bool,
) -> Option<usize> {
    let n = endpoints.endpoints.len();
    match n {
        0 => return None,
        1 => return Some(0),
        _ => {}
    }
    let now = now_ms();
    let panic = state.panic_mode(cluster.policy.outlier.as_ref(), now);
    let healthy = |i: usize| panic || !state.endpoints.get(i).is_some_and(|e| e.ejected(now));
    // Prefer healthy and untried; then healthy; then anything.
    let tiers: [&dyn Fn(usize) -> bool; 3] = [&|i| healthy(i) && !tried(i), &healthy, &|_| true];
    for accept in tiers {
        if let Some(i) = pick(cluster, endpoints, state, hash, accept) {
            return Some(i);
        }
    }
    None
}

fn pick(
    cluster: &Cluster,
    endpoints: &ClusterEndpoints,
    state: &ClusterState,
    hash: Option<u64>,
    accept: &dyn Fn(usize) -> bool,
) -> Option<usize> {
    let n = endpoints.endpoints.len();
    match (&cluster.policy.lb, hash) {
        (LoadBalancer::Hash(_), Some(hash)) => endpoints.hash_table.as_ref()?.lookup_where(hash, accept),
        (LoadBalancer::RoundRobin, _) => {
            // The next endpoint in turn that `accept` takes, each looked at once.
            let start = state.next.fetch_add(1, Ordering::Relaxed);
            (0..n).map(|k| (start + k) % n).find(|i| accept(*i))
        }
        (LoadBalancer::LeastRequest | LoadBalancer::Passthrough, _) => {
            let a = random_accepted(n, accept)?;
            let Some(b) = random_accepted(n, &|i| i != a && accept(i)) else {
                return Some(a);
            };
            let load = |i: usize| state.endpoints.get(i).map_or(0, |e| e.active.load(Ordering::Relaxed));
            Some(if load(b) < load(a) { b } else { a })
        }
        (LoadBalancer::Random | LoadBalancer::Hash(_), _) => random_accepted(n, accept),
    }
}

/// A random accepted index: a few random draws, then a scan from a random start.
fn random_accepted(n: usize, accept: &dyn Fn(usize) -> bool) -> Option<usize> {
    for _ in 0..4 {
        let i = fastrand::usize(0..n);
        if accept(i) {
            return Some(i);
        }
    }
    let start = fastrand::usize(0..n);
    (0..n).map(|k| (start + k) % n).find(|i| accept(*i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstreams::Upstreams;
    use strait_config::snapshot::{
        ClusterKind, ClusterPolicy, Endpoint, Endpoints, HashKey, HashPolicy, HashTableKind,
    };

    /// A cluster of three endpoints with `lb`, its endpoints, and their state.
    fn cluster(lb: LoadBalancer) -> (Cluster, ClusterEndpoints, std::sync::Arc<ClusterState>) {
        let endpoints: Vec<Endpoint> = (0..3u16)
            .map(|i| Endpoint {
                address: ([127, 0, 0, 1], 9000 + i).into(),
                hostname: None,
                labels: Default::default(),
                workload: None,
            })
            .collect();
        let cluster = Cluster {
            name: "outbound|80||svc".into(),
            host: "svc".into(),
            port: 80,
            subset: None,
            kind: ClusterKind::Static,
            policy: ClusterPolicy {
                lb,
                ..ClusterPolicy::default()
            },
        };
        let eps = ClusterEndpoints::new(endpoints, &cluster.policy);
        let snapshot = strait_config::Snapshot {
            version: 1,
            clusters: vec![Cluster {
                name: cluster.name.clone(),
                ..cluster.clone()
            }],
            ..Default::default()
        };
        let table = Endpoints {
            clusters: vec![ClusterEndpoints {
                endpoints: eps.endpoints.clone(),
                hash_table: None,
            }],
        };
        let state = Upstreams::build(&snapshot, &table, None).clusters.remove(0);
        (cluster, eps, state)
    }

    #[test]
    fn round_robin_skips_tried_endpoints() {
        let (c, e, s) = cluster(LoadBalancer::RoundRobin);
        let picks: Vec<usize> = (0..6).filter_map(|_| choose(&c, &e, &s, None, |_| false)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        assert_eq!(choose(&c, &e, &s, None, |i| i == 0), Some(1));
    }

    #[test]
    fn least_request_prefers_the_idle_endpoint() {
        let (c, e, s) = cluster(LoadBalancer::LeastRequest);
        s.endpoints[0].active.store(50, Ordering::Relaxed);
        s.endpoints[1].active.store(50, Ordering::Relaxed);
        let idle = (0..300)
            .filter(|_| choose(&c, &e, &s, None, |_| false) == Some(2))
            .count();
        // Endpoint 2 wins whenever it is one of the two drawn: 2/3 of the time.
        assert!(idle > 150, "{idle}");
    }

    #[test]
    fn hash_keeps_a_key_on_one_endpoint() {
        let lb = LoadBalancer::Hash(Box::new(HashPolicy {
            key: HashKey::SourceIp,
            table: HashTableKind::Ring { min_size: 1024 },
        }));
        let (c, e, s) = cluster(lb);
        assert!(e.hash_table.is_some(), "the table is built with the endpoints");
        let first = choose(&c, &e, &s, Some(42), |_| false);
        assert!((0..100).all(|_| choose(&c, &e, &s, Some(42), |_| false) == first));
        let other = choose(&c, &e, &s, Some(42), |i| Some(i) == first);
        assert!(other.is_some() && other != first, "a retry goes elsewhere");
    }
}
