//! Remote JWKS: each `jwksUri` in use is fetched by the proxy, cached, refreshed
//! periodically, and kept when a refresh fails (retried with backoff, up to the
//! refresh interval). Until a first fetch succeeds, tokens of that issuer get 401.
//!
//! Slots are shared by every configuration that names the same URI, so a reload
//! does not refetch; a slot no configuration holds any more stops being refreshed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use strait_config::jwt::{Jwks, JwksError, JwtAuth, KeySet};
use thiserror::Error;
use tokio::sync::{watch, Notify};

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// First retry delay after a failed fetch; it doubles up to the refresh interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// What a slot knows of its keys.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// The last keys fetched, kept across failed refreshes.
    pub keys: Option<Arc<KeySet>>,
    /// Whether a fetch has been tried (requests wait for the first one).
    pub attempted: bool,
    /// The last fetch's error, if it failed.
    pub error: Option<String>,
}

/// One remote key set.
#[derive(Debug)]
pub struct RemoteJwks {
    /// The URL.
    pub uri: String,
    timeout: Duration,
    /// `uri` is an OpenID discovery document naming the JWKS.
    discover: bool,
    state: watch::Sender<Fetched>,
    started: AtomicBool,
}

impl RemoteJwks {
    /// The keys to verify with; the first fetch is awaited up to the fetch timeout.
    pub async fn keys(&self) -> Option<Arc<KeySet>> {
        let mut rx = self.state.subscribe();
        if !rx.borrow().attempted {
            // A timeout leaves the state as it is: no keys, hence 401.
            let _ = tokio::time::timeout(self.timeout, rx.wait_for(|f| f.attempted)).await;
        }
        let keys = rx.borrow().keys.clone();
        keys
    }

    /// The current state, for diagnostics.
    pub fn fetched(&self) -> Fetched {
        self.state.borrow().clone()
    }
}

/// The slots of all remote key sets, by URI.
#[derive(Debug)]
pub struct JwksStore {
    slots: Mutex<HashMap<String, Weak<RemoteJwks>>>,
    wake: Notify,
    /// Time between successful fetches.
    pub refresh: Duration,
}

impl JwksStore {
    /// An empty store refreshing keys every `refresh`.
    pub fn new(refresh: Duration) -> JwksStore {
        JwksStore {
            slots: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            refresh,
        }
    }

    /// The slots for the providers of `jwt`, index-aligned (None for inline keys);
    /// new URIs are fetched as soon as the fetcher runs.
    pub fn attach(&self, jwt: &JwtAuth) -> Vec<Option<Arc<RemoteJwks>>> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|_, w| w.strong_count() > 0);
        let attached = jwt
            .providers
            .iter()
            .map(|p| match &p.jwks {
                Jwks::Inline(_) => None,
                Jwks::Remote { uri, timeout, discover } => {
                    if let Some(slot) = slots.get(uri).and_then(Weak::upgrade) {
                        return Some(slot);
                    }
                    let slot = Arc::new(RemoteJwks {
                        uri: uri.clone(),
                        timeout: *timeout,
                        discover: *discover,
                        state: watch::Sender::new(Fetched::default()),
                        started: AtomicBool::new(false),
                    });
                    slots.insert(uri.clone(), Arc::downgrade(&slot));
                    Some(slot)
                }
            })
            .collect();
        drop(slots);
        self.wake.notify_one();
        attached
    }

    fn unstarted(&self) -> Vec<Arc<RemoteJwks>> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .values()
            .filter_map(Weak::upgrade)
            .filter(|s| !s.started.swap(true, Ordering::Relaxed))
            .collect()
    }
}

/// Fetches and refreshes the remote key sets of the running configurations.
pub struct JwksFetcher {
    /// The store whose slots are served.
    pub store: Arc<JwksStore>,
}

#[async_trait]
impl BackgroundService for JwksFetcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Made when the first remote key set appears: most gateways have none.
        let mut client: Option<reqwest::Client> = None;
        loop {
            for slot in self.store.unstarted() {
                let client = match &client {
                    Some(c) => c,
                    None => match reqwest::Client::builder().build() {
                        Ok(c) => client.insert(c),
                        Err(e) => {
                            log::error!("no HTTP client for JWKS fetches: {e}; tokens of remote issuers get 401");
                            continue;
                        }
                    },
                };
                tokio::spawn(refresh(Arc::downgrade(&slot), client.clone(), self.store.refresh));
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = self.store.wake.notified() => {}
            }
        }
    }
}

/// Keeps one slot fresh while any configuration holds it.
async fn refresh(slot: Weak<RemoteJwks>, client: reqwest::Client, every: Duration) {
    let mut failures: u32 = 0;
    loop {
        let Some(s) = slot.upgrade() else { return };
        let outcome = match s.discover {
            false => fetch(&client, &s.uri, s.timeout).await,
            true => discover(&client, &s.uri, s.timeout).await,
        };
        let delay = match outcome {
            Ok(keys) => {
                if failures > 0 || !s.state.borrow().attempted {
                    log::info!("JWKS {}: {} keys", s.uri, keys.len());
                }
                failures = 0;
                s.state.send_modify(|f| {
                    f.keys = Some(Arc::new(keys));
                    f.attempted = true;
                    f.error = None;
                });
                every
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let kept = if s.state.borrow().keys.is_some() {
                    "keeping the previous keys"
                } else {
                    "its tokens get 401"
                };
                log::warn!("JWKS {}: fetch failed ({failures} in a row), {kept}: {e}", s.uri);
                s.state.send_modify(|f| {
                    f.attempted = true;
                    f.error = Some(e.to_string());
                });
                FIRST_RETRY
                    .saturating_mul(1 << failures.min(16).saturating_sub(1))
                    .min(every)
            }
        };
        drop(s);
        tokio::time::sleep(delay).await;
    }
}

/// Why a key set could not be fetched.
#[derive(Debug, Error)]
pub enum FetchError {
    /// No answer (connection, TLS, timeout).
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    /// An answer other than success.
    #[error("status {0}")]
    Status(reqwest::StatusCode),
    /// A body larger than `MAX_JWKS_BYTES`.
    #[error("larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    /// A discovery document that is not JSON.
    #[error("the OpenID configuration is not JSON: {0}")]
    Discovery(serde_json::Error),
    /// A discovery document without `jwks_uri`.
    #[error("the OpenID configuration has no jwks_uri")]
    NoJwksUri,
    /// A key set that cannot be used.
    #[error(transparent)]
    Keys(#[from] JwksError),
}

/// The keys named by an OpenID discovery document's `jwks_uri`.
async fn discover(client: &reqwest::Client, uri: &str, timeout: Duration) -> Result<KeySet, FetchError> {
    let doc = get(client, uri, timeout).await?;
    let doc: serde_json::Value = serde_json::from_slice(&doc).map_err(FetchError::Discovery)?;
    let jwks_uri = doc
        .get("jwks_uri")
        .and_then(serde_json::Value::as_str)
        .ok_or(FetchError::NoJwksUri)?;
    fetch(client, jwks_uri, timeout).await
}

async fn fetch(client: &reqwest::Client, uri: &str, timeout: Duration) -> Result<KeySet, FetchError> {
    let body = get(client, uri, timeout).await?;
    Ok(KeySet::parse(&String::from_utf8_lossy(&body))?)
}

/// A successful answer's body, at most `MAX_JWKS_BYTES`.
async fn get(client: &reqwest::Client, uri: &str, timeout: Duration) -> Result<Vec<u8>, FetchError> {
    let mut resp = client.get(uri).timeout(timeout).send().await?;
    if !resp.status().is_success() {
        return Err(FetchError::Status(resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(FetchError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
