//! Keeps the `caBundle` of the webhooks' configurations (the injection webhook's
//! MutatingWebhookConfiguration, the validation webhook's
//! ValidatingWebhookConfiguration) equal to the CA that signed the webhook's serving
//! certificate, as istiod does for its own: installing a configuration needs no CA
//! at hand (deploy/*-webhook.yaml leave `caBundle` empty), and an install that
//! writes it back empty is repaired.
//!
//! It watches that one object (by name) and patches every webhook whose bundle
//! differs, by a strategic merge on `webhooks` (merged by name: no index to race
//! with). A failed patch is tried again every 5 s. Rights needed: get, list, watch
//! and patch on that configuration, by name (deploy/controller-rbac.yaml).

use std::pin::pin;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use serde_json::json;
use tokio::sync::watch;

/// Time between tries of a patch that failed.
const RETRY: Duration = Duration::from_secs(5);

/// A webhook configuration kind whose webhooks carry a caBundle.
pub trait WebhookConfiguration:
    kube::Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// Each webhook's name and caBundle.
    fn bundles(&self) -> Vec<(&str, Option<&[u8]>)>;
}

impl WebhookConfiguration for MutatingWebhookConfiguration {
    fn bundles(&self) -> Vec<(&str, Option<&[u8]>)> {
        self.webhooks
            .iter()
            .flatten()
            .map(|w| {
                (
                    w.name.as_str(),
                    w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()),
                )
            })
            .collect()
    }
}

impl WebhookConfiguration for ValidatingWebhookConfiguration {
    fn bundles(&self) -> Vec<(&str, Option<&[u8]>)> {
        self.webhooks
            .iter()
            .flatten()
            .map(|w| {
                (
                    w.name.as_str(),
                    w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()),
                )
            })
            .collect()
    }
}

/// Keeps one webhook configuration's caBundle.
pub struct Keeper<K: WebhookConfiguration> {
    api: Api<K>,
    name: String,
    bundle: Vec<u8>,
}

/// The names of the webhooks of `config` whose caBundle is not `bundle`.
pub fn stale_webhooks<K: WebhookConfiguration>(config: &K, bundle: &[u8]) -> Vec<String> {
    config
        .bundles()
        .into_iter()
        .filter(|(_, b)| *b != Some(bundle))
        .map(|(name, _)| name.to_string())
        .collect()
}

impl<K: WebhookConfiguration> Keeper<K> {
    /// A keeper of the caBundle of configuration `name`, set to `bundle` (PEM).
    pub fn new(client: kube::Client, name: String, bundle: Vec<u8>) -> Keeper<K> {
        Keeper {
            api: Api::all(client),
            name,
            bundle,
        }
    }

    /// Patches the configuration if a webhook's bundle is stale; whether it is
    /// right now (false: it does not exist).
    async fn reconcile(&self) -> Result<bool, kube::Error> {
        let Some(config) = self.api.get_opt(&self.name).await? else {
            return Ok(false);
        };
        let stale = stale_webhooks(&config, &self.bundle);
        if stale.is_empty() {
            return Ok(true);
        }
        let bundle = k8s_openapi::ByteString(self.bundle.clone());
        let webhooks: Vec<_> = stale
            .iter()
            .map(|name| json!({"name": name, "clientConfig": {"caBundle": bundle}}))
            .collect();
        let patch = Patch::Strategic(json!({ "webhooks": webhooks }));
        self.api.patch(&self.name, &PatchParams::default(), &patch).await?;
        log::info!(
            "set the caBundle of {} in {} {}",
            stale.join(", "),
            K::kind(&()),
            self.name
        );
        Ok(true)
    }

    /// Watches the configuration and keeps its caBundle until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> Result<(), kube::Error> {
        let config = watcher::Config::default().fields(&format!("metadata.name={}", self.name));
        let mut changes = pin!(watcher(self.api.clone(), config).default_backoff());
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = crate::controller::until_stopped(&mut stop) => return Ok(()),
                _ = retry => {}
                change = changes.next() => match change {
                    Some(Ok(watcher::Event::Apply(_) | watcher::Event::InitDone)) => {}
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        log::warn!("watching {} {}: {e}", K::kind(&()), self.name);
                        continue;
                    }
                    None => return Ok(()),
                },
            }
            retry_at = match self.reconcile().await {
                Ok(_) => None,
                Err(e) => {
                    log::warn!(
                        "cannot set the caBundle of {} {} (trying again in {RETRY:?}): {e}",
                        K::kind(&()),
                        self.name
                    );
                    Some(tokio::time::Instant::now() + RETRY)
                }
            };
        }
    }
}
