//! Status on the Istio resources and the election among replicas, with
//! `strait-controller` binaries against a real API server: proxies driven by the
//! test ACK or NACK, `kubectl get -o json` reads what the leader wrote, and
//! replicas are killed (SIGKILL) or stopped (SIGTERM) to see the Lease change hands.

use std::io::Read;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use strait_controller::testing::ApiServer;
use strait_push::proto;
use strait_push::proto::controller_message::Kind as Incoming;
use strait_push::proto::proxy_message::Kind as Outgoing;
use tokio::sync::mpsc;

const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: istio-system}\n";

const GATEWAY: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n";

const BACKEND: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: backend, namespace: istio-system}\nspec:\n  hosts: [backend.example.com]\n  resolution: STATIC\n  ports: [{number: 80, name: http}]\n  endpoints: [{address: 10.0.0.1}]\n";

/// A VirtualService on the gateway for `host`, routed to `destination`.
fn vs(name: &str, host: &str, destination: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: istio-system}}\nspec:\n  hosts: [{host}]\n  gateways: [gw]\n  http:\n  - route: [{{destination: {{host: {destination}}}}}]\n")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `GET path` on a controller's HTTP port: (status, body).
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

fn wait_for<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One `strait-controller` replica on the test's API server, named `POD_NAME`.
struct Replica {
    child: Child,
    push: u16,
    http: u16,
}

impl Replica {
    /// Starts it with `flags`; returns once it is ready (it has read the cluster).
    fn start(server: &ApiServer, name: &str, flags: &[&str]) -> Replica {
        let (push, http, secure) = (free_port(), free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_strait-controller"))
            .arg("--kubeconfig")
            .arg(server.kubeconfig())
            .args(["--bind-address", "127.0.0.1", "--debounce-ms", "20"])
            .arg(format!("--push-port={push}"))
            .arg(format!("--metrics-port={http}"))
            .arg(format!("--secure-port={secure}"))
            .args(flags)
            .env("POD_NAME", name)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn strait-controller");
        let replica = Replica { child, push, http };
        wait_for("the controller ready", Duration::from_secs(30), || {
            get(http, "/ready").filter(|(s, _)| *s == 200)
        });
        replica
    }

    /// `strait_controller_leader` on its metrics port.
    fn leads(&self) -> Option<bool> {
        let (_, metrics) = get(self.http, "/metrics")?;
        let line = metrics.lines().find(|l| l.starts_with("strait_controller_leader "))?;
        Some(line.ends_with(" 1"))
    }

    /// Sends it SIGTERM (a graceful stop) and waits for it to exit.
    fn terminate(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().expect("waits").is_none() {
            assert!(Instant::now() < deadline, "the controller did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway of istio-system on a controller's push port, answering as the test says.
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

    /// Reads the first configuration and answers it: ACK, or NACK with `refusal`.
    async fn answer_config(&mut self, refusal: Option<&str>) {
        let message = tokio::time::timeout(Duration::from_secs(20), self.inbound.message())
            .await
            .expect("a configuration in time")
            .expect("no error")
            .and_then(|m| m.kind);
        let Some(Incoming::Config(config)) = message else {
            panic!("a configuration first: {message:?}");
        };
        assert!(!config.more, "one part");
        let answer = match refusal {
            None => Outgoing::Ack(proto::Ack {
                version: config.version,
            }),
            Some(why) => Outgoing::Nack(proto::Nack {
                version: config.version,
                diagnostics: vec![why.into()],
            }),
        };
        self.answers
            .send(proto::ProxyMessage { kind: Some(answer) })
            .await
            .expect("open");
    }
}

/// The object `kind name` of istio-system, as `kubectl get -o json` shows it.
fn object(server: &ApiServer, kind: &str, name: &str) -> Value {
    let json = server
        .kubectl(&["get", kind, name, "-n", "istio-system", "-o", "json"], "")
        .expect("kubectl get");
    serde_json::from_str(&json).expect("JSON")
}

fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// The Lease's holder, "" when it has none (or there is no Lease).
fn holder(server: &ApiServer) -> String {
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
        .unwrap_or_default()
}

/// The replicas' report Leases, by name.
fn reports(server: &ApiServer) -> String {
    server
        .kubectl(
            &[
                "get",
                "leases",
                "-n",
                "istio-system",
                "-l",
                "strait.io/controller-report",
                "-o",
                "name",
            ],
            "",
        )
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_where_a_resource_is_programmed_and_what_analysis_found() {
    let server = ApiServer::start().await.expect("the API server starts");
    let good = vs("good", "good.example.com", "backend.example.com");
    let bad = vs("bad", "bad.example.com", "nowhere.example.com");
    let applied = [NAMESPACE, GATEWAY, BACKEND, &good, &bad].join("\n---\n");
    server.kubectl(&["apply", "-f", "-"], &applied).expect("applied");
    let controller = Replica::start(&server, "ctl-a", &[]);
    let mut proxies = Vec::new();
    for (name, refusal) in [
        ("gw-1", None),
        ("gw-2", None),
        (
            "gw-3",
            Some("kubernetes/VirtualService/istio-system/good:1:1: error[invalid-value] refused here"),
        ),
    ] {
        let mut proxy = Proxy::connect(controller.push, name).await;
        proxy.answer_config(refusal).await;
        proxies.push(proxy);
    }

    let good = wait_for("the good one's status to count 2 of 3", Duration::from_secs(30), || {
        let o = object(&server, "virtualservice", "good");
        (text(condition(&o, "Reconciled")?, "/message") == "2/3 proxies up to date.").then_some(o)
    });
    let reconciled = condition(&good, "Reconciled").expect("Reconciled");
    assert_eq!(reconciled["status"], "False", "{good:#}");
    let programmed = condition(&good, "Programmed").expect("Programmed");
    assert_eq!(programmed["status"], "False", "{good:#}");
    assert_eq!(programmed["reason"], "Refused", "{good:#}");
    let message = text(programmed, "/message");
    assert!(
        message.starts_with("programmed on 2 of 3 proxies; refused by gw-3 (gw-3 refused version"),
        "{message}"
    );
    assert!(message.contains("refused here"), "the proxy's diagnostic: {message}");
    assert!(!message.contains("gw-1") && !message.contains("gw-2"), "{message}");
    let generation = &good["metadata"]["generation"];
    assert_eq!(&good["status"]["observedGeneration"], generation, "{good:#}");
    assert_eq!(&programmed["observedGeneration"], generation, "{good:#}");
    assert!(
        good["status"].get("validationMessages").is_none(),
        "nothing found on the good one: {good:#}"
    );
    for time in ["lastProbeTime", "lastTransitionTime"] {
        assert!(programmed[time].as_str().is_some_and(|t| t.ends_with('Z')), "{good:#}");
    }

    let bad = wait_for("the bad one's status", Duration::from_secs(10), || {
        let o = object(&server, "virtualservice", "bad");
        o["status"]["validationMessages"].is_array().then_some(o)
    });
    let messages = bad["status"]["validationMessages"].as_array().expect("a list");
    assert_eq!(messages.len(), 1, "{bad:#}");
    assert_eq!(messages[0]["type"]["code"], "IST0101");
    assert_eq!(messages[0]["type"]["name"], "ReferencedResourceNotFound");
    assert_eq!(messages[0]["level"], "ERROR");
    assert_eq!(
        text(condition(&bad, "Reconciled").expect("Reconciled"), "/message"),
        "2/3 proxies up to date."
    );
    // Status is written through the status subresource: the generation stays.
    assert_eq!(bad["metadata"]["generation"], 1, "{bad:#}");

    // A change elsewhere makes the controller compute every status again: the
    // good one's is the same, so it is not written (its resourceVersion stays).
    let before = text(&good, "/metadata/resourceVersion").to_string();
    let other = vs("other", "other.example.com", "backend.example.com");
    server.kubectl(&["apply", "-f", "-"], &other).expect("applied");
    wait_for("the new one's status", Duration::from_secs(20), || {
        condition(&object(&server, "virtualservice", "other"), "Programmed").map(|_| ())
    });
    // Past the next second, a rewrite would carry another lastProbeTime.
    std::thread::sleep(Duration::from_millis(2500));
    let after = object(&server, "virtualservice", "good");
    assert_eq!(text(&after, "/metadata/resourceVersion"), before, "{after:#}");
    drop(proxies);
    drop(controller);
    server.stop().expect("the API server stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_counts_the_proxies_of_every_replica() {
    let server = ApiServer::start().await.expect("the API server starts");
    let app = vs("app", "app.example.com", "backend.example.com");
    let applied = [NAMESPACE, GATEWAY, BACKEND, &app].join("\n---\n");
    server.kubectl(&["apply", "-f", "-"], &applied).expect("applied");
    let lease = Duration::from_secs(6);
    let flags = ["--lease-duration=6s", "--lease-renew=2s"];
    let a = Replica::start(&server, "ctl-a", &flags);
    wait_for("ctl-a to hold the Lease", Duration::from_secs(20), || {
        (holder(&server) == "ctl-a").then_some(())
    });
    let b = Replica::start(&server, "ctl-b", &flags);
    // One proxy on the leader, two on the other replica, one of which refuses.
    let mut proxies = Vec::new();
    for (replica, name, refusal) in [
        (&a, "gw-1", None),
        (&b, "gw-2", None),
        (&b, "gw-3", Some("refused on ctl-b")),
    ] {
        let mut proxy = Proxy::connect(replica.push, name).await;
        proxy.answer_config(refusal).await;
        proxies.push(proxy);
    }
    let counted = wait_for("every replica's proxies counted", Duration::from_secs(30), || {
        let o = object(&server, "virtualservice", "app");
        (text(condition(&o, "Reconciled")?, "/message") == "2/3 proxies up to date.").then_some(o)
    });
    let programmed = text(condition(&counted, "Programmed").expect("Programmed"), "/message");
    assert!(
        programmed.starts_with("programmed on 2 of 3 proxies; refused by gw-3 (gw-3 refused version")
            && programmed.ends_with("refused on ctl-b)"),
        "{programmed}"
    );
    assert_eq!((a.leads(), b.leads()), (Some(true), Some(false)));
    let report = server
        .kubectl(
            &[
                "get",
                "lease",
                "strait-controller-report-ctl-b",
                "-n",
                "istio-system",
                "-o",
                "json",
            ],
            "",
        )
        .expect("ctl-b's report Lease");
    assert!(report.contains("strait.io/programming"), "{report}");

    // Killed, ctl-b renews its report no more: once it is stale, the leader
    // counts its own proxy only.
    let killed = Instant::now();
    drop(b);
    let alone = wait_for("ctl-b's proxies counted out", lease * 3, || {
        let o = object(&server, "virtualservice", "app");
        (text(condition(&o, "Reconciled")?, "/message") == "1/1 proxies up to date.").then_some(o)
    });
    assert!(killed.elapsed() > lease / 2, "a report stays counted while it is fresh");
    assert_eq!(condition(&alone, "Reconciled").expect("Reconciled")["status"], "True");
    assert_eq!(condition(&alone, "Programmed").expect("Programmed")["status"], "True");
    drop(proxies);
    drop(a);
    server.stop().expect("the API server stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_another_takes_over_when_it_goes() {
    let server = ApiServer::start().await.expect("the API server starts");
    let app = |destination: &str| vs("app", "app.example.com", destination);
    let applied = [NAMESPACE, GATEWAY, BACKEND, &app("backend.example.com")].join("\n---\n");
    server.kubectl(&["apply", "-f", "-"], &applied).expect("applied");
    // A short lease, to see it expire.
    let lease = Duration::from_secs(6);
    let flags = ["--lease-duration=6s", "--lease-renew=2s"];
    let a = Replica::start(&server, "ctl-a", &flags);
    wait_for("ctl-a to hold the Lease", Duration::from_secs(20), || {
        (holder(&server) == "ctl-a").then_some(())
    });
    let b = Replica::start(&server, "ctl-b", &flags);
    // Exactly one leads, and keeps leading while it renews.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(holder(&server), "ctl-a");
        assert_eq!((a.leads(), b.leads()), (Some(true), Some(false)));
    }
    // The leader writes status; the follower does not.
    let observed = |generation: i64| {
        let server = &server;
        move || {
            let o = object(server, "virtualservice", "app");
            (o["status"]["observedGeneration"] == generation && condition(&o, "Reconciled").is_some()).then_some(o)
        }
    };
    wait_for("status of generation 1", Duration::from_secs(20), observed(1));
    let managed = server
        .kubectl(
            &[
                "get",
                "virtualservice",
                "app",
                "-n",
                "istio-system",
                "-o",
                "json",
                "--show-managed-fields",
            ],
            "",
        )
        .expect("kubectl get");
    let first: Value = serde_json::from_str(&managed).expect("JSON");
    let fields: Vec<&str> = first["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["subresource"] == "status")
        .filter_map(|f| f["manager"].as_str())
        .collect();
    assert_eq!(fields, ["strait-controller"], "{first:#}");

    // The leader dies without letting go: ctl-b takes the Lease once it expires.
    let killed = Instant::now();
    drop(a);
    wait_for("ctl-b to take the Lease", lease * 2, || {
        (holder(&server) == "ctl-b").then_some(())
    });
    let took = killed.elapsed();
    assert!(
        took <= lease + Duration::from_millis(1500),
        "taken {took:?} after the kill, the lease lasts {lease:?}"
    );
    assert_eq!(b.leads(), Some(true));
    // And writes status: a change is followed.
    server
        .kubectl(&["apply", "-f", "-"], &app("other.example.com"))
        .expect("applied");
    let second = wait_for("status of generation 2", Duration::from_secs(20), observed(2));
    assert_eq!(
        second["status"]["validationMessages"][0]["type"]["code"], "IST0101",
        "the new route's host is unknown: {second:#}"
    );

    // A graceful stop lets go at once: ctl-c takes over well within the lease.
    let c = Replica::start(&server, "ctl-c", &flags);
    assert_eq!(c.leads(), Some(false));
    wait_for("ctl-b's and ctl-c's reports", Duration::from_secs(10), || {
        let reports = reports(&server);
        (reports.contains("report-ctl-b") && reports.contains("report-ctl-c")).then_some(())
    });
    let stopped = Instant::now();
    b.terminate();
    wait_for("ctl-c to take the Lease", lease, || {
        (holder(&server) == "ctl-c").then_some(())
    });
    let took = stopped.elapsed();
    assert!(
        took < lease / 2,
        "taken {took:?} after SIGTERM, the lease lasts {lease:?}"
    );
    // Its report went with it.
    let reports = reports(&server);
    assert!(!reports.contains("ctl-b"), "{reports}");
    server
        .kubectl(&["apply", "-f", "-"], &app("backend.example.com"))
        .expect("applied");
    let third = wait_for("status of generation 3", Duration::from_secs(20), observed(3));
    assert!(third["status"].get("validationMessages").is_none(), "{third:#}");
    drop(c);
    server.stop().expect("the API server stops cleanly");
}

/// `kubectl get kind name [-n namespace] -o json`.
fn gateway_api_object(server: &ApiServer, kind: &str, namespace: Option<&str>, name: &str) -> Value {
    let mut args = vec!["get", kind, name, "-o", "json"];
    if let Some(ns) = namespace {
        args.extend(["-n", ns]);
    }
    let json = server.kubectl(&args, "").expect("kubectl get");
    serde_json::from_str(&json).expect("JSON")
}

/// (status, reason) of condition `kind` in `conditions`.
fn gateway_api_condition(conditions: &Value, kind: &str) -> Option<(String, String)> {
    let c = conditions.as_array()?.iter().find(|c| c["type"] == kind)?;
    Some((text(c, "/status").to_string(), text(c, "/reason").to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_status_as_the_specification_asks() {
    let server = ApiServer::start().await.expect("the API server starts");
    let resources = r#"apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: v1
kind: Namespace
metadata: {name: infra}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: strait}
spec: {controllerName: strait.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: strait
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: tcp, port: 9000, protocol: TCP}
---
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: infra}
spec: {ports: [{name: http, port: 8080}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: good, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: backend, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: missing, namespace: infra}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  rules: [{backendRefs: [{name: later, port: 8080}]}]
"#;
    server.kubectl(&["apply", "-f", "-"], resources).expect("applied");
    let _controller = Replica::start(&server, "ctl-a", &[]);
    let within = Duration::from_secs(30);
    wait_for("GatewayClass Accepted", within, || {
        let class = gateway_api_object(&server, "gatewayclass", None, "strait");
        (gateway_api_condition(&class["status"]["conditions"], "Accepted")? == ("True".into(), "Accepted".into()))
            .then_some(())
    });
    let gw = wait_for("Gateway status", within, || {
        let gw = gateway_api_object(&server, "gateway", Some("infra"), "gw");
        gw["status"]["listeners"]
            .as_array()
            .is_some_and(|l| l.len() == 2)
            .then_some(gw)
    });
    assert_eq!(
        gateway_api_condition(&gw["status"]["conditions"], "Accepted"),
        Some(("True".into(), "ListenersNotValid".into()))
    );
    assert_eq!(
        gateway_api_condition(&gw["status"]["conditions"], "Programmed"),
        Some(("True".into(), "Programmed".into()))
    );
    let listeners = &gw["status"]["listeners"];
    assert_eq!(listeners[0]["attachedRoutes"], 2, "{listeners:#}");
    assert_eq!(
        gateway_api_condition(&listeners[1]["conditions"], "Accepted"),
        Some(("False".into(), "UnsupportedProtocol".into()))
    );
    let route = |name: &str| gateway_api_object(&server, "httproute", Some("infra"), name);
    let good = wait_for("HTTPRoute good status", within, || {
        let r = route("good");
        r["status"]["parents"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
            .then_some(r)
    });
    let parent = &good["status"]["parents"][0];
    assert_eq!(parent["controllerName"], "strait.io/gateway-controller");
    assert_eq!(parent["parentRef"]["name"], "gw");
    assert_eq!(
        gateway_api_condition(&parent["conditions"], "Accepted"),
        Some(("True".into(), "Accepted".into()))
    );
    assert_eq!(
        gateway_api_condition(&parent["conditions"], "ResolvedRefs"),
        Some(("True".into(), "ResolvedRefs".into()))
    );
    let missing = wait_for("HTTPRoute missing status", within, || {
        let r = route("missing");
        gateway_api_condition(&r["status"]["parents"][0]["conditions"], "ResolvedRefs").map(|c| (c, r))
    });
    assert_eq!(missing.0, ("False".into(), "BackendNotFound".into()));
    // Nothing changes: nothing is written again (the resourceVersion stays).
    let version = text(&missing.1, "/metadata/resourceVersion").to_string();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        text(&route("missing"), "/metadata/resourceVersion"),
        version,
        "status rewritten without a change"
    );
    // The Service appears: the reference resolves.
    let later = "apiVersion: v1\nkind: Service\nmetadata: {name: later, namespace: infra}\nspec: {ports: [{name: http, port: 8080}]}\n";
    server.kubectl(&["apply", "-f", "-"], later).expect("applied");
    wait_for("ResolvedRefs True once the Service exists", within, || {
        let r = route("missing");
        (gateway_api_condition(&r["status"]["parents"][0]["conditions"], "ResolvedRefs")?
            == ("True".into(), "ResolvedRefs".into()))
            .then_some(())
    });
}
