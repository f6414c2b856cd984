//! The Kubernetes source of the controller's store: watches every kind Strait reads
//! (Istio's networking and security kinds, Strait's RateLimit when its CRD is
//! installed, Services, EndpointSlices, Pods, Namespaces, TLS Secrets) and Istio's
//! mesh config (ConfigMap `istio-system/istio`, key `mesh`).
//!
//! Each kind is one source of the store (`kubernetes/<Kind>`): a change re-sends
//! that kind's documents only, each object serialized once, when it changes. An
//! object is one document, `kubernetes/<Kind>/<namespace>/<name>` (cluster-scoped:
//! `kubernetes/<Kind>/<name>`), its JSON as the API server serves it without
//! `managedFields` and `resourceVersion`, and for Istio's kinds without `status`:
//! the status the controller writes there (`istio_status`) changes nothing the
//! proxies are sent, and so publishes no new state. A custom kind is watched in one version the API server serves
//! (the first of those Strait reads, newest first): the server converts objects
//! written in any other version, as Istio's CRDs declare no conversion webhook.
//!
//! Watches restart after any error with kube-runtime's default backoff; each restart
//! lists again and replaces the kind's documents as a whole, so an object deleted
//! while the API server was away does not linger, and none is lost.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ApiResource, DynamicObject, TypeMeta};
use kube::discovery::oneshot;
use kube::error::DiscoveryError;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::store::{Document, Hold, Store};

/// Why a kubeconfig file gives no client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The file cannot be read, or names no usable cluster and user.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: kube::config::KubeconfigError,
    },
    /// A client cannot be built from it.
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A client for the cluster of the current context of the kubeconfig at `path`.
pub async fn client_from_kubeconfig(path: &std::path::Path) -> Result<Client, ClientError> {
    let kubeconfig_error = |source| ClientError::Kubeconfig {
        path: path.to_path_buf(),
        source,
    };
    let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(kubeconfig_error)?;
    Ok(Client::try_from(config)?)
}

/// Istio's namespace, where its mesh config lives.
pub const MESH_NAMESPACE: &str = "istio-system";

/// The ConfigMap holding the mesh config (as istiod reads it, without a revision).
pub const MESH_CONFIG_MAP: &str = "istio";

/// The API groups whose objects carry Istio's status (networking.istio.io,
/// security.istio.io): the controller's own writes there are not configuration.
const ISTIO_GROUP_SUFFIX: &str = ".istio.io";

/// How often a kind the API server does not serve (its CRD not installed) is
/// looked for again.
const ABSENT_RETRY: Duration = Duration::from_secs(10);

/// Events taken from a watch at once: one store update for a burst of them.
const BATCH: usize = 256;

/// One kind the source watches.
#[derive(Debug)]
struct Watched {
    /// API group ("" for the core group).
    group: &'static str,
    kind: &'static str,
    /// The versions Strait reads, newest first; the first one served is watched.
    versions: &'static [&'static str],
    /// A field selector, for kinds of which only some objects matter.
    fields: Option<&'static str>,
    /// Whether a cluster commonly lacks it (then its absence is not worth a warning).
    optional: bool,
}

const NETWORKING: &[&str] = &["v1", "v1beta1", "v1alpha3"];
/// The Gateway API (`sigs.k8s.io/gateway-api`), whose CRDs a cluster may lack.
const GATEWAY_API: &str = "gateway.networking.k8s.io";
const GATEWAY_API_VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha2"];

const fn gateway_api(name: &'static str) -> Watched {
    Watched {
        optional: true,
        ..kind(GATEWAY_API, name, GATEWAY_API_VERSIONS)
    }
}

/// How documents of `group`'s `kind` are labelled: `Kind`, or `Kind.group` for the
/// Gateway API, whose Gateway is not Istio's (nor written Istio's status).
fn kind_label(group: &str, kind: &str) -> String {
    if group == GATEWAY_API {
        format!("{kind}.{group}")
    } else {
        kind.to_string()
    }
}
const SECURITY: &[&str] = &["v1", "v1beta1"];

const fn kind(group: &'static str, kind: &'static str, versions: &'static [&'static str]) -> Watched {
    Watched {
        group,
        kind,
        versions,
        fields: None,
        optional: false,
    }
}

/// Everything watched besides the mesh config. Read access to exactly these (and
/// that ConfigMap) is what the controller's RBAC grants.
const WATCHED: &[Watched] = &[
    kind("networking.istio.io", "Gateway", NETWORKING),
    kind("networking.istio.io", "VirtualService", NETWORKING),
    kind("networking.istio.io", "DestinationRule", NETWORKING),
    kind("networking.istio.io", "ServiceEntry", NETWORKING),
    kind("networking.istio.io", "WorkloadEntry", NETWORKING),
    kind("security.istio.io", "RequestAuthentication", SECURITY),
    kind("security.istio.io", "AuthorizationPolicy", SECURITY),
    kind("security.istio.io", "PeerAuthentication", SECURITY),
    Watched {
        optional: true,
        ..kind("strait.io", "RateLimit", &["v1alpha1"])
    },
    gateway_api("GatewayClass"),
    gateway_api("Gateway"),
    gateway_api("HTTPRoute"),
    gateway_api("GRPCRoute"),
    gateway_api("TLSRoute"),
    gateway_api("ReferenceGrant"),
    kind("", "Service", &["v1"]),
    kind("discovery.k8s.io", "EndpointSlice", &["v1"]),
    kind("", "Pod", &["v1"]),
    kind("", "Namespace", &["v1"]),
    Watched {
        fields: Some("type=kubernetes.io/tls"),
        ..kind("", "Secret", &["v1"])
    },
    // The answers to ACME challenges the leader publishes for every gateway.
    Watched {
        fields: Some("type=strait.io/acme-challenges"),
        ..kind("", "Secret", &["v1"])
    },
];

/// Feeds a store from a Kubernetes API server.
pub struct KubeSource {
    client: Client,
    store: Arc<Store>,
    /// Watches (kinds + the mesh config) not yet listed once.
    unsynced: watch::Sender<usize>,
    /// Keeps the store from publishing until every watch has listed once.
    hold: Hold,
}

impl KubeSource {
    /// A source reading through `client` into `store`.
    pub fn new(client: Client, store: Arc<Store>) -> KubeSource {
        KubeSource {
            client,
            hold: store.hold(),
            store,
            unsynced: watch::channel(WATCHED.len() + 1).0,
        }
    }

    /// Resolves once every kind has been listed (or found not served) and the mesh
    /// config read: from then on the store holds the whole cluster, not a part of it.
    pub fn synced(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut unsynced = self.unsynced.subscribe();
        async move {
            // A closed channel means the source is gone: nothing to wait for.
            let _ = unsynced.wait_for(|n| *n == 0).await;
        }
    }

    /// Watches until `stop` turns true: the form `Controller::add_source` takes.
    pub async fn run_until(self, mut stop: watch::Receiver<bool>) -> Result<(), std::convert::Infallible> {
        self.run(async move { crate::controller::until_stopped(&mut stop).await })
            .await;
        Ok(())
    }

    /// Watches until `stop` resolves. The store publishes nothing before every kind
    /// has been listed once (as istiod waits for its caches to sync).
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let all_synced = self.synced();
        let hold = self.hold;
        let synced = Arc::new(self.unsynced);
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            all_synced.await;
            log::info!("every kind listed: the store publishes");
            drop(hold);
        });
        for watched in WATCHED {
            let sync = Synced::new(&synced);
            tasks.spawn(watch_kind(self.client.clone(), self.store.clone(), watched, sync));
        }
        tasks.spawn(watch_mesh(self.client, self.store, Synced::new(&synced)));
        let mut stop = pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                Some(ended) = tasks.join_next() => {
                    // Only the hold's task ends by itself; a watch that ends panicked.
                    if let Err(e) = ended {
                        log::error!("a Kubernetes watch stopped: {e}");
                    }
                }
            }
        }
        tasks.shutdown().await;
    }
}

/// Counts one watch as synced, once.
struct Synced(Option<Arc<watch::Sender<usize>>>);

impl Synced {
    fn new(count: &Arc<watch::Sender<usize>>) -> Synced {
        Synced(Some(count.clone()))
    }

    fn done(&mut self) {
        if let Some(count) = self.0.take() {
            count.send_modify(|n| *n = n.saturating_sub(1));
        }
    }
}

/// Watches one kind for ever, feeding its documents to `store`.
async fn watch_kind(client: Client, store: Arc<Store>, watched: &'static Watched, mut synced: Synced) {
    let resource = resolve_until_served(&client, watched, &mut synced).await;
    log::info!("watching {} {}", resource.api_version, resource.plural);
    let api = Api::<DynamicObject>::all_with(client, &resource);
    let mut config = watcher::Config::default();
    if let Some(fields) = watched.fields {
        config = config.fields(fields);
    }
    // Two watches of one kind (Secrets of two types) feed the store apart.
    let kind = kind_label(watched.group, watched.kind);
    let source = match watched.fields {
        Some(fields) => format!("kubernetes/{kind}?{fields}"),
        None => format!("kubernetes/{kind}"),
    };
    let mut documents = Documents::new(resource);
    let mut events = pin!(watcher(api, config).default_backoff().ready_chunks(BATCH));
    while let Some(batch) = events.next().await {
        let mut changed = false;
        for event in batch {
            match event {
                Ok(event) => changed |= documents.apply(event),
                Err(e) => log::warn!("watching {source}: {e}; retrying"),
            }
        }
        if changed {
            store.replace(&source, documents.list());
        }
        if documents.listed {
            synced.done();
        }
    }
}

/// The resource to watch for `watched`: the first version Strait reads that the API
/// server serves. A kind not served is looked for again every `ABSENT_RETRY` (its
/// CRD may be installed later); it counts as synced meanwhile, having no objects.
async fn resolve_until_served(client: &Client, watched: &Watched, synced: &mut Synced) -> ApiResource {
    let mut warned = false;
    loop {
        match resolve(client, watched).await {
            Ok(Some(resource)) => return resource,
            Ok(None) => {
                synced.done();
                if !warned && !watched.optional {
                    log::warn!(
                        "the API server serves no {} {} in versions {:?} (is its CRD installed?); looking again every {:?}",
                        watched.group,
                        watched.kind,
                        watched.versions,
                        ABSENT_RETRY
                    );
                }
                warned = true;
                tokio::time::sleep(ABSENT_RETRY).await;
            }
            Err(e) => {
                log::warn!("discovering {} {}: {e}; retrying", watched.group, watched.kind);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Asks the API server which version of `watched` to use; None when none is served.
async fn resolve(client: &Client, watched: &Watched) -> Result<Option<ApiResource>, kube::Error> {
    let group = match oneshot::group(client, watched.group).await {
        Ok(group) => group,
        // The group itself is absent: no CRD of it is installed.
        Err(kube::Error::Discovery(DiscoveryError::MissingApiGroup(_))) => return Ok(None),
        Err(e) => return Err(e),
    };
    for version in watched.versions {
        let found = group
            .versioned_resources(version)
            .into_iter()
            .find(|(resource, _)| resource.kind == watched.kind);
        if let Some((resource, _)) = found {
            return Ok(Some(resource));
        }
    }
    Ok(None)
}

/// One kind's documents, kept up to date from its watch events.
struct Documents {
    resource: ApiResource,
    /// By file name.
    current: BTreeMap<String, Document>,
    /// A relist in progress: the objects listed so far.
    relisting: Option<BTreeMap<String, Document>>,
    /// Whether a first list has completed.
    listed: bool,
}

impl Documents {
    fn new(resource: ApiResource) -> Documents {
        Documents {
            resource,
            current: BTreeMap::new(),
            relisting: None,
            listed: false,
        }
    }

    /// Applies one event; true when the documents changed.
    fn apply(&mut self, event: Event<DynamicObject>) -> bool {
        match event {
            Event::Init => {
                self.relisting = Some(BTreeMap::new());
                false
            }
            Event::InitApply(object) => {
                let document = self.document(object);
                if let (Some(relisting), Some(d)) = (&mut self.relisting, document) {
                    relisting.insert(d.file.clone(), d);
                }
                false
            }
            Event::InitDone => {
                // Only a complete list replaces what was there: objects deleted while
                // the watch was down go now, the others never went away.
                if let Some(listed) = self.relisting.take() {
                    self.current = listed;
                }
                self.listed = true;
                true
            }
            Event::Apply(object) => match self.document(object) {
                Some(d) => self.current.insert(d.file.clone(), d.clone()) != Some(d),
                None => false,
            },
            Event::Delete(object) => self.current.remove(&self.file(&object)).is_some(),
        }
    }

    fn list(&self) -> Vec<Document> {
        self.current.values().cloned().collect()
    }

    fn file(&self, object: &DynamicObject) -> String {
        let name = object.metadata.name.as_deref().unwrap_or_default();
        let kind = kind_label(&self.resource.group, &self.resource.kind);
        match object.metadata.namespace.as_deref() {
            Some(namespace) => format!("kubernetes/{kind}/{namespace}/{name}"),
            None => format!("kubernetes/{kind}/{name}"),
        }
    }

    fn document(&self, mut object: DynamicObject) -> Option<Document> {
        // Objects of a list carry no apiVersion and kind of their own; managedFields
        // is bookkeeping of the API server's, often larger than the object.
        object.types = Some(TypeMeta {
            api_version: self.resource.api_version.clone(),
            kind: self.resource.kind.clone(),
        });
        object.metadata.managed_fields = None;
        object.metadata.resource_version = None;
        if let Some(data) = object
            .data
            .as_object_mut()
            .filter(|_| self.resource.group.ends_with(ISTIO_GROUP_SUFFIX))
        {
            data.remove("status");
        }
        let file = self.file(&object);
        match serde_json::to_string(&object) {
            Ok(text) => Some(Document { file, text }),
            Err(e) => {
                log::warn!("{file}: cannot serialize: {e}; skipped");
                None
            }
        }
    }
}

/// Watches the mesh config ConfigMap for ever; its `mesh` key is the store's mesh
/// config (absent: Istio's defaults).
async fn watch_mesh(client: Client, store: Arc<Store>, mut synced: Synced) {
    let api: Api<ConfigMap> = Api::namespaced(client, MESH_NAMESPACE);
    let config = watcher::Config::default().fields(&format!("metadata.name={MESH_CONFIG_MAP}"));
    let mut events = pin!(watcher(api, config).default_backoff());
    // A relist in progress: the mesh text listed so far.
    let mut relisting: Option<Option<String>> = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => relisting = Some(None),
            Ok(Event::InitApply(map)) => relisting = Some(mesh_text(&map)),
            Ok(Event::InitDone) => {
                store.set_mesh(relisting.take().flatten());
                synced.done();
            }
            Ok(Event::Apply(map)) => store.set_mesh(mesh_text(&map)),
            Ok(Event::Delete(_)) => store.set_mesh(None),
            Err(e) => log::warn!("watching ConfigMap {MESH_NAMESPACE}/{MESH_CONFIG_MAP}: {e}; retrying"),
        }
    }
}

fn mesh_text(map: &ConfigMap) -> Option<String> {
    map.data.as_ref()?.get("mesh").cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(namespace: Option<&str>, name: &str, host: &str) -> DynamicObject {
        let mut value = serde_json::json!({
            "metadata": {"name": name, "resourceVersion": "7", "generation": 2, "managedFields": [{"manager": "kubectl"}]},
            "spec": {"hosts": [host]},
            "status": {"observedGeneration": 2},
        });
        if let Some(ns) = namespace {
            value["metadata"]["namespace"] = ns.into();
        }
        serde_json::from_value(value).expect("an object")
    }

    fn vs_resource() -> ApiResource {
        ApiResource {
            group: "networking.istio.io".into(),
            version: "v1".into(),
            api_version: "networking.istio.io/v1".into(),
            kind: "VirtualService".into(),
            plural: "virtualservices".into(),
        }
    }

    #[test]
    fn a_relist_replaces_the_documents_only_when_complete() {
        let mut docs = Documents::new(vs_resource());
        assert!(!docs.apply(Event::Init));
        assert!(!docs.apply(Event::InitApply(object(Some("shop"), "a", "a.example.com"))));
        assert!(!docs.apply(Event::InitApply(object(Some("shop"), "b", "b.example.com"))));
        assert!(docs.list().is_empty(), "nothing before the list is complete");
        assert!(docs.apply(Event::InitDone));
        let files: Vec<String> = docs.list().into_iter().map(|d| d.file).collect();
        assert_eq!(
            files,
            ["kubernetes/VirtualService/shop/a", "kubernetes/VirtualService/shop/b"]
        );
        // The watch restarts; b was deleted meanwhile.
        docs.apply(Event::Init);
        docs.apply(Event::InitApply(object(Some("shop"), "a", "a.example.com")));
        assert_eq!(docs.list().len(), 2, "a partial relist keeps what was there");
        docs.apply(Event::InitDone);
        assert_eq!(docs.list().len(), 1);
        // The same object again is no change; an update and a delete are.
        assert!(!docs.apply(Event::Apply(object(Some("shop"), "a", "a.example.com"))));
        assert!(docs.apply(Event::Apply(object(Some("shop"), "a", "c.example.com"))));
        assert!(docs.apply(Event::Delete(object(Some("shop"), "a", "c.example.com"))));
        assert!(!docs.apply(Event::Delete(object(Some("shop"), "a", "c.example.com"))));
        assert!(docs.list().is_empty());
    }

    #[test]
    fn a_document_is_the_object_with_its_type_without_bookkeeping_and_status() {
        let mut docs = Documents::new(vs_resource());
        docs.apply(Event::Apply(object(Some("shop"), "a", "a.example.com")));
        docs.apply(Event::Apply(object(None, "cluster-wide", "b.example.com")));
        let list = docs.list();
        assert_eq!(list[0].file, "kubernetes/VirtualService/cluster-wide");
        let value: serde_json::Value = serde_json::from_str(&list[1].text).expect("JSON");
        assert_eq!(value["apiVersion"], "networking.istio.io/v1");
        assert_eq!(value["kind"], "VirtualService");
        assert_eq!(value["spec"]["hosts"][0], "a.example.com");
        assert!(value["metadata"].get("managedFields").is_none(), "{value}");
        // What the controller's own status writes change is not configuration.
        assert!(value["metadata"].get("resourceVersion").is_none(), "{value}");
        assert!(value.get("status").is_none(), "{value}");
        assert_eq!(value["metadata"]["generation"], 2, "{value}");
        let mut loaded = strait_config::Loaded::default();
        strait_config::bundle::load_text(&mut loaded, &list[1].file, &list[1].text);
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        assert_eq!(loaded.bundle.entries.len(), 1);
    }
}
