//! What requests read: an accepted snapshot with everything the engine compiles from
//! it (server certificates, client certificate checks, upstream TLS material), the
//! runtime state of its clusters and the metric handles of its destinations. It is
//! built in full before the engine swaps it in, so a request never meets half a
//! configuration; state kept across swaps (endpoint counters, ejections, JWKS slots)
//! is carried over from the runtime it replaces.

use std::sync::Arc;

use strait_config::pipeline::sorted;
use strait_config::snapshot::{ClusterEndpoints, Endpoints};
use strait_config::{Built, Diagnostic, Snapshot};

use crate::certs::{compile_certificates, CompiledCert};
use crate::client_auth::{self, ClientAuthTable};
use crate::jwks::{JwksStore, RemoteJwks};
use crate::metrics::Destination;
use crate::route_paths::ListenerPath;
use crate::upstream_tls::{self, CompiledUpstreamTls};
use crate::upstreams::Upstreams;

/// A snapshot with everything compiled from it, and its clusters' endpoints.
/// Everything but the endpoints and their state is shared (not copied) by the
/// runtime an endpoint update makes.
#[derive(Debug)]
pub struct Runtime {
    /// The routing configuration.
    pub snapshot: Arc<Snapshot>,
    /// The endpoints of its clusters, index-aligned with `snapshot.clusters`.
    pub endpoints: Arc<Endpoints>,
    /// Cluster and endpoint state, index-aligned with `snapshot.clusters` and
    /// `endpoints`.
    pub upstreams: Upstreams,
    /// Server certificates, by `Snapshot::certificates` index.
    pub certs: Arc<Vec<CompiledCert>>,
    /// Warnings and notes of the accepted configuration.
    pub warnings: Arc<Vec<Diagnostic>>,
    /// Upstream TLS material, index-aligned with `snapshot.clusters`.
    pub upstream_tls: Arc<Vec<Option<Arc<CompiledUpstreamTls>>>>,
    /// Remote key sets, index-aligned with `snapshot.policies` and then with each
    /// policy's JWT providers (None: inline keys).
    pub jwks: Arc<Vec<Vec<Option<Arc<RemoteJwks>>>>>,
    /// Client certificate checks of the HTTPS servers.
    pub client_auth: Arc<ClientAuthTable>,
    /// Metric labels and handles per cluster (index-aligned, then one for none).
    pub destinations: Arc<Vec<Destination>>,
    /// Which path serves each listener's HTTP/1 requests (index-aligned).
    pub paths: Arc<Vec<ListenerPath>>,
}

impl Runtime {
    /// Compiles what the engine needs from `built`; `previous` (the runtime it will
    /// replace) lends its endpoint state, `jwks` the remote key sets. A certificate or
    /// TLS file that does not compile rejects the whole configuration.
    pub fn compile(built: Built, previous: Option<&Runtime>, jwks: &JwksStore) -> Result<Runtime, Vec<Diagnostic>> {
        let Built {
            snapshot,
            endpoints,
            mut warnings,
        } = built;
        match (
            compile_certificates(&snapshot),
            upstream_tls::compile_all(&snapshot),
            client_auth::compile(&snapshot),
        ) {
            (Ok(certs), Ok((upstream_tls, tls_warnings)), Ok(client_auth)) => Ok(Runtime {
                // Endpoints that stay keep their in-flight counts, counters and ejections.
                upstreams: Upstreams::build(&snapshot, &endpoints, previous.map(|p| &p.upstreams)),
                endpoints: Arc::new(endpoints),
                upstream_tls: Arc::new(upstream_tls),
                jwks: Arc::new(snapshot.policies.iter().map(|p| jwks.attach(&p.jwt)).collect()),
                destinations: Arc::new(crate::metrics::destinations(&snapshot)),
                paths: Arc::new(crate::route_paths::compile(&snapshot)),
                client_auth: Arc::new(client_auth),
                snapshot: Arc::new(snapshot),
                certs: Arc::new(certs),
                warnings: Arc::new({
                    warnings.extend(tls_warnings);
                    warnings
                }),
            }),
            (certs, upstream, client) => {
                warnings.extend(certs.err().into_iter().flatten());
                warnings.extend(upstream.err().into_iter().flatten());
                warnings.extend(client.err().into_iter().flatten());
                Err(sorted(warnings))
            }
        }
    }

    /// The same configuration with new endpoints: routes, policies and certificates
    /// are shared, not rebuilt; endpoints that stay keep their state.
    pub fn with_endpoints(&self, endpoints: Endpoints) -> Runtime {
        Runtime {
            upstreams: Upstreams::build(&self.snapshot, &endpoints, Some(&self.upstreams)),
            endpoints: Arc::new(endpoints),
            snapshot: self.snapshot.clone(),
            certs: self.certs.clone(),
            warnings: self.warnings.clone(),
            upstream_tls: self.upstream_tls.clone(),
            jwks: self.jwks.clone(),
            client_auth: self.client_auth.clone(),
            destinations: self.destinations.clone(),
            paths: self.paths.clone(),
        }
    }

    /// The index of the listener of Gateway port `port` (`usize::MAX`: none).
    pub fn listener_of_port(&self, port: u16) -> usize {
        self.snapshot
            .listeners
            .iter()
            .position(|l| l.port == port)
            .unwrap_or(usize::MAX)
    }

    /// The endpoints of cluster `cluster`.
    pub fn cluster_endpoints(&self, cluster: usize) -> Option<&ClusterEndpoints> {
        self.endpoints.clusters.get(cluster)
    }

    /// The metrics destination of a cluster index (None: the request reached none).
    pub fn destination(&self, cluster: Option<usize>) -> Option<&Destination> {
        cluster
            .and_then(|i| self.destinations.get(i))
            .or_else(|| self.destinations.last())
    }
}
