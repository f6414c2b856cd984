//! Sidecar injection: what a pod gets to join the mesh, and when. One function,
//! [`inject`], turns a pod (or a workload's pod template) into the injected one in
//! place; the admission webhook (`crate::webhook`) answers the API server with the
//! JSON Patch from the pod it was sent to that result, and `straitctl kube-inject`
//! writes injected manifests with it, so both always agree.
//!
//! What an injected pod has (the names are a contract: `strait-sidecar`, the CA and
//! the documentation rely on them):
//! - init container `strait-init` (`strait-sidecar init ...`: the iptables capture,
//!   its flags from Istio's `traffic.sidecar.istio.io/*` annotations, see `capture`);
//! - right after it, `strait-proxy` as a Kubernetes native sidecar (an init container
//!   with `restartPolicy: Always`, so it starts before the app and stops after it),
//!   running `strait-sidecar run` (see `sidecar`);
//! - the volumes they mount (`strait-token`, `strait-ca-root`, `strait-podinfo`,
//!   `strait-data`);
//! - annotation `sidecar.istio.io/status` naming what was injected (a pod carrying it
//!   is never injected again), Prometheus annotations pointing at 15020, and the label
//!   `security.istio.io/tlsMode: istio` (see `metadata`).
//!
//! When: Istio's rules (see `policy`).

mod capture;
pub mod manifest;
mod metadata;
mod policy;
mod sidecar;

use std::collections::BTreeMap;

use serde_json::{Map, Value};

pub use policy::{Skip, INJECT_LABEL, ISTIO_NAMESPACE_LABEL, STRAIT_NAMESPACE_LABEL};

/// The injected init container that sets up the traffic capture.
pub const INIT_CONTAINER: &str = "strait-init";

/// The injected sidecar (a native sidecar: an init container that keeps running).
pub const PROXY_CONTAINER: &str = "strait-proxy";

/// The annotation that records what was injected (Istio's).
pub const STATUS_ANNOTATION: &str = "sidecar.istio.io/status";

/// The sidecar image when none is given: this release's.
pub const DEFAULT_PROXY_IMAGE: &str = concat!("ghcr.io/strait/strait:", env!("CARGO_PKG_VERSION"));

/// Where sidecars reach the controller when no address is given: its Service in
/// istio-system, on the mTLS push port.
pub const DEFAULT_CONTROLLER_ADDRESS: &str = "https://strait-controller.istio-system.svc:15012";

/// How injected sidecars are made: the same flags for `strait-controller` (its
/// webhook) and `straitctl kube-inject`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct Settings {
    /// Image of the injected `strait-init` and `strait-proxy` containers.
    #[arg(long, env = "STRAIT_PROXY_IMAGE", default_value = DEFAULT_PROXY_IMAGE)]
    pub proxy_image: String,
    /// Address injected sidecars connect to for configuration and certificates.
    #[arg(long, env = "STRAIT_CONTROLLER_ADDRESS", default_value = DEFAULT_CONTROLLER_ADDRESS)]
    pub controller_address: String,
    /// Whether app containers start only once the sidecar is ready (a startup probe
    /// on `strait-proxy`); a pod's `proxy.istio.io/config` annotation
    /// (`holdApplicationUntilProxyStarts: true|false`) overrides it. On by default,
    /// as Istio's native sidecars have a startup probe by default.
    #[arg(
        long,
        env = "STRAIT_HOLD_APPLICATION_UNTIL_PROXY_STARTS",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub hold_application_until_proxy_starts: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            proxy_image: DEFAULT_PROXY_IMAGE.to_string(),
            controller_address: DEFAULT_CONTROLLER_ADDRESS.to_string(),
            hold_application_until_proxy_starts: true,
        }
    }
}

/// What [`inject`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The pod now has the sidecar.
    Injected,
    /// The pod is left as it was, and why.
    Skipped(Skip),
}

/// Why a pod cannot be injected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An annotation Strait reads has a value it cannot use (Istio refuses these too).
    #[error("invalid value {value:?} for annotation {name}: {reason}")]
    Annotation {
        /// The annotation.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A field of the pod does not have the shape Kubernetes gives it.
    #[error("{field}: {problem}")]
    Malformed {
        /// The field, e.g. `spec.initContainers`.
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
}

/// Labels (of a namespace, or a pod's).
pub type Labels = BTreeMap<String, String>;

/// What a pod says about itself that injection reads.
#[derive(Debug, Default)]
struct Pod {
    labels: Labels,
    annotations: Labels,
    host_network: bool,
    /// Names of the app's containers, in order.
    containers: Vec<String>,
    /// Whether a `strait-init` or `strait-proxy` container is there already.
    has_strait_container: bool,
    termination_grace_seconds: Option<i64>,
}

/// Injects the sidecar into `pod` (a Pod, or a pod template: `metadata` and `spec`)
/// of `namespace` (empty when not known), unless Istio's rules say not to.
/// `namespace_labels` are the labels of that namespace; None when they are not known
/// (`kube-inject`, which injects whatever the namespace, as `istioctl kube-inject`).
/// On an error, `pod` is as it was.
pub fn inject(
    pod: &mut Value,
    namespace: &str,
    namespace_labels: Option<&Labels>,
    settings: &Settings,
) -> Result<Outcome, Error> {
    let read = Pod::read(pod)?;
    if let Some(skip) = policy::skip(&read, namespace, namespace_labels) {
        return Ok(Outcome::Skipped(skip));
    }
    let resources = sidecar::resources(&read.annotations)?;
    let init = capture::init_container(&read.annotations, &resources, settings)?;
    let app_scrape = metadata::app_scrape(&read.annotations);
    let proxy = sidecar::proxy_container(&read, &resources, app_scrape, settings)?;
    let volumes = sidecar::volumes();
    let status = metadata::status(&[&init, &proxy], &volumes);
    let (labels, annotations) = metadata::pod_metadata(&read, status);

    // Everything is computed: from here nothing fails, so `pod` changes whole or not at all.
    let Value::Object(root) = pod else {
        return Err(Error::Malformed {
            field: "pod",
            problem: "not an object",
        });
    };
    let mut spec = take_object(root, "spec");
    let mut init_containers = take_list(&mut spec, "initContainers");
    init_containers.splice(0..0, [to_value(&init), to_value(&proxy)]);
    spec.insert("initContainers".into(), Value::Array(init_containers));
    let mut pod_volumes = take_list(&mut spec, "volumes");
    pod_volumes.extend(volumes.iter().map(to_value));
    spec.insert("volumes".into(), Value::Array(pod_volumes));
    root.insert("spec".into(), Value::Object(spec));
    let mut meta = take_object(root, "metadata");
    meta.insert("labels".into(), string_map(labels));
    meta.insert("annotations".into(), string_map(annotations));
    root.insert("metadata".into(), Value::Object(meta));
    Ok(Outcome::Injected)
}

impl Pod {
    fn read(pod: &Value) -> Result<Pod, Error> {
        if !pod.is_object() {
            return Err(Error::Malformed {
                field: "pod",
                problem: "not an object",
            });
        }
        let spec = pod.get("spec").unwrap_or(&Value::Null);
        if !(spec.is_object() || spec.is_null()) {
            return Err(Error::Malformed {
                field: "spec",
                problem: "not an object",
            });
        }
        let names = |key: &str, field: &'static str| -> Result<Vec<String>, Error> {
            match spec.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => Ok(items
                    .iter()
                    .filter_map(|c| c.get("name")?.as_str().map(str::to_string))
                    .collect()),
                Some(_) => Err(Error::Malformed {
                    field,
                    problem: "not a list",
                }),
            }
        };
        let containers = names("containers", "spec.containers")?;
        let init_containers = names("initContainers", "spec.initContainers")?;
        if !matches!(spec.get("volumes"), None | Some(Value::Null | Value::Array(_))) {
            return Err(Error::Malformed {
                field: "spec.volumes",
                problem: "not a list",
            });
        }
        let has_strait_container = containers
            .iter()
            .chain(&init_containers)
            .any(|n| n == INIT_CONTAINER || n == PROXY_CONTAINER);
        let metadata = pod.get("metadata").unwrap_or(&Value::Null);
        Ok(Pod {
            labels: strings(metadata.get("labels"), "metadata.labels")?,
            annotations: strings(metadata.get("annotations"), "metadata.annotations")?,
            host_network: spec.get("hostNetwork").and_then(Value::as_bool).unwrap_or(false),
            containers,
            has_strait_container,
            termination_grace_seconds: spec.get("terminationGracePeriodSeconds").and_then(Value::as_i64),
        })
    }
}

/// A map of strings (labels, annotations); absent or null is empty.
fn strings(value: Option<&Value>, field: &'static str) -> Result<Labels, Error> {
    let malformed = Error::Malformed {
        field,
        problem: "not a map of strings",
    };
    match value {
        None | Some(Value::Null) => Ok(Labels::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.as_str().ok_or(malformed.clone())?.to_string())))
            .collect(),
        Some(_) => Err(malformed),
    }
}

/// The object under `key` (empty if absent or null), taken out of `map`.
fn take_object(map: &mut Map<String, Value>, key: &str) -> Map<String, Value> {
    match map.remove(key) {
        Some(Value::Object(object)) => object,
        _ => Map::new(),
    }
}

fn take_list(map: &mut Map<String, Value>, key: &str) -> Vec<Value> {
    match map.remove(key) {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    }
}

fn string_map(map: Labels) -> Value {
    Value::Object(map.into_iter().map(|(k, v)| (k, Value::String(v))).collect())
}

/// A Kubernetes API object as JSON (these serialize infallibly: plain structs and
/// string-keyed maps).
fn to_value<T: serde::Serialize>(item: &T) -> Value {
    serde_json::to_value(item).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests;
