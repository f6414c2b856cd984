//! The Kubernetes source against a real API server (etcd + kube-apiserver, the
//! CRDs of Istio and the Gateway API): what is created, changed and deleted through
//! the API shows in the store's published state, through an API server restart too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::Client;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use strait_config::snapshot::Snapshot;
use strait_config::{Built, Scope};
use strait_controller::kube_source::KubeSource;
use strait_controller::store::{State, Store};
use strait_controller::testing::ApiServer;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How soon a change made through the API must show in the store (the issue's
/// "within a second").
const SOON: Duration = Duration::from_secs(1);

/// After an API server restart, watches come back on kube-runtime's backoff
/// (0.8 s doubling, with jitter) while the server starts again.
const AFTER_RESTART: Duration = Duration::from_secs(60);

/// An API server, a store, and the source feeding it.
struct Cluster {
    server: ApiServer,
    store: Arc<Store>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Cluster {
    /// Starts everything; returns once the source has listed every kind.
    async fn start() -> Cluster {
        let server = ApiServer::start().await.expect("the API server starts");
        let store = Store::new(Duration::from_millis(20));
        let (stop, stopped) = watch::channel(false);
        let until_stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let source = KubeSource::new(server.client(), store.clone());
        let synced = source.synced();
        let tasks = vec![
            tokio::spawn(store.clone().run(until_stopped(stopped.clone()))),
            tokio::spawn(source.run(until_stopped(stopped))),
        ];
        tokio::time::timeout(Duration::from_secs(30), synced)
            .await
            .expect("every kind listed within 30 s");
        Cluster {
            server,
            store,
            stop,
            tasks,
        }
    }

    fn client(&self) -> Client {
        self.server.client()
    }

    /// Stops the source and the store, then the API server.
    async fn stop(self) {
        self.stop.send_replace(true);
        for task in self.tasks {
            task.await.expect("a task stops cleanly");
        }
        self.server.stop().expect("the API server stops cleanly");
    }

    /// Waits (at most `within`) for a published state where `ok` holds.
    async fn wait_for(&self, within: Duration, what: &str, mut ok: impl FnMut(&State) -> bool) -> Arc<State> {
        let mut states = self.store.subscribe();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let state = states.borrow_and_update().clone();
            if ok(&state) {
                return state;
            }
            if !matches!(tokio::time::timeout_at(deadline, states.changed()).await, Ok(Ok(()))) {
                let files: Vec<&str> = state.documents.iter().map(|d| d.file.as_str()).collect();
                panic!("no {what} within {within:?}; the store has {files:?}");
            }
        }
    }
}

fn document<'a>(state: &'a State, file: &str) -> Option<&'a str> {
    state.documents.iter().find(|d| d.file == file).map(|d| d.text.as_str())
}

fn from_json<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("a valid object")
}

/// A custom resource's collection in `version`.
fn custom(client: &Client, namespace: &str, group: &str, version: &str, kind: &str) -> Api<DynamicObject> {
    let resource = ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: kind.into(),
        // Every plural Kubernetes derives for these kinds (Policy -> policies, but
        // Gateway -> gateways).
        plural: match kind.to_ascii_lowercase().strip_suffix("cy") {
            Some(stem) => format!("{stem}cies"),
            None => format!("{}s", kind.to_ascii_lowercase()),
        },
    };
    Api::namespaced_with(client.clone(), namespace, &resource)
}

async fn create<K>(api: &Api<K>, object: Value) -> K
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(&PostParams::default(), &from_json(object))
        .await
        .expect("created")
}

async fn namespace(client: &Client, name: &str, labels: Value) {
    let api: Api<Namespace> = Api::all(client.clone());
    create(&api, json!({"metadata": {"name": name, "labels": labels}})).await;
}

#[tokio::test]
async fn istio_objects_written_in_any_served_version_appear_change_and_disappear() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    namespace(&client, "shop", json!({})).await;
    let file = "kubernetes/VirtualService/shop/reviews";

    // Written through v1beta1, watched through v1: the API server converts.
    let vs = custom(&client, "shop", "networking.istio.io", "v1beta1", "VirtualService");
    create(
        &vs,
        json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
               "metadata": {"name": "reviews"},
               "spec": {"hosts": ["reviews.example.com"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}}),
    )
    .await;
    let state = cluster
        .wait_for(SOON, "VirtualService from v1beta1", |s| document(s, file).is_some())
        .await;
    let text: Value = serde_json::from_str(document(&state, file).expect("present")).expect("JSON");
    assert_eq!(text["apiVersion"], "networking.istio.io/v1");
    assert_eq!(text["spec"]["hosts"], json!(["reviews.example.com"]));
    assert!(text["metadata"].get("managedFields").is_none(), "{text}");

    let dr = custom(&client, "shop", "networking.istio.io", "v1alpha3", "DestinationRule");
    create(
        &dr,
        json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "DestinationRule",
               "metadata": {"name": "reviews"},
               "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}}),
    )
    .await;
    let policy = custom(&client, "shop", "security.istio.io", "v1beta1", "AuthorizationPolicy");
    create(
        &policy,
        json!({"apiVersion": "security.istio.io/v1beta1", "kind": "AuthorizationPolicy",
               "metadata": {"name": "deny-all"}, "spec": {}}),
    )
    .await;
    let state = cluster
        .wait_for(
            SOON,
            "DestinationRule from v1alpha3 and AuthorizationPolicy from v1beta1",
            |s| {
                document(s, "kubernetes/DestinationRule/shop/reviews").is_some()
                    && document(s, "kubernetes/AuthorizationPolicy/shop/deny-all").is_some()
            },
        )
        .await;
    assert!(state.loaded.diagnostics.is_empty(), "{:?}", state.loaded.diagnostics);
    let kinds: Vec<&str> = state.loaded.bundle.entries.iter().map(|e| e.resource.kind()).collect();
    for kind in ["VirtualService", "DestinationRule", "AuthorizationPolicy"] {
        assert!(kinds.contains(&kind), "{kind} loaded: {kinds:?}");
    }

    let started = Instant::now();
    vs.patch(
        "reviews",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"hosts": ["reviews.shop.example.com"]}})),
    )
    .await
    .expect("updated");
    cluster
        .wait_for(SOON, "the updated VirtualService", |s| {
            document(s, file).is_some_and(|t| t.contains("reviews.shop.example.com"))
        })
        .await;
    eprintln!("an update showed in the store after {:?}", started.elapsed());

    vs.delete("reviews", &DeleteParams::default()).await.expect("deleted");
    let state = cluster
        .wait_for(SOON, "the VirtualService gone", |s| document(s, file).is_none())
        .await;
    assert!(document(&state, "kubernetes/DestinationRule/shop/reviews").is_some());
    cluster.stop().await;
}

/// A certificate and key for `host`, as PEM.
fn certificate(host: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec![host.to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    (cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn a_cluster_of_services_pods_and_secrets_builds_a_gateway_without_findings() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    namespace(&client, "shop", json!({"istio-injection": "enabled"})).await;

    // What a cluster's kubelet and controllers would have written: two Pods (with
    // their IPs in status), a Service, and the EndpointSlice naming the Pods.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    for (name, version, ip) in [("reviews-v1-a", "v1", "10.1.0.1"), ("reviews-v2-b", "v2", "10.1.0.2")] {
        create(
            &pods,
            json!({"metadata": {"name": name, "labels": {"app": "reviews", "version": version}},
                   "spec": {"serviceAccountName": "reviews", "containers": [{"name": "app", "image": "example.invalid/reviews"}]}}),
        )
        .await;
        pods.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})),
        )
        .await
        .expect("pod status");
    }
    let services: Api<Service> = Api::namespaced(client.clone(), "shop");
    create(
        &services,
        json!({"metadata": {"name": "reviews"},
               "spec": {"selector": {"app": "reviews"}, "ports": [{"name": "http", "port": 9080}]}}),
    )
    .await;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "shop");
    create(
        &slices,
        json!({"metadata": {"name": "reviews-x1", "labels": {"kubernetes.io/service-name": "reviews"}},
               "addressType": "IPv4", "ports": [{"name": "http", "port": 9080, "protocol": "TCP"}],
               "endpoints": [
                 {"addresses": ["10.1.0.1"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "namespace": "shop", "name": "reviews-v1-a"}},
                 {"addresses": ["10.1.0.2"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "namespace": "shop", "name": "reviews-v2-b"}}]}),
    )
    .await;

    // A TLS Secret is read; any other Secret is not even watched.
    let (cert, key) = certificate("bookinfo.example.com");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    create(
        &secrets,
        json!({"metadata": {"name": "bookinfo-cert"}, "type": "kubernetes.io/tls",
               "stringData": {"tls.crt": cert, "tls.key": key}}),
    )
    .await;
    create(
        &secrets,
        json!({"metadata": {"name": "password"}, "type": "Opaque", "stringData": {"password": "hunter2"}}),
    )
    .await;

    let gateways = custom(&client, "default", "networking.istio.io", "v1", "Gateway");
    create(
        &gateways,
        json!({"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "gw"},
               "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
                 {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["bookinfo.example.com"],
                  "tls": {"mode": "SIMPLE", "credentialName": "bookinfo-cert"}}]}}),
    )
    .await;
    let vs = custom(&client, "shop", "networking.istio.io", "v1", "VirtualService");
    create(
        &vs,
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "bookinfo"},
               "spec": {"hosts": ["bookinfo.example.com"], "gateways": ["default/gw"],
                        "http": [{"route": [{"destination": {"host": "reviews", "subset": "v2"}}]}]}}),
    )
    .await;
    let dr = custom(&client, "shop", "networking.istio.io", "v1", "DestinationRule");
    create(
        &dr,
        json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "reviews"},
               "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                                        {"name": "v2", "labels": {"version": "v2"}}]}}),
    )
    .await;

    let wanted = [
        "kubernetes/Pod/shop/reviews-v1-a",
        "kubernetes/Pod/shop/reviews-v2-b",
        "kubernetes/Service/shop/reviews",
        "kubernetes/EndpointSlice/shop/reviews-x1",
        "kubernetes/Secret/default/bookinfo-cert",
        "kubernetes/Namespace/shop",
        "kubernetes/Gateway/default/gw",
        "kubernetes/VirtualService/shop/bookinfo",
        "kubernetes/DestinationRule/shop/reviews",
    ];
    let state = cluster
        .wait_for(SOON, "every object created", |s| {
            wanted.iter().all(|f| document(s, f).is_some())
                && document(s, "kubernetes/Pod/shop/reviews-v2-b").is_some_and(|t| t.contains("10.1.0.2"))
        })
        .await;
    assert!(
        document(&state, "kubernetes/Secret/default/password").is_none(),
        "an Opaque Secret"
    );
    let shop = state
        .loaded
        .bundle
        .entries
        .iter()
        .find(|e| e.resource.kind() == "Namespace" && e.resource.name == "shop")
        .expect("Namespace shop loaded");
    assert_eq!(
        shop.resource.metadata.labels.get("istio-injection").map(String::as_str),
        Some("enabled")
    );

    // The objects as the API serves them load and build without a finding.
    assert!(state.loaded.diagnostics.is_empty(), "{:#?}", state.loaded.diagnostics);
    let labels = BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]);
    let scope = Scope::gateway("default", labels, state.mesh.clone());
    let built: Built = strait_config::build(&state.loaded, &scope, state.version).expect("builds");
    assert!(built.warnings.is_empty(), "{:#?}", built.warnings);
    let snapshot: &Snapshot = &built.snapshot;
    assert!(snapshot.listener(443).is_some(), "the HTTPS server's listener");
    let v2 = snapshot
        .clusters
        .iter()
        .position(|c| c.name == "outbound|9080|v2|reviews.shop.svc.cluster.local")
        .expect("the v2 subset's cluster");
    let addresses: Vec<String> = built.endpoints.clusters[v2]
        .endpoints
        .iter()
        .map(|e| e.address.to_string())
        .collect();
    assert_eq!(addresses, ["10.1.0.2:9080"], "the subset selects by the Pods' labels");
    cluster.stop().await;
}

#[tokio::test]
async fn the_istio_config_map_sets_the_mesh_config() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    assert_eq!(
        cluster.store.current().mesh_text,
        None,
        "no ConfigMap: Istio's defaults"
    );
    namespace(&client, "istio-system", json!({})).await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "istio-system");
    let mesh = |n: u32| format!("defaultConfig:\n  gatewayTopology:\n    numTrustedProxies: {n}\n");
    // Another ConfigMap of the namespace is not the mesh config.
    create(
        &maps,
        json!({"metadata": {"name": "istio-other"}, "data": {"mesh": mesh(7)}}),
    )
    .await;
    create(&maps, json!({"metadata": {"name": "istio"}, "data": {"mesh": mesh(2)}})).await;
    let state = cluster
        .wait_for(SOON, "the mesh config", |s| s.mesh.num_trusted_proxies == 2)
        .await;
    assert!(state.mesh_diagnostics.is_empty(), "{:?}", state.mesh_diagnostics);

    maps.patch(
        "istio",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"mesh": mesh(3)}})),
    )
    .await
    .expect("updated");
    cluster
        .wait_for(SOON, "the updated mesh config", |s| s.mesh.num_trusted_proxies == 3)
        .await;

    maps.delete("istio", &DeleteParams::default()).await.expect("deleted");
    cluster
        .wait_for(SOON, "Istio's defaults again", |s| {
            s.mesh_text.is_none() && s.mesh.num_trusted_proxies == 0
        })
        .await;
    cluster.stop().await;
}

#[tokio::test]
async fn an_api_server_restart_loses_nothing_and_later_changes_are_seen() {
    let mut cluster = Cluster::start().await;
    let client = cluster.client();
    namespace(&client, "shop", json!({})).await;
    let vs = custom(&client, "shop", "networking.istio.io", "v1", "VirtualService");
    let virtual_service = |name: &str, host: &str| {
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": name},
               "spec": {"hosts": [host], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}})
    };
    create(&vs, virtual_service("a", "a.example.com")).await;
    let services: Api<Service> = Api::namespaced(client.clone(), "shop");
    create(
        &services,
        json!({"metadata": {"name": "reviews"}, "spec": {"ports": [{"port": 9080}]}}),
    )
    .await;
    let a = "kubernetes/VirtualService/shop/a";
    let service = "kubernetes/Service/shop/reviews";
    let before = cluster
        .wait_for(SOON, "the objects", |s| {
            document(s, a).is_some() && document(s, service).is_some()
        })
        .await;

    // Every state published from now on must still hold what was there.
    let mut states = cluster.store.subscribe();
    let gaps = tokio::spawn(async move {
        let mut gaps = Vec::new();
        while states.changed().await.is_ok() {
            let state = states.borrow_and_update().clone();
            if document(&state, a).is_none() || document(&state, service).is_none() {
                let files: Vec<String> = state.documents.iter().map(|d| d.file.clone()).collect();
                gaps.push((state.version, files));
            }
        }
        gaps
    });

    let started = Instant::now();
    cluster
        .server
        .restart_apiserver()
        .await
        .expect("the API server restarts");
    eprintln!("the API server was back after {:?}", started.elapsed());
    assert!(
        document(&cluster.store.current(), a).is_some(),
        "nothing lost while the API server was away"
    );

    // Changes after the restart: an update, a new object, a deletion.
    let started = Instant::now();
    vs.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"hosts": ["a2.example.com"]}})),
    )
    .await
    .expect("updated");
    create(&vs, virtual_service("b", "b.example.com")).await;
    let dr = custom(&client, "shop", "networking.istio.io", "v1", "DestinationRule");
    create(
        &dr,
        json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "reviews"},
               "spec": {"host": "reviews"}}),
    )
    .await;
    cluster
        .wait_for(AFTER_RESTART, "the changes made after the restart", |s| {
            document(s, a).is_some_and(|t| t.contains("a2.example.com"))
                && document(s, "kubernetes/VirtualService/shop/b").is_some()
                && document(s, "kubernetes/DestinationRule/shop/reviews").is_some()
        })
        .await;
    eprintln!("changes after the restart showed after {:?}", started.elapsed());
    assert!(before.version < cluster.store.current().version);

    services
        .delete("reviews", &DeleteParams::default())
        .await
        .expect("deleted");
    cluster
        .wait_for(SOON, "the Service gone", |s| document(s, service).is_none())
        .await;
    let current = cluster.store.current().version;
    cluster.stop().await;
    let gaps = gaps.await.expect("the checker ends with the store");
    // The last state (the Service deleted on purpose) is no gap.
    let gaps: Vec<_> = gaps.into_iter().filter(|(v, _)| *v < current).collect();
    assert!(gaps.is_empty(), "states without the objects: {gaps:?}");
}

#[tokio::test]
async fn rate_limits_are_read_once_their_crd_is_installed() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    // Strait's CRD is not installed: the source started without it, quietly.
    namespace(&client, "shop", json!({})).await;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    create(
        &crds,
        json!({"metadata": {"name": "ratelimits.strait.io"},
               "spec": {"group": "strait.io", "scope": "Namespaced",
                        "names": {"kind": "RateLimit", "plural": "ratelimits", "singular": "ratelimit", "listKind": "RateLimitList"},
                        "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                                      "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}}),
    )
    .await;
    let limits = custom(&client, "shop", "strait.io", "v1alpha1", "RateLimit");
    // Until the CRD is established, creating one is refused.
    let deadline = Instant::now() + Duration::from_secs(30);
    let object = json!({"apiVersion": "strait.io/v1alpha1", "kind": "RateLimit", "metadata": {"name": "api"},
                        "spec": {"virtualService": "api", "requests": 10, "per": "1s"}});
    while limits
        .create(&PostParams::default(), &from_json(object.clone()))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the RateLimit CRD is not served after 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The source looks for kinds it lacks every 10 s.
    let state = cluster
        .wait_for(Duration::from_secs(15), "the RateLimit", |s| {
            document(s, "kubernetes/RateLimit/shop/api").is_some()
        })
        .await;
    assert!(state.loaded.diagnostics.is_empty(), "{:?}", state.loaded.diagnostics);
    cluster.stop().await;
}
