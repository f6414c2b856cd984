//! Test helpers (feature `testing`): a real Kubernetes API server for the
//! controller's tests, started the way controller-runtime's envtest starts one
//! (DESIGN.md, "Kubernetes, for real"): `etcd` and `kube-apiserver` on loopback,
//! data in a temporary folder, Istio's and the Gateway API's CRDs installed, no
//! kubelet and no controllers (tests create the Pods, Services and EndpointSlices a
//! cluster would have).
//!
//! ```no_run
//! # async fn example() -> Result<(), strait_controller::testing::Error> {
//! let server = strait_controller::testing::ApiServer::start().await?;
//! let client = server.client();
//! // ... create objects through `client`, or start a binary with
//! // `--kubeconfig server.kubeconfig()` ...
//! server.stop()?;
//! # Ok(())
//! # }
//! ```

mod apiserver;
mod crds;
mod tools;

use std::path::PathBuf;
use std::time::Duration;

pub use apiserver::ApiServer;
pub use tools::Tools;

/// What can go wrong starting, using or stopping the test API server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The binaries or CRDs could not be found or built.
    #[error("the Kubernetes test tools are not available: {0}")]
    Tools(String),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A process exited while starting, or never became ready.
    #[error("{process} did not start: {reason}\n--- last lines of its log:\n{log}")]
    Start {
        /// `etcd` or `kube-apiserver`.
        process: &'static str,
        /// What happened.
        reason: String,
        /// The end of its log.
        log: String,
    },
    /// A process had exited by itself before it was stopped.
    #[error("{process} had exited by itself ({status}) before it was stopped\n--- last lines of its log:\n{log}")]
    Exited {
        /// `etcd` or `kube-apiserver`.
        process: &'static str,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The end of its log.
        log: String,
    },
    /// The kubeconfig written for the server gives no client.
    #[error(transparent)]
    Client(#[from] crate::kube_source::ClientError),
    /// A request to the API server failed.
    #[error("API request: {0}")]
    Kube(#[from] kube::Error),
    /// A CRD file could not be read or applied.
    #[error("CRDs from {file}: {reason}")]
    Crds {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// kubectl failed.
    #[error("kubectl {args} failed:\n{output}")]
    Kubectl {
        /// Its arguments.
        args: String,
        /// What it printed.
        output: String,
    },
    /// Something did not happen in time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
}

impl Error {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}
