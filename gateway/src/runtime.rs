//! What requests read: an accepted snapshot with everything the engine compiles from
//! it (server certificates, client certificate checks, upstream TLS material), the
//! runtime state of its clusters and the metric handles of its destinations. It is
//! built in full before the engine swaps it in, so a request never meets half a
//! configuration; state kept across swaps (endpoint counters, ejections, JWKS slots)
//! is carried over from the runtime it replaces.

use std::sync::Arc;

use strait_config::pipeline::sorted;
use strait_config::{Built, Diagnostic, Snapshot};

use crate::certs::{compile_certificates, CompiledCert};
use crate::client_auth::{self, ClientAuthTable};
use crate::jwks::{JwksStore, RemoteJwks};
use crate::metrics::Destination;
use crate::upstream_tls::{self, CompiledUpstreamTls};
use crate::upstreams::Upstreams;

/// A snapshot with everything compiled from it.
#[derive(Debug)]
pub struct Runtime {
    /// The routing configuration.
    pub snapshot: Arc<Snapshot>,
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
    /// Compiles what the engine needs from `built`; `previous` (the runtime it will
    /// replace) lends its endpoint state, `jwks` the remote key sets. A certificate or
    /// TLS file that does not compile rejects the whole configuration.
    pub fn compile(built: Built, previous: Option<&Runtime>, jwks: &JwksStore) -> Result<Runtime, Vec<Diagnostic>> {
        let Built { snapshot, mut warnings } = built;
        match (
            compile_certificates(&snapshot),
            upstream_tls::compile_all(&snapshot),
            client_auth::compile(&snapshot),
        ) {
            (Ok(certs), Ok(upstream_tls), Ok(client_auth)) => Ok(Runtime {
                // Endpoints that stay keep their in-flight counts, counters and ejections.
                upstreams: Upstreams::build(&snapshot, previous.map(|p| &p.upstreams)),
                upstream_tls,
                jwks: snapshot.policies.iter().map(|p| jwks.attach(&p.jwt)).collect(),
                destinations: crate::metrics::destinations(&snapshot),
                client_auth,
                snapshot: Arc::new(snapshot),
                certs,
                warnings,
            }),
            (certs, upstream, client) => {
                warnings.extend(certs.err().into_iter().flatten());
                warnings.extend(upstream.err().into_iter().flatten());
                warnings.extend(client.err().into_iter().flatten());
                Err(sorted(warnings))
            }
        }
    }

    /// The metrics destination of a cluster index (None: the request reached none).
    pub fn destination(&self, cluster: Option<usize>) -> Option<&Destination> {
        cluster
            .and_then(|i| self.destinations.get(i))
            .or_else(|| self.destinations.last())
    }
}
