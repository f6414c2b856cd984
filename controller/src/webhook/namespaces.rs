//! Namespace labels for the injector: an AdmissionReview names the pod's namespace
//! but does not carry its labels, so they are read from the API server, and kept a
//! few seconds (a Deployment's pods arrive in bursts).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;

use crate::inject::Labels;

/// How long labels read are used: a relabeled namespace takes this long to count
/// (and the API server applies the webhook's namespaceSelector at once anyway).
const KEEP: Duration = Duration::from_secs(5);

/// Namespaces kept at most; past that the oldest half is forgotten.
const MOST: usize = 1024;

/// The namespaces' labels.
pub struct Namespaces {
    client: Option<kube::Client>,
    read: Mutex<HashMap<String, (Instant, Labels)>>,
}

impl Namespaces {
    /// Labels read through `client`; None: no cluster, so no labels are known (the
    /// injector then decides on the pod alone, as `kube-inject`).
    pub fn new(client: Option<kube::Client>) -> Namespaces {
        Namespaces {
            client,
            read: Mutex::new(HashMap::new()),
        }
    }

    /// The labels of namespace `name`, or None when there is no cluster.
    pub async fn labels(&self, name: &str) -> Result<Option<Labels>, kube::Error> {
        let Some(client) = &self.client else {
            return Ok(None);
        };
        if let Some((at, labels)) = self.lock().get(name) {
            if at.elapsed() < KEEP {
                return Ok(Some(labels.clone()));
            }
        }
        let namespace = Api::<Namespace>::all(client.clone()).get(name).await?;
        let labels = namespace.metadata.labels.unwrap_or_default();
        let mut read = self.lock();
        if read.len() >= MOST {
            let mut ages: Vec<Instant> = read.values().map(|(at, _)| *at).collect();
            ages.sort();
            let cut = ages[ages.len() / 2];
            read.retain(|_, (at, _)| *at > cut);
        }
        read.insert(name.to_string(), (Instant::now(), labels.clone()));
        Ok(Some(labels))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Labels)>> {
        self.read.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
