//! What injection changes in a pod's labels and annotations, as Istio's injection:
//! - `sidecar.istio.io/status`: which init containers, containers and volumes were
//!   injected (Istio's JSON shape), so a pod carrying it is never injected again and
//!   tools can tell what is Strait's;
//! - Prometheus: `prometheus.io/scrape: "true"`, `port: "15020"`, `path:
//!   /stats/prometheus`, the sidecar's merged metrics, unless the pod says
//!   `prometheus.io/scrape: "false"` or `prometheus.istio.io/merge-metrics: "false"`.
//!   The app's own scrape settings move to the sidecar's `ISTIO_PROMETHEUS_ANNOTATIONS`
//!   (Istio's variable) so its metrics can be merged in;
//! - `kubectl.kubernetes.io/default-container` and `default-logs-container`: the
//!   app's first container, when the pod names none;
//! - label `security.istio.io/tlsMode: istio`, which tells Istio-compatible clients
//!   that the pod accepts mTLS.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Volume};
use serde::Serialize;

use super::sidecar::METRICS_PORT;
use super::{Labels, Pod, STATUS_ANNOTATION};

const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
const MERGE_METRICS: &str = "prometheus.istio.io/merge-metrics";
const SCRAPE: &str = "prometheus.io/scrape";
const PORT: &str = "prometheus.io/port";
const PATH: &str = "prometheus.io/path";

/// Istio's `sidecar.istio.io/status` value; fields in Istio's order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Status<'a> {
    init_containers: Vec<&'a str>,
    containers: Option<Vec<&'a str>>,
    volumes: Vec<&'a str>,
    image_pull_secrets: Option<Vec<&'a str>>,
    revision: &'a str,
}

/// The status annotation's value for injected `init_containers` and `volumes`.
pub(super) fn status(init_containers: &[&Container], volumes: &[Volume]) -> String {
    let status = Status {
        init_containers: init_containers.iter().map(|c| c.name.as_str()).collect(),
        containers: None,
        volumes: volumes.iter().map(|v| v.name.as_str()).collect(),
        image_pull_secrets: None,
        revision: "default",
    };
    serde_json::to_string(&status).unwrap_or_else(|_| "{}".into())
}

/// An annotation name as Prometheus reads it (`prometheus.io/scrape`,
/// `prometheus_io_scrape` and `prometheus-io/scrape` are the same to it).
fn prometheus_name(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The value of the Prometheus annotation `name` in any of its spellings.
fn prometheus_value<'a>(annotations: &'a Labels, name: &str) -> Option<&'a str> {
    let wanted = prometheus_name(name);
    annotations
        .iter()
        .find(|(k, _)| prometheus_name(k) == wanted)
        .map(|(_, v)| v.as_str())
}

/// Go's `strconv.ParseBool`, which Istio reads these annotations with.
fn go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Whether injection points the pod's scrape annotations at the sidecar.
fn takes_over_scraping(annotations: &Labels) -> bool {
    let scrape = prometheus_value(annotations, SCRAPE).and_then(go_bool);
    let merge = annotations.get(MERGE_METRICS).and_then(|v| go_bool(v));
    let ours = prometheus_value(annotations, PORT) == Some(&METRICS_PORT.to_string());
    scrape != Some(false) && merge != Some(false) && !ours
}

/// The app's scrape settings, for the sidecar to merge the app's metrics with its
/// own, when injection takes scraping over and the app had any.
pub(super) fn app_scrape(annotations: &Labels) -> Option<String> {
    if !takes_over_scraping(annotations) {
        return None;
    }
    let mut app = BTreeMap::new();
    for (field, name) in [("scrape", SCRAPE), ("path", PATH), ("port", PORT)] {
        if let Some(value) = prometheus_value(annotations, name) {
            app.insert(field, value);
        }
    }
    (!app.is_empty()).then(|| serde_json::to_string(&app).unwrap_or_default())
}

/// The pod's labels and annotations once injected with the given status.
pub(super) fn pod_metadata(pod: &Pod, status: String) -> (Labels, Labels) {
    let mut labels = pod.labels.clone();
    labels.entry(TLS_MODE_LABEL.into()).or_insert_with(|| "istio".into());
    let mut annotations = pod.annotations.clone();
    if takes_over_scraping(&annotations) {
        // Every spelling goes: Prometheus would pick one of several at random.
        let theirs = [SCRAPE, PORT, PATH].map(prometheus_name);
        annotations.retain(|k, _| !theirs.contains(&prometheus_name(k)));
        annotations.insert(SCRAPE.into(), "true".into());
        annotations.insert(PORT.into(), METRICS_PORT.to_string());
        annotations.insert(PATH.into(), "/stats/prometheus".into());
    }
    if let Some(first) = pod.containers.first() {
        for key in [
            "kubectl.kubernetes.io/default-container",
            "kubectl.kubernetes.io/default-logs-container",
        ] {
            annotations.entry(key.into()).or_insert_with(|| first.clone());
        }
    }
    annotations.insert(STATUS_ANNOTATION.into(), status);
    (labels, annotations)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn injected(annotations: &[(&str, &str)]) -> Labels {
        let pod = Pod {
            annotations: map(annotations),
            containers: vec!["app".into()],
            ..Pod::default()
        };
        pod_metadata(&pod, "{}".into()).1
    }

    #[test]
    fn scraping_goes_to_the_sidecar_and_the_app_settings_to_its_environment() {
        let got = injected(&[("prometheus.io/port", "8080"), ("prometheus_io_path", "/metrics")]);
        assert_eq!(got.get(SCRAPE).map(String::as_str), Some("true"));
        assert_eq!(got.get(PORT).map(String::as_str), Some("15020"));
        assert_eq!(got.get(PATH).map(String::as_str), Some("/stats/prometheus"));
        assert!(!got.contains_key("prometheus_io_path"), "{got:?}");
        let app = app_scrape(&map(&[
            ("prometheus.io/port", "8080"),
            ("prometheus_io_path", "/metrics"),
        ]));
        assert_eq!(app.as_deref(), Some(r#"{"path":"/metrics","port":"8080"}"#));
        assert_eq!(app_scrape(&Labels::new()), None);
    }

    #[test]
    fn pods_that_keep_their_scraping_keep_it() {
        for kept in [
            &[("prometheus.io/scrape", "false")][..],
            &[
                ("prometheus.istio.io/merge-metrics", "false"),
                ("prometheus.io/port", "9090"),
            ][..],
        ] {
            let got = injected(kept);
            for (k, v) in kept {
                assert_eq!(got.get(*k).map(String::as_str), Some(*v), "{kept:?}");
            }
            assert_eq!(got.get(PATH), None, "{kept:?}");
            assert_eq!(app_scrape(&map(kept)), None);
        }
    }

    #[test]
    fn the_status_names_what_was_injected_in_istios_shape() {
        let init = Container {
            name: "strait-init".into(),
            ..Container::default()
        };
        let proxy = Container {
            name: "strait-proxy".into(),
            ..Container::default()
        };
        let volume = Volume {
            name: "strait-data".into(),
            ..Volume::default()
        };
        assert_eq!(
            status(&[&init, &proxy], &[volume]),
            r#"{"initContainers":["strait-init","strait-proxy"],"containers":null,"volumes":["strait-data"],"imagePullSecrets":null,"revision":"default"}"#
        );
    }

    #[test]
    fn the_default_container_is_the_apps_unless_named() {
        let got = injected(&[]);
        assert_eq!(
            got.get("kubectl.kubernetes.io/default-container").map(String::as_str),
            Some("app")
        );
        let got = injected(&[("kubectl.kubernetes.io/default-container", "other")]);
        assert_eq!(
            got.get("kubectl.kubernetes.io/default-container").map(String::as_str),
            Some("other")
        );
    }
}
