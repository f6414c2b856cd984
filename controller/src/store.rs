//! The controller's store: every source's configuration documents (a folder's
//! files, the Kubernetes objects), loaded into one bundle with the mesh config,
//! versioned, and published to the push server through a change signal. Bursts of
//! changes are debounced: one new state for a burst, not one per object.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use strait_config::bundle::load_text;
use strait_config::mesh::MeshConfig;
use strait_config::{Diagnostic, Loaded};
use tokio::sync::{watch, Notify};

/// One configuration document as its source read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Where it came from, as diagnostics name it (a file name, or
    /// `kubernetes/<kind>/<namespace>/<name>`).
    pub file: String,
    /// Its YAML or JSON text.
    pub text: String,
}

/// What the controller serves at one version.
#[derive(Debug, Default)]
pub struct State {
    /// Increases with every published change.
    pub version: u64,
    /// Every source's documents, in file-name order.
    pub documents: Vec<Document>,
    /// The documents, loaded (with their syntax and schema findings).
    pub loaded: Loaded,
    /// The mesh config in force.
    pub mesh: MeshConfig,
    /// Its text, as proxies are sent it (None: Istio's defaults).
    pub mesh_text: Option<String>,
    /// Findings about the mesh config (errors keep the previous one).
    pub mesh_diagnostics: Vec<Diagnostic>,
}

#[derive(Debug, Default)]
struct Pending {
    sources: BTreeMap<String, Vec<Document>>,
    mesh_text: Option<String>,
    changed: bool,
    /// Sources still making their first complete read (`Store::hold`).
    holds: usize,
}

/// Keeps the store from publishing while a source has read only part of what it
/// serves (a Kubernetes source listing kind after kind): proxies must never be sent
/// a configuration with half the cluster missing. Dropping it releases the store.
#[derive(Debug)]
pub struct Hold(Arc<Store>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.change(|p| {
            p.holds = p.holds.saturating_sub(1);
            p.holds == 0 && p.changed
        });
    }
}

/// The documents of every source; publishes a new `State` after each burst of changes.
#[derive(Debug)]
pub struct Store {
    pending: Mutex<Pending>,
    changed: Notify,
    published: watch::Sender<Arc<State>>,
    debounce: Duration,
}

impl Store {
    /// An empty store (version 0) that publishes `debounce` after the last change of a burst.
    pub fn new(debounce: Duration) -> Arc<Store> {
        Arc::new(Store {
            pending: Mutex::default(),
            changed: Notify::new(),
            published: watch::channel(Arc::new(State::default())).0,
            debounce,
        })
    }

    /// The published states, latest first: a slow reader sees the latest, never a queue.
    pub fn subscribe(&self) -> watch::Receiver<Arc<State>> {
        self.published.subscribe()
    }

    /// The state published last.
    pub fn current(&self) -> Arc<State> {
        self.published.borrow().clone()
    }

    /// Replaces everything `source` holds with `documents`.
    pub fn replace(&self, source: &str, documents: Vec<Document>) {
        self.change(|p| {
            let old = p.sources.insert(source.to_string(), documents);
            old.as_ref() != p.sources.get(source)
        });
    }

    /// Sets the mesh config's text (None: Istio's defaults).
    pub fn set_mesh(&self, text: Option<String>) {
        self.change(|p| {
            let differs = p.mesh_text != text;
            p.mesh_text = text;
            differs
        });
    }

    /// Holds back publishing until the returned `Hold` is dropped.
    pub fn hold(self: &Arc<Self>) -> Hold {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.holds += 1;
        Hold(self.clone())
    }

    fn change(&self, apply: impl FnOnce(&mut Pending) -> bool) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if apply(&mut pending) {
            pending.changed = true;
            self.changed.notify_one();
        }
    }

    /// Publishes what changed now, without waiting (tests, and a source's first load).
    pub fn publish_now(&self) {
        let (documents, mesh_text) = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            if !pending.changed || pending.holds > 0 {
                return;
            }
            pending.changed = false;
            let mut documents: Vec<Document> = pending.sources.values().flatten().cloned().collect();
            // In file-name order, whatever the source: what proxies are sent (whole or
            // as a delta, `strait_push::delta`) and load, and what the controller builds.
            documents.sort_by(|a, b| a.file.cmp(&b.file));
            (documents, pending.mesh_text.clone())
        };
        let previous = self.current();
        let mut loaded = Loaded::default();
        for d in &documents {
            load_text(&mut loaded, &d.file, &d.text);
        }
        let (mesh, mesh_diagnostics) = match &mesh_text {
            None => (MeshConfig::default(), Vec::new()),
            Some(text) => match strait_config::mesh::parse("mesh config", text) {
                Ok((mesh, notes)) => (mesh, notes),
                // A broken mesh config keeps the one in force, as a broken file does.
                Err(diags) => (previous.mesh.clone(), diags),
            },
        };
        let state = State {
            version: previous.version + 1,
            documents,
            loaded,
            mesh,
            mesh_text,
            mesh_diagnostics,
        };
        self.published.send_replace(Arc::new(state));
    }

    /// Publishes each burst of changes once it has been quiet for the debounce time;
    /// returns when `stop` resolves.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = self.changed.notified() => {}
            }
            // Quiet for `debounce`: every change in the meantime restarts the wait.
            loop {
                tokio::select! {
                    _ = &mut stop => return,
                    _ = self.changed.notified() => continue,
                    _ = tokio::time::sleep(self.debounce) => break,
                }
            }
            self.publish_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(file: &str, text: &str) -> Document {
        Document {
            file: file.into(),
            text: text.into(),
        }
    }

    const VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a, namespace: default}\nspec: {hosts: [a.example.com]}\n";

    #[test]
    fn sources_are_loaded_together_and_versioned() {
        let store = Store::new(Duration::from_millis(10));
        store.replace("folder", vec![doc("a.yaml", VS)]);
        store.replace("kubernetes", vec![doc("kubernetes/Service/default/b", "{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {\"name\": \"b\", \"namespace\": \"default\"}, \"spec\": {\"ports\": [{\"port\": 80}]}}")]);
        store.publish_now();
        let state = store.current();
        assert_eq!(state.version, 1);
        assert_eq!(state.loaded.bundle.entries.len(), 2, "{:?}", state.loaded.diagnostics);
        // The same documents again change nothing.
        store.replace("folder", vec![doc("a.yaml", VS)]);
        store.publish_now();
        assert_eq!(store.current().version, 1);
        store.replace("folder", Vec::new());
        store.publish_now();
        assert_eq!(store.current().version, 2);
        assert_eq!(store.current().loaded.bundle.entries.len(), 1);
    }

    #[test]
    fn a_broken_mesh_config_keeps_the_one_in_force() {
        let store = Store::new(Duration::from_millis(10));
        store.set_mesh(Some(
            "defaultConfig:\n  gatewayTopology:\n    numTrustedProxies: 2\n".into(),
        ));
        store.publish_now();
        assert_eq!(
            store.current().mesh.num_trusted_proxies,
            2,
            "{:?}",
            store.current().mesh_diagnostics
        );
        store.set_mesh(Some("defaultConfig: [".into()));
        store.publish_now();
        let state = store.current();
        assert_eq!(state.mesh.num_trusted_proxies, 2);
        assert!(!state.mesh_diagnostics.is_empty());
    }

    #[test]
    fn nothing_is_published_while_a_source_holds_the_store() {
        let store = Store::new(Duration::from_millis(10));
        let hold = store.hold();
        store.replace("kubernetes/VirtualService", vec![doc("a.yaml", VS)]);
        store.publish_now();
        assert_eq!(store.current().version, 0, "half a cluster is not published");
        drop(hold);
        store.publish_now();
        assert_eq!(store.current().version, 1);
        assert_eq!(store.current().loaded.bundle.entries.len(), 1);
    }

    #[tokio::test]
    async fn a_burst_is_published_once() {
        let store = Store::new(Duration::from_millis(50));
        let mut seen = store.subscribe();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let runner = tokio::spawn(store.clone().run(async {
            let _ = stop_rx.await;
        }));
        for i in 0..20 {
            store.replace(
                "folder",
                vec![doc(
                    "a.yaml",
                    &VS.replace("a.example.com", &format!("a{i}.example.com")),
                )],
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen.changed().await.expect("published");
        assert_eq!(seen.borrow_and_update().version, 1);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!seen.has_changed().expect("open"), "one state for the burst");
        let _ = stop_tx.send(());
        runner.await.expect("stops");
    }
}
