//! Where the CA's key and certificates live: Secrets in the controller's namespace,
//! in istiod's layouts, so a cluster moves between istiod and Strait with its root.
//!
//! - `cacerts` (plugged in by the operator): `ca-cert.pem` and `ca-key.pem` sign
//!   (an intermediate, usually), `cert-chain.pem` is the chain from `ca-cert.pem`
//!   up, `root-cert.pem` the root(s). When it exists, it is used.
//! - `istio-ca-secret` (self-signed): `ca-cert.pem` and `ca-key.pem` of a root the
//!   first controller to start made. Replicas starting at once each try to create
//!   it; the API server lets one win, and the others read back what it created, so
//!   every replica signs under the same root.
//!
//! Both are read once, at start: a changed `cacerts` takes effect on restart.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, PostParams};

use super::authority::{self, Authority};

/// The Secret of a plugged-in CA.
pub const PLUGGED_IN: &str = "cacerts";

/// The Secret of the self-signed root.
pub const SELF_SIGNED: &str = "istio-ca-secret";

/// The type istiod gives `istio-ca-secret`.
const SELF_SIGNED_TYPE: &str = "istio.io/ca-root";

/// Why the CA has no key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the API server failed.
    #[error("Secret {namespace}/{name}: {source}")]
    Api {
        /// The Secret's namespace.
        namespace: String,
        /// Its name.
        name: &'static str,
        /// The error.
        source: kube::Error,
    },
    /// The Secret's contents are not a usable CA.
    #[error("Secret {namespace}/{name}: {source}")]
    Invalid {
        /// The Secret's namespace.
        namespace: String,
        /// Its name.
        name: &'static str,
        /// Why.
        source: authority::Error,
    },
    /// A key is missing or is not text.
    #[error("Secret {namespace}/{name}: no {key} (or not UTF-8)")]
    MissingKey {
        /// The Secret's namespace.
        namespace: String,
        /// Its name.
        name: &'static str,
        /// The missing key.
        key: &'static str,
    },
}

/// Where the CA came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `cacerts`.
    PluggedIn,
    /// `istio-ca-secret`, created by this controller now.
    Created,
    /// `istio-ca-secret`, as it was (made earlier, or by another replica).
    Existing,
}

/// The CA of `namespace`'s Secrets: `cacerts` if it exists, else the root of
/// `istio-ca-secret`, which is created (with a new root) if absent.
pub async fn load_or_create(client: kube::Client, namespace: &str) -> Result<(Authority, Origin), Error> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let api_error = |name| {
        move |source| Error::Api {
            namespace: namespace.to_string(),
            name,
            source,
        }
    };
    if let Some(secret) = api.get_opt(PLUGGED_IN).await.map_err(api_error(PLUGGED_IN))? {
        return Ok((read(&secret, namespace, PLUGGED_IN)?, Origin::PluggedIn));
    }
    if let Some(secret) = api.get_opt(SELF_SIGNED).await.map_err(api_error(SELF_SIGNED))? {
        return Ok((read(&secret, namespace, SELF_SIGNED)?, Origin::Existing));
    }
    create_self_signed(api.into_client(), namespace).await
}

/// Creates `istio-ca-secret` in `namespace` with a new root, or, when it exists
/// already (another replica was first), reads back the one that does.
pub async fn create_self_signed(client: kube::Client, namespace: &str) -> Result<(Authority, Origin), Error> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let api_error = |source| Error::Api {
        namespace: namespace.to_string(),
        name: SELF_SIGNED,
        source,
    };
    let (cert, key) = authority::generate_root().map_err(|source| Error::Invalid {
        namespace: namespace.to_string(),
        name: SELF_SIGNED,
        source,
    })?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(SELF_SIGNED.to_string()),
            namespace: Some(namespace.to_string()),
            ..ObjectMeta::default()
        },
        type_: Some(SELF_SIGNED_TYPE.to_string()),
        data: Some(BTreeMap::from([
            ("ca-cert.pem".to_string(), ByteString(cert.into_bytes())),
            ("ca-key.pem".to_string(), ByteString(key.into_bytes())),
        ])),
        ..Secret::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(created) => Ok((read(&created, namespace, SELF_SIGNED)?, Origin::Created)),
        // Another replica created it first: its root is the mesh's.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            log::info!("CA: another replica created {namespace}/{SELF_SIGNED} first: using its root");
            let theirs = api.get(SELF_SIGNED).await.map_err(api_error)?;
            Ok((read(&theirs, namespace, SELF_SIGNED)?, Origin::Existing))
        }
        Err(source) => Err(api_error(source)),
    }
}

/// The CA of a Secret in either layout (`cert-chain.pem` and `root-cert.pem` may be
/// absent or empty: a self-signed `ca-cert.pem` is its own root).
fn read(secret: &Secret, namespace: &str, name: &'static str) -> Result<Authority, Error> {
    let text = |key: &'static str| -> Result<Option<&str>, Error> {
        match secret.data.as_ref().and_then(|d| d.get(key)) {
            None => Ok(None),
            Some(bytes) => std::str::from_utf8(&bytes.0).map(Some).map_err(|_| Error::MissingKey {
                namespace: namespace.to_string(),
                name,
                key,
            }),
        }
    };
    let required = |key: &'static str| -> Result<&str, Error> {
        text(key)?.ok_or_else(|| Error::MissingKey {
            namespace: namespace.to_string(),
            name,
            key,
        })
    };
    Authority::from_pem(
        required("ca-cert.pem")?,
        required("ca-key.pem")?,
        text("cert-chain.pem")?.unwrap_or_default(),
        text("root-cert.pem")?.unwrap_or_default(),
    )
    .map_err(|source| Error::Invalid {
        namespace: namespace.to_string(),
        name,
        source,
    })
}
