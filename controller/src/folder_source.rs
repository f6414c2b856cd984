//! The folder source: every YAML and JSON file under a folder (as `strait-gateway
//! --config-dir` reads one) as the store's documents, and a mesh config file; both
//! watched, and the store told of each change (it debounces bursts).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::watch;

use strait_config::bundle::{config_files, load_bytes};
use strait_config::Loaded;

use crate::store::{Document, Store};

/// The store's name for this source's documents.
pub const SOURCE: &str = "folder";

/// Why the folder cannot be read or watched.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Listing or reading failed.
    #[error("{path}: {source}")]
    Read {
        /// What was read.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file cannot be loaded at all (not UTF-8), as its diagnostic says.
    #[error("{}", .0.join("; "))]
    Refused(Vec<String>),
    /// The watch could not be set up.
    #[error("cannot watch {path}: {source}")]
    Watch {
        /// What was watched.
        path: PathBuf,
        /// Why.
        source: notify::Error,
    },
}

/// A folder of resources and, apart from it, a mesh config file.
#[derive(Debug, Clone)]
pub struct FolderSource {
    /// The folder.
    pub dir: PathBuf,
    /// The mesh config (the `mesh` key of Istio's ConfigMap); None: Istio's defaults.
    pub mesh_config: Option<PathBuf>,
}

impl FolderSource {
    /// The folder's files as documents named by their path in the folder, in name
    /// order. A file that is not UTF-8 fails the whole read (with the line and column
    /// of its first bad byte), so the documents in force stay, as in file mode.
    pub fn documents(&self) -> Result<Vec<Document>, Error> {
        let files = config_files(&self.dir).map_err(|source| Error::Read {
            path: self.dir.clone(),
            source,
        })?;
        files
            .into_iter()
            .map(|path| {
                let bytes = std::fs::read(&path).map_err(|source| Error::Read {
                    path: path.clone(),
                    source,
                })?;
                let file = path.strip_prefix(&self.dir).unwrap_or(&path).display().to_string();
                let text = String::from_utf8(bytes).map_err(|e| {
                    let mut refused = Loaded::default();
                    load_bytes(&mut refused, &file, e.as_bytes());
                    Error::Refused(refused.diagnostics.iter().map(ToString::to_string).collect())
                })?;
                Ok(Document { file, text })
            })
            .collect()
    }

    fn mesh_text(&self) -> Result<Option<String>, Error> {
        self.mesh_config
            .as_ref()
            .map(|path| {
                std::fs::read_to_string(path).map_err(|source| Error::Read {
                    path: path.clone(),
                    source,
                })
            })
            .transpose()
    }

    /// Reads everything into `store` (a failed read keeps what the store had).
    pub fn load(&self, store: &Store) {
        match self.documents() {
            Ok(documents) => store.replace(SOURCE, documents),
            Err(e) => log::error!("config folder: {e}; the previous documents stay"),
        }
        // Without a mesh config file of its own, the folder leaves the mesh config to
        // another source (the cluster's ConfigMap) or to Istio's defaults.
        match self.mesh_text() {
            Ok(Some(text)) => store.set_mesh(Some(text)),
            Ok(None) => {}
            Err(e) => log::error!("mesh config: {e}; the previous one stays"),
        }
    }

    /// Loads the folder and publishes it at once (the first state proxies get), then
    /// reloads on every change until `stop` turns true.
    pub async fn run(self, store: Arc<Store>, mut stop: watch::Receiver<bool>) -> Result<(), Error> {
        let (tx, mut changes) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| !matches!(e.kind, EventKind::Access(_))) {
                let _ = tx.send(());
            }
        })
        .map_err(|source| Error::Watch {
            path: self.dir.clone(),
            source,
        })?;
        let mut watched = vec![(self.dir.clone(), RecursiveMode::Recursive)];
        if let Some(parent) = self.mesh_config.as_ref().and_then(|m| m.parent()) {
            // The file's folder, not the file: editors and ConfigMaps replace files.
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            watched.push((parent.to_path_buf(), RecursiveMode::NonRecursive));
        }
        for (path, mode) in watched {
            watcher
                .watch(&path, mode)
                .map_err(|source| Error::Watch { path, source })?;
        }
        self.load(&store);
        store.publish_now();
        log::info!(
            "config folder {}: version {} with {} documents",
            self.dir.display(),
            store.current().version,
            store.current().documents.len()
        );
        loop {
            tokio::select! {
                _ = crate::controller::until_stopped(&mut stop) => return Ok(()),
                change = changes.recv() => {
                    if change.is_none() {
                        return Ok(());
                    }
                    while changes.try_recv().is_ok() {}
                    self.load(&store);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_read_as_the_gateway_reads_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("b.yaml"), "b").expect("write");
        std::fs::write(dir.path().join("sub/a.json"), "{}").expect("write");
        std::fs::write(dir.path().join(".hidden.yaml"), "x").expect("write");
        std::fs::write(dir.path().join("notes.txt"), "x").expect("write");
        let source = FolderSource {
            dir: dir.path().into(),
            mesh_config: None,
        };
        let names: Vec<String> = source.documents().expect("reads").into_iter().map(|d| d.file).collect();
        assert_eq!(names, ["b.yaml", "sub/a.json"]);
        std::fs::write(dir.path().join("b.yaml"), b"kind: Gateway\nname: caf\xe9\n").expect("write");
        let refused = source.documents().expect_err("not UTF-8").to_string();
        assert!(refused.starts_with("b.yaml:2:10: error"), "{refused}");
    }

    #[tokio::test]
    async fn a_change_reaches_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vs = |host: &str| {
            format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: a, namespace: default}}\nspec: {{hosts: [{host}]}}\n")
        };
        std::fs::write(dir.path().join("vs.yaml"), vs("a.example.com")).expect("write");
        let store = Store::new(std::time::Duration::from_millis(20));
        let (stop_tx, stop) = watch::channel(false);
        let source = FolderSource {
            dir: dir.path().into(),
            mesh_config: None,
        };
        let running = tokio::spawn(source.run(store.clone(), stop.clone()));
        let debouncer = tokio::spawn(store.clone().run(async move {
            let mut stop = stop;
            let _ = stop.wait_for(|s| *s).await;
        }));
        let mut states = store.subscribe();
        states.wait_for(|s| s.version == 1).await.expect("first load");
        std::fs::write(dir.path().join("vs.yaml"), vs("b.example.com")).expect("write");
        let state = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            states.wait_for(|s| s.documents.first().is_some_and(|d| d.text.contains("b.example.com"))),
        )
        .await
        .expect("the change in time")
        .expect("open")
        .clone();
        assert!(state.version >= 2);
        let _ = stop_tx.send(true);
        running.await.expect("joins").expect("no error");
        debouncer.await.expect("joins");
    }
}
