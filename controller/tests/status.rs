//! Status on the Istio resources and the election among replicas, with
//! `strait-controller` binaries against a real API server: proxies driven by the
//! test ACK or NACK, `kubectl get -o json` reads what the leader wrote, and
//! replicas are killed (SIGKILL) or stopped (SIGTERM) to see the Lease change hands.

mod common;

use std::time::{Duration, Instant};

use common::{
    http_get, json_of, lease_holder, virtual_service as vs, wait_for, Controller, Ports, Proxy, BACKEND, GATEWAY,
    ISTIO_SYSTEM,
};
use serde_json::Value;
use strait_controller::testing::ApiServer;
use strait_push::proto;
use strait_push::proto::proxy_message::Kind as Outgoing;

/// Starts one `strait-controller` replica on the test's API server, named `name`
/// (`POD_NAME`), with `flags`; returns once it is ready (it has read the cluster).
fn replica(server: &ApiServer, name: &str, flags: &[&str]) -> Controller {
    let ports = Ports::free();
    let mut command = ports.command();
    command
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .args(flags)
        .env("POD_NAME", name);
    let mut replica = Controller::spawn(&mut command, ports);
    replica.wait_ready(Duration::from_secs(30));
    replica
}

/// `strait_controller_leader` on a replica's metrics port.
fn leads(replica: &Controller) -> Option<bool> {
    let (_, metrics) = http_get(replica.http, "/metrics")?;
    let line = metrics.lines().find(|l| l.starts_with("strait_controller_leader "))?;
    Some(line.ends_with(" 1"))
}

/// Connects a proxy named `name` to each controller and answers its first
/// configuration: ACK, or NACK with the refusal.
async fn connect_proxies(proxies: &[(&Controller, &str, Option<&str>)]) -> Vec<Proxy> {
    let mut connected = Vec::new();
    for (controller, name, refusal) in proxies {
        let mut proxy = Proxy::connect(controller.push, name).await;
        answer_config(&mut proxy, *refusal).await;
        connected.push(proxy);
    }
    connected
}

/// Waits (at most `within`) until the Reconciled condition of VirtualService `name`
/// says `message`; returns the VirtualService.
fn wait_for_reconciled(server: &ApiServer, name: &str, message: &str, within: Duration) -> Value {
    wait_for(&format!("{name}'s status to say {message:?}"), within, || {
        let o = object(server, "virtualservice", name);
        (text(condition(&o, "Reconciled")?, "/message") == message).then_some(o)
    })
}

/// Reads `proxy`'s first configuration and answers it: ACK, or NACK with `refusal`.
async fn answer_config(proxy: &mut Proxy, refusal: Option<&str>) {
    let config = proxy.config().await;
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
    proxy.answer(answer).await;
}

/// The object `kind name` of istio-system, as `kubectl get -o json` shows it.
fn object(server: &ApiServer, kind: &str, name: &str) -> Value {
    json_of(server, &["get", kind, name, "-n", "istio-system"])
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
    let applied = [ISTIO_SYSTEM, GATEWAY, BACKEND, &good, &bad].join("\n---\n");
    server.kubectl(&["apply", "-f", "-"], &applied).expect("applied");
    let controller = replica(&server, "ctl-a", &[]);
    let proxies = connect_proxies(&[
        (&controller, "gw-1", None),
        (&controller, "gw-2", None),
        (
            &controller,
            "gw-3",
            Some("kubernetes/VirtualService/istio-system/good:1:1: error[invalid-value] refused here"),
        ),
    ])
    .await;

    let good = wait_for_reconciled(&server, "good", "2/3 proxies up to date.", Duration::from_secs(30));
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
    let applied = [ISTIO_SYSTEM, GATEWAY, BACKEND, &app].join("\n---\n");
    server.kubectl(&["apply", "-f", "-"], &applied).expect("applied");
    let lease = Duration::from_secs(6);
    let flags = ["--lease-duration=6s", "--lease-renew=2s"];
    let a = replica(&server, "ctl-a", &flags);
    wait_for("ctl-a to hold the Lease", Duration::from_secs(20), || {
        (lease_holder(&server) == "ctl-a").then_some(())
    });
    let b = replica(&server, "ctl-b", &flags);
    // One proxy on the leader, two on the other replica, one of which refuses.
    let proxies = connect_proxies(&[
        (&a, "gw-1", None),
        (&b, "gw-2", None),
        (&b, "gw-3", Some("refused on ctl-b")),
    ])
    .await;
    // Every replica's proxies counted.
    let counted = wait_for_reconciled(&server, "app", "2/3 proxies up to date.", Duration::from_secs(30));
    let programmed = text(condition(&counted, "Programmed").expect("Programmed"), "/message");
    assert!(
        programmed.starts_with("programmed on 2 of 3 proxies; refused by gw-3 (gw-3 refused version")
            && programmed.ends_with("refused on ctl-b)"),
        "{programmed}"
    );
    assert_eq!((leads(&a), leads(&b)), (Some(true), Some(false)));
    let report = json_of(
        &server,
        &["get", "lease", "strait-controller-report-ctl-b", "-n", "istio-system"],
    )
    .to_string();
    assert!(report.contains("strait.io/programming"), "{report}");

    // Killed, ctl-b renews its report no more: once it is stale, the leader
    // counts its own proxy only.
    let killed = Instant::now();
    drop(b);
    // ctl-b's proxies counted out.
    let alone = wait_for_reconciled(&server, "app", "1/1 proxies up to date.", lease * 3);
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
    let applied = [ISTIO_SYSTEM, GATEWAY, BACKEND, &app("backend.example.com")].join("\n---\n");
    server.kubectl(&["apply", "-f", "-"], &applied).expect("applied");
    // A short lease, to see it expire.
    let lease = Duration::from_secs(6);
    let flags = ["--lease-duration=6s", "--lease-renew=2s"];
    let a = replica(&server, "ctl-a", &flags);
    wait_for("ctl-a to hold the Lease", Duration::from_secs(20), || {
        (lease_holder(&server) == "ctl-a").then_some(())
    });
    let b = replica(&server, "ctl-b", &flags);
    // Exactly one leads, and keeps leading while it renews.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(lease_holder(&server), "ctl-a");
        assert_eq!((leads(&a), leads(&b)), (Some(true), Some(false)));
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
    let first = json_of(
        &server,
        &[
            "get",
            "virtualservice",
            "app",
            "-n",
            "istio-system",
            "--show-managed-fields",
        ],
    );
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
        (lease_holder(&server) == "ctl-b").then_some(())
    });
    let took = killed.elapsed();
    assert!(
        took <= lease + Duration::from_millis(1500),
        "taken {took:?} after the kill, the lease lasts {lease:?}"
    );
    assert_eq!(leads(&b), Some(true));
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
    let c = replica(&server, "ctl-c", &flags);
    assert_eq!(leads(&c), Some(false));
    wait_for("ctl-b's and ctl-c's reports", Duration::from_secs(10), || {
        let reports = reports(&server);
        (reports.contains("report-ctl-b") && reports.contains("report-ctl-c")).then_some(())
    });
    let stopped = Instant::now();
    b.terminate();
    wait_for("ctl-c to take the Lease", lease, || {
        (lease_holder(&server) == "ctl-c").then_some(())
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
    let _controller = replica(&server, "ctl-a", &[]);
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
