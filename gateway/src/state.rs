//! The engine's state: the current compiled configuration (snapshot plus the
//! certificates built from it), swapped atomically as one unit, and the
//! counters beside it that survive swaps.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use strait_config::pipeline::sorted;
use strait_config::{load_dir, Diagnostic, Scope, Snapshot};

use crate::acme::Challenges;
use crate::certs::{compile_certificates, CompiledCert};
use crate::client_auth::{self, ClientAuthTable};
use crate::dns::Dns;
use crate::jwks::{JwksStore, RemoteJwks};
use crate::metrics::{Destination, Metrics};
use crate::upstream_client::SideCalls;
use crate::ratelimit::Limiter;
use crate::upstream_tls::{self, CompiledUpstreamTls};
use crate::upstreams::Upstreams;

/// A snapshot with everything compiled from it; what requests read.
#[derive(Debug)]
pub struct Runtime {
    /// The routing configuration.
    pub snapshot: Snapshot,
    /// Server certificates, by `Snapshot::certificates` index.
    pub certs: Vec<CompiledCert>,
    /// Warnings and notes of the accepted configuration.
    pub warnings: Vec<Diagnostic>,
    /// Cluster and endpoint state, index-aligned with `snapshot.clusters`.
    pub upstreams: Upstreams,
    /// Upstream TLS material, index-aligned with `snapshot.clusters`.
    pub upstream_tls: Vec<Option<Arc<CompiledUpstreamTls>>>,
    /// Remote key sets, index-aligned with `snapshot.policies` and then with each
    /// policy's JWT providers (None: inline keys).
    pub jwks: Vec<Vec<Option<Arc<RemoteJwks>>>>,
    /// Client certificate checks of the HTTPS servers.
    pub client_auth: ClientAuthTable,
    /// Metric labels and handles per cluster (index-aligned, then one for none).
    pub destinations: Vec<Destination>,
}

impl Runtime {
    /// The metrics destination of a cluster index (None: the request reached none).
    pub fn destination(&self, cluster: Option<usize>) -> Option<&Destination> {
        cluster
            .and_then(|i| self.destinations.get(i))
            .or_else(|| self.destinations.last())
    }
}

/// The outcome of the last configuration attempt, for `/config_dump`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LastAttempt {
    /// Whether it was accepted.
    pub accepted: bool,
    /// Its diagnostics.
    pub diagnostics: Vec<Diagnostic>,
}

/// State shared by all listeners, the admin server and the watcher.
#[derive(Debug)]
pub struct Shared {
    current: ArcSwap<Runtime>,
    /// Where the configuration comes from.
    pub config_dir: PathBuf,
    /// Who this proxy is.
    pub scope: Scope,
    next_version: AtomicU64,
    /// Rejected configurations since start.
    pub rejections: AtomicU64,
    /// The last attempt's outcome.
    pub last_attempt: Mutex<LastAttempt>,
    /// Requests being processed (for draining).
    pub inflight: AtomicUsize,
    /// Set once SIGTERM arrived: readiness turns false.
    pub draining: AtomicBool,
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
    /// ACME orders that failed.
    pub acme_failures: AtomicU64,
    /// The access log, when the mesh config turns it on.
    pub access_log: std::sync::OnceLock<crate::access_log::AccessLog>,
    /// The tracer, when the mesh config turns tracing on.
    pub tracer: std::sync::OnceLock<crate::trace::Tracer>,
}

impl Shared {
    /// Loads the first configuration; fails with its diagnostics if it is not valid.
    pub fn start(config_dir: &Path, scope: Scope, jwks_refresh: Duration) -> Result<Arc<Shared>, Vec<Diagnostic>> {
        let jwks = Arc::new(JwksStore::new(jwks_refresh));
        let mut runtime = build(config_dir, &scope, 1)?;
        runtime.jwks = attach_jwks(&jwks, &runtime.snapshot);
        // The parsed resources are gone by now; their pages need not stay resident.
        crate::memory::release_free_memory();
        let diagnostics = runtime.warnings.clone();
        let metrics = Metrics::new(&scope).map_err(|e| vec![folder_diag(config_dir, &format!("metrics: {e}"))])?;
        Ok(Arc::new(Shared {
            current: ArcSwap::from_pointee(runtime),
            config_dir: config_dir.to_path_buf(),
            scope,
            next_version: AtomicU64::new(2),
            rejections: AtomicU64::new(0),
            last_attempt: Mutex::new(LastAttempt {
                accepted: true,
                diagnostics,
            }),
            inflight: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            dns: Dns::new(),
            side_calls: Arc::new(SideCalls::default()),
            limiter: Limiter::default(),
            jwks,
            challenges: Arc::new(Challenges::new(config_dir.join("acme"))),
            metrics,
            connections: AtomicUsize::new(0),
            acme_failures: AtomicU64::new(0),
            access_log: std::sync::OnceLock::new(),
            tracer: std::sync::OnceLock::new(),
        }))
    }

    /// The configuration new requests use.
    pub fn current(&self) -> Arc<Runtime> {
        self.current.load_full()
    }

    /// Rebuilds from the folder and swaps if valid; otherwise keeps the running
    /// configuration and returns the diagnostics.
    pub fn reload(&self) -> Result<u64, Vec<Diagnostic>> {
        self.commit(self.prepare())
    }

    /// Builds the next configuration from the folder without applying it.
    pub fn prepare(&self) -> Result<Runtime, Vec<Diagnostic>> {
        let mut runtime = build(&self.config_dir, &self.scope, self.next_version.load(Ordering::Relaxed))?;
        // Endpoints that stay keep their in-flight counts, counters and ejections.
        runtime.upstreams = Upstreams::build(&runtime.snapshot, Some(&self.current().upstreams));
        runtime.jwks = attach_jwks(&self.jwks, &runtime.snapshot);
        Ok(runtime)
    }

    /// Swaps in a prepared configuration, or records its rejection.
    pub fn commit(&self, prepared: Result<Runtime, Vec<Diagnostic>>) -> Result<u64, Vec<Diagnostic>> {
        let outcome = self.swap(prepared);
        // The build's parsed resources and, unless requests still hold it, the
        // previous snapshot are freed: give their pages back now.
        crate::memory::release_free_memory();
        outcome
    }

    fn swap(&self, prepared: Result<Runtime, Vec<Diagnostic>>) -> Result<u64, Vec<Diagnostic>> {
        let mut last = self.last_attempt.lock().unwrap_or_else(|p| p.into_inner());
        match prepared {
            Ok(runtime) => {
                let version = runtime.snapshot.version;
                *last = LastAttempt {
                    accepted: true,
                    diagnostics: runtime.warnings.clone(),
                };
                self.next_version.store(version + 1, Ordering::Relaxed);
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

/// The whole config flow: files -> bundle -> validate -> translate -> compile.
/// On success the runtime carries the warnings; on failure every diagnostic is returned.
pub fn build(dir: &Path, scope: &Scope, version: u64) -> Result<Runtime, Vec<Diagnostic>> {
    let loaded = load_dir(dir).map_err(|e| vec![folder_diag(dir, &e.to_string())])?;
    log::debug!(
        "building version {version} from {} resources in {:?}",
        loaded.bundle.entries.len(),
        loaded.bundle.files
    );
    let built = strait_config::build(&loaded, scope, version)?;
    let (snapshot, mut diags) = (built.snapshot, built.warnings);
    match (
        compile_certificates(&snapshot),
        upstream_tls::compile_all(&snapshot),
        client_auth::compile(&snapshot),
    ) {
        (Ok(certs), Ok(upstream_tls), Ok(client_auth)) => Ok(Runtime {
            upstreams: Upstreams::build(&snapshot, None),
            upstream_tls,
            jwks: Vec::new(),
            destinations: crate::metrics::destinations(&snapshot),
            client_auth,
            snapshot,
            certs,
            warnings: sorted(diags),
        }),
        (certs, upstream, client) => {
            diags.extend(certs.err().into_iter().flatten());
            diags.extend(upstream.err().into_iter().flatten());
            diags.extend(client.err().into_iter().flatten());
            Err(sorted(diags))
        }
    }
}

/// The remote key sets of every policy's JWT providers.
fn attach_jwks(store: &JwksStore, snapshot: &Snapshot) -> Vec<Vec<Option<Arc<RemoteJwks>>>> {
    snapshot.policies.iter().map(|p| store.attach(&p.jwt)).collect()
}

/// What `--check` prints: every diagnostic of a full build.
pub fn check(dir: &Path, scope: &Scope) -> Vec<Diagnostic> {
    match build(dir, scope, 0) {
        Ok(runtime) => runtime.warnings,
        Err(diags) => diags,
    }
}

fn folder_diag(dir: &Path, message: &str) -> Diagnostic {
    Diagnostic {
        severity: strait_config::Severity::Error,
        code: strait_config::Code::Io,
        file: dir.display().to_string(),
        position: Default::default(),
        resource: None,
        field: None,
        message: message.to_string(),
    }
}

/// Counts a client connection as open until dropped.
#[derive(Debug)]
pub struct ConnectionGuard(Arc<Shared>);

impl ConnectionGuard {
    /// Starts counting.
    pub fn new(shared: &Arc<Shared>) -> ConnectionGuard {
        shared.connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(shared.clone())
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a request as in flight until dropped.
#[derive(Debug)]
pub struct InflightGuard(Arc<Shared>);

impl InflightGuard {
    /// Starts counting.
    pub fn new(shared: &Arc<Shared>) -> InflightGuard {
        shared.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard(shared.clone())
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}
