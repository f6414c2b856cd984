//! The whole mutation on pods as the API server sends them.

use serde_json::{json, Value};

use super::*;

fn enabled() -> Labels {
    Labels::from([(ISTIO_NAMESPACE_LABEL.to_string(), "enabled".to_string())])
}

fn pod(annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}, "annotations": annotations},
        "spec": {
            "initContainers": [{"name": "migrate", "image": "migrate"}],
            "containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}],
            "volumes": [{"name": "cache", "emptyDir": {}}],
            "terminationGracePeriodSeconds": 45
        }
    })
}

fn injected(annotations: Value) -> Value {
    let mut value = pod(annotations);
    let outcome = inject(&mut value, "shop", Some(&enabled()), &Settings::default()).expect("valid");
    assert_eq!(outcome, Outcome::Injected);
    value
}

fn init_container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["initContainers"]
        .as_array()
        .and_then(|list| list.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn flag<'a>(command: &[&'a str], name: &str) -> Option<&'a str> {
    let i = command.iter().position(|a| *a == name)?;
    command.get(i + 1).copied()
}

#[test]
fn a_pod_gets_the_init_container_then_the_native_sidecar_then_its_own() {
    let pod = injected(json!({}));
    let names: Vec<&str> = pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["strait-init", "strait-proxy", "migrate"]);
    let proxy = init_container(&pod, "strait-proxy");
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(proxy["image"], DEFAULT_PROXY_IMAGE);
    assert_eq!(
        strings(&proxy["command"]),
        [
            "strait-sidecar",
            "run",
            "--controller",
            DEFAULT_CONTROLLER_ADDRESS,
            "--ca-root",
            "/var/run/secrets/strait/root-cert.pem",
            "--token-file",
            "/var/run/secrets/tokens/strait-token"
        ]
    );
    let env: Vec<(&str, String)> = proxy["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let from = e["valueFrom"]["fieldRef"]["fieldPath"].as_str();
            let value = e["value"].as_str().map(String::from);
            (
                e["name"].as_str().unwrap_or(""),
                value.or(from.map(String::from)).unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        env,
        [
            ("POD_NAME", "metadata.name".to_string()),
            ("POD_NAMESPACE", "metadata.namespace".to_string()),
            ("INSTANCE_IP", "status.podIP".to_string()),
            ("SERVICE_ACCOUNT", "spec.serviceAccountName".to_string()),
            ("STRAIT_DRAIN_SECONDS", "40".to_string()),
        ]
    );
    assert_eq!(
        proxy["securityContext"],
        json!({"runAsUser": 1337, "runAsGroup": 1337, "runAsNonRoot": true, "readOnlyRootFilesystem": true,
               "allowPrivilegeEscalation": false, "privileged": false, "capabilities": {"drop": ["ALL"]}})
    );
    assert_eq!(
        proxy["readinessProbe"]["httpGet"],
        json!({"path": "/healthz/ready", "port": 15021})
    );
    assert_eq!(
        proxy["startupProbe"]["httpGet"],
        json!({"path": "/healthz/ready", "port": 15021})
    );
    let ports: Vec<(i64, &str)> = proxy["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["containerPort"].as_i64().unwrap_or(0),
                p["name"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(ports, [(15020, "http-metrics"), (15021, "health")]);

    let init = init_container(&pod, "strait-init");
    assert_eq!(init["restartPolicy"], Value::Null, "an init container that runs once");
    assert_eq!(
        init["securityContext"]["capabilities"],
        json!({"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]})
    );
    assert_eq!(init["securityContext"]["runAsUser"], 0);
    assert_eq!(init["securityContext"]["runAsNonRoot"], false);

    let volumes: Vec<&str> = pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(
        volumes,
        [
            "cache",
            "strait-token",
            "strait-ca-root",
            "strait-podinfo",
            "strait-data"
        ]
    );
    let token = &pod["spec"]["volumes"][1]["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(
        *token,
        json!({"path": "strait-token", "audience": "istio-ca", "expirationSeconds": 43200})
    );
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(
        annotations[STATUS_ANNOTATION],
        r#"{"initContainers":["strait-init","strait-proxy"],"containers":null,"volumes":["strait-token","strait-ca-root","strait-podinfo","strait-data"],"imagePullSecrets":null,"revision":"default"}"#
    );
    assert_eq!(annotations["prometheus.io/port"], "15020");
    assert_eq!(pod["metadata"]["labels"]["security.istio.io/tlsMode"], "istio");
    assert_eq!(pod["metadata"]["labels"]["app"], "web");
    assert_eq!(
        pod["spec"]["containers"],
        json!([{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}])
    );
}

#[test]
fn annotations_become_init_flags_and_resources() {
    let pod = injected(json!({
        "traffic.sidecar.istio.io/includeOutboundIPRanges": "10.0.0.0/8",
        "traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.96.0.1/32",
        "traffic.sidecar.istio.io/includeInboundPorts": "80",
        "traffic.sidecar.istio.io/excludeInboundPorts": "8081",
        "traffic.sidecar.istio.io/includeOutboundPorts": "443",
        "traffic.sidecar.istio.io/excludeOutboundPorts": "5432",
        "traffic.sidecar.istio.io/excludeInterfaces": "net1",
        "sidecar.istio.io/proxyCPU": "250m",
        "sidecar.istio.io/proxyMemoryLimit": "512Mi"
    }));
    let init = init_container(&pod, "strait-init");
    let command = strings(&init["command"]);
    for (name, value) in [
        ("--include-outbound-cidrs", "10.0.0.0/8"),
        ("--exclude-outbound-cidrs", "10.96.0.1/32"),
        ("--include-inbound-ports", "80"),
        ("--exclude-inbound-ports", "15020,15021,15090,8081"),
        ("--include-outbound-ports", "443"),
        ("--exclude-outbound-ports", "5432"),
        ("--exclude-interfaces", "net1"),
        ("--outbound-port", "15001"),
        ("--inbound-port", "15006"),
        ("--proxy-uid", "1337"),
        ("--proxy-gid", "1337"),
    ] {
        assert_eq!(flag(&command, name), Some(value), "{name} in {command:?}");
    }
    let expected = json!({"requests": {"cpu": "250m"}, "limits": {"memory": "512Mi"}});
    assert_eq!(init_container(&pod, "strait-proxy")["resources"], expected);
    assert_eq!(init["resources"], expected);
}

#[test]
fn holding_the_app_follows_the_proxy_config_annotation_then_the_setting() {
    let cases = [
        (json!({}), true, true),
        (json!({}), false, false),
        (
            json!({"proxy.istio.io/config": "holdApplicationUntilProxyStarts: true"}),
            false,
            true,
        ),
        (
            json!({"proxy.istio.io/config": "holdApplicationUntilProxyStarts: false\n"}),
            true,
            false,
        ),
    ];
    for (annotations, default, hold) in cases {
        let mut value = pod(annotations.clone());
        let settings = Settings {
            hold_application_until_proxy_starts: default,
            ..Settings::default()
        };
        inject(&mut value, "shop", Some(&enabled()), &settings).expect("valid");
        let probe = &init_container(&value, "strait-proxy")["startupProbe"];
        assert_eq!(!probe.is_null(), hold, "{annotations} with {default}");
    }
}

#[test]
fn injection_happens_once() {
    let once = injected(json!({}));
    let mut again = once.clone();
    let outcome = inject(&mut again, "shop", Some(&enabled()), &Settings::default()).expect("valid");
    assert_eq!(outcome, Outcome::Skipped(Skip::AlreadyInjected));
    assert_eq!(again, once);
}

#[test]
fn skipped_pods_are_untouched() {
    let cases: [(&str, Value, Option<Labels>, Skip); 4] = [
        (
            "host network",
            json!({"spec": {"hostNetwork": true}}),
            Some(enabled()),
            Skip::HostNetwork,
        ),
        (
            "opt-out label",
            json!({"metadata": {"labels": {"sidecar.istio.io/inject": "false"}}}),
            Some(enabled()),
            Skip::OptedOut,
        ),
        (
            "opt-out annotation",
            json!({"metadata": {"annotations": {"sidecar.istio.io/inject": "false"}}}),
            None,
            Skip::OptedOut,
        ),
        ("unlabeled namespace", json!({}), Some(Labels::new()), Skip::NotSelected),
    ];
    for (name, overlay, namespace, skip) in cases {
        let mut value = pod(json!({}));
        json_patch::merge(&mut value, &overlay);
        let before = value.clone();
        let outcome = inject(&mut value, "shop", namespace.as_ref(), &Settings::default()).expect(name);
        assert_eq!(outcome, Outcome::Skipped(skip), "{name}");
        assert_eq!(value, before, "{name}");
    }
}

#[test]
fn a_pod_with_nothing_optional_is_injected() {
    let mut value = json!({"spec": {"containers": [{"name": "app", "image": "busybox"}]}});
    let outcome = inject(&mut value, "", None, &Settings::default()).expect("valid");
    assert_eq!(outcome, Outcome::Injected);
    assert_eq!(value["spec"]["initContainers"].as_array().map(Vec::len), Some(2));
    assert_eq!(value["spec"]["volumes"].as_array().map(Vec::len), Some(4));
    assert_eq!(
        value["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"],
        "app"
    );
}

#[test]
fn bad_input_is_an_error_and_leaves_the_pod_as_it_was() {
    let cases = [
        json!({"metadata": {"annotations": {"traffic.sidecar.istio.io/includeInboundPorts": "http"}}}),
        json!({"metadata": {"annotations": {"sidecar.istio.io/proxyCPU": "fast"}}}),
        json!({"metadata": {"annotations": {"proxy.istio.io/config": "holdApplicationUntilProxyStarts: 1"}}}),
        json!({"metadata": {"labels": {"app": 1}}}),
        json!({"spec": {"initContainers": "strait-init"}}),
        json!({"spec": {"volumes": {"a": 1}}}),
        json!({"spec": []}),
    ];
    for overlay in cases {
        let mut value = pod(json!({}));
        json_patch::merge(&mut value, &overlay);
        let before = value.clone();
        let error = inject(&mut value, "shop", Some(&enabled()), &Settings::default());
        assert!(error.is_err(), "{overlay}");
        assert_eq!(value, before, "{overlay}");
    }
    let mut not_an_object = json!("pod");
    assert!(inject(&mut not_an_object, "shop", None, &Settings::default()).is_err());
}
