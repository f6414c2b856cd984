//! Istio's standard metrics (names, types, labels and buckets as Istio's proxies
//! export them, so Istio's dashboards and Kiali work unchanged) and the proxy's own
//! health metrics, served in Prometheus text format on the metrics port.
//!
//! Recording is cheap: each destination keeps the metric handles of the label sets it
//! has seen, found by a small key (status, protocol, gRPC status, flags) under a read
//! lock; label strings are built only the first time a combination appears.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus::proto::MetricFamily;
use prometheus::{Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};
use strait_config::snapshot::Cluster;
use strait_config::{Scope, Snapshot};

use crate::flags::Flags;

/// Istio's labels, in Istio's order.
const LABELS: [&str; 25] = [
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_canonical_service",
    "source_canonical_revision",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

/// This proxy's workload name as Istio's metrics and spans give it: its `app` label
/// (`istio-ingressgateway` for Istio's gateway), else its `istio` label.
pub fn workload_name(scope: &Scope) -> Option<&str> {
    scope
        .labels()
        .get("app")
        .or_else(|| scope.labels().get("istio"))
        .map(String::as_str)
}

/// Istio's TCP metrics have no response or gRPC code.
fn tcp_labels() -> Vec<&'static str> {
    LABELS
        .into_iter()
        .filter(|l| !matches!(*l, "response_code" | "grpc_response_status"))
        .collect()
}

/// Istio's buckets for `istio_request_duration_milliseconds`.
const DURATION_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0,
    600000.0, 1800000.0, 3600000.0,
];

/// Istio's buckets for request and response sizes.
const BYTES_BUCKETS: [f64; 10] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

const UNKNOWN: &str = "unknown";

/// The metric families, registered once for the life of the process.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    request_bytes: HistogramVec,
    response_bytes: HistogramVec,
    tcp_sent: IntCounterVec,
    tcp_received: IntCounterVec,
    tcp_opened: IntCounterVec,
    tcp_closed: IntCounterVec,
    /// Label values 0..=8: the reporter and this proxy as the source.
    source: [String; 9],
    /// Label values 9..=19: this proxy's workload as the destination (inbound).
    local: [String; 11],
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("source", &self.source).finish()
    }
}

/// Label values 9..=19 for one destination cluster, and its handle cache.
#[derive(Debug)]
pub struct Destination {
    labels: [String; 11],
    cache: RwLock<Cache>,
    /// A sidecar's inbound cluster: its requests are reported by the destination
    /// (this workload), from the peer the connection's certificate names.
    pub inbound: bool,
}

/// The handles a destination has used, and the workload names they name.
#[derive(Debug, Default)]
struct Cache {
    /// Distinct workloads of the endpoints that answered (keys refer to them by index).
    workloads: Vec<String>,
    handles: Vec<(Key, Arc<Handles>)>,
}

/// Index of `destination_workload` among the label values.
const DESTINATION_WORKLOAD: usize = 9;

impl Metrics {
    /// The label values of `dest` for `who`: outbound, Istio's source reporter names
    /// the destination workload after the endpoint that answered; inbound, the
    /// destination reporter names the source by the peer's SPIFFE ID (`spiffe_id`,
    /// made by the caller from the principal `who`).
    fn values<'a>(&'a self, dest: &'a Destination, who: Option<&'a str>, spiffe_id: &'a str) -> Vec<&'a str> {
        if dest.inbound {
            let peer_ns = who
                .and_then(|p| p.split("/ns/").nth(1))
                .and_then(|rest| rest.split('/').next())
                .unwrap_or(UNKNOWN);
            let principal = if who.is_some() { spiffe_id } else { UNKNOWN };
            let mut values = vec!["destination", UNKNOWN, peer_ns, principal];
            values.extend([UNKNOWN; 5]);
            values.extend(self.local.iter().map(String::as_str));
            return values;
        }
        let mut values: Vec<&str> = self.source.iter().map(String::as_str).collect();
        values.extend(dest.labels.iter().map(String::as_str));
        if let Some(name) = who {
            values[DESTINATION_WORKLOAD] = name;
        }
        values
    }

    /// Istio's `connection_security_policy`: what the destination reporter knows of
    /// the connection (mTLS when the peer's certificate named it).
    fn security_policy(dest: &Destination, who: Option<&str>) -> &'static str {
        match (dest.inbound, who) {
            (false, _) => UNKNOWN,
            (true, Some(_)) => "mutual_tls",
            (true, None) => "none",
        }
    }
}

impl Cache {
    /// The index of `workload` in `workloads` (None: unknown, or not seen yet).
    fn workload(&self, workload: Option<&str>) -> Option<Option<u32>> {
        match workload {
            None => Some(None),
            Some(name) => self
                .workloads
                .iter()
                .position(|w| w == name)
                .map(|i| u32::try_from(i).ok()),
        }
    }
}

/// What varies per request within a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    status: u16,
    grpc: bool,
    grpc_status: Option<u16>,
    flags: Flags,
    workload: Option<u32>,
}

#[derive(Debug)]
struct Handles {
    requests: IntCounter,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

impl Handles {
    fn observe(&self, r: &RequestRecord) {
        self.requests.inc();
        self.duration.observe(r.duration.as_secs_f64() * 1000.0);
        self.request_bytes.observe(r.request_bytes as f64);
        self.response_bytes.observe(r.response_bytes as f64);
    }
}

/// One finished HTTP request, as the metrics see it.
#[derive(Debug, Clone, Copy)]
pub struct RequestRecord {
    /// gRPC (else HTTP).
    pub grpc: bool,
    /// Status sent downstream (0 when none was).
    pub status: u16,
    /// `grpc-status` of the answer, for gRPC.
    pub grpc_status: Option<u16>,
    /// Response flags.
    pub flags: Flags,
    /// From the request's start to its end.
    pub duration: Duration,
    /// Request body bytes.
    pub request_bytes: u64,
    /// Response body bytes.
    pub response_bytes: u64,
}

/// The TCP counters of one connection's label set.
#[derive(Debug, Clone)]
pub struct TcpHandles {
    /// Bytes sent to the client.
    pub sent: IntCounter,
    /// Bytes received from the client.
    pub received: IntCounter,
    /// Connections closed.
    pub closed: IntCounter,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    IntCounterVec::new(Opts::new(name, help), labels)
}

fn histogram(name: &str, help: &str, buckets: &[f64]) -> prometheus::Result<HistogramVec> {
    HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), &LABELS)
}

impl Metrics {
    /// Registers Istio's families for a proxy of `scope` (whose labels name it as source).
    pub fn new(scope: &Scope) -> prometheus::Result<Metrics> {
        let label = |k: &str| scope.labels().get(k).cloned().unwrap_or_else(|| UNKNOWN.to_string());
        let app = workload_name(scope).unwrap_or(UNKNOWN).to_string();
        let tcp = tcp_labels();
        let metrics = Metrics {
            registry: Registry::new(),
            requests: counter(
                "istio_requests_total",
                "Requests, by source, destination and outcome",
                &LABELS,
            )?,
            duration: histogram(
                "istio_request_duration_milliseconds",
                "Request duration in milliseconds",
                &DURATION_BUCKETS,
            )?,
            request_bytes: histogram("istio_request_bytes", "Request body sizes in bytes", &BYTES_BUCKETS)?,
            response_bytes: histogram("istio_response_bytes", "Response body sizes in bytes", &BYTES_BUCKETS)?,
            tcp_sent: counter("istio_tcp_sent_bytes_total", "Bytes sent to TCP clients", &tcp)?,
            tcp_received: counter(
                "istio_tcp_received_bytes_total",
                "Bytes received from TCP clients",
                &tcp,
            )?,
            tcp_opened: counter("istio_tcp_connections_opened_total", "TCP connections opened", &tcp)?,
            tcp_closed: counter("istio_tcp_connections_closed_total", "TCP connections closed", &tcp)?,
            source: [
                // Gateways report as the source of the requests they send on.
                "source".to_string(),
                app.clone(),
                scope.namespace().to_string(),
                UNKNOWN.to_string(),
                app.clone(),
                label("version"),
                app,
                label("version").replace(UNKNOWN, "latest"),
                "Kubernetes".to_string(),
            ],
            local: local_labels(scope),
        };
        for family in [
            &metrics.requests,
            &metrics.tcp_sent,
            &metrics.tcp_received,
            &metrics.tcp_opened,
            &metrics.tcp_closed,
        ] {
            metrics.registry.register(Box::new(family.clone()))?;
        }
        for family in [&metrics.duration, &metrics.request_bytes, &metrics.response_bytes] {
            metrics.registry.register(Box::new(family.clone()))?;
        }
        // Every Istio proxy exports its version this way; the dashboards'
        // "Istio Component Versions" panels read it.
        let build = prometheus::IntGaugeVec::new(
            Opts::new("istio_build", "Istio component build info"),
            &["component", "tag"],
        )?;
        build
            .get_metric_with_label_values(&["proxy", env!("CARGO_PKG_VERSION")])?
            .set(1);
        metrics.registry.register(Box::new(build))?;
        Ok(metrics)
    }

    /// Counts one finished request towards `dest`, answered by an endpoint of
    /// `workload` (a WorkloadEntry's name; None when unknown) or, for the inbound
    /// destination, sent by the peer of that principal (None: not mTLS).
    pub fn record(&self, dest: &Destination, workload: Option<&str>, r: &RequestRecord) {
        let key = |workload| Key {
            status: r.status,
            grpc: r.grpc,
            grpc_status: r.grpc_status,
            flags: r.flags,
            workload,
        };
        if let Ok(cache) = dest.cache.read() {
            if let Some(w) = cache.workload(workload) {
                let key = key(w);
                if let Some((_, handles)) = cache.handles.iter().find(|(k, _)| *k == key) {
                    return handles.observe(r);
                }
            }
        }
        let Ok(mut cache) = dest.cache.write() else { return };
        let w = match cache.workload(workload) {
            Some(w) => w,
            None => {
                cache.workloads.extend(workload.map(str::to_string));
                u32::try_from(cache.workloads.len() - 1).ok()
            }
        };
        let key = key(w);
        if let Some((_, handles)) = cache.handles.iter().find(|(k, _)| *k == key) {
            return handles.observe(r);
        }
        match self.handles(dest, key, workload) {
            Ok(handles) => {
                handles.observe(r);
                cache.handles.push((key, handles));
            }
            Err(e) => log::debug!("metrics: {e}"),
        }
    }

    fn handles(&self, dest: &Destination, key: Key, workload: Option<&str>) -> prometheus::Result<Arc<Handles>> {
        let code = key.status.to_string();
        let grpc_status = key.grpc_status.map(|s| s.to_string()).unwrap_or_default();
        let flags = key.flags.text();
        let protocol = if key.grpc { "grpc" } else { "http" };
        let spiffe_id = workload.map(|w| format!("spiffe://{w}")).unwrap_or_default();
        let mut values = self.values(dest, workload, &spiffe_id);
        let policy = Self::security_policy(dest, workload);
        values.extend([protocol, code.as_str(), grpc_status.as_str(), flags.as_str(), policy]);
        Ok(Arc::new(Handles {
            requests: self.requests.get_metric_with_label_values(&values)?,
            duration: self.duration.get_metric_with_label_values(&values)?,
            request_bytes: self.request_bytes.get_metric_with_label_values(&values)?,
            response_bytes: self.response_bytes.get_metric_with_label_values(&values)?,
        }))
    }

    /// Counts a TCP connection opened towards `dest`'s `endpoint`; its bytes and close
    /// go to the returned handles.
    pub fn tcp_open(&self, dest: &Destination, workload: Option<&str>, flags: Flags) -> prometheus::Result<TcpHandles> {
        let flags = flags.text();
        let spiffe_id = workload.map(|w| format!("spiffe://{w}")).unwrap_or_default();
        let mut values = self.values(dest, workload, &spiffe_id);
        values.extend(["tcp", flags.as_str(), Self::security_policy(dest, workload)]);
        self.tcp_opened.get_metric_with_label_values(&values)?.inc();
        Ok(TcpHandles {
            sent: self.tcp_sent.get_metric_with_label_values(&values)?,
            received: self.tcp_received.get_metric_with_label_values(&values)?,
            closed: self.tcp_closed.get_metric_with_label_values(&values)?,
        })
    }

    /// Everything, in Prometheus text format: Istio's families and `more` (the
    /// proxy's health, gathered by whoever knows it).
    pub fn encode(&self, more: Vec<MetricFamily>) -> String {
        let mut families = self.registry.gather();
        families.extend(more);
        let mut out = Vec::new();
        if let Err(e) = prometheus::TextEncoder::new().encode(&families, &mut out) {
            log::warn!("metrics encoding: {e}");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The destination labels of a cluster (None: requests that reached no cluster).
fn destination(cluster: Option<&Cluster>) -> Destination {
    let (service, name, namespace) = match cluster {
        None => (UNKNOWN.to_string(), UNKNOWN.to_string(), UNKNOWN.to_string()),
        Some(c) => {
            // Kubernetes services are `<name>.<namespace>.svc.<domain>`; other hosts
            // (ServiceEntries) are named by the host itself.
            let mut parts = c.host.split('.');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(n), Some(ns), Some("svc")) => (c.host.clone(), n.to_string(), ns.to_string()),
                _ => (c.host.clone(), c.host.clone(), UNKNOWN.to_string()),
            }
        }
    };
    let version = cluster
        .and_then(|c| c.subset.clone())
        .unwrap_or_else(|| UNKNOWN.to_string());
    Destination {
        labels: [
            UNKNOWN.to_string(),
            namespace.clone(),
            UNKNOWN.to_string(),
            name.clone(),
            version.clone(),
            service,
            name.clone(),
            namespace,
            name,
            if version == UNKNOWN {
                "latest".to_string()
            } else {
                version
            },
            if cluster.is_some() { "Kubernetes" } else { UNKNOWN }.to_string(),
        ],
        cache: RwLock::new(Cache::default()),
        inbound: cluster.is_some_and(|c| c.kind == strait_config::snapshot::ClusterKind::LocalWorkload),
    }
}

/// This proxy's workload as the destination of its inbound requests.
fn local_labels(scope: &Scope) -> [String; 11] {
    let label = |k: &str| scope.labels().get(k).cloned().unwrap_or_else(|| UNKNOWN.to_string());
    let app = workload_name(scope).unwrap_or(UNKNOWN).to_string();
    let ns = scope.namespace().to_string();
    let principal = scope.workload.service_account.as_ref().map_or_else(
        || UNKNOWN.to_string(),
        |sa| format!("spiffe://cluster.local/ns/{ns}/sa/{sa}"),
    );
    [
        app.clone(),
        ns.clone(),
        principal,
        app.clone(),
        label("version"),
        UNKNOWN.to_string(),
        UNKNOWN.to_string(),
        ns,
        app,
        label("version").replace(UNKNOWN, "latest"),
        "Kubernetes".to_string(),
    ]
}

/// One per cluster of `snapshot`, index-aligned, then one for requests without a cluster.
pub fn destinations(snapshot: &Snapshot) -> Vec<Destination> {
    let mut out: Vec<Destination> = snapshot.clusters.iter().map(|c| destination(Some(c))).collect();
    out.push(destination(None));
    out
}
