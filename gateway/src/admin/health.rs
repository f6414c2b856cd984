//! The proxy's own health as Prometheus metrics (config version and rejections,
//! connections, requests, per-cluster connect failures, retries and ejections,
//! certificate expiry), read from the engine's state at scrape time.

use std::sync::atomic::Ordering;
use std::sync::PoisonError;

use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use crate::engine::Engine;

/// The proxy's own health, read from its state at scrape time.
pub fn health(shared: &Engine) -> prometheus::Result<Vec<MetricFamily>> {
    let runtime = shared.current();
    let registry = Registry::new();
    let gauge = |name: &str, help: &str, value: i64| -> prometheus::Result<()> {
        let g = prometheus::IntGauge::new(name, help)?;
        g.set(value);
        registry.register(Box::new(g))
    };
    let total = |name: &str, help: &str, value: u64| -> prometheus::Result<()> {
        let c = IntCounter::new(name, help)?;
        c.inc_by(value);
        registry.register(Box::new(c))
    };
    gauge(
        "strait_config_version",
        "Version of the running configuration",
        runtime.snapshot.version as i64,
    )?;
    total(
        "strait_config_rejections_total",
        "Configurations rejected since start",
        shared.rejections.load(Ordering::Relaxed),
    )?;
    gauge(
        "envoy_http_downstream_rq_active",
        "Requests being served",
        shared.inflight.load(Ordering::Relaxed) as i64,
    )?;
    gauge(
        "envoy_server_total_connections",
        "Client connections open",
        shared.connections.load(Ordering::Relaxed) as i64,
    )?;
    let acme_failures = IntCounterVec::new(
        Opts::new("strait_acme_failures_total", "ACME orders that failed"),
        &["issuer", "host"],
    )?;
    {
        let failures = shared.acme_failures.lock().unwrap_or_else(PoisonError::into_inner);
        for ((issuer, host), n) in failures.iter() {
            acme_failures
                .get_metric_with_label_values(&[issuer.as_str(), host.as_str()])?
                .inc_by(*n);
        }
    }
    registry.register(Box::new(acme_failures))?;
    let per_cluster = |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &["cluster_name"]);
    let connect_fail = per_cluster(
        "envoy_cluster_upstream_cx_connect_fail",
        "Upstream connections that failed",
    )?;
    let retries = per_cluster("envoy_cluster_upstream_rq_retry", "Retries sent upstream")?;
    let ejections = per_cluster(
        "envoy_cluster_outlier_detection_ejections_enforced_total",
        "Endpoints ejected by outlier detection",
    )?;
    let ejected = prometheus::IntGaugeVec::new(
        Opts::new(
            "envoy_cluster_outlier_detection_ejections_active",
            "Endpoints ejected now",
        ),
        &["cluster_name"],
    )?;
    let now = crate::upstreams::now_ms();
    for c in &runtime.upstreams.clusters {
        let name = [c.name.as_str()];
        connect_fail
            .get_metric_with_label_values(&name)?
            .inc_by(c.connect_failures.load(Ordering::Relaxed));
        retries
            .get_metric_with_label_values(&name)?
            .inc_by(c.retries.load(Ordering::Relaxed));
        let total: u64 = c
            .endpoints
            .iter()
            .map(|e| u64::from(e.ejections.load(Ordering::Relaxed)))
            .sum();
        ejections.get_metric_with_label_values(&name)?.inc_by(total);
        let active = c.endpoints.iter().filter(|e| e.ejected(now)).count();
        ejected.get_metric_with_label_values(&name)?.set(active as i64);
    }
    registry.register(Box::new(connect_fail))?;
    registry.register(Box::new(retries))?;
    registry.register(Box::new(ejections))?;
    registry.register(Box::new(ejected))?;
    let expiry = prometheus::IntGaugeVec::new(
        Opts::new(
            "strait_certificate_expiry_timestamp_seconds",
            "When each server certificate expires (seconds since the epoch)",
        ),
        &["certificate"],
    )?;
    for cert in runtime.certs.iter() {
        let not_after = cert
            .key
            .cert
            .first()
            .and_then(|der| x509_parser::parse_x509_certificate(der).ok())
            .map(|(_, c)| c.validity().not_after.timestamp());
        if let Some(t) = not_after {
            expiry.get_metric_with_label_values(&[cert.name.as_str()])?.set(t);
        }
    }
    registry.register(Box::new(expiry))?;
    Ok(registry.gather())
}
