//! The engine's state: the running configuration (a `Runtime`, swapped atomically
//! as one unit) and what lives beside it across swaps: request and connection
//! counts, the DNS cache, rate-limit buckets, JWKS slots, ACME challenge answers,
//! metric families, the access log and the tracer.
//!
//! The engine does not know where configuration comes from: every source (the
//! folder watcher, a controller's push) builds with `strait_config::build` and
//! hands the outcome to `apply`, which answers with the new version or the
//! diagnostics and keeps the last good configuration serving.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use strait_config::snapshot::Endpoints;
use strait_config::{Built, Code, Diagnostic, Scope, Severity};

use crate::acme::Challenges;
use crate::dns::Dns;
use crate::jwks::JwksStore;
use crate::metrics::Metrics;
use crate::ratelimit::Limiter;
use crate::runtime::Runtime;
use crate::upstream_client::SideCalls;

/// The outcome of the last configuration attempt, for `/config_dump`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LastAttempt {
    /// Whether it was accepted.
    pub accepted: bool,
    /// Its diagnostics.
    pub diagnostics: Vec<Diagnostic>,
}

/// Settings of the engine's own services.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Time between fetches of a remote JWKS.
    pub jwks_refresh: Duration,
    /// Where ACME keeps certificates, accounts and challenge answers.
    pub acme_store: std::path::PathBuf,
}

/// State shared by the listeners, the admin server and the configuration sources.
#[derive(Debug)]
pub struct Engine {
    current: ArcSwap<Runtime>,
    /// Who this proxy is.
    pub scope: Scope,
    next_version: AtomicU64,
    /// Rejected configurations since start.
    pub rejections: AtomicU64,
    /// The last attempt's outcome.
    pub last_attempt: Mutex<LastAttempt>,
    /// Requests being processed (for draining).
    pub inflight: AtomicUsize,
    /// Set once SIGTERM arrived: readiness turns false, connections are asked to close.
    draining: tokio::sync::watch::Sender<bool>,
    /// Resolver for DNS endpoints.
    pub dns: Dns,
    /// The client of the requests the gateway makes itself (mirrors, ext_authz).
    pub side_calls: Arc<SideCalls>,
    /// Token buckets of the RateLimits.
    pub limiter: Limiter,
    /// Remote JWKS slots, fetched by the `JwksFetcher` service.
    pub jwks: Arc<JwksStore>,
    /// Answers to the ACME challenges being validated.
    pub challenges: Arc<Challenges>,
    /// Istio's metric families.
    pub metrics: Metrics,
    /// Client connections open.
    pub connections: AtomicUsize,
    /// HTTP/1 requests the lean path served.
    pub http1_lean: AtomicU64,
    /// HTTP/1 requests the lean path handed to Pingora's proxy.
    pub http1_handed_over: AtomicU64,
    /// ACME orders that failed, by (issuer, host): the certificate's first name.
    pub acme_failures: Mutex<std::collections::BTreeMap<(String, String), u64>>,
    /// The access log, when the mesh config turns it on.
    pub access_log: std::sync::OnceLock<crate::access_log::AccessLog>,
    /// The tracer, when the mesh config turns tracing on.
    pub tracer: std::sync::OnceLock<crate::trace::Tracer>,
    /// The workload identity in the mesh (a sidecar's; a gateway's once it joins).
    pub identity: Arc<crate::identity::Identity>,
}

/// An engine-level diagnostic (not about one resource).
pub fn engine_diag(message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        code: Code::Io,
        file: String::new(),
        position: Default::default(),
        resource: None,
        field: None,
        message,
    }
}

impl Engine {
    /// Counts a failed ACME order for `host` from `issuer`.
    pub fn acme_failed(&self, issuer: &str, host: &str) {
        let mut failures = self.acme_failures.lock().unwrap_or_else(PoisonError::into_inner);
        *failures.entry((issuer.to_string(), host.to_string())).or_default() += 1;
    }

    /// An engine serving `built` (version 1); fails with the diagnostics when the
    /// configuration does not compile.
    pub fn start(built: Built, scope: Scope, settings: &EngineSettings) -> Result<Arc<Engine>, Vec<Diagnostic>> {
        let jwks = Arc::new(JwksStore::new(settings.jwks_refresh));
        let mut built = built;
        built.snapshot.version = 1;
        let runtime = Runtime::compile(built, None, &jwks)?;
        // The parsed resources are gone by now; their pages need not stay resident.
        crate::memory::release_free_memory();
        let metrics = Metrics::new(&scope).map_err(|e| vec![engine_diag(format!("metrics: {e}"))])?;
        let challenges = Arc::new(Challenges::new(settings.acme_store.clone()));
        challenges.set_pushed(&runtime.snapshot.acme_answers);
        Ok(Arc::new(Engine {
            last_attempt: Mutex::new(LastAttempt {
                accepted: true,
                diagnostics: runtime.warnings.to_vec(),
            }),
            current: ArcSwap::from_pointee(runtime),
            scope,
            next_version: AtomicU64::new(2),
            rejections: AtomicU64::new(0),
            inflight: AtomicUsize::new(0),
            draining: tokio::sync::watch::Sender::new(false),
            dns: Dns::new(),
            side_calls: Arc::new(SideCalls::default()),
            limiter: Limiter::default(),
            jwks,
            challenges,
            metrics,
            connections: AtomicUsize::new(0),
            http1_lean: AtomicU64::new(0),
            http1_handed_over: AtomicU64::new(0),
            acme_failures: Mutex::default(),
            access_log: std::sync::OnceLock::new(),
            tracer: std::sync::OnceLock::new(),
            identity: Default::default(),
        }))
    }

    /// Whether the engine is draining (SIGTERM arrived).
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Starts draining: readiness turns false and connections are asked to close.
    pub fn start_draining(&self) {
        self.draining.send_replace(true);
    }

    /// Changes to the draining flag, for connections that must close on it.
    pub fn draining_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.draining.subscribe()
    }

    /// The configuration new requests use.
    pub fn current(&self) -> Arc<Runtime> {
        self.current.load_full()
    }

    /// Applies the outcome of a build: a configuration that compiles is swapped in
    /// (requests in flight keep theirs) and its version returned; otherwise the
    /// running configuration stays and the diagnostics come back. Either way the
    /// outcome is logged and kept for `/config_dump`.
    pub fn apply(&self, built: Result<Built, Vec<Diagnostic>>) -> Result<u64, Vec<Diagnostic>> {
        let current = self.current();
        let prepared = built.and_then(|mut b| {
            b.snapshot.version = self.next_version.load(Ordering::Relaxed);
            Runtime::compile(b, Some(&current), &self.jwks)
        });
        let outcome = self.swap(prepared);
        match &outcome {
            Ok(version) => {
                let runtime = self.current();
                log::info!(
                    "config version {version} accepted ({} warnings)",
                    runtime.warnings.len()
                );
                for d in runtime.warnings.iter() {
                    log::warn!("{d}");
                }
                let ports = |r: &Runtime| -> BTreeSet<u16> { r.snapshot.listeners.iter().map(|l| l.port).collect() };
                let (before, after) = (ports(&current), ports(&runtime));
                if before != after {
                    log::warn!("listener ports changed from {before:?} to {after:?}: listeners are fixed at start, restart to apply");
                }
            }
            Err(diags) => {
                log::error!("config rejected, still serving version {}:", current.snapshot.version);
                for d in diags.iter().filter(|d| d.is_error()) {
                    log::error!("{d}");
                }
            }
        }
        // The build's parsed resources and, unless requests still hold it, the
        // previous snapshot are freed: give their pages back now.
        drop(current);
        crate::memory::release_free_memory();
        outcome
    }

    /// Applies new endpoints for the running configuration's clusters (index-aligned
    /// with its snapshot's clusters): routes, policies and certificates are shared,
    /// not rebuilt, and endpoints that stay keep their state. Refused when the table
    /// does not fit the running snapshot (it was made for another).
    pub fn apply_endpoints(&self, endpoints: Endpoints) -> Result<(), Vec<Diagnostic>> {
        let current = self.current();
        if endpoints.clusters.len() != current.snapshot.clusters.len() {
            return Err(vec![engine_diag(format!(
                "endpoints for {} clusters do not fit version {}, which has {}",
                endpoints.clusters.len(),
                current.snapshot.version,
                current.snapshot.clusters.len()
            ))]);
        }
        self.current.store(Arc::new(current.with_endpoints(endpoints)));
        log::debug!("endpoints updated for version {}", current.snapshot.version);
        Ok(())
    }

    fn swap(&self, prepared: Result<Runtime, Vec<Diagnostic>>) -> Result<u64, Vec<Diagnostic>> {
        let mut last = self.last_attempt.lock().unwrap_or_else(|p| p.into_inner());
        match prepared {
            Ok(runtime) => {
                let version = runtime.snapshot.version;
                *last = LastAttempt {
                    accepted: true,
                    diagnostics: runtime.warnings.to_vec(),
                };
                self.next_version.store(version + 1, Ordering::Relaxed);
                self.challenges.set_pushed(&runtime.snapshot.acme_answers);
                self.current.store(Arc::new(runtime));
                Ok(version)
            }
            Err(diags) => {
                self.rejections.fetch_add(1, Ordering::Relaxed);
                *last = LastAttempt {
                    accepted: false,
                    diagnostics: diags.clone(),
                };
                Err(diags)
            }
        }
    }
}

/// Counts a client connection as open until dropped.
#[derive(Debug)]
pub struct ConnectionGuard(Arc<Engine>);

impl ConnectionGuard {
    /// Starts counting.
    pub fn new(engine: &Arc<Engine>) -> ConnectionGuard {
        engine.connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(engine.clone())
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a request as in flight until dropped.
#[derive(Debug)]
pub struct InflightGuard(Arc<Engine>);

impl InflightGuard {
    /// Starts counting.
    pub fn new(engine: &Arc<Engine>) -> InflightGuard {
        engine.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard(engine.clone())
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_config::bundle::{load_text, Loaded};
    use strait_config::testing::ingress_scope;

    fn built(backends: &[&str]) -> Built {
        let endpoints: String = backends.iter().map(|a| format!("  - {{address: {a}}}\n")).collect();
        let yaml = format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: [\"*\"]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: app}}\nspec:\n  hosts: [\"*\"]\n  gateways: [gw]\n  http:\n  - route: [{{destination: {{host: backend}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: backend}}\nspec:\n  hosts: [backend.default.svc.cluster.local]\n  resolution: STATIC\n  ports: [{{number: 80, name: http}}]\n  endpoints:\n{endpoints}"
        );
        let mut loaded = Loaded::default();
        load_text(&mut loaded, "app.yaml", &yaml);
        strait_config::build(&loaded, &ingress_scope("default"), 0).expect("builds")
    }

    fn settings() -> EngineSettings {
        EngineSettings {
            jwks_refresh: Duration::from_secs(60),
            acme_store: std::env::temp_dir(),
        }
    }

    fn addresses(engine: &Engine) -> Vec<String> {
        engine.current().endpoints.clusters[0]
            .endpoints
            .iter()
            .map(|e| e.address.to_string())
            .collect()
    }

    #[test]
    fn endpoints_change_without_rebuilding_the_rest() {
        let engine =
            Engine::start(built(&["10.0.0.1", "10.0.0.2"]), ingress_scope("default"), &settings()).expect("starts");
        let before = engine.current();
        before.upstreams.clusters[0].endpoints[1]
            .active
            .store(7, Ordering::Relaxed);
        let next = built(&["10.0.0.2", "10.0.0.3"]).endpoints;
        engine.apply_endpoints(next).expect("applied");
        let after = engine.current();
        assert_eq!(addresses(&engine), ["10.0.0.2:80", "10.0.0.3:80"]);
        assert!(Arc::ptr_eq(&before.snapshot, &after.snapshot), "routes are not rebuilt");
        assert!(Arc::ptr_eq(&before.certs, &after.certs), "nor certificates");
        assert!(
            Arc::ptr_eq(&before.destinations, &after.destinations),
            "metric handles stay"
        );
        assert_eq!(after.snapshot.version, 1);
        assert_eq!(
            after.upstreams.clusters[0].endpoints[0].active.load(Ordering::Relaxed),
            7,
            "an endpoint that stays keeps its state"
        );
        // A table made for another snapshot is refused; the running one stays.
        let mut wrong = built(&["10.0.0.9"]).endpoints;
        wrong.clusters.push(Default::default());
        assert!(engine.apply_endpoints(wrong).is_err());
        assert_eq!(addresses(&engine), ["10.0.0.2:80", "10.0.0.3:80"]);
    }
}
