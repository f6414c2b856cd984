//! The sidecar of an injected pod: `strait-proxy`, a Kubernetes native sidecar (an
//! init container with `restartPolicy: Always`, started right after `strait-init`
//! and before the app's own init containers, so their traffic is in the mesh too;
//! stopped after the app), running `strait-sidecar run`, and the volumes it mounts.
//!
//! - Identity: a projected service account token (`strait-token`, audience
//!   `istio-ca`, 12 h) it shows the controller's CA, and the mesh's root
//!   certificate from the ConfigMap `istio-ca-root-cert` (Istio's name, kept in every
//!   namespace by the controller) to check the controller with.
//! - Who it is: the pod's name, namespace, IP and service account from the downward
//!   API as `POD_NAME`, `POD_NAMESPACE`, `INSTANCE_IP`, `SERVICE_ACCOUNT`, and the
//!   pod's labels as a file, `/etc/strait/pod/labels` (`strait-sidecar run
//!   --labels-file`'s default), which follows label changes.
//! - Shutdown: `STRAIT_DRAIN_SECONDS`, the pod's termination grace period less 5 s,
//!   so the proxy finishes draining before the kubelet kills it.
//! - Health: readiness on 15021 `/healthz/ready`; with
//!   `holdApplicationUntilProxyStarts` a startup probe on the same, so Kubernetes
//!   starts the app's containers only once the proxy is ready.
//! - Resources: Istio's defaults (requests 100m / 128Mi, limits 2 CPUs / 1Gi), or,
//!   when any of `sidecar.istio.io/proxyCPU`, `proxyMemory`, `proxyCPULimit`,
//!   `proxyMemoryLimit` is set, exactly what those say (as Istio: requests from the
//!   first two, limits from the last two, no defaults mixed in).
//! - Locked down: uid/gid 1337 (whose traffic the capture lets through), non-root,
//!   read-only root file system (`/var/lib/strait` is its writable `emptyDir`), no
//!   privilege escalation, no capabilities.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, DownwardAPIVolumeFile, DownwardAPIVolumeSource,
    EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, Probe, ProjectedVolumeSource,
    ResourceRequirements, SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::capture::PROXY_UID;
use super::{Error, Pod, Settings, PROXY_CONTAINER};

/// The projected service account token the proxy authenticates with.
pub(super) const TOKEN_VOLUME: &str = "strait-token";
/// The mesh's root certificate.
pub(super) const CA_ROOT_VOLUME: &str = "strait-ca-root";
/// The pod's labels and annotations, as files.
pub(super) const POD_INFO_VOLUME: &str = "strait-podinfo";
/// The proxy's writable folder.
pub(super) const DATA_VOLUME: &str = "strait-data";

/// The ConfigMap with the mesh's root certificate (`root-cert.pem`), Istio's name.
const CA_ROOT_CONFIG_MAP: &str = "istio-ca-root-cert";
/// The token's audience: Istio's CA audience, which the controller's CA accepts.
const TOKEN_AUDIENCE: &str = "istio-ca";
/// The token's lifetime (Istio's); the kubelet renews it well before.
const TOKEN_SECONDS: i64 = 43_200;

/// What the proxy leaves of the grace period for the kubelet and the app.
const DRAIN_MARGIN_SECONDS: i64 = 5;
/// Kubernetes' default termination grace period.
const DEFAULT_GRACE_SECONDS: i64 = 30;

/// The metrics port (Prometheus `/stats/prometheus`).
pub(super) const METRICS_PORT: i32 = 15020;
/// The health port (`/healthz/ready`).
const HEALTH_PORT: i32 = 15021;

/// Annotations that set the proxy's resources (Istio's).
const PROXY_CPU: &str = "sidecar.istio.io/proxyCPU";
const PROXY_MEMORY: &str = "sidecar.istio.io/proxyMemory";
const PROXY_CPU_LIMIT: &str = "sidecar.istio.io/proxyCPULimit";
const PROXY_MEMORY_LIMIT: &str = "sidecar.istio.io/proxyMemoryLimit";

/// The annotation holding a ProxyConfig (YAML) for this pod (Istio's).
const PROXY_CONFIG: &str = "proxy.istio.io/config";

/// The proxy's resources (and `strait-init`'s, as in Istio).
pub(super) fn resources(annotations: &BTreeMap<String, String>) -> Result<ResourceRequirements, Error> {
    let given = |name: &'static str| -> Result<Option<(String, Quantity)>, Error> {
        let Some(value) = annotations.get(name) else {
            return Ok(None);
        };
        check_quantity(value).map_err(|reason| Error::Annotation {
            name,
            value: value.clone(),
            reason,
        })?;
        let key = if name.contains("CPU") { "cpu" } else { "memory" };
        Ok(Some((key.to_string(), Quantity(value.trim().to_string()))))
    };
    let requests: BTreeMap<String, Quantity> = [given(PROXY_CPU)?, given(PROXY_MEMORY)?]
        .into_iter()
        .flatten()
        .collect();
    let limits: BTreeMap<String, Quantity> = [given(PROXY_CPU_LIMIT)?, given(PROXY_MEMORY_LIMIT)?]
        .into_iter()
        .flatten()
        .collect();
    if requests.is_empty() && limits.is_empty() {
        let pair = |cpu: &str, memory: &str| {
            BTreeMap::from([
                ("cpu".to_string(), Quantity(cpu.into())),
                ("memory".to_string(), Quantity(memory.into())),
            ])
        };
        return Ok(ResourceRequirements {
            requests: Some(pair("100m", "128Mi")),
            limits: Some(pair("2000m", "1024Mi")),
            ..ResourceRequirements::default()
        });
    }
    Ok(ResourceRequirements {
        requests: (!requests.is_empty()).then_some(requests),
        limits: (!limits.is_empty()).then_some(limits),
        ..ResourceRequirements::default()
    })
}

/// A Kubernetes resource quantity: a non-negative decimal number and a suffix
/// (`Ki`..`Ei`, `n`, `u`, `m`, `k`, `M`..`E`, or an exponent `e3`).
fn check_quantity(value: &str) -> Result<(), String> {
    let bad = || format!("{value:?} is not a resource quantity (such as 250m, 1.5, 512Mi)");
    let text = value.trim();
    let text = text.strip_prefix('+').unwrap_or(text);
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    let mut parts = number.splitn(2, '.');
    let whole = parts.next().unwrap_or("");
    let fraction = parts.next();
    let digits_ok = (!whole.is_empty() || fraction.is_some_and(|f| !f.is_empty()))
        && fraction.is_none_or(|f| f.chars().all(|c| c.is_ascii_digit()));
    let suffix_ok = matches!(
        suffix,
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
        .is_some_and(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_digit()));
    if digits_ok && suffix_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

/// Whether the app waits for the proxy: the pod's ProxyConfig annotation, else `default`.
pub(super) fn hold_application(annotations: &BTreeMap<String, String>, default: bool) -> Result<bool, Error> {
    let Some(text) = annotations.get(PROXY_CONFIG) else {
        return Ok(default);
    };
    let bad = |reason: String| Error::Annotation {
        name: PROXY_CONFIG,
        value: text.clone(),
        reason,
    };
    let documents = strait_config::yaml::parse_documents(text).map_err(|e| bad(format!("not YAML: {e}")))?;
    let Some(document) = documents.first() else {
        return Ok(default);
    };
    if !document.value.is_object() {
        return Err(bad("not a ProxyConfig (a mapping of its fields)".into()));
    }
    match document.value.get("holdApplicationUntilProxyStarts") {
        None | Some(serde_json::Value::Null) => Ok(default),
        Some(serde_json::Value::Bool(hold)) => Ok(*hold),
        Some(_) => Err(bad("holdApplicationUntilProxyStarts must be true or false".into())),
    }
}

fn env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        ..EnvVar::default()
    }
}

fn env_from_field(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn health_probe(period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/healthz/ready".into()),
            port: IntOrString::Int(HEALTH_PORT),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(0),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

/// The `strait-proxy` container. `app_scrape` is the app's own Prometheus scrape
/// settings when the injection takes the pod's scrape annotations over (Istio's
/// `ISTIO_PROMETHEUS_ANNOTATIONS`, for merging the app's metrics).
pub(super) fn proxy_container(
    pod: &Pod,
    resources: &ResourceRequirements,
    app_scrape: Option<String>,
    settings: &Settings,
) -> Result<Container, Error> {
    let hold = hold_application(&pod.annotations, settings.hold_application_until_proxy_starts)?;
    let grace = pod.termination_grace_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
    let drain = grace.saturating_sub(DRAIN_MARGIN_SECONDS).max(0);
    let mut variables = vec![
        env_from_field("POD_NAME", "metadata.name"),
        env_from_field("POD_NAMESPACE", "metadata.namespace"),
        env_from_field("INSTANCE_IP", "status.podIP"),
        env_from_field("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        env("STRAIT_DRAIN_SECONDS", drain.to_string()),
    ];
    if let Some(scrape) = app_scrape {
        variables.push(env("ISTIO_PROMETHEUS_ANNOTATIONS", scrape));
    }
    let port = |number: i32, name: &str| ContainerPort {
        container_port: number,
        name: Some(name.into()),
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    };
    Ok(Container {
        name: PROXY_CONTAINER.into(),
        image: Some(settings.proxy_image.clone()),
        restart_policy: Some("Always".into()),
        command: Some(
            [
                "strait-sidecar",
                "run",
                "--controller",
                &settings.controller_address,
                "--ca-root",
                "/var/run/secrets/strait/root-cert.pem",
                "--token-file",
                "/var/run/secrets/tokens/strait-token",
            ]
            .map(String::from)
            .into(),
        ),
        env: Some(variables),
        ports: Some(vec![port(METRICS_PORT, "http-metrics"), port(HEALTH_PORT, "health")]),
        readiness_probe: Some(health_probe(15, 4)),
        // Ten minutes to become ready, checked every second: the app starts as soon
        // as the proxy is ready, and a proxy that never is holds the pod visibly.
        startup_probe: hold.then(|| health_probe(1, 600)),
        resources: Some(resources.clone()),
        security_context: Some(SecurityContext {
            run_as_user: Some(PROXY_UID),
            run_as_group: Some(PROXY_UID),
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            mount(TOKEN_VOLUME, "/var/run/secrets/tokens", true),
            mount(CA_ROOT_VOLUME, "/var/run/secrets/strait", true),
            mount(POD_INFO_VOLUME, "/etc/strait/pod", true),
            mount(DATA_VOLUME, "/var/lib/strait", false),
        ]),
        ..Container::default()
    })
}

/// The volumes the proxy mounts.
pub(super) fn volumes() -> Vec<Volume> {
    let field_file = |path: &str, field_path: &str| DownwardAPIVolumeFile {
        path: path.into(),
        field_ref: Some(ObjectFieldSelector {
            field_path: field_path.into(),
            ..ObjectFieldSelector::default()
        }),
        ..DownwardAPIVolumeFile::default()
    };
    vec![
        Volume {
            name: TOKEN_VOLUME.into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: TOKEN_VOLUME.into(),
                        audience: Some(TOKEN_AUDIENCE.into()),
                        expiration_seconds: Some(TOKEN_SECONDS),
                        ..ServiceAccountTokenProjection::default()
                    }),
                    ..VolumeProjection::default()
                }]),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: CA_ROOT_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: CA_ROOT_CONFIG_MAP.into(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: POD_INFO_VOLUME.into(),
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(vec![
                    field_file("labels", "metadata.labels"),
                    field_file("annotations", "metadata.annotations"),
                ]),
                ..DownwardAPIVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: DATA_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn quantities(map: &Option<BTreeMap<String, Quantity>>) -> Vec<(String, String)> {
        map.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect()
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn resources_are_istios_defaults_or_exactly_the_annotations() {
        type Pairs<'a> = &'a [(&'a str, &'a str)];
        // (annotations, requests, limits)
        let cases: &[(Pairs<'_>, Pairs<'_>, Pairs<'_>)] = &[
            (
                &[],
                &[("cpu", "100m"), ("memory", "128Mi")],
                &[("cpu", "2000m"), ("memory", "1024Mi")],
            ),
            (&[(PROXY_CPU, "250m")], &[("cpu", "250m")], &[]),
            (
                &[(PROXY_MEMORY, "1Gi"), (PROXY_MEMORY_LIMIT, "2Gi")],
                &[("memory", "1Gi")],
                &[("memory", "2Gi")],
            ),
            (&[(PROXY_CPU_LIMIT, "1.5")], &[], &[("cpu", "1.5")]),
            (
                &[
                    (PROXY_CPU, "100m"),
                    (PROXY_MEMORY, "64Mi"),
                    (PROXY_CPU_LIMIT, "1"),
                    (PROXY_MEMORY_LIMIT, "1e9"),
                ],
                &[("cpu", "100m"), ("memory", "64Mi")],
                &[("cpu", "1"), ("memory", "1e9")],
            ),
        ];
        for (given, requests, limits) in cases {
            let r = resources(&annotations(given)).expect("valid");
            assert_eq!(quantities(&r.requests), pairs(requests), "{given:?}");
            assert_eq!(quantities(&r.limits), pairs(limits), "{given:?}");
        }
    }

    #[test]
    fn bad_quantities_are_refused() {
        for bad in ["lots", "-1", "1.2.3", "12Xi", ".", "", "1e", "m"] {
            let error = resources(&annotations(&[(PROXY_MEMORY, bad)])).expect_err(bad);
            assert!(error.to_string().contains(PROXY_MEMORY), "{error}");
        }
        for good in ["0", "1", ".5", "0.5", "500m", "128Mi", "1E", "2e3", "1e-3", "+1"] {
            assert_eq!(check_quantity(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn the_proxy_config_annotation_decides_on_holding_the_app() {
        let cases: &[(Option<&str>, bool, Result<bool, ()>)] = &[
            (None, true, Ok(true)),
            (None, false, Ok(false)),
            (Some("holdApplicationUntilProxyStarts: true"), false, Ok(true)),
            (Some("holdApplicationUntilProxyStarts: false"), true, Ok(false)),
            (Some("{\"holdApplicationUntilProxyStarts\": true}"), false, Ok(true)),
            (Some("concurrency: 2"), true, Ok(true)),
            (Some(""), false, Ok(false)),
            (Some("holdApplicationUntilProxyStarts: yes please"), true, Err(())),
            (Some("[1, 2]"), true, Err(())),
            (Some("a: [b"), true, Err(())),
        ];
        for (text, default, expected) in cases {
            let given = text.map(|t| annotations(&[(PROXY_CONFIG, t)])).unwrap_or_default();
            let got = hold_application(&given, *default).map_err(|_| ());
            assert_eq!(got, *expected, "{text:?} with default {default}");
        }
    }

    #[test]
    fn drain_time_is_the_grace_period_less_a_margin() {
        for (grace, drain) in [(None, "25"), (Some(60), "55"), (Some(3), "0"), (Some(0), "0")] {
            let pod = Pod {
                termination_grace_seconds: grace,
                ..Pod::default()
            };
            let proxy =
                proxy_container(&pod, &ResourceRequirements::default(), None, &Settings::default()).expect("valid");
            let value = proxy
                .env
                .iter()
                .flatten()
                .find(|e| e.name == "STRAIT_DRAIN_SECONDS")
                .and_then(|e| e.value.clone());
            assert_eq!(value.as_deref(), Some(drain), "grace {grace:?}");
        }
    }
}
