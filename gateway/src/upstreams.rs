//! Runtime state of clusters and endpoints, beside the immutable snapshot:
//! requests in flight, outcome counters, outlier ejections and the connection
//! limit. It is index-aligned with `Snapshot::clusters` for lock-free access on
//! the request path, and a reload hands the state of every endpoint that is still
//! there (same cluster name and address) to the new configuration.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use strait_config::snapshot::{Cluster, ClusterEndpoints, ClusterPolicy, Endpoints, Outlier};
use strait_config::Snapshot;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Milliseconds since the process started: the clock of ejections.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What a try of a request came to, for outlier detection and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status.
    Status(u16),
    /// A TCP connection was made (TCP and TLS-passthrough routes, which see no status).
    Connected,
    /// Connect failure, reset or timeout: no answer.
    LocalFailure,
}

/// One endpoint's state.
#[derive(Debug, Serialize)]
pub struct EndpointState {
    /// Address.
    pub address: SocketAddr,
    /// Requests in flight.
    pub active: AtomicU32,
    /// Tries sent.
    pub requests: AtomicU64,
    /// Tries that ended in a 5xx or no answer.
    pub failures: AtomicU64,
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    /// End of the current ejection, in `now_ms` time (0: never ejected).
    ejected_until_ms: AtomicU64,
    /// Times ejected; each ejection lasts this many base ejection times.
    pub ejections: AtomicU32,
}

impl EndpointState {
    fn new(address: SocketAddr) -> EndpointState {
        EndpointState {
            address,
            active: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
        }
    }

    /// Whether the endpoint is ejected at `now` (ms).
    pub fn ejected(&self, now: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now
    }
}

/// Counts a request in flight on an endpoint until dropped.
#[derive(Debug)]
pub struct ActiveGuard(Arc<EndpointState>);

impl ActiveGuard {
    /// Starts counting a try on `endpoint`.
    pub fn new(endpoint: &Arc<EndpointState>) -> ActiveGuard {
        endpoint.active.fetch_add(1, Ordering::Relaxed);
        endpoint.requests.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(endpoint.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request was refused by the cluster's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

/// A cluster's state.
#[derive(Debug)]
pub struct ClusterState {
    /// Cluster name.
    pub name: String,
    /// The connection pool's key, hashed once here rather than per request.
    pub pool_key: u64,
    /// Endpoints, in the order of the cluster's `ClusterEndpoints`.
    pub endpoints: Vec<Arc<EndpointState>>,
    /// Requests admitted and not finished.
    pub active: Arc<AtomicU32>,
    /// Requests waiting for a connection slot.
    pub pending: AtomicU32,
    /// Requests refused by the limits (Envoy's upstream_rq_pending_overflow).
    pub overflows: AtomicU64,
    /// Upstream connections that failed (Envoy's upstream_cx_connect_fail).
    pub connect_failures: AtomicU64,
    /// Tries after the first (Envoy's upstream_rq_retry).
    pub retries: AtomicU64,
    /// One permit per allowed connection (maxConnections), if limited.
    slots: Option<(u32, Arc<Semaphore>)>,
    /// Round-robin position (each new state starts it over).
    pub next: std::sync::atomic::AtomicUsize,
    /// Requests sent per upstream connection (by file descriptor), kept only when
    /// maxRequestsPerConnection is set.
    per_connection: std::sync::Mutex<HashMap<i32, u32>>,
}

/// A request's place in its cluster's limits, released when dropped.
#[derive(Debug)]
pub struct Admission {
    _slot: Option<OwnedSemaphorePermit>,
    active: Arc<AtomicU32>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ClusterState {
    /// Admits a request under connectionPool limits: at most `http2MaxRequests` in
    /// flight; at most `maxConnections` using a connection, with up to
    /// `http1MaxPendingRequests` waiting for one. Beyond that: overflow, at once.
    pub async fn admit(&self, policy: &ClusterPolicy) -> Result<Admission, Overflow> {
        let limits = &policy.limits;
        let active = self.active.fetch_add(1, Ordering::Relaxed);
        let admission = |slot| Admission {
            _slot: slot,
            active: self.active.clone(),
        };
        if limits.max_requests.is_some_and(|max| active >= max) {
            drop(admission(None));
            return self.overflow();
        }
        let Some((_, slots)) = &self.slots else {
            return Ok(admission(None));
        };
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            return Ok(admission(Some(permit)));
        }
        let waiting = self.pending.fetch_add(1, Ordering::Relaxed);
        if waiting >= limits.max_pending.unwrap_or(u32::MAX) {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            drop(admission(None));
            return self.overflow();
        }
        let permit = slots.clone().acquire_owned().await;
        self.pending.fetch_sub(1, Ordering::Relaxed);
        match permit {
            Ok(p) => Ok(admission(Some(p))),
            Err(_) => {
                drop(admission(None));
                self.overflow()
            }
        }
    }

    /// Counts a request on the connection `fd` (`reused`: not new). True when it is
    /// the last one maxRequestsPerConnection allows: the request then asks the
    /// upstream to close the connection, so it is never reused.
    pub fn last_on_connection(&self, policy: &ClusterPolicy, fd: i32, reused: bool) -> bool {
        let Some(max) = policy.limits.max_requests_per_connection.filter(|m| *m > 0) else {
            return false;
        };
        let mut counts = self.per_connection.lock().unwrap_or_else(|p| p.into_inner());
        let n = if reused {
            let n = counts.entry(fd).or_insert(0);
            *n += 1;
            *n
        } else {
            counts.insert(fd, 1);
            1
        };
        if n >= max {
            counts.remove(&fd);
            true
        } else {
            false
        }
    }

    fn overflow(&self) -> Result<Admission, Overflow> {
        self.overflows.fetch_add(1, Ordering::Relaxed);
        Err(Overflow)
    }

    /// Whether ejections are ignored because too few endpoints are healthy
    /// (minHealthPercent, Envoy's panic threshold).
    pub fn panic_mode(&self, outlier: Option<&Outlier>, now: u64) -> bool {
        let Some(o) = outlier else { return false };
        let n = self.endpoints.len();
        if n == 0 || o.min_health_percent == 0 {
            return false;
        }
        let healthy = self.endpoints.iter().filter(|e| !e.ejected(now)).count();
        healthy * 100 < n * o.min_health_percent as usize
    }

    /// Records the outcome of a try on endpoint `index` and ejects it when it
    /// crossed a consecutive-error threshold (within maxEjectionPercent, though
    /// one endpoint may always be ejected, as in Envoy).
    pub fn record(&self, policy: &ClusterPolicy, index: usize, outcome: Outcome) {
        let Some(e) = self.endpoints.get(index) else { return };
        let (five_xx, gateway) = match outcome {
            Outcome::Status(s) => (s >= 500, matches!(s, 502..=504)),
            Outcome::Connected => (false, false),
            Outcome::LocalFailure => (true, true),
        };
        if five_xx {
            e.failures.fetch_add(1, Ordering::Relaxed);
        }
        let Some(o) = &policy.outlier else { return };
        let c5 = if five_xx {
            e.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            e.consecutive_5xx.store(0, Ordering::Relaxed);
            0
        };
        let cg = if gateway {
            e.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            e.consecutive_gateway.store(0, Ordering::Relaxed);
            0
        };
        let tripped = o.consecutive_5xx.is_some_and(|n| c5 >= n) || o.consecutive_gateway.is_some_and(|n| cg >= n);
        if !tripped {
            return;
        }
        let now = now_ms();
        if e.ejected(now) {
            return;
        }
        let n = self.endpoints.len();
        let ejected = self.endpoints.iter().filter(|x| x.ejected(now)).count();
        let allowed = (n * o.max_ejection_percent as usize / 100).max(1);
        if ejected >= allowed {
            return;
        }
        let times = e.ejections.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        // Envoy caps an ejection at max_ejection_time, 300 s by default.
        // Saturating: base_ejection_time comes from the config and `times` only grows.
        let length =
            (o.base_ejection_time.saturating_mul(times)).min(Duration::from_secs(300).max(o.base_ejection_time));
        e.ejected_until_ms.store(
            now.saturating_add(u64::try_from(length.as_millis()).unwrap_or(u64::MAX)),
            Ordering::Relaxed,
        );
        e.consecutive_5xx.store(0, Ordering::Relaxed);
        e.consecutive_gateway.store(0, Ordering::Relaxed);
        log::warn!(
            "outlier detection: ejected {} from {} for {:?} (ejection {times})",
            e.address,
            self.name,
            length
        );
    }
}

/// The state of every cluster of a snapshot.
#[derive(Debug, Default)]
pub struct Upstreams {
    /// Index-aligned with `Snapshot::clusters`.
    pub clusters: Vec<Arc<ClusterState>>,
}

impl Upstreams {
    /// State for `snapshot`'s clusters with `endpoints`, reusing `previous`'s for
    /// endpoints still present. A connection limit that changed starts a new limiter.
    pub fn build(snapshot: &Snapshot, endpoints: &Endpoints, previous: Option<&Upstreams>) -> Upstreams {
        let old: HashMap<&str, &Arc<ClusterState>> = previous
            .map(|p| p.clusters.iter().map(|c| (c.name.as_str(), c)).collect())
            .unwrap_or_default();
        let none = ClusterEndpoints::default();
        let clusters = snapshot
            .clusters
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let eps = endpoints.clusters.get(i).unwrap_or(&none);
                Arc::new(cluster_state(c, eps, old.get(c.name.as_str()).copied()))
            })
            .collect();
        Upstreams { clusters }
    }
}

fn cluster_state(c: &Cluster, eps: &ClusterEndpoints, old: Option<&Arc<ClusterState>>) -> ClusterState {
    let endpoints = eps
        .endpoints
        .iter()
        .map(|e| {
            old.and_then(|o| o.endpoints.iter().find(|s| s.address == e.address).cloned())
                .unwrap_or_else(|| Arc::new(EndpointState::new(e.address)))
        })
        .collect();
    let max = c.policy.limits.max_connections;
    let slots = match (max, old.and_then(|o| o.slots.as_ref())) {
        (Some(m), Some((old_max, sem))) if *old_max == m => Some((m, sem.clone())),
        (Some(m), _) => Some((m, Arc::new(Semaphore::new(m as usize)))),
        (None, _) => None,
    };
    ClusterState {
        name: c.name.clone(),
        pool_key: c.pool_key(),
        endpoints,
        active: old.map_or_else(|| Arc::new(AtomicU32::new(0)), |o| o.active.clone()),
        pending: AtomicU32::new(0),
        overflows: AtomicU64::new(old.map_or(0, |o| o.overflows.load(Ordering::Relaxed))),
        connect_failures: AtomicU64::new(old.map_or(0, |o| o.connect_failures.load(Ordering::Relaxed))),
        retries: AtomicU64::new(old.map_or(0, |o| o.retries.load(Ordering::Relaxed))),
        slots,
        next: Default::default(),
        per_connection: Default::default(),
    }
}

/// The `/clusters` view of one cluster.
pub fn describe(c: &Cluster, s: &ClusterState) -> serde_json::Value {
    let now = now_ms();
    let endpoints: Vec<serde_json::Value> = s
        .endpoints
        .iter()
        .map(|e| {
            let until = e.ejected_until_ms.load(Ordering::Relaxed);
            serde_json::json!({
                "address": e.address.to_string(),
                "health": if e.ejected(now) { "ejected" } else { "healthy" },
                "ejected_for_ms": until.saturating_sub(now),
                "ejections": e.ejections.load(Ordering::Relaxed),
                "active": e.active.load(Ordering::Relaxed),
                "requests": e.requests.load(Ordering::Relaxed),
                "failures": e.failures.load(Ordering::Relaxed),
                "consecutive_5xx": e.consecutive_5xx.load(Ordering::Relaxed),
                "consecutive_gateway_errors": e.consecutive_gateway.load(Ordering::Relaxed),
            })
        })
        .collect();
    serde_json::json!({
        "name": c.name,
        "load_balancer": c.policy.lb.name(),
        "active": s.active.load(Ordering::Relaxed),
        "pending": s.pending.load(Ordering::Relaxed),
        "overflows": s.overflows.load(Ordering::Relaxed),
        "endpoints": endpoints,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_base_ejection_time_saturates() {
        let endpoint = Arc::new(EndpointState::new(([10, 0, 0, 1], 80).into()));
        // Ejected five times already: the next ejection is six base ejection times.
        endpoint.ejections.store(5, Ordering::Relaxed);
        let state = ClusterState {
            name: "c".into(),
            pool_key: 0,
            endpoints: vec![endpoint.clone()],
            active: Arc::default(),
            pending: AtomicU32::new(0),
            overflows: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            slots: None,
            next: Default::default(),
            per_connection: Default::default(),
        };
        let policy = ClusterPolicy {
            outlier: Some(Outlier {
                consecutive_5xx: Some(1),
                consecutive_gateway: None,
                interval: Duration::from_secs(10),
                base_ejection_time: Duration::MAX,
                max_ejection_percent: 100,
                min_health_percent: 0,
            }),
            ..ClusterPolicy::default()
        };
        state.record(&policy, 0, Outcome::Status(503));
        assert!(endpoint.ejected(now_ms()));
    }
}
