//! The Helm charts (charts/) with the real `helm` (scripts/kube-tools.sh builds it):
//! `helm lint` on each chart, `helm template` with default and other values (what a
//! user would notice: replicas, ports, labels, the webhooks, the schema refusing a bad
//! value), then `helm install` into a real API server (no kubelet: the objects are
//! created and checked, pods stay pending), the `strait-controller` binary run here
//! with the exact arguments of the installed Deployment and the token of the chart's
//! own ServiceAccount (so with exactly the chart's RBAC), the webhook configurations
//! the chart installed calling it, and `helm upgrade` / `helm uninstall`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{
    controller_kubeconfig, files, free_port, http_get, json_of, lease_holder, wait_for, Controller, Ports, Proxy,
};
use serde_json::{json, Value};
use strait_controller::testing::{ApiServer, Tools};

fn charts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts")
}

/// `helm` with its own folders (no user's repositories or plugins).
struct Helm {
    bin: PathBuf,
    home: tempfile::TempDir,
    kubeconfig: Option<PathBuf>,
}

impl Helm {
    async fn new(kubeconfig: Option<&Path>) -> Helm {
        let tools = Tools::find().await.expect("the Kubernetes test tools");
        let bin = tools.helm.expect("STRAIT_HELM (scripts/kube-tools.sh --print-env)");
        Helm {
            bin,
            home: tempfile::tempdir().expect("a folder"),
            kubeconfig: kubeconfig.map(Path::to_path_buf),
        }
    }

    /// Runs `helm args`: stdout, or stdout and stderr as the error.
    fn run(&self, args: &[&str]) -> Result<String, String> {
        let mut command = Command::new(&self.bin);
        command.args(args);
        for var in ["HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"] {
            command.env(var, self.home.path().join(var));
        }
        if let Some(kubeconfig) = &self.kubeconfig {
            command.arg("--kubeconfig").arg(kubeconfig);
        }
        let out = command.output().expect("run helm");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
        }
    }

    /// `helm template` of `chart` in `namespace` with `sets` (`--set` each): the
    /// documents, or helm's error.
    fn template(&self, chart: &Path, namespace: &str, sets: &[&str]) -> Result<Vec<Value>, String> {
        let chart = chart.to_string_lossy();
        let mut args = vec!["template", "test", &chart, "--namespace", namespace];
        for set in sets {
            args.extend(["--set", set]);
        }
        let text = self.run(&args)?;
        let mut docs = Vec::new();
        strait_config::yaml::for_each_document(&text, |d| docs.push(d.value))
            .map_err(|e| format!("helm template wrote bad YAML: {e:?}\n{text}"))?;
        Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
    }
}

/// The strait-crds chart as it is packaged: a copy with Istio's CRDs put in by
/// scripts/chart-crds.sh.
fn packaged_crds_chart() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a folder");
    let source = charts().join("strait-crds");
    let status = Command::new("cp")
        .arg("-r")
        .arg(format!("{}/.", source.display()))
        .arg(dir.path())
        .status()
        .expect("cp");
    assert!(status.success());
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/chart-crds.sh"))
        .arg("--gateway-api")
        .arg(dir.path())
        .output()
        .expect("run scripts/chart-crds.sh");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let crds: Vec<String> = std::fs::read_dir(dir.path().join("crds"))
        .expect("crds/")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    for wanted in [
        "strait-ratelimits.yaml",
        "istio-",
        "gateway-api-gateway.networking.k8s.io_httproutes.yaml",
    ] {
        assert!(
            crds.iter().any(|f| f.starts_with(wanted)),
            "{wanted} not in crds/: {crds:?}"
        );
    }
    dir
}

/// The one document of `kind` (named `name`, when given).
fn find<'a>(docs: &'a [Value], kind: &str, name: Option<&str>) -> Option<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && name.is_none_or(|n| d["metadata"]["name"] == n))
}

fn get<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    find(docs, kind, None).unwrap_or_else(|| panic!("no {kind} in {docs:#?}"))
}

fn args(deployment: &Value) -> Vec<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(String::from))
        .collect()
}

fn ports(service: &Value) -> BTreeSet<(i64, i64)> {
    service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| (p["port"].as_i64().unwrap_or(0), p["targetPort"].as_i64().unwrap_or(0)))
        .collect()
}

fn has(args: &[String], flag: &str) -> bool {
    args.iter().any(|a| a == flag)
}

#[tokio::test]
async fn every_chart_lints() {
    let helm = Helm::new(None).await;
    let crds = packaged_crds_chart();
    let gateway = charts().join("strait-gateway");
    let controller = charts().join("strait-controller");
    let cases: Vec<(&Path, Vec<&str>)> = vec![
        (crds.path(), vec![]),
        (&controller, vec!["--namespace", "istio-system"]),
        (&gateway, vec![]),
        (&gateway, vec!["--set", "kind=egress"]),
        (
            &gateway,
            vec![
                "--set",
                "config.source=files",
                "--set",
                "acme.persistentVolumeClaim=acme",
            ],
        ),
    ];
    for (chart, extra) in cases {
        let chart = chart.to_string_lossy();
        let mut args = vec!["lint", "--strict", &chart];
        args.extend(extra.iter().copied());
        let out = helm.run(&args).unwrap_or_else(|e| panic!("helm lint {chart}: {e}"));
        assert!(out.contains("1 chart(s) linted, 0 chart(s) failed"), "{out}");
    }
    // The packaged CRD chart carries Istio's CRDs beside Strait's own.
    let names: Vec<String> = std::fs::read_dir(crds.path().join("crds"))
        .expect("crds/")
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .collect();
    assert!(names.iter().any(|n| n.starts_with("istio-")), "{names:?}");
    assert!(names.contains(&"strait-ratelimits.yaml".to_string()), "{names:?}");
}

#[tokio::test]
async fn the_controller_chart_renders_what_its_values_say() {
    let helm = Helm::new(None).await;
    let chart = charts().join("strait-controller");
    let docs = helm.template(&chart, "istio-system", &[]).expect("renders");

    let deployment = get(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["metadata"]["namespace"], "istio-system");
    let args = args(deployment);
    for flag in [
        "--kubernetes",
        "--push-port=15010",
        "--secure-port=15012",
        "--metrics-port=15014",
        "--webhook-port=15017",
        "--webhook-ca-bundle=/etc/strait/webhook/ca.crt",
        "--controller-address=https://strait-controller.istio-system.svc:15012",
        "--proxy-image=ghcr.io/strait/strait:0.1.0",
    ] {
        assert!(has(&args, flag), "{flag} in {args:?}");
    }
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["readinessProbe"]["httpGet"],
        json!({"path": "/ready", "port": 15014})
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        true
    );
    assert_eq!(
        ports(get(&docs, "Service")),
        BTreeSet::from([
            (443, 15017),
            (15010, 15010),
            (15012, 15012),
            (15014, 15014),
            (15017, 15017)
        ])
    );
    assert_eq!(get(&docs, "PodDisruptionBudget")["spec"]["minAvailable"], 1);
    assert_eq!(
        find(&docs, "ConfigMap", Some("istio")).expect("the mesh config")["data"]["mesh"],
        "{}"
    );

    // ACME's write access to Secrets is opt-in (acme.enabled, deploy/acme-rbac.yaml).
    assert!(find(&docs, "ClusterRole", Some("strait-controller-acme")).is_none());
    let acme = helm
        .template(&chart, "istio-system", &["acme.enabled=true"])
        .expect("renders");
    let role = find(&acme, "ClusterRole", Some("strait-controller-acme")).expect("ACME's rights");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "patch"]}])
    );
    assert!(find(&acme, "ClusterRoleBinding", Some("strait-controller-acme")).is_some());
    // So are the rights of automated deployment, with the flag that uses them.
    assert!(has(&args, "--deploy-gateways=false"));
    assert!(find(&docs, "ClusterRole", Some("strait-controller-gateway-deployment")).is_none());
    let deploying = helm
        .template(&chart, "istio-system", &["gatewayAPI.deploy=true"])
        .expect("renders");
    assert!(has(
        &crate::args(get(&deploying, "Deployment")),
        "--deploy-gateways=true"
    ));
    assert!(find(&deploying, "ClusterRole", Some("strait-controller-gateway-deployment")).is_some());

    let injector = get(&docs, "MutatingWebhookConfiguration");
    assert_eq!(injector["metadata"]["name"], "strait-sidecar-injector");
    let webhooks = injector["webhooks"].as_array().expect("webhooks");
    assert_eq!(webhooks.len(), 3);
    for webhook in webhooks {
        assert_eq!(
            webhook["clientConfig"],
            json!({"service": {"name": "strait-controller", "namespace": "istio-system", "path": "/inject", "port": 443}}),
            "no caBundle: the controller writes it"
        );
        assert_eq!(webhook["failurePolicy"], "Fail");
    }
    let validator = get(&docs, "ValidatingWebhookConfiguration");
    assert_eq!(validator["webhooks"][0]["failurePolicy"], "Ignore");
    assert_eq!(validator["webhooks"][0]["clientConfig"]["service"]["path"], "/validate");

    // The serving certificate names the Service the webhooks call.
    let secret = get(&docs, "Secret");
    let pem = decode(&secret["data"]["tls.crt"]);
    let names = certificate_names(&pem);
    assert!(
        names.contains(&"strait-controller.istio-system.svc".to_string()),
        "{names:?}"
    );

    // Other values.
    let docs = helm
        .template(
            &chart,
            "istio-system",
            &[
                "replicaCount=3",
                "webhooks.url=https://127.0.0.1:9443",
                "webhooks.injection.enabled=false",
                "webhooks.validation.failurePolicy=Fail",
                "webhooks.certificate.ipAddresses={127.0.0.1}",
                "meshConfig.mesh.outboundTrafficPolicy.mode=REGISTRY_ONLY",
                "sidecar.image=registry.example.com/strait:dev",
            ],
        )
        .expect("renders");
    assert_eq!(get(&docs, "Deployment")["spec"]["replicas"], 3);
    assert!(find(&docs, "MutatingWebhookConfiguration", None).is_none());
    let validator = get(&docs, "ValidatingWebhookConfiguration");
    assert_eq!(
        validator["webhooks"][0]["clientConfig"],
        json!({"url": "https://127.0.0.1:9443/validate"})
    );
    assert_eq!(validator["webhooks"][0]["failurePolicy"], "Fail");
    assert!(has(
        &self::args(get(&docs, "Deployment")),
        "--proxy-image=registry.example.com/strait:dev"
    ));
    let names = certificate_names(&decode(&get(&docs, "Secret")["data"]["tls.crt"]));
    assert!(names.contains(&"IP:127.0.0.1".to_string()), "{names:?}");
    let mesh = find(&docs, "ConfigMap", Some("istio")).expect("the mesh config")["data"]["mesh"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(mesh.contains("mode: REGISTRY_ONLY"), "{mesh}");
    // One replica: no budget that would block every node drain.
    let docs = helm
        .template(&chart, "istio-system", &["replicaCount=1"])
        .expect("renders");
    assert!(find(&docs, "PodDisruptionBudget", None).is_none());

    // What the chart refuses, and why.
    for (sets, message) in [
        (vec!["replicaCount=0"], "at '/replicaCount': minimum: got 0, want 1"),
        (
            vec!["webhooks.injection.failurePolicy=Sometimes"],
            "value must be one of 'Fail', 'Ignore'",
        ),
        (vec!["ca.workloadCertTTL=tomorrow"], "/ca/workloadCertTTL"),
        (vec!["replicas=2"], "additional properties 'replicas' not allowed"),
    ] {
        let error = helm
            .template(&chart, "istio-system", &sets)
            .expect_err(&format!("{sets:?} is refused"));
        assert!(error.contains(message), "{sets:?}: {error}");
    }
    let error = helm.template(&chart, "default", &[]).expect_err("only istio-system");
    assert!(error.contains("must be installed in istio-system"), "{error}");
}

#[tokio::test]
async fn the_gateway_chart_renders_what_its_values_say() {
    let helm = Helm::new(None).await;
    let chart = charts().join("strait-gateway");
    let docs = helm.template(&chart, "istio-ingress", &[]).expect("renders");
    let deployment = get(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], Value::Null, "the HPA sets them");
    let pod = &deployment["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"]["istio"], "ingressgateway");
    assert_eq!(pod["metadata"]["labels"]["app"], "istio-ingressgateway");
    let args = args(deployment);
    for flag in [
        "--controller=strait-controller.istio-system.svc:15010",
        "--labels=app=istio-ingressgateway,istio=ingressgateway",
        "--port-map=80=8080,443=8443",
        "--drain-seconds=20",
        "--health-port=15021",
    ] {
        assert!(has(&args, flag), "{flag} in {args:?}");
    }
    let spec = &pod["spec"];
    assert_eq!(spec["terminationGracePeriodSeconds"], 30);
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(spec["automountServiceAccountToken"], false);
    let container = &spec["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(
        container["readinessProbe"]["httpGet"],
        json!({"path": "/healthz/ready", "port": 15021})
    );
    assert_eq!(container["lifecycle"]["preStop"]["sleep"]["seconds"], 5);
    let service = get(&docs, "Service");
    assert_eq!(service["spec"]["type"], "LoadBalancer");
    assert_eq!(
        ports(service),
        BTreeSet::from([(80, 8080), (443, 8443), (15021, 15021)])
    );
    let hpa = get(&docs, "HorizontalPodAutoscaler");
    assert_eq!(
        (hpa["spec"]["minReplicas"].as_i64(), hpa["spec"]["maxReplicas"].as_i64()),
        (Some(2), Some(5))
    );
    assert_eq!(get(&docs, "PodDisruptionBudget")["spec"]["minAvailable"], 1);

    // An egress gateway, fixed replicas, files with ACME.
    let docs = helm
        .template(
            &chart,
            "istio-egress",
            &[
                "kind=egress",
                "autoscaling.enabled=false",
                "replicaCount=3",
                "config.source=files",
                "config.files.gateway\\.yaml=kind: Gateway",
                "config.meshConfig.accessLogFile=/dev/stdout",
                "acme.persistentVolumeClaim=acme-store",
            ],
        )
        .expect("renders");
    let deployment = get(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert!(find(&docs, "HorizontalPodAutoscaler", None).is_none());
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["labels"]["istio"],
        "egressgateway"
    );
    let args = self::args(deployment);
    for flag in [
        "--config-dir=/etc/strait/config",
        "--acme-store=/var/lib/strait/acme",
        "--mesh-config=/etc/strait/mesh/mesh.yaml",
        "--labels=app=istio-egressgateway,istio=egressgateway",
    ] {
        assert!(has(&args, flag), "{flag} in {args:?}");
    }
    assert!(!args.iter().any(|a| a.starts_with("--controller")), "{args:?}");
    assert_eq!(get(&docs, "Service")["spec"]["type"], "ClusterIP");
    let config = find(&docs, "ConfigMap", Some("test-config")).expect("the config folder");
    assert_eq!(config["data"]["gateway.yaml"], "kind: Gateway");
    let volumes = &deployment["spec"]["template"]["spec"]["volumes"];
    assert!(
        volumes
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v["persistentVolumeClaim"]["claimName"] == "acme-store"),
        "{volumes}"
    );
    // Own labels.
    let docs = helm
        .template(&chart, "gw", &["labels.istio=edge", "labels.team=web"])
        .expect("renders");
    assert!(has(
        &self::args(get(&docs, "Deployment")),
        "--labels=istio=edge,team=web"
    ));

    for (sets, message) in [
        (
            vec!["drainSeconds=30"],
            "drainSeconds (30) + preStopSleepSeconds (5) must stay below terminationGracePeriodSeconds (30)",
        ),
        (
            vec!["kind=sideways"],
            "at '/kind': value must be one of 'ingress', 'egress'",
        ),
        (
            vec![
                "service.ports[0].name=http",
                "service.ports[0].port=80",
                "service.ports[0].targetPort=80",
            ],
            "at '/service/ports/0/targetPort': minimum: got 80, want 1,024",
        ),
        (
            vec!["config.source=folder"],
            "value must be one of 'controller', 'files'",
        ),
    ] {
        let error = helm
            .template(&chart, "istio-ingress", &sets)
            .expect_err(&format!("{sets:?} is refused"));
        assert!(error.contains(message), "{sets:?}: {error}");
    }
}

fn decode(field: &Value) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(field.as_str().unwrap_or_default())
        .expect("base64")
}

/// The subjectAltNames of the first certificate of `pem`: DNS names as they are,
/// addresses as `IP:a.b.c.d`.
fn certificate_names(pem: &[u8]) -> Vec<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).expect("PEM");
    let cert = pem.parse_x509().expect("a certificate");
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_string()),
            x509_parser::extensions::GeneralName::IPAddress(ip) if ip.len() == 4 => {
                Some(format!("IP:{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3]))
            }
            _ => None,
        })
        .collect()
}

/// Starts `strait-controller` as the chart's Deployment starts it: with the installed
/// Deployment's arguments and environment, but the ports moved to free ones
/// (`webhook_port` for the webhooks, which the chart's `webhooks.url` points at), the
/// files the pod would mount written from the chart's Secret into `mounts`, and the
/// cluster reached through `kubeconfig` (the ServiceAccount's token) instead of the
/// pod's own. Returns once it is ready.
fn start_as_deployed(
    deployment: &Value,
    secret: &Value,
    mounts: &Path,
    kubeconfig: &Path,
    webhook_port: u16,
) -> Controller {
    let ports = Ports::free();
    for key in ["tls.crt", "tls.key", "ca.crt"] {
        std::fs::write(mounts.join(key), decode(&secret["data"][key])).expect("write");
    }
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["command"], json!(["strait-controller"]));
    let mut args: Vec<String> = Vec::new();
    for arg in self::args(deployment) {
        let flag = arg.split_once('=').map_or(arg.as_str(), |(flag, _)| flag);
        let arg = match flag {
            "--push-port" => format!("{flag}={}", ports.push),
            "--secure-port" => format!("{flag}={}", ports.secure),
            "--metrics-port" => format!("{flag}={}", ports.http),
            "--webhook-port" => format!("{flag}={webhook_port}"),
            _ => arg.replace("/etc/strait/webhook", &mounts.to_string_lossy()),
        };
        args.push(arg);
    }
    let mut command = Controller::binary();
    command
        .args(&args)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(["--bind-address", "127.0.0.1"]);
    // The environment the Deployment gives (downward API values filled in).
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap_or_default();
        let value = match (&var["value"], var["valueFrom"]["fieldRef"]["fieldPath"].as_str()) {
            (Value::String(v), _) => v.clone(),
            (_, Some("metadata.name")) => "strait-controller-test-0".into(),
            (_, Some("metadata.namespace")) => "istio-system".into(),
            other => panic!("an env var the test does not know how to fill: {other:?}"),
        };
        command.env(name, value);
    }
    let mut controller = Controller::spawn(&mut command, ports);
    // Ready: every kind was listed, which a missing right would prevent.
    controller.wait_ready(Duration::from_secs(60));
    controller
}

const GATEWAY: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: edge, namespace: istio-system}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"app.example.com\"]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: app, namespace: istio-system}\nspec:\n  hosts: [app.example.com]\n  gateways: [edge]\n  http:\n  - route: [{destination: {host: app.shop.svc.cluster.local, port: {number: 80}}}]\n";

/// The names of the objects of `kinds` labeled as the chart's release `release`.
fn release_objects(server: &ApiServer, kinds: &str, release: &str) -> Vec<String> {
    let out = server
        .kubectl(
            &[
                "get",
                kinds,
                "-A",
                "-l",
                &format!("app.kubernetes.io/instance={release}"),
                "-o",
                "name",
            ],
            "",
        )
        .unwrap_or_else(|e| panic!("{e}"));
    out.lines().map(String::from).collect()
}

const CHART_KINDS: &str = "deployments,services,serviceaccounts,configmaps,secrets,roles,rolebindings,clusterroles,clusterrolebindings,mutatingwebhookconfigurations,validatingwebhookconfigurations,poddisruptionbudgets,horizontalpodautoscalers";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_install_into_a_real_api_server_and_the_controller_runs_with_their_rights() {
    let server = ApiServer::start().await.expect("the API server starts");
    let helm = Helm::new(Some(server.kubeconfig())).await;

    // CRDs: the ones the cluster has are skipped, a missing one is installed.
    server
        .kubectl(&["delete", "crd", "telemetries.telemetry.istio.io"], "")
        .expect("deleted");
    let uid = |name: &str| json_of(&server, &["get", "crd", name])["metadata"]["uid"].clone();
    let virtual_services = uid("virtualservices.networking.istio.io");
    let crds = packaged_crds_chart();
    let crds_path = crds.path().to_string_lossy().into_owned();
    helm.run(&["install", "strait-crds", &crds_path])
        .expect("helm install strait-crds");
    assert_eq!(
        uid("virtualservices.networking.istio.io"),
        virtual_services,
        "left as it was"
    );
    let established = |name: &str| {
        json_of(&server, &["get", "crd", name])["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Established" && c["status"] == "True")
            .then_some(())
    };
    wait_for("the RateLimit CRD", Duration::from_secs(30), || {
        established("ratelimits.strait.io")
    });
    wait_for("Istio's Telemetry CRD, put back", Duration::from_secs(30), || {
        established("telemetries.telemetry.istio.io")
    });

    // The controller, with its webhooks pointed at this machine.
    let webhook_port = free_port();
    let controller_chart = charts().join("strait-controller").to_string_lossy().into_owned();
    let url = format!("webhooks.url=https://127.0.0.1:{webhook_port}");
    helm.run(&[
        "install",
        "strait-controller",
        &controller_chart,
        "--namespace",
        "istio-system",
        "--create-namespace",
        "--set",
        &url,
        "--set",
        "webhooks.certificate.ipAddresses={127.0.0.1}",
        "--set",
        "meshConfig.mesh.defaultConfig.gatewayTopology.numTrustedProxies=1",
    ])
    .expect("helm install strait-controller");
    let deployment = json_of(
        &server,
        &["get", "deployment", "strait-controller", "-n", "istio-system"],
    );
    assert_eq!(deployment["spec"]["replicas"], 2);
    let service = json_of(&server, &["get", "service", "strait-controller", "-n", "istio-system"]);
    assert_eq!(
        ports(&service),
        BTreeSet::from([
            (443, 15017),
            (15010, 15010),
            (15012, 15012),
            (15014, 15014),
            (15017, 15017)
        ])
    );
    let secret = json_of(
        &server,
        &["get", "secret", "strait-controller-webhook-cert", "-n", "istio-system"],
    );

    // Apps and Istio resources, as a user has them.
    server
        .kubectl(
            &["apply", "-f", "-"],
            &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop, labels: {{strait-injection: enabled}}}}\n---\n{GATEWAY}"),
        )
        .expect("applied");

    // Exactly the chart's rights: the token of its ServiceAccount (TokenRequest).
    let kubeconfig = controller_kubeconfig(&server);
    let mounts = tempfile::tempdir().expect("a folder");
    let controller = start_as_deployed(&deployment, &secret, mounts.path(), &kubeconfig, webhook_port);

    // It serves a push with the cluster's resources and the chart's mesh config.
    let mut proxy = Proxy::connect(controller.push, "gw-chart").await;
    let config = proxy.config().await;
    let files = files(&config);
    assert!(
        files.contains(&"kubernetes/VirtualService/istio-system/app"),
        "{files:?}"
    );
    drop(proxy);
    // It keeps both webhook configurations' caBundle: the chart's CA.
    let ca = secret["data"]["ca.crt"].clone();
    wait_for("the caBundles", Duration::from_secs(30), || {
        let mutating = json_of(
            &server,
            &["get", "mutatingwebhookconfiguration", "strait-sidecar-injector"],
        );
        let validating = json_of(&server, &["get", "validatingwebhookconfiguration", "strait-validator"]);
        let bundles: Vec<&Value> = [&mutating, &validating]
            .iter()
            .flat_map(|c| c["webhooks"].as_array().into_iter().flatten())
            .map(|w| &w["clientConfig"]["caBundle"])
            .collect();
        (bundles.len() == 4 && bundles.iter().all(|b| **b == ca)).then_some(())
    });
    // The validation webhook the chart installed reaches it: an invalid
    // VirtualService is refused with its field and message.
    let bad = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: bad, namespace: shop}\nspec:\n  hosts: [bad.example.com]\n  http:\n  - match: [{uri: {regex: \"/api/(v2\"}}]\n    route: [{destination: {host: bad.example.com}}]\n";
    let refused = server.kubectl(&["apply", "-f", "-"], bad).expect_err("refused");
    let refused = refused.to_string();
    assert!(refused.contains("denied the request"), "{refused}");
    assert!(refused.contains("regex"), "{refused}");
    // The injection webhook too: a pod of the labeled namespace gets the sidecar,
    // with the chart's image and the controller's address in the cluster.
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop, labels: {app: web}}\nspec:\n  serviceAccountName: default\n  containers:\n  - {name: web, image: nginx}\n";
    server.kubectl(&["apply", "-f", "-"], pod).expect("a pod");
    let pod = json_of(&server, &["get", "pod", "web", "-n", "shop"]);
    let proxy = pod["spec"]["initContainers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "strait-proxy"))
        .unwrap_or_else(|| panic!("no sidecar: {pod}"));
    assert_eq!(proxy["image"], "ghcr.io/strait/strait:0.1.0");
    assert!(
        proxy["command"]
            .to_string()
            .contains("https://strait-controller.istio-system.svc:15012"),
        "{proxy}"
    );
    // Its CA publishes the root in every namespace; the leader holds the Lease and
    // writes status.
    wait_for("the root ConfigMap in shop", Duration::from_secs(30), || {
        server
            .kubectl(&["get", "configmap", "istio-ca-root-cert", "-n", "shop"], "")
            .ok()
    });
    let holder = wait_for("the Lease", Duration::from_secs(30), || {
        Some(lease_holder(&server)).filter(|h| !h.is_empty())
    });
    assert_eq!(holder, "strait-controller-test-0");
    wait_for("status on the VirtualService", Duration::from_secs(30), || {
        let vs = json_of(&server, &["get", "virtualservice", "app", "-n", "istio-system"]);
        vs["status"]["conditions"]
            .as_array()
            .filter(|c| !c.is_empty())
            .map(drop)
    });
    assert!(http_get(controller.http, "/metrics").is_some_and(|(s, b)| s == 200 && b.contains("pilot_xds")));

    // A gateway beside it.
    let gateway_chart = charts().join("strait-gateway").to_string_lossy().into_owned();
    helm.run(&[
        "install",
        "ingress",
        &gateway_chart,
        "-n",
        "istio-ingress",
        "--create-namespace",
    ])
    .expect("helm install strait-gateway");
    let gateway = json_of(&server, &["get", "deployment", "ingress", "-n", "istio-ingress"]);
    assert_eq!(
        gateway["spec"]["template"]["metadata"]["labels"]["istio"],
        "ingressgateway"
    );
    let hpa = json_of(&server, &["get", "hpa", "ingress", "-n", "istio-ingress"]);
    assert_eq!(hpa["spec"]["minReplicas"], 2);
    let service = json_of(&server, &["get", "service", "ingress", "-n", "istio-ingress"]);
    assert_eq!(
        ports(&service),
        BTreeSet::from([(80, 8080), (443, 8443), (15021, 15021)])
    );

    // Upgrades: what changed is changed, the caBundle the controller wrote and the
    // certificate the chart made stay.
    helm.run(&[
        "upgrade",
        "strait-controller",
        &controller_chart,
        "-n",
        "istio-system",
        "--reuse-values",
        "--set",
        "replicaCount=3",
        "--set",
        "webhooks.validation.failurePolicy=Fail",
    ])
    .expect("helm upgrade strait-controller");
    let deployment = json_of(
        &server,
        &["get", "deployment", "strait-controller", "-n", "istio-system"],
    );
    assert_eq!(deployment["spec"]["replicas"], 3);
    let validating = json_of(&server, &["get", "validatingwebhookconfiguration", "strait-validator"]);
    assert_eq!(validating["webhooks"][0]["failurePolicy"], "Fail");
    assert_eq!(
        validating["webhooks"][0]["clientConfig"]["caBundle"], ca,
        "kept by the upgrade"
    );
    let after = json_of(
        &server,
        &["get", "secret", "strait-controller-webhook-cert", "-n", "istio-system"],
    );
    assert_eq!(after["data"], secret["data"], "the certificate is reused");
    helm.run(&[
        "upgrade",
        "ingress",
        &gateway_chart,
        "-n",
        "istio-ingress",
        "--set",
        "autoscaling.enabled=false",
        "--set",
        "replicaCount=3",
        "--set",
        "kind=egress",
    ])
    .expect("helm upgrade strait-gateway");
    let gateway = json_of(&server, &["get", "deployment", "ingress", "-n", "istio-ingress"]);
    assert_eq!(gateway["spec"]["replicas"], 3);
    assert_eq!(
        gateway["spec"]["template"]["metadata"]["labels"]["istio"],
        "egressgateway"
    );
    assert!(
        server
            .kubectl(&["get", "hpa", "ingress", "-n", "istio-ingress"], "")
            .is_err(),
        "the HPA is gone"
    );
    let service = json_of(&server, &["get", "service", "ingress", "-n", "istio-ingress"]);
    assert_eq!(service["spec"]["type"], "ClusterIP");

    // Uninstalls leave none of the charts' objects; CRDs stay (Helm never deletes
    // them: that would delete every user's resources).
    drop(controller);
    for (release, namespace) in [("ingress", "istio-ingress"), ("strait-controller", "istio-system")] {
        assert!(
            !release_objects(&server, CHART_KINDS, release).is_empty(),
            "{release} has objects"
        );
        helm.run(&["uninstall", release, "-n", namespace, "--wait=watcher", "--timeout=60s"])
            .unwrap_or_else(|e| panic!("helm uninstall {release}: {e}"));
        let left = release_objects(&server, CHART_KINDS, release);
        assert!(left.is_empty(), "{release} left {left:?}");
    }
    helm.run(&["uninstall", "strait-crds"])
        .expect("helm uninstall strait-crds");
    // Cluster-scoped objects by name too (a label the chart forgot would hide them).
    for (kind, name) in [
        ("clusterrole", "strait-controller"),
        ("clusterrolebinding", "strait-controller"),
        ("mutatingwebhookconfiguration", "strait-sidecar-injector"),
        ("validatingwebhookconfiguration", "strait-validator"),
    ] {
        assert!(server.kubectl(&["get", kind, name], "").is_err(), "{kind} {name} left");
    }
    assert!(server
        .kubectl(&["get", "configmap", "istio", "-n", "istio-system"], "")
        .is_err());
    established("ratelimits.strait.io").expect("CRDs stay");
    server.stop().expect("the API server stops cleanly");
}
