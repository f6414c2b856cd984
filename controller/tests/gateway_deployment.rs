//! Automated deployment of Gateway API gateways against a real API server: the
//! `strait-controller` binary runs with its ServiceAccount's token and exactly the
//! rights of deploy/controller-rbac.yaml and deploy/gateway-deployment-rbac.yaml;
//! a Gateway of Strait's class gets a ServiceAccount, Deployment and Service owned by
//! it; Gateways of another class or deployed by hand get nothing; a new listener
//! reaches the Service, and what others change (replicas) stays.

mod common;

use std::time::Duration;

use common::{controller_kubeconfig, json_of, wait_for, Controller, Ports, ISTIO_SYSTEM};
use serde_json::Value;
use strait_controller::testing::ApiServer;

const IMAGE: &str = "registry.example.com/strait:test";

fn gateway(name: &str, class: &str, listeners: &str, extra: &str) -> String {
    format!("---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: edge}}\nspec:\n  gatewayClassName: {class}\n  listeners:\n{listeners}{extra}")
}

const HTTP: &str = "  - {name: http, port: 80, protocol: HTTP}\n";
const TLS: &str = "  - {name: tls, port: 443, protocol: TLS, tls: {mode: Passthrough}}\n";

/// The object, None while it does not exist.
fn object(server: &ApiServer, kind: &str, name: &str) -> Option<Value> {
    let json = server
        .kubectl(&["get", kind, name, "-n", "edge", "-o", "json"], "")
        .ok()?;
    serde_json::from_str(&json).ok()
}

fn service_ports(service: &Value) -> Vec<(i64, String)> {
    service["spec"]["ports"]
        .as_array()
        .map(|ports| {
            ports
                .iter()
                .map(|p| {
                    (
                        p["port"].as_i64().unwrap_or(0),
                        p["name"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_of_strait_s_class_is_deployed_with_the_controller_s_rights() {
    let server = ApiServer::start().await.expect("the API server starts");
    let rbac = [
        include_str!("../../deploy/controller-rbac.yaml"),
        include_str!("../../deploy/gateway-deployment-rbac.yaml"),
    ]
    .join("\n---\n");
    let classes = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: strait}\nspec: {controllerName: strait.io/gateway-controller}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: other}\nspec: {controllerName: example.com/other}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: edge}\n";
    let gateways = [
        gateway("web", "strait", HTTP, "  infrastructure: {labels: {team: shop}}\n"),
        gateway("theirs", "other", HTTP, ""),
        gateway(
            "manual",
            "strait",
            HTTP,
            "  addresses: [{type: Hostname, value: gw.edge.svc.cluster.local}]\n",
        ),
    ]
    .concat();
    let applied = [ISTIO_SYSTEM, &rbac, classes, &gateways].join("\n---\n");
    server.kubectl(&["apply", "-f", "-"], &applied).expect("applied");

    let ports = Ports::free();
    let mut command = ports.command();
    command.arg("--kubeconfig").arg(controller_kubeconfig(&server)).args([
        "--deploy-gateways=true",
        "--proxy-image",
        IMAGE,
    ]);
    let mut controller = Controller::spawn(&mut command, ports);
    controller.wait_ready(Duration::from_secs(30));

    let within = Duration::from_secs(20);
    let deployment = wait_for("the Deployment web-strait", within, || {
        object(&server, "deployment", "web-strait")
    });
    let uid = json_of(
        &server,
        &["get", "gateway.gateway.networking.k8s.io", "web", "-n", "edge"],
    )["metadata"]["uid"]
        .clone();
    let owner = &deployment["metadata"]["ownerReferences"][0];
    assert_eq!((owner["kind"].as_str(), &owner["uid"]), (Some("Gateway"), &uid));
    let pod = &deployment["spec"]["template"];
    assert_eq!(
        pod["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"],
        "web"
    );
    assert_eq!(pod["metadata"]["labels"]["team"], "shop");
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["image"], IMAGE);
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        args.contains(&"--controller=strait-controller.istio-system.svc:15010"),
        "{args:?}"
    );
    assert!(
        args.contains(&"--labels=gateway.networking.k8s.io/gateway-name=web"),
        "{args:?}"
    );
    let service = object(&server, "service", "web-strait").expect("the Service");
    assert_eq!(service["spec"]["type"], "LoadBalancer");
    assert_eq!(
        service["spec"]["selector"],
        serde_json::json!({"gateway.networking.k8s.io/gateway-name": "web"})
    );
    assert_eq!(
        service_ports(&service),
        [(80, "http-80".to_string()), (15021, "status-port".to_string())]
    );
    assert!(object(&server, "serviceaccount", "web-strait").is_some());
    // Other controllers' Gateways and Gateways deployed by hand get nothing.
    assert!(object(&server, "deployment", "theirs-other").is_none());
    assert!(object(&server, "deployment", "manual-strait").is_none());

    // Someone scales the gateway; then the Gateway gains a listener: the Service
    // follows, and the replicas stay as they were set.
    server
        .kubectl(
            &["scale", "deployment", "web-strait", "-n", "edge", "--replicas", "3"],
            "",
        )
        .expect("scaled");
    server
        .kubectl(
            &["apply", "-f", "-"],
            &gateway(
                "web",
                "strait",
                &format!("{HTTP}{TLS}"),
                "  infrastructure: {labels: {team: shop}}\n",
            ),
        )
        .expect("applied");
    wait_for("port 443 in the Service", within, || {
        let ports = service_ports(&object(&server, "service", "web-strait")?);
        ports.iter().any(|(p, n)| *p == 443 && n == "tls-443").then_some(())
    });
    let deployment = object(&server, "deployment", "web-strait").expect("the Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    controller.assert_running();
    drop(controller);
    server.stop().expect("the API server stops cleanly");
}
