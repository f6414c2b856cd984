//! Where ACME keeps things on a cluster: certificates in the `kubernetes.io/tls`
//! Secrets the Gateways name, accounts in Secrets of the controller's namespace, and
//! the answers to pending challenges in the root namespace's `strait-acme-challenges`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, ObjectMeta};
use strait_acme::{first_certificate, Answer, Lock, Responder, Store, StoreError};
use strait_config::acme::{
    ManagedCert, ANNOTATION, CHALLENGES_SECRET, CHALLENGES_SECRET_TYPE, HTTP01_KEY, TLS_ALPN01_KEY,
};
use strait_config::scope::ROOT_NAMESPACE;

use crate::leader::Leadership;

/// The annotation on the Secrets Strait issued (`strait.io/acme-managed: "true"`):
/// only those are replaced; a Secret someone else made is left alone.
pub const MANAGED_ANNOTATION: &str = "strait.io/acme-managed";

/// The type of the account Secrets.
const ACCOUNT_TYPE: &str = "strait.io/acme-account";

/// The key of an account Secret holding the credentials.
const ACCOUNT_KEY: &str = "account.json";

/// The Secret holding the account with `issuer`: `strait-acme-account-<issuer>`, the
/// issuer's name made a valid object name.
pub fn account_secret_name(issuer: &str) -> String {
    let name: String = issuer
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' })
        .collect();
    format!("strait-acme-account-{}", name.trim_matches('-'))
}

fn api_error(what: &str, e: kube::Error) -> StoreError {
    StoreError(format!("{what}: {e}"))
}

/// Reads a Secret; None when it does not exist.
async fn get(api: &Api<Secret>, name: &str) -> Result<Option<Secret>, kube::Error> {
    api.get_opt(name).await
}

fn secret(namespace: &str, name: &str, kind: &str, data: BTreeMap<String, ByteString>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            annotations: Some(BTreeMap::from([(MANAGED_ANNOTATION.to_string(), "true".to_string())])),
            ..ObjectMeta::default()
        },
        type_: Some(kind.to_string()),
        data: Some(data),
        ..Secret::default()
    }
}

/// Writes `secret` as this controller's (its keys and annotation are the controller's,
/// other fields stay).
async fn apply(api: &Api<Secret>, secret: &Secret) -> Result<(), kube::Error> {
    crate::controller::apply(api, secret.metadata.name.as_deref().unwrap_or_default(), secret).await
}

/// Accounts and certificates in Secrets; orders only while this replica leads.
pub struct SecretStore {
    client: kube::Client,
    accounts: Api<Secret>,
    namespace: String,
    leadership: Leadership,
}

impl SecretStore {
    /// Accounts in `namespace`; certificates where the Gateways name them.
    pub fn new(client: kube::Client, namespace: &str, leadership: Leadership) -> SecretStore {
        SecretStore {
            accounts: Api::namespaced(client.clone(), namespace),
            client,
            namespace: namespace.to_string(),
            leadership,
        }
    }

    fn certificates(&self, m: &ManagedCert) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &m.namespace)
    }
}

fn key_text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

#[async_trait]
impl Store for SecretStore {
    async fn account(&self, issuer: &str) -> Result<Option<String>, StoreError> {
        let name = account_secret_name(issuer);
        let found = get(&self.accounts, &name)
            .await
            .map_err(|e| api_error(&format!("Secret {}/{name}", self.namespace), e))?;
        Ok(found.and_then(|s| key_text(&s, ACCOUNT_KEY)))
    }

    async fn save_account(&self, issuer: &str, credentials: &str) -> Result<(), StoreError> {
        let name = account_secret_name(issuer);
        let data = BTreeMap::from([(ACCOUNT_KEY.to_string(), ByteString(credentials.as_bytes().to_vec()))]);
        apply(&self.accounts, &secret(&self.namespace, &name, ACCOUNT_TYPE, data))
            .await
            .map_err(|e| api_error(&format!("Secret {}/{name}", self.namespace), e))
    }

    async fn forget_account(&self, issuer: &str) {
        let name = account_secret_name(issuer);
        if let Err(e) = self.accounts.delete(&name, &DeleteParams::default()).await {
            log::warn!("Secret {}/{name}: {e}", self.namespace);
        }
    }

    async fn stored_leaf(&self, m: &ManagedCert) -> Option<Vec<u8>> {
        let found = get(&self.certificates(m), &m.credential_name).await.ok()??;
        first_certificate(key_text(&found, "tls.crt")?.as_bytes())
    }

    async fn save_certificate(&self, m: &ManagedCert, chain_pem: &str, key_pem: &str) -> Result<(), StoreError> {
        let api = self.certificates(m);
        let what = format!("Secret {}/{}", m.namespace, m.credential_name);
        let existing = get(&api, &m.credential_name).await.map_err(|e| api_error(&what, e))?;
        let managed = |s: &Secret| {
            s.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(MANAGED_ANNOTATION))
                .is_some_and(|v| v == "true")
        };
        if existing.as_ref().is_some_and(|s| !managed(s)) {
            return Err(StoreError(format!(
                "{what} exists and was not made by Strait (no {MANAGED_ANNOTATION} annotation): not replaced; delete it, or remove {ANNOTATION} from the Gateway"
            )));
        }
        let data = BTreeMap::from([
            ("tls.crt".to_string(), ByteString(chain_pem.as_bytes().to_vec())),
            ("tls.key".to_string(), ByteString(key_pem.as_bytes().to_vec())),
        ]);
        let issued = secret(&m.namespace, &m.credential_name, "kubernetes.io/tls", data);
        apply(&api, &issued).await.map_err(|e| api_error(&what, e))
    }

    async fn lock(&self, _: &ManagedCert) -> Result<Option<Lock>, StoreError> {
        // Only the leader orders: the Lease is the lock.
        Ok(self.leadership.is_leader().then(|| Box::new(()) as Lock))
    }
}

/// Publishes challenge answers in the root namespace's `strait-acme-challenges`
/// Secret, which every replica pushes to its gateways.
pub struct SecretsResponder {
    api: Api<Secret>,
    propagation: Duration,
    /// The answers published now, by key.
    pending: Mutex<BTreeMap<String, String>>,
}

impl SecretsResponder {
    /// Answers given `propagation` to reach the gateways.
    pub fn new(client: kube::Client, propagation: Duration) -> SecretsResponder {
        SecretsResponder {
            api: Api::namespaced(client, ROOT_NAMESPACE),
            propagation,
            pending: Mutex::default(),
        }
    }

    fn key(answer: &Answer) -> (String, &str) {
        match answer {
            Answer::Http {
                token,
                key_authorization,
            } => (format!("{HTTP01_KEY}{token}"), key_authorization),
            Answer::TlsAlpn { name, pem } => (format!("{TLS_ALPN01_KEY}{name}"), pem),
        }
    }

    /// Writes the pending answers (deletes the Secret when there are none).
    async fn write(&self) -> Result<(), kube::Error> {
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if pending.is_empty() {
            return match self.api.delete(CHALLENGES_SECRET, &DeleteParams::default()).await {
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                other => other.map(drop),
            };
        }
        let data = pending
            .into_iter()
            .map(|(k, v)| (k, ByteString(v.into_bytes())))
            .collect();
        apply(
            &self.api,
            &secret(ROOT_NAMESPACE, CHALLENGES_SECRET, CHALLENGES_SECRET_TYPE, data),
        )
        .await
    }
}

#[async_trait]
impl Responder for SecretsResponder {
    async fn publish(&self, answers: &[Answer]) -> Result<(), StoreError> {
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            for answer in answers {
                let (key, value) = Self::key(answer);
                pending.insert(key, value.to_string());
            }
        }
        self.write()
            .await
            .map_err(|e| api_error(&format!("Secret {ROOT_NAMESPACE}/{CHALLENGES_SECRET}"), e))?;
        // The gateways learn the answers through every replica's watch and push.
        tokio::time::sleep(self.propagation).await;
        Ok(())
    }

    async fn withdraw(&self, answers: &[Answer]) {
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            for answer in answers {
                pending.remove(&Self::key(answer).0);
            }
        }
        if let Err(e) = self.write().await {
            log::warn!("Secret {ROOT_NAMESPACE}/{CHALLENGES_SECRET}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_secrets_have_valid_names() {
        assert_eq!(account_secret_name("letsencrypt"), "strait-acme-account-letsencrypt");
        assert_eq!(account_secret_name("Pebble_HTTP"), "strait-acme-account-pebble-http");
    }
}
