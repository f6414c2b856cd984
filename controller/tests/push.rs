//! The `strait-controller` binary on a folder, with a proxy speaking the push
//! protocol over a real connection (this test is that proxy: it answers as it
//! likes, which a gateway would not), and `straitctl proxy-status --controller`
//! reading what the controller knows; then the binary reading a real API server
//! (`--kubeconfig`). Gateways following a real controller are tested in the
//! gateway crate (`tests/e2e/controller.rs`, `controller_kube.rs`).

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strait_push::proto;
use strait_push::proto::controller_message::Kind as Incoming;
use strait_push::proto::proxy_message::Kind as Outgoing;
use tokio::sync::mpsc;

const GATEWAY: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n";

fn vs(host: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: app, namespace: istio-system}}\nspec:\n  hosts: [{host}]\n  gateways: [gw]\n  http:\n  - route: [{{destination: {{host: backend.example.com}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: backend, namespace: istio-system}}\nspec:\n  hosts: [backend.example.com]\n  resolution: STATIC\n  ports: [{{number: 80, name: http}}]\n  endpoints: [{{address: 10.0.0.1}}]\n")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `GET path` on the controller's HTTP port: (status, body).
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::Write;
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        status,
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    ))
}

struct ControllerProcess {
    child: Child,
    push: u16,
    http: u16,
    /// The TLS port (served on a cluster only).
    secure: u16,
}

impl ControllerProcess {
    /// Starts `strait-controller` on a folder.
    fn start(dir: &Path) -> ControllerProcess {
        ControllerProcess::start_with(&["--config-dir".as_ref(), dir.as_os_str()])
    }

    /// Starts `strait-controller` with `source` (the flags naming its sources);
    /// returns once it is ready (it has a first configuration).
    fn start_with(source: &[&std::ffi::OsStr]) -> ControllerProcess {
        let (push, http, secure) = (free_port(), free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_strait-controller"))
            .args(source)
            .args(["--bind-address", "127.0.0.1", "--debounce-ms", "20"])
            .arg(format!("--push-port={push}"))
            .arg(format!("--metrics-port={http}"))
            .arg(format!("--secure-port={secure}"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn strait-controller");
        let process = ControllerProcess {
            child,
            push,
            http,
            secure,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while get(http, "/ready").is_none_or(|(s, _)| s != 200) {
            assert!(Instant::now() < deadline, "the controller did not become ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        process
    }

    fn straitctl_status(&self) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_straitctl"))
            .args(["proxy-status", "--controller", &format!("127.0.0.1:{}", self.http)])
            .output()
            .expect("run straitctl");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stream to the controller, as a gateway of `istio-system` named `name`.
struct Proxy {
    inbound: tonic::Streaming<proto::ControllerMessage>,
    answers: mpsc::Sender<proto::ProxyMessage>,
}

impl Proxy {
    async fn connect(port: u16, name: &str) -> Proxy {
        let (answers, outbound) = mpsc::channel(4);
        let hello = proto::Hello {
            proxy_id: name.into(),
            role: proto::Role::Gateway.into(),
            namespace: "istio-system".into(),
            labels: [("istio".to_string(), "ingressgateway".to_string())].into(),
            ..Default::default()
        };
        answers
            .send(proto::ProxyMessage {
                kind: Some(Outgoing::Hello(hello)),
            })
            .await
            .expect("queued");
        let mut client = proto::push_client::PushClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .expect("connects");
        let inbound = client
            .stream(tokio_stream::wrappers::ReceiverStream::new(outbound))
            .await
            .expect("a stream")
            .into_inner();
        Proxy { inbound, answers }
    }

    async fn receive(&mut self) -> Incoming {
        tokio::time::timeout(Duration::from_secs(10), self.inbound.message())
            .await
            .expect("a message in time")
            .expect("no error")
            .and_then(|m| m.kind)
            .expect("a message")
    }

    async fn answer(&self, kind: Outgoing) {
        self.answers
            .send(proto::ProxyMessage { kind: Some(kind) })
            .await
            .expect("open");
    }
}

fn wait_for(what: &str, mut check: impl FnMut() -> Option<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_pushes_the_folder_and_shows_the_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("gateway.yaml"), GATEWAY).expect("write");
    std::fs::write(dir.path().join("app.yaml"), vs("a.example.com")).expect("write");
    let controller = ControllerProcess::start(dir.path());
    let mut proxy = Proxy::connect(controller.push, "gw-test").await;

    let Incoming::Config(config) = proxy.receive().await else {
        panic!("a full configuration first");
    };
    let files: Vec<&str> = config.documents.iter().map(|d| d.file.as_str()).collect();
    assert_eq!(files, ["app.yaml", "gateway.yaml"]);
    assert_eq!(config.mesh_config, None);
    proxy
        .answer(Outgoing::Ack(proto::Ack {
            version: config.version,
        }))
        .await;
    let status = wait_for("SYNCED", || {
        let s = controller.straitctl_status();
        s.lines()
            .any(|l| l.starts_with("gw-test") && l.contains("SYNCED"))
            .then_some(s)
    });
    assert!(status.contains(&format!("{} (config)", config.version)), "{status}");

    std::fs::write(dir.path().join("app.yaml"), vs("b.example.com")).expect("write");
    let Incoming::Config(changed) = proxy.receive().await else {
        panic!("a route change is a full configuration");
    };
    assert!(changed.version > config.version);
    // After an ACK, a change is sent as a delta: the changed file only.
    assert_eq!(changed.base_version, config.version);
    let files: Vec<&str> = changed.documents.iter().map(|d| d.file.as_str()).collect();
    assert_eq!(files, ["app.yaml"]);
    assert!(changed.removed.is_empty());
    let diagnostic = "app.yaml:1:1: error[invalid-certificate] refused by this proxy";
    proxy
        .answer(Outgoing::Nack(proto::Nack {
            version: changed.version,
            diagnostics: vec![diagnostic.into()],
        }))
        .await;
    let status = wait_for("NACK", || {
        let s = controller.straitctl_status();
        s.lines()
            .any(|l| l.starts_with("gw-test") && l.contains("NACK"))
            .then_some(s)
    });
    assert!(
        status.contains(&format!("gw-test refused version {}:\n  {diagnostic}", changed.version)),
        "{status}"
    );
    let (_, metrics) = get(controller.http, "/metrics").expect("metrics");
    assert!(
        metrics.contains("pilot_total_xds_rejects{type=\"config\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("pilot_xds 1"), "{metrics}");
    assert!(metrics.contains("pilot_xds_pushes{type=\"config\"} 2"), "{metrics}");

    drop(proxy);
    wait_for("the proxy gone", || {
        let (_, body) = get(controller.http, "/debug/proxies")?;
        let report: serde_json::Value = serde_json::from_str(&body).ok()?;
        report["proxies"].as_array().is_some_and(Vec::is_empty).then_some(body)
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_reads_the_cluster_a_kubeconfig_names() {
    let server = strait_controller::testing::ApiServer::start()
        .await
        .expect("the API server starts");
    let namespace = "apiVersion: v1\nkind: Namespace\nmetadata: {name: istio-system}\n";
    let mesh = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n    defaultConfig: {gatewayTopology: {numTrustedProxies: 1}}\n";
    let applied = [namespace, mesh, GATEWAY, &vs("a.example.com")].join("\n---\n");
    server.kubectl(&["apply", "-f", "-"], &applied).expect("applied");
    let controller = ControllerProcess::start_with(&["--kubeconfig".as_ref(), server.kubeconfig().as_os_str()]);
    let mut proxy = Proxy::connect(controller.push, "gw-kube").await;

    let Incoming::Config(config) = proxy.receive().await else {
        panic!("a full configuration first");
    };
    let files: Vec<&str> = config.documents.iter().map(|d| d.file.as_str()).collect();
    for file in [
        "kubernetes/Gateway/istio-system/gw",
        "kubernetes/VirtualService/istio-system/app",
        "kubernetes/ServiceEntry/istio-system/backend",
        "kubernetes/Namespace/istio-system",
    ] {
        assert!(files.contains(&file), "{file} in {files:?}");
    }
    assert!(
        config
            .mesh_config
            .as_deref()
            .is_some_and(|m| m.contains("numTrustedProxies: 1")),
        "the istio ConfigMap's mesh: {:?}",
        config.mesh_config
    );
    proxy
        .answer(Outgoing::Ack(proto::Ack {
            version: config.version,
        }))
        .await;

    server
        .kubectl(&["delete", "virtualservice", "app", "-n", "istio-system"], "")
        .expect("deleted");
    let Incoming::Config(changed) = proxy.receive().await else {
        panic!("a deleted route is a full configuration");
    };
    assert!(changed.version > config.version);
    assert!(
        !changed
            .documents
            .iter()
            .any(|d| d.file == "kubernetes/VirtualService/istio-system/app"),
        "the VirtualService is gone"
    );
    drop(proxy);
    drop(controller);
    server.stop().expect("the API server stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_access_to_what_it_watches_is_all_the_controller_needs() {
    let server = strait_controller::testing::ApiServer::start()
        .await
        .expect("the API server starts");
    let rbac = include_str!("../../deploy/controller-rbac.yaml");
    let namespace = "apiVersion: v1\nkind: Namespace\nmetadata: {name: istio-system}\n";
    let mesh = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n    defaultConfig: {gatewayTopology: {numTrustedProxies: 1}}\n";
    let applied = [namespace, rbac, mesh, GATEWAY, &vs("a.example.com")].join("\n---\n");
    server.kubectl(&["apply", "-f", "-"], &applied).expect("applied");
    let account = "system:serviceaccount:istio-system:strait-controller";
    let can = |verb: &str, resource: &str| {
        server
            .kubectl(&["auth", "can-i", verb, resource, "-A", "--as", account], "")
            .unwrap_or_else(|e| e.to_string())
    };
    assert!(can("watch", "virtualservices.networking.istio.io").starts_with("yes"));
    assert!(can("list", "endpointslices.discovery.k8s.io").starts_with("yes"));
    // The CA's: review tokens, publish its root; its Secrets in istio-system only.
    assert!(can("create", "tokenreviews.authentication.k8s.io").starts_with("yes"));
    assert!(can("update", "configmaps/istio-ca-root-cert").starts_with("yes"));
    let in_namespace = |verb: &str, resource: &str, namespace: &str| {
        server
            .kubectl(&["auth", "can-i", verb, resource, "-n", namespace, "--as", account], "")
            .unwrap_or_else(|e| e.to_string())
    };
    assert!(in_namespace("create", "secrets", "istio-system").starts_with("yes"));
    assert!(in_namespace("create", "secrets", "default").contains("no"));
    // ACME on the cluster is opt-in: its own file grants writing certificate Secrets.
    let acme = include_str!("../../deploy/acme-rbac.yaml");
    server.kubectl(&["apply", "-f", "-"], acme).expect("applied");
    assert!(in_namespace("patch", "secrets", "default").starts_with("yes"));
    assert!(in_namespace("delete", "secrets", "istio-system").starts_with("yes"));
    assert!(in_namespace("delete", "secrets", "default").contains("no"));
    assert!(in_namespace("update", "configmaps/istio", "istio-system").contains("no"));
    // Status on Istio's kinds, through their status subresource only.
    let status = |verb: &str, resource: &str| {
        server
            .kubectl(
                &[
                    "auth",
                    "can-i",
                    verb,
                    resource,
                    "--subresource=status",
                    "-A",
                    "--as",
                    account,
                ],
                "",
            )
            .unwrap_or_else(|e| e.to_string())
    };
    for resource in [
        "virtualservices.networking.istio.io",
        "serviceentries.networking.istio.io",
        "authorizationpolicies.security.istio.io",
    ] {
        assert!(status("patch", resource).starts_with("yes"), "{resource}/status");
    }
    assert!(status("patch", "services").contains("no"));
    assert!(can("patch", "virtualservices.networking.istio.io").contains("no"));
    // The election's Leases, in istio-system only.
    assert!(in_namespace("create", "leases.coordination.k8s.io", "istio-system").starts_with("yes"));
    assert!(in_namespace("update", "leases.coordination.k8s.io/strait-controller", "istio-system").starts_with("yes"));
    assert!(in_namespace("create", "leases.coordination.k8s.io", "default").contains("no"));
    assert!(can("update", "leases.coordination.k8s.io").contains("no"));
    for (verb, resource) in [
        ("create", "virtualservices.networking.istio.io"),
        ("update", "gateways.networking.istio.io"),
        ("delete", "pods"),
        ("list", "configmaps"),
        ("list", "deployments.apps"),
    ] {
        let answer = can(verb, resource);
        assert!(answer.contains("no"), "{verb} {resource}: {answer}");
    }
    let token = server
        .kubectl(&["create", "token", "strait-controller", "-n", "istio-system"], "")
        .expect("a token");
    let kubeconfig = server
        .kubeconfig_with_token("strait-controller", token.trim())
        .expect("a kubeconfig");
    // Ready means every kind was listed: with a missing right it would not be.
    let controller = ControllerProcess::start_with(&["--kubeconfig".as_ref(), kubeconfig.as_os_str()]);
    let mut proxy = Proxy::connect(controller.push, "gw-rbac").await;
    let Incoming::Config(config) = proxy.receive().await else {
        panic!("a full configuration first");
    };
    let files: Vec<&str> = config.documents.iter().map(|d| d.file.as_str()).collect();
    assert!(
        files.contains(&"kubernetes/VirtualService/istio-system/app"),
        "{files:?}"
    );
    assert!(
        config
            .mesh_config
            .as_deref()
            .is_some_and(|m| m.contains("numTrustedProxies: 1")),
        "the istio ConfigMap, read through its Role: {:?}",
        config.mesh_config
    );
    // The CA started with these rights too: its root is published, and the TLS
    // port it serves with a certificate of that root answers.
    let root = wait_for("the root ConfigMap in default", || {
        server
            .kubectl(
                &[
                    "get",
                    "configmap",
                    "istio-ca-root-cert",
                    "-n",
                    "default",
                    "-o",
                    "jsonpath={.data.root-cert\\.pem}",
                ],
                "",
            )
            .ok()
            .filter(|pem| pem.contains("BEGIN CERTIFICATE"))
    });
    strait_push::tls::connect(
        &format!("127.0.0.1:{}", controller.secure),
        &root,
        "strait-controller.istio-system.svc",
    )
    .await
    .expect("the TLS port answers with a certificate of the published root");
    // With these rights it holds the Lease and writes status.
    wait_for("the Lease held", || {
        server
            .kubectl(
                &[
                    "get",
                    "lease",
                    "strait-controller",
                    "-n",
                    "istio-system",
                    "-o",
                    "jsonpath={.spec.holderIdentity}",
                ],
                "",
            )
            .ok()
            .filter(|holder| !holder.is_empty())
    });
    wait_for("status on the VirtualService", || {
        server
            .kubectl(
                &[
                    "get",
                    "virtualservice",
                    "app",
                    "-n",
                    "istio-system",
                    "-o",
                    "jsonpath={.status.conditions[0].type}",
                ],
                "",
            )
            .ok()
            .filter(|t| t == "Reconciled")
    });
    // It watches that ConfigMap (a watch by name): deleted, it comes back.
    server
        .kubectl(&["delete", "configmap", "istio-ca-root-cert", "-n", "default"], "")
        .expect("deleted");
    let restored = wait_for("the root ConfigMap back in default", || {
        server
            .kubectl(
                &[
                    "get",
                    "configmap",
                    "istio-ca-root-cert",
                    "-n",
                    "default",
                    "-o",
                    "jsonpath={.data.root-cert\\.pem}",
                ],
                "",
            )
            .ok()
            .filter(|pem| pem.contains("BEGIN CERTIFICATE"))
    });
    assert_eq!(restored, root);
    drop(proxy);
    drop(controller);
    server.stop().expect("the API server stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_configuration_arrives_in_parts() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("gateway.yaml"), GATEWAY).expect("write");
    // Three files of some 40 KB each (comments are text like any other).
    let padding = format!("# {}\n", "x".repeat(200)).repeat(200);
    for name in ["a", "b", "c"] {
        let text = format!(
            "{padding}{}",
            vs(&format!("{name}.example.com"))
                .replace("name: app", &format!("name: {name}"))
                .replace("backend", &format!("backend-{name}"))
        );
        std::fs::write(dir.path().join(format!("{name}.yaml")), text).expect("write");
    }
    let controller = ControllerProcess::start(dir.path());
    let mut proxy = Proxy::connect(controller.push, "gw-parts").await;
    let mut parts = Vec::new();
    loop {
        let Incoming::Config(part) = proxy.receive().await else {
            panic!("configuration parts first");
        };
        let more = part.more;
        parts.push(part);
        if !more {
            break;
        }
    }
    assert!(parts.len() >= 2, "{} part(s)", parts.len());
    assert!(parts.iter().all(|p| p.version == parts[0].version));
    for part in &parts {
        let size: usize = part.documents.iter().map(|d| d.text.len()).sum();
        assert!(size <= strait_push::parts::PART_BYTES, "a part of {size} bytes");
    }
    // Joined, the parts are the folder's files as they are.
    let mut joiner = strait_push::parts::Parts::default();
    let whole: Vec<Incoming> = parts
        .iter()
        .cloned()
        .filter_map(|p| joiner.add(Incoming::Config(p)))
        .collect();
    let [Incoming::Config(whole)] = &whole[..] else {
        panic!("one configuration: {whole:?}");
    };
    let files: Vec<&str> = whole.documents.iter().map(|d| d.file.as_str()).collect();
    assert_eq!(files, ["a.yaml", "b.yaml", "c.yaml", "gateway.yaml"]);
    let a = std::fs::read(dir.path().join("a.yaml")).expect("read");
    assert_eq!(whole.documents[0].text, a);
    // Acknowledged as one version, once whole.
    proxy
        .answer(Outgoing::Ack(proto::Ack {
            version: parts[0].version,
        }))
        .await;
    wait_for("SYNCED", || {
        let s = controller.straitctl_status();
        s.lines()
            .any(|l| l.starts_with("gw-parts") && l.contains("SYNCED"))
            .then_some(s)
    });
}
