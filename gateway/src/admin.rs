//! The admin (`:15000`) and health (`:15021`: `/healthz/ready`) endpoints. Admin
//! serves `/ready`, `/server_info`, `/config_dump` (whole, or one part with
//! `?resource=listeners|routes|clusters|secrets`), `/clusters`, `/stats` and
//! `/logging` (GET shows the level, POST `?level=` changes it).

pub mod health;
pub mod logging;
pub mod sections;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::engine::Engine;
use sections::Resource;

/// Which endpoints a port serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoints {
    /// Admin: everything.
    Admin,
    /// Health: readiness only.
    Health,
    /// Metrics: Prometheus's scrape endpoint (Istio's merged metrics port).
    Metrics,
}

/// The admin/health HTTP application.
pub struct AdminApp {
    /// Engine state.
    pub shared: Arc<Engine>,
    /// Endpoints served.
    pub endpoints: Endpoints,
    /// The folder the configuration comes from, when a folder source feeds the engine.
    pub config_dir: Option<String>,
    /// The listeners' addresses: ready means each accepts connections.
    pub listeners: Listening,
}

/// Whether the listeners accept connections yet. Pingora binds each listener when
/// its service starts, independently of the others: until every one answers a
/// connection, the proxy is not ready to take traffic.
#[derive(Debug, Default)]
pub struct Listening {
    /// Addresses to connect to (loopback for listeners on every address).
    pub addresses: Vec<SocketAddr>,
    up: std::sync::atomic::AtomicBool,
}

impl Listening {
    /// Listeners at `addresses`.
    pub fn new(addresses: Vec<SocketAddr>) -> Listening {
        Listening {
            addresses,
            up: Default::default(),
        }
    }

    /// True once every listener accepted a connection (then it is not asked again).
    async fn up(&self) -> bool {
        if self.up.load(Ordering::Relaxed) {
            return true;
        }
        for a in &self.addresses {
            let connect = tokio::net::TcpStream::connect(a);
            if !matches!(
                tokio::time::timeout(std::time::Duration::from_millis(200), connect).await,
                Ok(Ok(_))
            ) {
                return false;
            }
        }
        self.up.store(true, Ordering::Relaxed);
        true
    }
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    if let Ok(v) = resp.body().len().to_string().parse() {
        resp.headers_mut().insert(http::header::CONTENT_LENGTH, v);
    }
    resp
}

impl AdminApp {
    async fn ready(&self) -> Response<Vec<u8>> {
        if self.shared.is_draining() {
            reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", b"DRAINING\n".to_vec())
        } else if !self.listeners.up().await {
            reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", b"STARTING\n".to_vec())
        } else if self.shared.scope.role == strait_config::Role::Sidecar && self.shared.identity.current().is_none() {
            // Its peers would refuse it (and it them) until it has a certificate.
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                b"NO WORKLOAD CERTIFICATE\n".to_vec(),
            )
        } else {
            reply(StatusCode::OK, "text/plain", b"LIVE\n".to_vec())
        }
    }

    /// Clusters with their endpoints' health, ejections and counters.
    fn clusters(&self) -> Response<Vec<u8>> {
        let runtime = self.shared.current();
        let clusters: Vec<serde_json::Value> = runtime
            .snapshot
            .clusters
            .iter()
            .zip(&runtime.upstreams.clusters)
            .map(|(c, s)| crate::upstreams::describe(c, s))
            .collect();
        match serde_json::to_vec_pretty(&json!({ "clusters": clusters })) {
            Ok(body) => reply(StatusCode::OK, "application/json", body),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                e.to_string().into_bytes(),
            ),
        }
    }

    fn json(value: &serde_json::Value) -> Response<Vec<u8>> {
        match serde_json::to_vec_pretty(value) {
            Ok(body) => reply(StatusCode::OK, "application/json", body),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                e.to_string().into_bytes(),
            ),
        }
    }

    fn config_dump(&self, query: Option<&str>) -> Response<Vec<u8>> {
        let runtime = self.shared.current();
        if let Some(name) = param(query, "resource") {
            return match name.parse::<Resource>() {
                Ok(resource) => match sections::section(&runtime, resource) {
                    Ok(v) => Self::json(&v),
                    Err(e) => reply(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        e.to_string().into_bytes(),
                    ),
                },
                Err(e) => reply(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n").into_bytes()),
            };
        }
        let last = self.shared.last_attempt.lock().map(|l| l.clone()).unwrap_or_default();
        let snapshot = match sections::snapshot_with_endpoints(&runtime) {
            Ok(s) => s,
            Err(e) => {
                return reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    e.to_string().into_bytes(),
                )
            }
        };
        Self::json(&json!({
            "version": runtime.snapshot.version,
            "config_dir": self.config_dir,
            "sources": runtime.snapshot.sources,
            "rejected_since_start": self.shared.rejections.load(Ordering::Relaxed),
            "last_attempt": last,
            "warnings": runtime.warnings,
            "snapshot": snapshot,
        }))
    }

    /// What `straitctl proxy-status` reads: the build, the state, and which
    /// configuration runs (version, digest, files, last attempt).
    fn server_info(&self) -> Response<Vec<u8>> {
        let runtime = self.shared.current();
        let last = self.shared.last_attempt.lock().map(|l| l.clone()).unwrap_or_default();
        let digest = match sections::config_digest(&runtime) {
            Ok(d) => d,
            Err(e) => {
                return reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    e.to_string().into_bytes(),
                )
            }
        };
        Self::json(&json!({
            "strait_version": env!("CARGO_PKG_VERSION"),
            "state": if self.shared.is_draining() { "DRAINING" } else { "LIVE" },
            "config_version": runtime.snapshot.version,
            "config_digest": digest,
            "config_dir": self.config_dir,
            "sources": runtime.snapshot.sources,
            "rejected_since_start": self.shared.rejections.load(Ordering::Relaxed),
            "last_attempt": last,
        }))
    }

    /// Envoy-style `name: value` counters of what the engine counts today, sorted
    /// by name as Envoy sorts them.
    fn stats(&self) -> Response<Vec<u8>> {
        let runtime = self.shared.current();
        let shared = &self.shared;
        let last = shared.last_attempt.lock().map(|l| l.accepted).unwrap_or(false);
        let mut stats: Vec<(String, u64)> = vec![
            ("server.config_version".into(), runtime.snapshot.version),
            (
                "server.config_update_rejected".into(),
                shared.rejections.load(Ordering::Relaxed),
            ),
            ("server.config_last_update_accepted".into(), u64::from(last)),
            ("server.draining".into(), u64::from(shared.is_draining())),
            (
                "server.downstream_rq_active".into(),
                shared.inflight.load(Ordering::Relaxed) as u64,
            ),
            ("server.certificates".into(), runtime.certs.len() as u64),
            ("http1.lean_rq_total".into(), shared.http1_lean.load(Ordering::Relaxed)),
            (
                "http1.handed_over_rq_total".into(),
                shared.http1_handed_over.load(Ordering::Relaxed),
            ),
        ];
        let now = crate::upstreams::now_ms();
        for c in &runtime.upstreams.clusters {
            let sum =
                |f: &dyn Fn(&crate::upstreams::EndpointState) -> u64| -> u64 { c.endpoints.iter().map(|e| f(e)).sum() };
            let ejected = c.endpoints.iter().filter(|e| e.ejected(now)).count() as u64;
            let total = c.endpoints.len() as u64;
            let name = &c.name;
            stats.extend([
                (format!("cluster.{name}.membership_total"), total),
                (format!("cluster.{name}.membership_healthy"), total - ejected),
                (
                    format!("cluster.{name}.upstream_rq_active"),
                    u64::from(c.active.load(Ordering::Relaxed)),
                ),
                (
                    format!("cluster.{name}.upstream_rq_pending_active"),
                    u64::from(c.pending.load(Ordering::Relaxed)),
                ),
                (
                    format!("cluster.{name}.upstream_rq_pending_overflow"),
                    c.overflows.load(Ordering::Relaxed),
                ),
                (
                    format!("cluster.{name}.upstream_rq_total"),
                    sum(&|e| e.requests.load(Ordering::Relaxed)),
                ),
                // Strait's own: tries answered with a 5xx or not answered at all.
                (
                    format!("cluster.{name}.upstream_rq_failed"),
                    sum(&|e| e.failures.load(Ordering::Relaxed)),
                ),
                (format!("cluster.{name}.outlier_detection.ejections_active"), ejected),
                (
                    format!("cluster.{name}.outlier_detection.ejections_total"),
                    sum(&|e| u64::from(e.ejections.load(Ordering::Relaxed))),
                ),
            ]);
        }
        stats.sort();
        let mut body = String::new();
        for (name, value) in &stats {
            let _ = writeln!(body, "{name}: {value}");
        }
        reply(StatusCode::OK, "text/plain", body.into_bytes())
    }

    /// GET shows the level; POST `?level=` sets one level for every module.
    fn logging(&self, method: &http::Method, query: Option<&str>) -> Response<Vec<u8>> {
        let text = |status, body: String| reply(status, "text/plain", body.into_bytes());
        let level = param(query, "level");
        match (method, level) {
            (&http::Method::GET, None) => text(StatusCode::OK, logging::describe()),
            // Envoy changes state only on POST, so a crawler or a prefetch cannot.
            (&http::Method::GET, Some(_)) => text(
                StatusCode::METHOD_NOT_ALLOWED,
                "use POST to change the level: curl -X POST 'localhost:15000/logging?level=debug'\n".into(),
            ),
            (&http::Method::POST, Some(name)) => match logging::parse_level(name) {
                Some(level) => {
                    logging::set_level(level);
                    log::info!("log level set to {level} through /logging");
                    text(StatusCode::OK, logging::describe())
                }
                None => text(
                    StatusCode::BAD_REQUEST,
                    format!("unknown level {name:?}; use trace, debug, info, warn, error or off\n"),
                ),
            },
            (&http::Method::POST, None) => text(
                StatusCode::BAD_REQUEST,
                "missing ?level=trace|debug|info|warn|error|off\n".into(),
            ),
            _ => text(StatusCode::METHOD_NOT_ALLOWED, "GET or POST\n".into()),
        }
    }
}

/// The value of `key` in a query string (no percent-decoding: the values taken
/// here are plain words).
fn param<'q>(query: Option<&'q str>, key: &str) -> Option<&'q str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let (method, uri) = (req.method.clone(), req.uri.clone());
        let (path, query) = (uri.path(), uri.query());
        log::debug!("admin {method} {uri}");
        match (self.endpoints, path) {
            (_, "/healthz/ready") => self.ready().await,
            (Endpoints::Admin, "/ready") => self.ready().await,
            (Endpoints::Admin, "/server_info") => self.server_info(),
            (Endpoints::Admin, "/config_dump") => self.config_dump(query),
            (Endpoints::Admin, "/clusters") => self.clusters(),
            (Endpoints::Admin, "/stats") => self.stats(),
            (Endpoints::Admin, "/logging") => self.logging(&method, query),
            (Endpoints::Metrics | Endpoints::Admin, "/stats/prometheus") => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.shared
                    .metrics
                    .encode(health::health(&self.shared).unwrap_or_else(|e| {
                        log::warn!("health metrics: {e}");
                        Vec::new()
                    }))
                    .into_bytes(),
            ),
            _ => reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::param;

    #[test]
    fn query_parameters() {
        assert_eq!(param(Some("resource=routes"), "resource"), Some("routes"));
        assert_eq!(param(Some("a=1&level=debug"), "level"), Some("debug"));
        assert_eq!(param(Some("level"), "level"), Some(""));
        assert_eq!(param(Some("levels=x"), "level"), None);
        assert_eq!(param(None, "level"), None);
    }
}
