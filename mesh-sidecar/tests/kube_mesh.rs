//! The mesh as a cluster runs it: a real API server (etcd + kube-apiserver), the
//! `strait-controller` binary watching it, signing workload certificates (TokenReview)
//! and injecting pods through its webhook, and pods as network namespaces that run
//! exactly what the injected pod spec says: `strait-init`'s command as root, then
//! `strait-proxy`'s under its uid, with its environment (downward API) and volumes
//! (service account token, the mesh root ConfigMap, the labels file) made real.
//! There is no kubelet: the test plays it, reading the spec the API server stored.
//!
//! The controller runs on the host's loopback (the API server calls its webhook
//! there); the pods reach it at an address on their bridge, forwarded to it.

mod mesh_net;

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mesh_net::{public_dir, write_public, Net, Pod};
use serde_json::{json, Value};
use strait_controller::testing::ApiServer;

const SIDECAR: &str = env!("CARGO_BIN_EXE_strait-sidecar");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `strait-controller`, built beside this crate's binary by `cargo test --workspace`.
fn controller_binary() -> PathBuf {
    let path = Path::new(SIDECAR).with_file_name("strait-controller");
    assert!(
        path.exists(),
        "{} is not built: run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// A CA for the webhook's serving certificate (127.0.0.1), as files.
struct WebhookCert {
    dir: tempfile::TempDir,
}

impl WebhookCert {
    fn new() -> WebhookCert {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
        let cert = params.signed_by(&key, &ca, &ca_key).expect("cert");
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write");
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).expect("write");
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).expect("write");
        WebhookCert { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// A process killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Forwards connections accepted at `port` of a namespace's address to
/// 127.0.0.1:`to` of the host (where the controller listens).
fn forward(ns: &strait_netns::Netns, ip: &str, port: u16, to: u16) {
    let addr = format!("{ip}:{port}");
    let listener = ns
        .enter(move || TcpListener::bind(addr).expect("forwarder listener"))
        .unwrap_or_else(|e| panic!("{e}"));
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", to)) else {
                    return;
                };
                let (mut c2, mut u2) = match (client.try_clone(), upstream.try_clone()) {
                    (Ok(c), Ok(u)) => (c, u),
                    _ => return,
                };
                let (mut c1, mut u1) = (client, upstream);
                let one = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c1, &mut u1);
                    let _ = u1.shutdown(std::net::Shutdown::Write);
                });
                let _ = std::io::copy(&mut u2, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Write);
                let _ = one.join();
            });
        }
    });
}

/// The cluster: API server, controller, and the pods' network.
struct Cluster {
    server: ApiServer,
    net: Net,
    _controller: Process,
    _webhook: WebhookCert,
    _controller_pod: Pod,
}

/// Where the pods reach the controller.
const CONTROLLER_PORT: u16 = 15012;

impl Cluster {
    async fn start() -> Cluster {
        let server = ApiServer::start().await.expect("the API server");
        let mut net = Net::new();
        // The controller's address on the pods' bridge (a namespace forwarding to it).
        let controller_pod = net.pod("controller");
        let webhook = WebhookCert::new();
        let (webhook_port, secure_port) = (free_port(), free_port());
        let webhook_yaml = include_str!("../../deploy/injection-webhook.yaml");
        server
            .kubectl(
                &["apply", "-f", "-"],
                &[
                    "apiVersion: v1\nkind: Namespace\nmetadata: {name: istio-system}\n",
                    webhook_yaml,
                ]
                .join("\n---\n"),
            )
            .expect("applied");
        point_webhooks_at(&server, webhook_port);
        let child = Command::new(controller_binary())
            .args(["--bind-address", "127.0.0.1", "--debounce-ms", "20"])
            .arg(format!("--kubeconfig={}", server.kubeconfig().display()))
            .arg(format!("--push-port={}", free_port()))
            .arg(format!("--metrics-port={}", free_port()))
            .arg(format!("--secure-port={secure_port}"))
            .arg(format!("--tls-ip-addresses={}", controller_pod.ip))
            .arg(format!("--webhook-port={webhook_port}"))
            .arg(format!("--webhook-cert={}", webhook.path("cert.pem")))
            .arg(format!("--webhook-key={}", webhook.path("key.pem")))
            .arg(format!("--webhook-ca-bundle={}", webhook.path("ca.pem")))
            .arg(format!(
                "--controller-address=https://{}:{CONTROLLER_PORT}",
                controller_pod.ip
            ))
            .arg("--proxy-image=strait:test")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(net.dir.path().join("controller.log")).expect("log"))
            .spawn()
            .expect("strait-controller");
        let controller = Process(child);
        forward(&controller_pod.ns, &controller_pod.ip, CONTROLLER_PORT, secure_port);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", webhook_port)).is_err() {
            assert!(Instant::now() < deadline, "the controller's webhook port never opened");
            std::thread::sleep(Duration::from_millis(100));
        }
        Cluster {
            server,
            net,
            _controller: controller,
            _webhook: webhook,
            _controller_pod: controller_pod,
        }
    }

    fn kubectl(&self, args: &[&str], stdin: &str) -> String {
        self.server
            .kubectl(args, stdin)
            .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
    }

    fn controller_log(&self) -> String {
        std::fs::read_to_string(self.net.dir.path().join("controller.log")).unwrap_or_default()
    }

    /// Waits for the controller to publish the mesh root in `ns`.
    fn root_cert(&self, ns: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(out) = self.server.kubectl(
                &[
                    "get",
                    "configmap",
                    "istio-ca-root-cert",
                    "-n",
                    ns,
                    "-o",
                    "jsonpath={.data.root-cert\\.pem}",
                ],
                "",
            ) {
                if out.contains("BEGIN CERTIFICATE") {
                    return out;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no root published: {}",
                self.controller_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Creates pod `name` (service account `name`, `labels`) in `ns` and returns it
    /// as the API server stored it (after the webhooks).
    fn create_pod(&self, ns: &str, name: &str, labels: &BTreeMap<&str, &str>, ip: &str) -> Value {
        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}});
        self.kubectl(&["apply", "-f", "-"], &sa.to_string());
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {
                "serviceAccountName": name,
                "terminationGracePeriodSeconds": 10,
                "containers": [{"name": "app", "image": "app:test", "ports": [{"containerPort": 8080}]}]
            }
        });
        self.kubectl(&["create", "-f", "-"], &pod.to_string());
        let status = json!({"status": {"podIP": ip, "podIPs": [{"ip": ip}], "phase": "Running"}});
        self.kubectl(
            &[
                "patch",
                "pod",
                name,
                "-n",
                ns,
                "--subresource=status",
                "--type=merge",
                "-p",
                &status.to_string(),
            ],
            "",
        );
        serde_json::from_str(&self.kubectl(&["get", "pod", name, "-n", ns, "-o", "json"], "")).expect("pod JSON")
    }

    /// Plays the kubelet for `pod` in `netns`: makes its volumes, runs the injected
    /// `strait-init`, then starts `strait-proxy` as the spec says, and waits for its
    /// readiness probe.
    fn run_injected(&self, pod_json: &Value, netns: &mut Pod) {
        let spec = &pod_json["spec"];
        let ns = pod_json["metadata"]["namespace"].as_str().expect("namespace");
        let name = pod_json["metadata"]["name"].as_str().expect("name");
        let init = container(spec, "strait-init");
        let proxy = container(spec, "strait-proxy");
        assert_eq!(proxy["restartPolicy"], "Always", "a native sidecar: {proxy}");
        let volumes = self.volumes(pod_json, netns);
        let (program, args) = command(init, &volumes);
        let out = netns.exec(&program, &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            out.status.success(),
            "strait-init {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (program, args) = command(proxy, &volumes);
        let uid = proxy["securityContext"]["runAsUser"].as_u64().expect("runAsUser");
        let gid = proxy["securityContext"]["runAsGroup"].as_u64().unwrap_or(uid);
        let mut env = Vec::new();
        for var in proxy["env"].as_array().into_iter().flatten() {
            let key = var["name"].as_str().expect("env name");
            let value = match (&var["value"], &var["valueFrom"]["fieldRef"]["fieldPath"]) {
                (Value::String(v), _) => v.clone(),
                (_, Value::String(path)) => field(pod_json, path, &netns.ip),
                _ => continue,
            };
            env.push(format!("{key}={value}"));
        }
        let mut all = vec![
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--clear-groups".to_string(),
            "env".to_string(),
        ];
        all.extend(env);
        all.push(program);
        all.extend(args);
        netns.start("setpriv", &all.iter().map(String::as_str).collect::<Vec<_>>());
        let probe = &proxy["readinessProbe"]["httpGet"];
        let url = format!(
            "http://127.0.0.1:{}{}",
            probe["port"].as_u64().expect("probe port"),
            probe["path"].as_str().expect("probe path")
        );
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let out = netns.exec("curl", &["-s", "-o", "/dev/null", "-w", "%{http_code}", &url]);
            if out.stdout == b"200" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{ns}/{name}'s sidecar not ready:\n{}\ncontroller:\n{}",
                netns.log(),
                self.controller_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The pod's volumes as folders: the projected token (TokenRequest with the
    /// audience the spec asks), the root ConfigMap, the downward API labels, and
    /// empty folders. Returns mountPath prefixes to replace, per volume name.
    fn volumes(&self, pod_json: &Value, netns: &Pod) -> BTreeMap<String, PathBuf> {
        let ns = pod_json["metadata"]["namespace"].as_str().expect("namespace");
        let sa = pod_json["spec"]["serviceAccountName"]
            .as_str()
            .expect("service account");
        let name = pod_json["metadata"]["name"].as_str().expect("name");
        let mut out = BTreeMap::new();
        for volume in pod_json["spec"]["volumes"].as_array().into_iter().flatten() {
            let vname = volume["name"].as_str().expect("volume name");
            let dir = self.net.dir.path().join(format!("{name}-{vname}"));
            public_dir(&dir);
            for source in volume["projected"]["sources"].as_array().into_iter().flatten() {
                let token = &source["serviceAccountToken"];
                if let Some(path) = token["path"].as_str() {
                    let mut args = vec!["create", "token", sa, "-n", ns];
                    if let Some(audience) = token["audience"].as_str() {
                        args.extend(["--audience", audience]);
                    }
                    write_public(&dir.join(path), self.kubectl(&args, "").trim().as_bytes());
                }
            }
            if let Some(cm) = volume["configMap"]["name"].as_str() {
                assert_eq!(cm, "istio-ca-root-cert", "{volume}");
                write_public(&dir.join("root-cert.pem"), self.root_cert(ns).as_bytes());
            }
            for item in volume["downwardAPI"]["items"].as_array().into_iter().flatten() {
                let path = item["path"].as_str().expect("path");
                let field_path = item["fieldRef"]["fieldPath"].as_str().unwrap_or("");
                let text = field(pod_json, field_path, &netns.ip);
                write_public(&dir.join(path), text.as_bytes());
            }
            out.insert(vname.to_string(), dir);
        }
        out
    }
}

/// The container `name` among the pod's init containers.
fn container<'a>(spec: &'a Value, name: &str) -> &'a Value {
    spec["initContainers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in the injected pod: {spec}"))
}

/// The program and arguments of `container` (command + args), with the image's
/// `strait-sidecar` this crate's binary and each volume's mountPath its folder.
fn command(container: &Value, volumes: &BTreeMap<String, PathBuf>) -> (String, Vec<String>) {
    let mut words: Vec<String> = container["command"]
        .as_array()
        .into_iter()
        .chain(container["args"].as_array())
        .flatten()
        .filter_map(|w| w.as_str().map(str::to_string))
        .collect();
    let mounts: Vec<(String, &PathBuf)> = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| Some((m["mountPath"].as_str()?.to_string(), volumes.get(m["name"].as_str()?)?)))
        .collect();
    for word in &mut words {
        for (mount, dir) in &mounts {
            if let Some(rest) = word.strip_prefix(mount.as_str()) {
                *word = format!("{}{rest}", dir.display());
            }
        }
    }
    assert_eq!(words.first().map(String::as_str), Some("strait-sidecar"), "{container}");
    words.remove(0);
    (SIDECAR.to_string(), words)
}

/// A downward API field of the pod.
fn field(pod: &Value, path: &str, ip: &str) -> String {
    match path {
        "metadata.name" => pod["metadata"]["name"].as_str().unwrap_or("").to_string(),
        "metadata.namespace" => pod["metadata"]["namespace"].as_str().unwrap_or("").to_string(),
        "spec.serviceAccountName" => pod["spec"]["serviceAccountName"].as_str().unwrap_or("").to_string(),
        "status.podIP" | "status.podIPs" => ip.to_string(),
        "metadata.labels" => pod["metadata"]["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}=\"{}\"\n", v.as_str().unwrap_or("")))
            .collect(),
        "metadata.annotations" => pod["metadata"]["annotations"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect(),
        other => panic!("the test does not know the downward API field {other}"),
    }
}

/// Points every webhook of the injection configuration at `https://127.0.0.1:PORT`.
fn point_webhooks_at(server: &ApiServer, port: u16) {
    let config: Value = serde_json::from_str(
        &server
            .kubectl(
                &[
                    "get",
                    "mutatingwebhookconfiguration",
                    "strait-sidecar-injector",
                    "-o",
                    "json",
                ],
                "",
            )
            .expect("the webhook configuration"),
    )
    .expect("JSON");
    let count = config["webhooks"].as_array().map_or(0, Vec::len);
    let url = format!("https://127.0.0.1:{port}/inject");
    let patch: Vec<Value> = (0..count)
        .map(|i| json!({"op": "replace", "path": format!("/webhooks/{i}/clientConfig"), "value": {"url": url}}))
        .collect();
    server
        .kubectl(
            &[
                "patch",
                "mutatingwebhookconfiguration",
                "strait-sidecar-injector",
                "--type=json",
                "-p",
                &Value::Array(patch).to_string(),
            ],
            "",
        )
        .expect("patched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_pods_talk_over_mtls_with_certificates_from_the_controller() {
    let mut cluster = Cluster::start().await;
    let mut a = cluster.net.pod("a");
    let mut b = cluster.net.pod("b");
    let c = cluster.net.pod("c");
    cluster.kubectl(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio-injection: enabled}}\n",
    );
    // The webhook reads the namespace's labels; the CA publishes the root there.
    cluster.root_cert("shop");
    let a_json = cluster.create_pod("shop", "a", &[("app", "a")].into(), &a.ip);
    let b_json = cluster.create_pod("shop", "b", &[("app", "b"), ("version", "v1")].into(), &b.ip);
    assert_eq!(
        b_json["metadata"]["labels"]["security.istio.io/tlsMode"], "istio",
        "injected: {b_json}"
    );
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "b", "namespace": "shop"},
        "spec": {"selector": {"app": "b"}, "ports": [{"name": "http", "port": 8080, "targetPort": 8080}]}
    });
    cluster.kubectl(&["apply", "-f", "-"], &service.to_string());
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "b-1", "namespace": "shop", "labels": {"kubernetes.io/service-name": "b"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [b.ip], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "b", "namespace": "shop"}}]
    });
    cluster.kubectl(&["apply", "-f", "-"], &slice.to_string());
    let vip = cluster.kubectl(
        &["get", "service", "b", "-n", "shop", "-o", "jsonpath={.spec.clusterIP}"],
        "",
    );
    b.app("b", 8080);
    cluster.run_injected(&a_json, &mut a);
    cluster.run_injected(&b_json, &mut b);
    let resolve = format!("b.shop.svc.cluster.local:8080:{}", vip.trim());
    let ((code, body), pcap) = cluster.net.capture(8080, || {
        a.curl(&["--resolve", &resolve, "http://b.shop.svc.cluster.local:8080/from-a"])
    });
    assert_eq!(
        code,
        "200",
        "a -> b: {body}\na's clusters: {}\na:\n{}\nb:\n{}\ncontroller:\n{}",
        String::from_utf8_lossy(&a.exec("curl", &["-s", "http://127.0.0.1:15000/clusters"]).stdout),
        a.log(),
        b.log(),
        cluster.controller_log()
    );
    assert!(
        body.contains("URI=spiffe://cluster.local/ns/shop/sa/a"),
        "b saw a's identity: {body}"
    );
    assert!(
        pcap.len() > 1000 && !pcap.windows(7).any(|w| w == b"GET /fr"),
        "plaintext on the wire"
    );
    cluster.kubectl(
        &["apply", "-f", "-"],
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: shop}\nspec:\n  mtls: {mode: STRICT}\n",
    );
    let direct = format!("http://{}:8080/", b.ip);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _) = c.curl(&[&direct]);
        if code == "000" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "STRICT never refused the plaintext client ({code})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, body) = a.curl(&["--resolve", &resolve, "http://b.shop.svc.cluster.local:8080/strict"]);
    assert_eq!(code, "200", "a still reaches b under STRICT: {body}");
}
