//! The root published where Pods can mount it, as istiod does: the ConfigMap
//! `istio-ca-root-cert` (key `root-cert.pem`, label `istio.io/config: "true"`) in
//! every namespace but Kubernetes' own `kube-public`, `kube-node-lease` and
//! `local-path-storage` (istiod's list; `kube-system` is served, for node agents).
//!
//! A reconciler per namespace (kube-runtime's): a new namespace gets the ConfigMap,
//! and one deleted or edited is put back; failures are retried. Replicas of the
//! controller publish the same root, so they agree without coordinating.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller as Reconciler};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tokio::sync::watch;

/// The ConfigMap's name.
pub const CONFIG_MAP: &str = "istio-ca-root-cert";

/// Its key.
pub const KEY: &str = "root-cert.pem";

/// Namespaces that get no ConfigMap.
const IGNORED: &[&str] = &["kube-public", "kube-node-lease", "local-path-storage"];

/// When a failed namespace is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// Why a namespace's ConfigMap could not be written.
#[derive(Debug, thiserror::Error)]
#[error("ConfigMap {namespace}/{CONFIG_MAP}: {source}")]
pub struct Error {
    namespace: String,
    source: kube::Error,
}

struct Context {
    client: kube::Client,
    root: String,
}

/// Keeps the ConfigMap in every namespace holding `root` until `stop` turns true.
pub async fn publish(client: kube::Client, root: String, mut stop: watch::Receiver<bool>) -> Result<(), Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let config_maps: Api<ConfigMap> = Api::all(client.clone());
    let only_ours = watcher::Config::default().fields(&format!("metadata.name={CONFIG_MAP}"));
    let context = Arc::new(Context { client, root });
    Reconciler::new(namespaces, watcher::Config::default())
        .watches(config_maps, only_ours, |cm: ConfigMap| {
            cm.metadata.namespace.map(|ns| ObjectRef::<Namespace>::new(&ns))
        })
        .graceful_shutdown_on(async move { crate::controller::until_stopped(&mut stop).await })
        .run(reconcile, retry, context)
        .for_each(|outcome| async move {
            match outcome {
                Ok(_) => {}
                // Already said by `retry`.
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                // A watch broke (it restarts by itself), or is refused (RBAC).
                Err(e) => log::warn!("CA root ConfigMaps: {e}"),
            }
        })
        .await;
    Ok(())
}

fn retry(namespace: Arc<Namespace>, error: &Error, _: Arc<Context>) -> Action {
    log::warn!(
        "CA root ConfigMap in {}: {error} (retrying in {RETRY:?})",
        namespace.metadata.name.as_deref().unwrap_or("?")
    );
    Action::requeue(RETRY)
}

async fn reconcile(namespace: Arc<Namespace>, context: Arc<Context>) -> Result<Action, Error> {
    let Some(name) = namespace.metadata.name.as_deref() else {
        return Ok(Action::await_change());
    };
    let terminating = namespace.metadata.deletion_timestamp.is_some()
        || namespace
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Terminating");
    if terminating || IGNORED.contains(&name) {
        return Ok(Action::await_change());
    }
    let api: Api<ConfigMap> = Api::namespaced(context.client.clone(), name);
    let error = |source| Error {
        namespace: name.to_string(),
        source,
    };
    match api.get_opt(CONFIG_MAP).await.map_err(error)? {
        None => {
            let config_map = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(CONFIG_MAP.to_string()),
                    namespace: Some(name.to_string()),
                    labels: Some(BTreeMap::from([("istio.io/config".to_string(), "true".to_string())])),
                    ..ObjectMeta::default()
                },
                data: Some(BTreeMap::from([(KEY.to_string(), context.root.clone())])),
                ..ConfigMap::default()
            };
            match api.create(&PostParams::default(), &config_map).await {
                Ok(_) => log::debug!("CA root published in {name}"),
                // Made meanwhile (another replica): its event brings us back.
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(source) => return Err(error(source)),
            }
        }
        Some(current) if current.data.as_ref().and_then(|d| d.get(KEY)) == Some(&context.root) => {}
        Some(mut current) => {
            current
                .data
                .get_or_insert_with(BTreeMap::new)
                .insert(KEY.to_string(), context.root.clone());
            // With its resourceVersion: a concurrent change fails this, and is retried.
            api.replace(CONFIG_MAP, &PostParams::default(), &current)
                .await
                .map_err(error)?;
            log::info!("CA root ConfigMap in {name} did not hold the CA's root: put back");
        }
    }
    Ok(Action::await_change())
}
