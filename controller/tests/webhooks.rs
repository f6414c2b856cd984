//! The controller's admission webhooks against a real API server: the
//! `strait-controller` binary serves them (HTTPS, with a certificate for 127.0.0.1
//! from a CA made here), registered by deploy/injection-webhook.yaml and
//! deploy/validation-webhook.yaml with their addresses turned into
//! `https://127.0.0.1:PORT/...`; the controller runs with the rights of
//! deploy/controller-rbac.yaml and fills in both caBundles itself.
//! - Injection: pods created with kubectl come back injected or not, as Istio's
//!   rules say; `straitctl kube-inject | kubectl apply` stores an injected
//!   Deployment; the webhook answers garbage with 400 and keeps serving.
//! - Validation: `kubectl apply` of an invalid Istio resource is refused with its
//!   field and message, a valid one is stored, and with the controller down
//!   resources are stored unchecked (failurePolicy Ignore).

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{controller_kubeconfig, free_port, json_of, wait_for, Controller, Ports, ISTIO_SYSTEM};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::{json, Value};
use strait_controller::testing::ApiServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WEBHOOK_CONFIG: &str = "strait-sidecar-injector";
const VALIDATION_CONFIG: &str = "strait-validator";

/// A CA and a serving certificate it signed for 127.0.0.1, as files.
struct TestCa {
    dir: tempfile::TempDir,
    ca_pem: String,
}

impl TestCa {
    fn new() -> TestCa {
        let ca_key = KeyPair::generate().expect("a key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "strait injection test CA");
        let ca = ca_params.self_signed(&ca_key).expect("the CA");
        let key = KeyPair::generate().expect("a key");
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, "strait-controller");
        let cert = params.signed_by(&key, &ca, &ca_key).expect("the serving certificate");
        let dir = tempfile::tempdir().expect("a folder");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write");
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).expect("write");
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).expect("write");
        TestCa { dir, ca_pem: ca.pem() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The webhook flags of the controller.
    fn flags(&self, port: u16) -> Vec<String> {
        vec![
            format!("--webhook-port={port}"),
            format!("--webhook-cert={}", self.path("cert.pem").display()),
            format!("--webhook-key={}", self.path("key.pem").display()),
            format!("--webhook-ca-bundle={}", self.path("ca.pem").display()),
        ]
    }

    /// The CA as a `caBundle` field holds it (base64).
    fn bundle_field(&self) -> Value {
        serde_json::to_value(k8s_openapi::ByteString(self.ca_pem.clone().into_bytes())).expect("base64")
    }
}

/// Starts `strait-controller` with `args`; returns once its webhook port accepts.
fn start_controller(args: &[String], webhook_port: u16) -> Controller {
    // The CA's TLS port would be 15012 in every test at once: off here.
    let ports = Ports {
        secure: 0,
        ..Ports::free()
    };
    let mut controller = Controller::spawn(ports.command().args(args), ports);
    wait_for("the webhook port open", Duration::from_secs(30), || {
        controller.assert_running();
        TcpStream::connect((Ipv4Addr::LOCALHOST, webhook_port)).ok()
    });
    controller
}

/// An API server whose injection webhook is a running controller.
struct Injecting {
    server: ApiServer,
    ca: TestCa,
    webhook_port: u16,
    controller: Option<Controller>,
}

impl Injecting {
    async fn start() -> Injecting {
        let server = ApiServer::start().await.expect("the API server starts");
        let ca = TestCa::new();
        let webhook_port = free_port();
        let rbac = include_str!("../../deploy/controller-rbac.yaml");
        let webhook = include_str!("../../deploy/injection-webhook.yaml");
        let validation = include_str!("../../deploy/validation-webhook.yaml");
        server
            .kubectl(
                &["apply", "-f", "-"],
                &[ISTIO_SYSTEM, rbac, webhook, validation].join("\n---\n"),
            )
            .expect("applied");
        // No Service reaches the test's loopback: the webhooks call the controller
        // by URL instead.
        for (kind, name, path, webhooks) in [
            ("mutatingwebhookconfiguration", WEBHOOK_CONFIG, "inject", 3),
            ("validatingwebhookconfiguration", VALIDATION_CONFIG, "validate", 1),
        ] {
            let url = format!("https://127.0.0.1:{webhook_port}/{path}");
            let config = json_of(&server, &["get", kind, name]);
            let count = config["webhooks"].as_array().map_or(0, Vec::len);
            assert_eq!(count, webhooks, "{config}");
            let patch: Vec<Value> = (0..count)
                .map(|i| json!({"op": "replace", "path": format!("/webhooks/{i}/clientConfig"), "value": {"url": url}}))
                .collect();
            server
                .kubectl(
                    &[
                        "patch",
                        kind,
                        name,
                        "--type=json",
                        "-p",
                        &Value::Array(patch).to_string(),
                    ],
                    "",
                )
                .expect("patched");
        }
        // The controller runs with exactly the rights deploy/controller-rbac.yaml gives.
        let kubeconfig = controller_kubeconfig(&server);
        let mut args = vec![format!("--kubeconfig={}", kubeconfig.display())];
        args.extend(ca.flags(webhook_port));
        let controller = start_controller(&args, webhook_port);
        let injecting = Injecting {
            server,
            ca,
            webhook_port,
            controller: Some(controller),
        };
        injecting.wait_for_ca_bundle();
        injecting
    }

    /// Waits until the controller has written the CA into every webhook.
    fn wait_for_ca_bundle(&self) {
        let expected = self.ca.bundle_field();
        wait_for("the caBundle in every webhook", Duration::from_secs(30), || {
            let mut bundles = Vec::new();
            for (kind, name) in [
                ("mutatingwebhookconfiguration", WEBHOOK_CONFIG),
                ("validatingwebhookconfiguration", VALIDATION_CONFIG),
            ] {
                let config = json_of(&self.server, &["get", kind, name]);
                bundles.extend(
                    config["webhooks"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|w| w["clientConfig"]["caBundle"].clone()),
                );
            }
            (bundles.len() == 4 && bundles.iter().all(|b| *b == expected)).then_some(())
        });
    }

    fn namespace(&self, name: &str, labels: &str) {
        let yaml = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: \"{name}\", labels: {{{labels}}}}}\n");
        self.server.kubectl(&["apply", "-f", "-"], &yaml).expect("a namespace");
    }

    /// Creates a pod with kubectl and returns it as stored. It names its service
    /// account, as the ServiceAccount admission plugin (off in the test API server)
    /// would before any webhook: a projected token needs one.
    fn create_pod(&self, namespace: &str, name: &str, labels: &str, annotations: &str) -> Value {
        let yaml = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels: {{app: web, {labels}}}\n  annotations: {{{annotations}}}\nspec:\n  serviceAccountName: default\n  containers:\n  - name: web\n    image: nginx\n    ports: [{{containerPort: 80}}]\n"
        );
        self.server
            .kubectl(&["apply", "-f", "-"], &yaml)
            .unwrap_or_else(|e| panic!("pod {namespace}/{name}: {e}"));
        json_of(&self.server, &["get", "pod", name, "-n", namespace])
    }

    fn stop(mut self) {
        drop(self.controller.take());
        self.server.stop().expect("the API server stops cleanly");
    }
}

fn init_container_names(pod_spec: &Value) -> Vec<&str> {
    pod_spec["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect()
}

fn init_container<'a>(pod_spec: &'a Value, name: &str) -> &'a Value {
    pod_spec["initContainers"]
        .as_array()
        .and_then(|list| list.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

fn command(container: &Value) -> Vec<&str> {
    container["command"]
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_in_a_labeled_namespace_gets_the_sidecar_and_its_annotations_as_flags() {
    let cluster = Injecting::start().await;
    cluster.namespace("shop", "istio-injection: enabled");
    cluster.namespace("store", "strait-injection: enabled");

    let pod = cluster.create_pod(
        "shop",
        "web",
        "",
        "traffic.sidecar.istio.io/includeOutboundIPRanges: 10.0.0.0/8, \
         traffic.sidecar.istio.io/excludeInboundPorts: \"8081\", \
         sidecar.istio.io/proxyCPU: 250m, \
         proxy.istio.io/config: \"holdApplicationUntilProxyStarts: false\"",
    );
    let spec = &pod["spec"];
    assert_eq!(init_container_names(spec), ["strait-init", "strait-proxy"], "{pod}");
    let proxy = init_container(spec, "strait-proxy");
    assert_eq!(proxy["restartPolicy"], "Always", "a native sidecar: {proxy}");
    assert_eq!(proxy["resources"]["requests"], json!({"cpu": "250m"}));
    assert_eq!(proxy["startupProbe"], Value::Null, "the annotation turned holding off");
    let init = command(init_container(spec, "strait-init"));
    assert_eq!(&init[..2], ["strait-sidecar", "init"]);
    assert_eq!(flag(&init, "--include-outbound-cidrs"), Some("10.0.0.0/8"), "{init:?}");
    assert_eq!(
        flag(&init, "--exclude-inbound-ports"),
        Some("15020,15021,15090,8081"),
        "{init:?}"
    );
    let status = pod["metadata"]["annotations"]["sidecar.istio.io/status"]
        .as_str()
        .unwrap_or("");
    assert!(
        status.contains(r#""initContainers":["strait-init","strait-proxy"]"#),
        "{status}"
    );
    let containers: Vec<&str> = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(containers, ["web"], "the app's containers are the app's");

    // Strait's own namespace label, and the controller's default of holding the app.
    let pod = cluster.create_pod("store", "web", "", "");
    assert_eq!(
        init_container_names(&pod["spec"]),
        ["strait-init", "strait-proxy"],
        "{pod}"
    );
    let proxy = init_container(&pod["spec"], "strait-proxy");
    assert_eq!(proxy["startupProbe"]["httpGet"]["port"], 15021, "{proxy}");
    cluster.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_outside_labeled_namespaces_or_opted_out_are_left_alone() {
    let cluster = Injecting::start().await;
    cluster.namespace("shop", "istio-injection: enabled");
    cluster.namespace("plain", "team: a");
    cluster.namespace("quiet", "istio-injection: disabled");
    let injected = |pod: &Value| !init_container_names(&pod["spec"]).is_empty();

    let pod = cluster.create_pod("plain", "a", "", "");
    assert!(!injected(&pod), "an unlabeled namespace: {pod}");
    let pod = cluster.create_pod("shop", "b", "sidecar.istio.io/inject: \"false\"", "");
    assert!(!injected(&pod), "opted out by label: {pod}");
    // The API server sends this one (its selector sees labels only): the controller
    // reads the annotation.
    let pod = cluster.create_pod("shop", "c", "", "sidecar.istio.io/inject: \"false\"");
    assert!(!injected(&pod), "opted out by annotation: {pod}");
    let pod = cluster.create_pod("plain", "d", "sidecar.istio.io/inject: \"true\"", "");
    assert!(injected(&pod), "opted in by label in an unlabeled namespace: {pod}");
    let pod = cluster.create_pod("quiet", "e", "sidecar.istio.io/inject: \"true\"", "");
    assert!(!injected(&pod), "a disabled namespace: {pod}");

    // The controller decides by the namespace's labels itself, whatever calls it: a
    // review of a pod in the unlabeled namespace is allowed unchanged.
    let (status, body) = post(
        cluster.webhook_port,
        &cluster.ca.ca_pem,
        "/inject",
        &review("plain", json!({})).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    assert_eq!(answer["response"]["patch"], Value::Null, "{answer}");
    let (_, body) = post(
        cluster.webhook_port,
        &cluster.ca.ca_pem,
        "/inject",
        &review("shop", json!({})).to_string(),
    )
    .await;
    let answer: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["response"]["patchType"], "JSONPatch", "{answer}");
    cluster.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_inject_output_applies_as_an_injected_deployment() {
    let server = ApiServer::start().await.expect("the API server starts");
    server
        .kubectl(
            &["apply", "-f", "-"],
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
        )
        .expect("a namespace");
    let manifests = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations: {traffic.sidecar.istio.io/excludeOutboundPorts: \"5432\"}
    spec:
      containers: [{name: web, image: nginx, ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{port: 80}]
";
    let dir = tempfile::tempdir().expect("a folder");
    let file = dir.path().join("web.yaml");
    std::fs::write(&file, manifests).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_straitctl"))
        .args(["kube-inject", "-f"])
        .arg(&file)
        .args(["--proxy-image", "registry.example.com/strait:test"])
        .output()
        .expect("run straitctl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let injected = String::from_utf8(out.stdout).expect("UTF-8");
    server
        .kubectl(&["apply", "-f", "-"], &injected)
        .expect("kubectl takes it");

    let stored = json_of(&server, &["get", "deployment", "web", "-n", "shop"]);
    let spec = &stored["spec"]["template"]["spec"];
    assert_eq!(init_container_names(spec), ["strait-init", "strait-proxy"], "{stored}");
    let proxy = init_container(spec, "strait-proxy");
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(proxy["image"], "registry.example.com/strait:test");
    let init = command(init_container(spec, "strait-init"));
    assert_eq!(flag(&init, "--exclude-outbound-ports"), Some("5432"), "{init:?}");
    server
        .kubectl(&["get", "service", "web", "-n", "shop"], "")
        .expect("the Service went through too");

    // From standard input, the same.
    let mut child = Command::new(env!("CARGO_BIN_EXE_straitctl"))
        .args([
            "kube-inject",
            "-f",
            "-",
            "--proxy-image",
            "registry.example.com/strait:test",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run straitctl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(manifests.as_bytes())
        .expect("written");
    let piped = child.wait_with_output().expect("straitctl ends");
    assert_eq!(String::from_utf8_lossy(&piped.stdout), injected);
    server.stop().expect("the API server stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_gets_a_400_and_the_webhook_keeps_serving() {
    let ca = TestCa::new();
    let config = tempfile::tempdir().expect("a folder");
    let port = free_port();
    let mut args = vec![format!("--config-dir={}", config.path().display())];
    args.extend(ca.flags(port));
    let controller = start_controller(&args, port);

    let good = review("shop", json!({})).to_string();
    let cases: &[(&str, &[u8], u16, &str)] = &[
        ("/inject", b"\x00\xff not JSON", 400, "not an AdmissionReview"),
        (
            "/inject",
            b"{\"apiVersion\": \"v1\", \"kind\": \"Pod\"}",
            400,
            "not an admission.k8s.io/v1 AdmissionReview",
        ),
        (
            "/inject",
            b"{\"apiVersion\": \"admission.k8s.io/v1\", \"kind\": \"AdmissionReview\", \"request\": {}}",
            400,
            "missing field",
        ),
        (
            "/inject",
            &good.as_bytes()[..good.len() / 2],
            400,
            "not an AdmissionReview",
        ),
        ("/elsewhere", good.as_bytes(), 404, "no webhook at /elsewhere"),
    ];
    for (path, body, status, message) in cases {
        let (got, text) = post(port, &ca.ca_pem, path, &String::from_utf8_lossy(body)).await;
        assert_eq!(got, *status, "{path} {body:?}: {text}");
        assert!(text.contains(message), "{path} {body:?}: {text}");
    }
    let (status, text) = send(
        port,
        &ca.ca_pem,
        &format!(
            "POST /inject HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            64 << 20
        ),
    )
    .await;
    assert_eq!(status, 413, "{text}");
    let (status, _) = send(
        port,
        &ca.ca_pem,
        "GET /inject HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 405);
    // A connection that is not TLS at all.
    let mut plain = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connects");
    let _ = plain.write_all(b"GET / HTTP/1.1\r\n\r\n");
    drop(plain);

    // Still serving: a real review is answered with its patch.
    let (status, text) = post(port, &ca.ca_pem, "/inject", &good).await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(answer["response"]["uid"], "e2e-1");
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    assert!(answer["response"]["patch"].is_string(), "base64: {answer}");
    drop(controller);
}

/// An AdmissionReview for creating a pod in `namespace`.
fn review(namespace: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "e2e-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "test"},
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "direct", "namespace": namespace, "annotations": annotations},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]}
            },
            "oldObject": null
        }
    })
}

/// `POST path` with `body` over TLS (trusting `ca_pem`): (status, body).
async fn post(port: u16, ca_pem: &str, path: &str, body: &str) -> (u16, String) {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    send(port, ca_pem, &(head + body)).await
}

/// Sends `request` as it is over TLS to 127.0.0.1:`port`: (status, body).
async fn send(port: u16, ca_pem: &str, request: &str) -> (u16, String) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.expect("PEM")).expect("a root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .expect("connects");
    let name = rustls::pki_types::ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
    let mut tls = connector
        .connect(name, tcp)
        .await
        .expect("the certificate is good for 127.0.0.1");
    tls.write_all(request.as_bytes()).await.expect("sent");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

const BAD_VS: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {regex: \"((\"}}]
    route: [{destination: {host: reviews}}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_istio_resource_is_refused_with_its_field_and_a_valid_one_is_stored() {
    let mut cluster = Injecting::start().await;
    cluster.namespace("shop", "");
    let refused = cluster
        .server
        .kubectl(&["apply", "-f", "-"], BAD_VS)
        .expect_err("an invalid VirtualService is refused");
    let refused = refused.to_string();
    assert!(
        refused.contains("denied the request") && refused.contains("spec.http[0].match[0].uri.regex"),
        "kubectl shows the field: {refused}"
    );
    assert!(
        cluster
            .server
            .kubectl(&["get", "virtualservice", "reviews", "-n", "shop"], "")
            .is_err(),
        "nothing was stored"
    );
    // A destination no Service defines yet is not this resource's error: resources
    // arrive in any order.
    let good = BAD_VS.replace("((", "^/api/v[0-9]+");
    cluster
        .server
        .kubectl(&["apply", "-f", "-"], &good)
        .unwrap_or_else(|e| panic!("a valid VirtualService is stored: {e}"));
    // With the controller down the API server keeps working (failurePolicy Ignore):
    // the invalid resource is stored, for analyze and the proxies to report.
    drop(cluster.controller.take());
    cluster
        .server
        .kubectl(
            &["apply", "-f", "-"],
            &BAD_VS.replace("name: reviews,", "name: unchecked,"),
        )
        .unwrap_or_else(|e| panic!("stored unchecked while the controller is down: {e}"));
    cluster.stop();
}
