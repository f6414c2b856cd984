//! Which connected proxies should run each Istio resource, and which run it: a
//! proxy should run a resource when the resource's document is among those its
//! configuration is built from (`push::builds::documents_for`, by its role and
//! namespace); it runs it when the build it acknowledged holds that document with
//! the text the store has now (`push::status::Holding`). The others refused it
//! (their last answer was a NACK), cannot be sent it (their build fails), or have
//! not answered yet.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::push::builds::documents_for;
use crate::push::identity::ProxyRole;
use crate::push::status::{Holding, SyncState};
use crate::store::State;

/// The Istio kinds status is written on, with their API group and plural: what
/// the controller's RBAC lets it patch (`*/status`).
pub const KINDS: [(&str, &str, &str); 8] = [
    ("Gateway", "networking.istio.io", "gateways"),
    ("VirtualService", "networking.istio.io", "virtualservices"),
    ("DestinationRule", "networking.istio.io", "destinationrules"),
    ("ServiceEntry", "networking.istio.io", "serviceentries"),
    ("WorkloadEntry", "networking.istio.io", "workloadentries"),
    ("RequestAuthentication", "security.istio.io", "requestauthentications"),
    ("AuthorizationPolicy", "security.istio.io", "authorizationpolicies"),
    ("PeerAuthentication", "security.istio.io", "peerauthentications"),
];

/// A resource status is written on: an object of one of `KINDS` read from
/// Kubernetes (`kube_source`'s document `kubernetes/<Kind>/<namespace>/<name>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Its document's file name.
    pub file: String,
    /// Its kind.
    pub kind: &'static str,
    /// Its API group.
    pub group: &'static str,
    /// Its kind's plural.
    pub plural: &'static str,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The apiVersion it was read in.
    pub api_version: String,
    /// `metadata.generation`.
    pub generation: Option<i64>,
}

/// Proxies named at most in each list (status messages name fewer).
pub const NAMED: usize = 3;

/// How far one resource is programmed (on this replica's proxies, or, added up,
/// on all of them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Programming {
    /// Connected proxies that should run it.
    pub total: usize,
    /// Those running it.
    pub programmed: usize,
    /// Those whose last answer refused it.
    #[serde(skip_serializing_if = "Named::is_empty")]
    pub refused: Named<Refusal>,
    /// Those whose configuration the controller cannot build.
    #[serde(skip_serializing_if = "Named::is_empty")]
    pub unbuilt: Named<Refusal>,
    /// Those that have not acknowledged it yet.
    #[serde(skip_serializing_if = "Named::is_empty")]
    pub pending: Named<String>,
}

impl Programming {
    /// Adds `other`'s proxies (another replica's) to these.
    pub fn add(&mut self, other: &Programming) {
        self.total += other.total;
        self.programmed += other.programmed;
        self.refused.add_all(&other.refused);
        self.unbuilt.add_all(&other.unbuilt);
        self.pending.add_all(&other.pending);
    }
}

/// Proxies in one state: how many, and the first few by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Named<T> {
    /// How many.
    pub count: usize,
    /// The first `NAMED` by name: a proxy that reconnects changes nothing said.
    pub first: Vec<T>,
}

impl<T> Default for Named<T> {
    fn default() -> Self {
        Named {
            count: 0,
            first: Vec::new(),
        }
    }
}

/// What names a proxy in a `Named` list.
pub trait Proxy {
    /// The proxy's id.
    fn proxy(&self) -> &str;
}

impl Proxy for String {
    fn proxy(&self) -> &str {
        self
    }
}

impl Proxy for Refusal {
    fn proxy(&self) -> &str {
        &self.proxy
    }
}

impl<T: Proxy + Clone> Named<T> {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn add(&mut self, item: T) {
        self.count += 1;
        self.first.push(item);
        self.trim();
    }

    fn add_all(&mut self, other: &Named<T>) {
        self.count += other.count;
        self.first.extend(other.first.iter().cloned());
        self.trim();
    }

    fn trim(&mut self) {
        self.first.sort_by(|a, b| a.proxy().cmp(b.proxy()));
        self.first.truncate(NAMED);
    }

    /// The names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.first.iter().map(Proxy::proxy).collect()
    }
}

/// A proxy that does not run a resource, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The proxy's id.
    pub proxy: String,
    /// The version it refused (0 when nothing was sent).
    pub version: u64,
    /// Its first diagnostic.
    pub reason: String,
}

/// What a document's JSON says of its envelope.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    api_version: String,
    #[serde(default)]
    metadata: EnvelopeMeta,
}

#[derive(Deserialize, Default)]
struct EnvelopeMeta {
    #[serde(default)]
    generation: Option<i64>,
}

/// The resources of `state` that status is written on.
pub fn targets(state: &State) -> Vec<Target> {
    state
        .documents
        .iter()
        .filter_map(|d| {
            let mut parts = d.file.strip_prefix("kubernetes/")?.splitn(3, '/');
            let (kind, namespace, name) = (parts.next()?, parts.next()?, parts.next()?);
            let &(kind, group, plural) = KINDS.iter().find(|(k, _, _)| *k == kind)?;
            // Documents from Kubernetes are the JSON the API server served.
            let envelope: Envelope = serde_json::from_str(&d.text).ok()?;
            Some(Target {
                file: d.file.clone(),
                kind,
                group,
                plural,
                namespace: namespace.to_string(),
                name: name.to_string(),
                api_version: envelope.api_version,
                generation: envelope.metadata.generation,
            })
        })
        .collect()
}

/// Whether `holding`'s proxy runs `file` with `text`.
fn runs(holding: &Holding, file: &str, text: &str) -> bool {
    let Some(Ok(ready)) = holding.runs.as_ref().map(|p| &p.outcome) else {
        return false;
    };
    let documents = &ready.config.documents;
    // A build's documents are the store's, in file-name order.
    documents
        .binary_search_by(|d| d.file.as_str().cmp(file))
        .is_ok_and(|i| documents[i].text == text.as_bytes())
}

/// How far each of `targets` (of `state`) is programmed on the proxies of
/// `holdings`, in the order of `targets`.
pub fn distribution(state: &State, holdings: &[Holding], targets: &[Target]) -> Vec<Programming> {
    // What a proxy is sent depends on its role and namespace only.
    let mut should: HashMap<(ProxyRole, &str), HashSet<&str>> = HashMap::new();
    for h in holdings {
        let identity = &h.status.identity;
        should
            .entry((identity.role, identity.namespace.as_str()))
            .or_insert_with(|| {
                documents_for(state, identity)
                    .into_iter()
                    .map(|d| d.file.as_str())
                    .collect()
            });
    }
    let texts: HashMap<&str, &str> = state
        .documents
        .iter()
        .map(|d| (d.file.as_str(), d.text.as_str()))
        .collect();
    targets
        .iter()
        .map(|t| {
            let text = texts.get(t.file.as_str()).copied().unwrap_or_default();
            let mut p = Programming::default();
            for h in holdings {
                let identity = &h.status.identity;
                let wanted = should
                    .get(&(identity.role, identity.namespace.as_str()))
                    .is_some_and(|files| files.contains(t.file.as_str()));
                if !wanted {
                    continue;
                }
                p.total += 1;
                if runs(h, &t.file, text) {
                    p.programmed += 1;
                } else if let (SyncState::Nack, Some(nack)) = (h.status.sync, &h.status.last_nack) {
                    p.refused.add(Refusal {
                        proxy: identity.id.clone(),
                        version: nack.version,
                        reason: nack.diagnostics.first().cloned().unwrap_or_default(),
                    });
                } else if let Some(error) = h.status.build_errors.first() {
                    p.unbuilt.add(Refusal {
                        proxy: identity.id.clone(),
                        version: 0,
                        reason: error.clone(),
                    });
                } else {
                    p.pending.add(identity.id.clone());
                }
            }
            p
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::push::builds::prepare;
    use crate::push::identity::Identity;
    use crate::push::status::{ProxyStatus, Refused};
    use crate::store::{Document, Store};

    fn vs(name: &str, namespace: &str, host: &str) -> Document {
        Document {
            file: format!("kubernetes/VirtualService/{namespace}/{name}"),
            text: serde_json::json!({
                "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": name, "namespace": namespace, "generation": 3},
                "spec": {"hosts": [host], "http": [{"route": [{"destination": {"host": host}}]}]},
            })
            .to_string(),
        }
    }

    fn identity(id: &str, role: ProxyRole, namespace: &str) -> Identity {
        Identity {
            id: id.into(),
            role,
            namespace: namespace.into(),
            labels: BTreeMap::new(),
            pod_name: None,
            service_account: None,
            ips: Vec::new(),
            strait_version: String::new(),
        }
    }

    fn holding(state: &State, identity: Identity, sync: SyncState, acked: bool) -> Holding {
        let runs = acked.then(|| {
            let built = prepare(state, &identity, Instant::now());
            assert!(built.outcome.is_ok(), "{:?}", built.outcome.as_ref().err());
            Arc::new(built)
        });
        Holding {
            status: ProxyStatus {
                connection: 1,
                identity,
                connected_since: 0,
                last_sent: None,
                last_acked: None,
                last_nack: (sync == SyncState::Nack).then(|| Refused {
                    version: state.version,
                    diagnostics: vec!["x.yaml:1:1: error[schema] refused".into()],
                }),
                build_errors: Vec::new(),
                sync,
            },
            runs,
        }
    }

    #[test]
    fn a_resource_counts_the_proxies_that_should_run_it_and_those_that_do() {
        let store = Store::new(Duration::from_millis(1));
        store.replace(
            "kubernetes/VirtualService",
            vec![vs("a", "shop", "a.shop.svc.cluster.local")],
        );
        store.replace(
            "folder",
            vec![Document {
                file: "local.yaml".into(),
                text: "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: l}\nspec: {hosts: [l], http: [{route: [{destination: {host: l}}]}]}\n".into(),
            }],
        );
        store.publish_now();
        let before = store.current();
        let found = targets(&before);
        assert_eq!(found.len(), 1, "folder documents get no status: {found:?}");
        assert_eq!(
            (found[0].kind, found[0].plural, found[0].generation),
            ("VirtualService", "virtualservices", Some(3))
        );
        let holdings = vec![
            holding(
                &before,
                identity("gw-a", ProxyRole::Gateway, "istio-system"),
                SyncState::Synced,
                true,
            ),
            holding(
                &before,
                identity("gw-b", ProxyRole::Gateway, "istio-system"),
                SyncState::Nack,
                false,
            ),
            holding(
                &before,
                identity("sc-1", ProxyRole::Sidecar, "shop"),
                SyncState::Stale,
                false,
            ),
        ];
        let p = &distribution(&before, &holdings, &found)[0];
        assert_eq!((p.total, p.programmed), (3, 1), "{p:?}");
        assert_eq!(p.refused.names(), ["gw-b"]);
        assert_eq!(p.refused.first[0].reason, "x.yaml:1:1: error[schema] refused");
        assert_eq!(p.pending.names(), ["sc-1"]);

        // The resource changes: what gw-a acknowledged holds the old one.
        store.replace(
            "kubernetes/VirtualService",
            vec![vs("a", "shop", "b.shop.svc.cluster.local")],
        );
        store.publish_now();
        let after = store.current();
        let p = &distribution(&after, &holdings, &targets(&after))[0];
        assert_eq!(p.programmed, 0, "{p:?}");
        assert_eq!(p.pending.names(), ["gw-a", "sc-1"]);
    }

    #[test]
    fn replicas_add_up_and_name_the_first_few() {
        let pending = |names: &[&str]| {
            let mut p = Programming::default();
            for n in names {
                p.total += 1;
                p.pending.add(n.to_string());
            }
            p
        };
        let mut sum = pending(&["sc-9", "sc-2", "sc-5"]);
        sum.add(&pending(&["sc-1", "sc-7"]));
        assert_eq!((sum.total, sum.pending.count), (5, 5));
        assert_eq!(sum.pending.names(), ["sc-1", "sc-2", "sc-5"]);
    }
}
