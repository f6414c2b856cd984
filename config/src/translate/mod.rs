//! Translation: a compiled bundle made into the snapshot of one proxy, for its scope.
//! Gateways get listeners from the Gateway servers that select them, sidecars an
//! outbound listener per service port and an inbound one; every proxy gets the
//! clusters its routes name and the HTTP policy of its workload, on the listeners
//! that apply it. Nothing
//! is compiled here: routes and policies are the compile stage's, resolved against
//! this proxy's listeners and clusters.

mod clusters;
mod gateway;
mod gateway_api;
mod policy;
mod routes;
mod sidecar;

pub use sidecar::{BLACKHOLE, INBOUND, INBOUND_PORT, PASSTHROUGH};

use std::collections::HashMap;

use crate::compile::Compiled;
use crate::diag::{has_errors, Diagnostic};
use crate::scope::{Role, Scope};
use crate::snapshot::{Certificate, Cluster, ClusterEndpoints, Endpoints, HttpPolicy, Listener, Protocol, Snapshot};

/// What translation makes: the snapshot, its clusters' endpoints, and warnings.
#[derive(Debug)]
pub struct Translated {
    /// The snapshot.
    pub snapshot: Snapshot,
    /// Its clusters' endpoints.
    pub endpoints: Endpoints,
    /// Warnings and notes.
    pub warnings: Vec<Diagnostic>,
}

/// Builds the snapshot of `compiled` for `scope`. Errors reject the bundle; warnings
/// are returned beside the snapshot.
pub fn translate(compiled: &Compiled<'_>, scope: &Scope, version: u64) -> Result<Translated, Vec<Diagnostic>> {
    let mut t = Translator {
        compiled,
        scope,
        diags: Vec::new(),
        listeners: Vec::new(),
        clusters: Vec::new(),
        endpoints: Vec::new(),
        cluster_index: HashMap::new(),
        certificates: Vec::new(),
        cert_index: HashMap::new(),
        acme: Vec::new(),
    };
    match scope.role {
        Role::Gateway => {
            t.gateways();
            t.gateway_api();
        }
        Role::Sidecar => t.sidecar(),
    }
    let tracing_cluster = t.tracing_cluster();
    let policy = t.workload_policy();
    let mut policies = Vec::new();
    if !policy.is_empty() {
        policies.push(policy);
        // A gateway applies its workload's policy on every HTTP listener; a sidecar
        // on what reaches its workload only.
        for l in t.listeners.iter_mut().filter(|l| match scope.role {
            Role::Gateway => matches!(l.protocol, Protocol::Http | Protocol::Https),
            Role::Sidecar => l.port == INBOUND_PORT,
        }) {
            l.policy = Some(0);
        }
    }
    if has_errors(&t.diags) {
        return Err(t.diags);
    }
    let snapshot = Snapshot {
        version,
        sources: compiled.bundle.files.clone(),
        listeners: t.listeners,
        clusters: t.clusters,
        certificates: t.certificates,
        policies,
        acme: t.acme,
        acme_answers: match scope.role {
            Role::Gateway => crate::acme::answers_in(compiled.bundle, crate::scope::ROOT_NAMESPACE),
            Role::Sidecar => crate::acme::Answers::default(),
        },
        tracing_cluster,
    };
    Ok(Translated {
        snapshot,
        endpoints: Endpoints { clusters: t.endpoints },
        warnings: t.diags,
    })
}

/// The snapshot being built.
struct Translator<'a, 'b> {
    compiled: &'a Compiled<'b>,
    scope: &'a Scope,
    diags: Vec<Diagnostic>,
    listeners: Vec<Listener>,
    clusters: Vec<Cluster>,
    /// Endpoints of `clusters`, index-aligned.
    endpoints: Vec<ClusterEndpoints>,
    cluster_index: HashMap<String, usize>,
    certificates: Vec<Certificate>,
    cert_index: HashMap<String, usize>,
    /// Certificates to obtain with ACME.
    acme: Vec<crate::acme::ManagedCert>,
}

impl Translator<'_, '_> {
    /// The HTTP policy of the proxy's workload: the RequestAuthentications and
    /// AuthorizationPolicies that select it, with their external authorizers.
    fn workload_policy(&mut self) -> HttpPolicy {
        let mut policy = HttpPolicy {
            jwt: self.jwt_for_workload(),
            ..HttpPolicy::default()
        };
        let (authz, ext_authz) = self.authz_for_workload();
        policy.authz = authz;
        policy.ext_authz = ext_authz;
        policy
    }
}
