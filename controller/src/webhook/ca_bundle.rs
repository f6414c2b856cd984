//! Keeps the `caBundle` of the injection webhook's MutatingWebhookConfiguration
//! equal to the CA that signed the webhook's serving certificate, as istiod does for
//! its own: installing the configuration needs no CA at hand (deploy/
//! injection-webhook.yaml leaves `caBundle` empty), and an install that writes it
//! back empty is repaired.
//!
//! It watches that one object (by name) and patches every webhook whose bundle
//! differs, by a strategic merge on `webhooks` (merged by name: no index to race
//! with). A failed patch is tried again every 5 s. Rights needed: get, list, watch
//! and patch on that MutatingWebhookConfiguration, by name
//! (deploy/controller-rbac.yaml).

use std::pin::pin;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use serde_json::json;
use tokio::sync::watch;

/// Time between tries of a patch that failed.
const RETRY: Duration = Duration::from_secs(5);

/// Keeps one MutatingWebhookConfiguration's caBundle.
pub struct Keeper {
    api: Api<MutatingWebhookConfiguration>,
    name: String,
    bundle: Vec<u8>,
}

/// The names of the webhooks of `config` whose caBundle is not `bundle`.
pub fn stale_webhooks(config: &MutatingWebhookConfiguration, bundle: &[u8]) -> Vec<String> {
    config
        .webhooks
        .iter()
        .flatten()
        .filter(|w| w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(bundle))
        .map(|w| w.name.clone())
        .collect()
}

impl Keeper {
    /// A keeper of the caBundle of configuration `name`, set to `bundle` (PEM).
    pub fn new(client: kube::Client, name: String, bundle: Vec<u8>) -> Keeper {
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
            "set the caBundle of {} in MutatingWebhookConfiguration {}",
            stale.join(", "),
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
                        log::warn!("watching MutatingWebhookConfiguration {}: {e}", self.name);
                        continue;
                    }
                    None => return Ok(()),
                },
            }
            retry_at = match self.reconcile().await {
                Ok(_) => None,
                Err(e) => {
                    log::warn!(
                        "cannot set the caBundle of MutatingWebhookConfiguration {} (trying again in {RETRY:?}): {e}",
                        self.name
                    );
                    Some(tokio::time::Instant::now() + RETRY)
                }
            };
        }
    }
}
