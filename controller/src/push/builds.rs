//! Each proxy's configuration at a state of the store, built with the one pipeline
//! (`strait_config::build`) for the proxy's scope, once per distinct scope and
//! version: a thousand gateways with the same labels cost one build. What comes
//! out is ready to send: the full `Config` message, the endpoint table, and the
//! digests that tell a session whether either changed for its proxy; or, when the
//! build fails, the errors (nothing is pushed then, and status shows them).
//!
//! Sidecars are sent only what their namespace needs: the documents with resources
//! in their namespace or the root namespace, and those with service-discovery
//! kinds from every namespace. Gateways are sent everything.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prost::bytes::Bytes;
use strait_config::bundle::{load_text, Loaded};
use strait_config::scope::ROOT_NAMESPACE;
use strait_push::delta::diff;
use strait_push::parts::{split_config, split_endpoints, PART_BYTES};
use strait_push::proto;
use tokio::sync::OnceCell;

use super::digest::{self, Digest};
use super::identity::{BuildKey, Identity, ProxyRole};
use super::metrics::Metrics;
use crate::store::{Document, State};

/// Kinds every sidecar is sent, whatever their namespace: what it needs to reach
/// services elsewhere in the mesh.
const DISCOVERY_KINDS: [&str; 6] = [
    "Service",
    "EndpointSlice",
    "ServiceEntry",
    "WorkloadEntry",
    "DestinationRule",
    "VirtualService",
];

/// Kinds whose content the snapshot does not show (keys, certificates, inline JWKS):
/// their documents' texts go into the configuration's digest.
const OPAQUE_KINDS: [&str; 2] = ["Secret", "RequestAuthentication"];

/// What a built configuration is sent as, and the digests that decide when.
#[derive(Debug)]
pub struct Ready {
    /// The full configuration.
    pub config: proto::Config,
    /// Its digest.
    pub config_digest: Digest,
    /// The endpoints of its clusters.
    pub endpoints: proto::Endpoints,
    /// Their digest.
    pub endpoints_digest: Digest,
    /// The configuration as it is sent: in parts (`strait_push::parts`).
    pub config_parts: Vec<proto::Config>,
    /// The endpoints as they are sent: in parts.
    pub endpoint_parts: Vec<proto::Endpoints>,
}

/// A proxy's configuration at one version of the store.
#[derive(Debug)]
pub struct Prepared {
    /// The store's version.
    pub version: u64,
    /// When the controller first worked on this version (for convergence times).
    pub published: Instant,
    /// What to send, or the errors that keep it from being sent (rendered lines).
    pub outcome: Result<Ready, Vec<String>>,
    /// How long the build took.
    pub took: Duration,
}

/// The documents a proxy is sent: all of them for a gateway; for a sidecar, those
/// with resources of its namespace, of the root namespace or of a discovery kind
/// (and those without any resource read, so that their errors show).
pub fn documents_for<'a>(state: &'a State, identity: &Identity) -> Vec<&'a Document> {
    if identity.role == ProxyRole::Gateway {
        return state.documents.iter().collect();
    }
    let mut needed: HashMap<&str, bool> = HashMap::new();
    for e in &state.loaded.bundle.entries {
        let ns = e.resource.namespace.as_str();
        let wanted = ns == identity.namespace || ns == ROOT_NAMESPACE || DISCOVERY_KINDS.contains(&e.resource.kind());
        *needed.entry(&*e.origin.file).or_default() |= wanted;
    }
    state
        .documents
        .iter()
        .filter(|d| needed.get(d.file.as_str()).copied().unwrap_or(true))
        .collect()
}

/// Builds `identity`'s configuration at `state` (the controller's own work for one
/// distinct scope; `Builds` caches it).
pub fn prepare(state: &State, identity: &Identity, published: Instant) -> Prepared {
    let start = Instant::now();
    let documents = documents_for(state, identity);
    let filtered;
    let loaded = if documents.len() == state.documents.len() {
        &state.loaded
    } else {
        let mut l = Loaded::default();
        for d in &documents {
            load_text(&mut l, &d.file, &d.text);
        }
        filtered = l;
        &filtered
    };
    let outcome = build(state, identity, loaded, &documents);
    Prepared {
        version: state.version,
        published,
        outcome,
        took: start.elapsed(),
    }
}

fn errors(diags: &[strait_config::Diagnostic]) -> Vec<String> {
    diags.iter().filter(|d| d.is_error()).map(ToString::to_string).collect()
}

fn build(state: &State, identity: &Identity, loaded: &Loaded, documents: &[&Document]) -> Result<Ready, Vec<String>> {
    // A broken mesh config is not sent: the proxies would refuse it anyway.
    let mesh_errors = errors(&state.mesh_diagnostics);
    if !mesh_errors.is_empty() {
        return Err(mesh_errors);
    }
    let built = strait_config::build(loaded, &identity.scope(state.mesh.clone()), state.version)
        .map_err(|diags| errors(&diags))?;
    let opaque: HashSet<&str> = loaded
        .bundle
        .entries
        .iter()
        .filter(|e| OPAQUE_KINDS.contains(&e.resource.kind()))
        .map(|e| &*e.origin.file)
        .collect();
    let opaque_texts = documents
        .iter()
        .filter(|d| opaque.contains(d.file.as_str()))
        .map(|d| d.text.as_str());
    let hash_error = |e: serde_json::Error| vec![format!("cannot hash the configuration: {e}")];
    let config_digest =
        digest::config(&built.snapshot, opaque_texts, state.mesh_text.as_deref()).map_err(hash_error)?;
    let endpoints_digest = digest::endpoints(&built.endpoints).map_err(hash_error)?;
    let config = proto::Config {
        version: state.version,
        documents: documents
            .iter()
            .map(|d| proto::Document {
                file: d.file.clone(),
                text: Bytes::copy_from_slice(d.text.as_bytes()),
            })
            .collect(),
        mesh_config: state.mesh_text.clone(),
        more: false,
        base_version: 0,
        removed: Vec::new(),
    };
    let endpoints = proto::Endpoints {
        version: state.version,
        table: strait_push::endpoints::encode_table(&built.snapshot, &built.endpoints),
        more: false,
    };
    Ok(Ready {
        config_parts: split_config(&config, PART_BYTES),
        endpoint_parts: split_endpoints(&endpoints, PART_BYTES),
        config,
        config_digest,
        endpoints,
        endpoints_digest,
    })
}

#[derive(Default)]
struct Cache {
    version: u64,
    published: Option<Instant>,
    entries: HashMap<BuildKey, Arc<OnceCell<Arc<Prepared>>>>,
    /// Deltas to this version, by the version they are on and the scope.
    deltas: HashMap<(u64, BuildKey), Arc<Vec<proto::Config>>>,
}

/// Builds per distinct scope for the latest version; older versions are dropped
/// as soon as a newer one is asked for.
pub struct Builds {
    cache: Mutex<Cache>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Builds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builds").finish_non_exhaustive()
    }
}

impl Builds {
    /// An empty cache that records build times in `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Builds {
        Builds {
            cache: Mutex::default(),
            metrics,
        }
    }

    /// `identity`'s configuration at `state`: built on a blocking thread by the
    /// first session that asks, shared with every other that asks for the same scope.
    pub async fn get(&self, state: &Arc<State>, identity: &Identity) -> Arc<Prepared> {
        let (cell, published) = {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if state.version > cache.version || cache.published.is_none() {
                *cache = Cache {
                    version: state.version,
                    published: Some(Instant::now()),
                    ..Cache::default()
                };
            }
            let published = cache.published.unwrap_or_else(Instant::now);
            if state.version < cache.version {
                // A session behind the others: built for it alone, not cached.
                (Arc::new(OnceCell::new()), published)
            } else {
                (
                    cache.entries.entry(identity.build_key()).or_default().clone(),
                    published,
                )
            }
        };
        cell.get_or_init(|| async {
            let (version, state, who) = (state.version, state.clone(), identity.clone());
            let prepared = tokio::task::spawn_blocking(move || prepare(&state, &who, published))
                .await
                .unwrap_or_else(|e| Prepared {
                    version,
                    published,
                    outcome: Err(vec![format!("the build failed: {e}")]),
                    took: Duration::ZERO,
                });
            self.metrics.translate.observe(prepared.took.as_secs_f64());
            Arc::new(prepared)
        })
        .await
        .clone()
    }
}

impl Builds {
    /// `new`'s configuration as a delta on `base`'s (both built for `identity`), in
    /// parts: computed once per base version and scope, shared by every session whose
    /// proxy holds that base. None when either did not build.
    pub fn delta(&self, base: &Prepared, new: &Prepared, identity: &Identity) -> Option<Arc<Vec<proto::Config>>> {
        let (Ok(before), Ok(after)) = (&base.outcome, &new.outcome) else {
            return None;
        };
        let key = (base.version, identity.build_key());
        let lock = || self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        {
            let cache = lock();
            if let Some(parts) = cache.deltas.get(&key).filter(|_| cache.version == new.version) {
                return Some(parts.clone());
            }
        }
        // Outside the lock: two sessions may both compute it, none waits for the other.
        let parts = Arc::new(split_config(&diff(&before.config, &after.config), PART_BYTES));
        let mut cache = lock();
        if cache.version == new.version {
            cache.deltas.insert(key, parts.clone());
        }
        Some(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn doc(file: &str, text: &str) -> Document {
        Document {
            file: file.into(),
            text: text.into(),
        }
    }

    fn identity(role: ProxyRole, namespace: &str) -> Identity {
        Identity {
            id: "p".into(),
            role,
            namespace: namespace.into(),
            labels: [("istio".to_string(), "ingressgateway".to_string())].into(),
            pod_name: None,
            service_account: None,
            ips: Vec::new(),
            strait_version: String::new(),
        }
    }

    fn policy(ns: &str) -> String {
        format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: {ns}}}\nspec: {{}}\n")
    }

    const SE: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: db, namespace: data}\nspec:\n  hosts: [db.example.com]\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints: [{address: 10.0.0.9}]\n";

    /// A gateway route to the ServiceEntry's host: its endpoints are in the build.
    const ROUTE: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec:\n  selector: {istio: ingressgateway}\n  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: db, namespace: istio-system}\nspec:\n  hosts: [db.example.com]\n  gateways: [gw]\n  http: [{route: [{destination: {host: db.example.com}}]}]\n";

    #[test]
    fn a_sidecar_gets_its_namespace_the_root_and_discovery() {
        let store = Store::new(Duration::from_millis(1));
        store.replace(
            "folder",
            vec![
                doc("shop.yaml", &policy("shop")),
                doc("other.yaml", &policy("other")),
                doc("root.yaml", &policy("istio-system")),
                doc("se.yaml", SE),
                doc("broken.yaml", "kind: ["),
            ],
        );
        store.publish_now();
        let state = store.current();
        let names =
            |who: &Identity| -> Vec<String> { documents_for(&state, who).iter().map(|d| d.file.clone()).collect() };
        assert_eq!(
            names(&identity(ProxyRole::Sidecar, "shop")),
            ["broken.yaml", "root.yaml", "se.yaml", "shop.yaml"]
        );
        assert_eq!(names(&identity(ProxyRole::Gateway, "shop")).len(), 5);
    }

    #[tokio::test]
    async fn proxies_with_one_scope_share_one_build_per_version() {
        let store = Store::new(Duration::from_millis(1));
        store.replace("folder", vec![doc("route.yaml", ROUTE), doc("se.yaml", SE)]);
        store.publish_now();
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let builds = Builds::new(metrics.clone());
        let state = store.current();
        let a = builds.get(&state, &identity(ProxyRole::Gateway, "istio-system")).await;
        let mut other_name = identity(ProxyRole::Gateway, "istio-system");
        other_name.id = "q".into();
        let b = builds.get(&state, &other_name).await;
        assert!(Arc::ptr_eq(&a, &b), "one build for both");
        assert_eq!(metrics.translate.get_sample_count(), 1);
        let ready = a.outcome.as_ref().expect("builds");
        assert_eq!(ready.config.documents.len(), 2);
        assert_eq!(ready.config.version, state.version);
        // A new version is built again.
        store.replace(
            "folder",
            vec![
                doc("route.yaml", ROUTE),
                doc("se.yaml", &SE.replace("10.0.0.9", "10.0.0.8")),
            ],
        );
        store.publish_now();
        let c = builds.get(&store.current(), &other_name).await;
        let moved = c.outcome.as_ref().expect("builds");
        assert_eq!(moved.config_digest, ready.config_digest, "same routes");
        assert_ne!(moved.endpoints_digest, ready.endpoints_digest, "other endpoints");
        assert_eq!(metrics.translate.get_sample_count(), 2);
    }
}
