//! Automated deployment of Gateway API gateways (Kubernetes mode, by the leader, with
//! `--deploy-gateways`), as Istio does it: for each Gateway of one of Strait's
//! GatewayClasses, a ServiceAccount, a Deployment running `strait-gateway` that follows
//! this controller and a Service exposing the listeners' ports, all named
//! `<gateway>-<class>` in the Gateway's namespace, owned by the Gateway (the
//! cluster's garbage collector removes them with it), labelled as
//! `spec.infrastructure` asks. The gateway pods carry the
//! `gateway.networking.k8s.io/gateway-name` label, which is how a proxy knows the
//! Gateway it serves. A Gateway whose `spec.addresses` names a `Hostname` is
//! deployed by hand (Istio's manual deployment): its pods carry that label
//! themselves, and nothing is created for it.
//!
//! Objects are written by server-side apply under the controller's field manager:
//! what it sets is kept as the Gateway says, what others add (an HPA's replicas,
//! annotations) stays.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use kube::api::Api;
use kube::Client;
use serde_json::{json, Value};
use strait_config::bundle::Bundle;
use strait_config::resources::gateway_api::{CONTROLLER_NAME, GATEWAY_NAME_LABEL};
use strait_config::resources::Spec;
use tokio::sync::watch;

use crate::controller::{until_stopped, Controller};
use crate::leader::Leadership;
use crate::store::Store;

/// Label on every object made here.
pub const MANAGED_LABEL: &str = "gateway.strait.io/managed";

/// The port of the gateway's readiness (`/healthz/ready`), in the Service as Istio's.
const HEALTH_PORT: u16 = 15021;

/// The command-line flags of automated deployment.
#[derive(clap::Args, Debug, Clone)]
pub struct DeployFlags {
    /// Deploy a gateway (Deployment, Service, ServiceAccount) for each Gateway API
    /// Gateway of Strait's classes; needs the rights of deploy/gateway-deployment-rbac.yaml.
    #[arg(long, env = "STRAIT_DEPLOY_GATEWAYS", default_value_t = false, action = clap::ArgAction::Set)]
    pub deploy_gateways: bool,
    /// The push address the deployed gateways follow (`strait-gateway --controller`).
    #[arg(
        long,
        env = "STRAIT_GATEWAY_CONTROLLER_ADDRESS",
        default_value = "strait-controller.istio-system.svc:15010"
    )]
    pub gateway_controller_address: String,
}

/// A Gateway that gets a deployment, as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its GatewayClass.
    pub class: String,
    /// Its uid (the owner of what is made for it), when the source gave one.
    pub uid: Option<String>,
    /// The listeners' ports with their protocols, each port once.
    pub ports: Vec<(u16, String)>,
    /// `spec.infrastructure.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.infrastructure.annotations`.
    pub annotations: BTreeMap<String, String>,
}

impl Deployed {
    /// The name of what is made for it: `<gateway>-<class>`.
    pub fn object_name(&self) -> String {
        format!("{}-{}", self.name, self.class)
    }
}

/// The Gateways of `bundle` that get a deployment: those of a GatewayClass whose
/// controller is Strait's, but those deployed by hand.
pub fn deployed(bundle: &Bundle) -> Vec<Deployed> {
    let classes: Vec<&str> = bundle
        .of(|s| match s {
            Spec::GatewayClass(c) => Some(c),
            _ => None,
        })
        .filter(|(_, c)| c.controller_name == CONTROLLER_NAME)
        .map(|(e, _)| e.resource.name.as_str())
        .collect();
    let gateways = bundle.of(|s| match s {
        Spec::KubeGateway(g) => Some(g),
        _ => None,
    });
    let mut out = Vec::new();
    for (entry, gw) in gateways {
        if !classes.contains(&gw.gateway_class_name.as_str()) {
            continue;
        }
        let by_hand = gw
            .addresses
            .iter()
            .any(|a| a.get("type").and_then(Value::as_str) == Some("Hostname"));
        if by_hand {
            continue;
        }
        let mut ports: Vec<(u16, String)> = Vec::new();
        for l in &gw.listeners {
            let Ok(port) = u16::try_from(l.port) else { continue };
            if !ports.iter().any(|(p, _)| *p == port) {
                ports.push((port, l.protocol.to_ascii_lowercase()));
            }
        }
        let map = |field: &str| -> BTreeMap<String, String> {
            gw.infrastructure
                .as_ref()
                .and_then(|i| i.get(field))
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                        .collect()
                })
                .unwrap_or_default()
        };
        out.push(Deployed {
            namespace: entry.resource.namespace.clone(),
            name: entry.resource.name.clone(),
            class: gw.gateway_class_name.clone(),
            uid: entry
                .resource
                .metadata
                .other
                .get("uid")
                .and_then(Value::as_str)
                .map(str::to_string),
            ports,
            labels: map("labels"),
            annotations: map("annotations"),
        });
    }
    out
}

/// The ServiceAccount, Deployment and Service of `d`, gateways running `image` and
/// following `controller`.
pub fn objects(d: &Deployed, image: &str, controller: &str) -> [Value; 3] {
    let name = d.object_name();
    let mut labels = d.labels.clone();
    labels.insert(GATEWAY_NAME_LABEL.to_string(), d.name.clone());
    labels.insert(MANAGED_LABEL.to_string(), "strait".to_string());
    let selector = json!({ GATEWAY_NAME_LABEL: d.name });
    let owner: Vec<Value> = d
        .uid
        .iter()
        .map(|uid| {
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "name": d.name,
                   "uid": uid, "controller": true, "blockOwnerDeletion": true})
        })
        .collect();
    let metadata = json!({
        "name": name, "namespace": d.namespace, "labels": labels,
        "annotations": d.annotations, "ownerReferences": owner,
    });
    let container_ports: Vec<Value> = d
        .ports
        .iter()
        .map(|(p, _)| json!({"containerPort": p, "protocol": "TCP"}))
        .chain(std::iter::once(
            json!({"name": "status-port", "containerPort": HEALTH_PORT, "protocol": "TCP"}),
        ))
        .collect();
    let service_ports: Vec<Value> = d
        .ports
        .iter()
        .map(|(p, proto)| json!({"name": format!("{proto}-{p}"), "port": p, "targetPort": p, "protocol": "TCP"}))
        .chain(std::iter::once(
            json!({"name": "status-port", "port": HEALTH_PORT, "targetPort": HEALTH_PORT, "protocol": "TCP"}),
        ))
        .collect();
    let account = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata});
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": labels, "annotations": d.annotations},
                "spec": {
                    "serviceAccountName": name,
                    // The gateway calls no Kubernetes API.
                    "automountServiceAccountToken": false,
                    "securityContext": {
                        "runAsNonRoot": true, "runAsUser": 1337, "runAsGroup": 1337,
                        // Listeners bind their own ports (80, 443) without privilege,
                        // as Istio's deployed gateways do.
                        "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [{
                        "name": "gateway",
                        "image": image,
                        "command": ["strait-gateway"],
                        "args": [
                            format!("--controller={controller}"),
                            format!("--labels={GATEWAY_NAME_LABEL}={}", d.name),
                            "--admin-port=15000",
                            "--metrics-port=15020",
                            format!("--health-port={HEALTH_PORT}"),
                        ],
                        "env": [{"name": "STRAIT_NAMESPACE",
                                 "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
                        "ports": container_ports,
                        "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": HEALTH_PORT},
                                           "periodSeconds": 2, "failureThreshold": 30},
                        "securityContext": {
                            "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }],
                },
            },
        },
    });
    let service = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": metadata,
        "spec": {"type": "LoadBalancer", "selector": selector, "ports": service_ports},
    });
    [account, deployment, service]
}

/// Why automated deployment cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No image to run.
    #[error("--deploy-gateways needs the image to run (--proxy-image)")]
    NoImage,
}

/// Deploys gateways for the store's Gateways while `controller` leads.
pub fn start(controller: &mut Controller, client: Client, flags: &DeployFlags, image: &str) -> Result<(), Error> {
    if image.is_empty() {
        return Err(Error::NoImage);
    }
    let task = run(
        client,
        controller.store.clone(),
        controller.leadership(),
        image.to_string(),
        flags.gateway_controller_address.clone(),
        controller.stop_signal(),
    );
    controller.add_source("gateway deployment", task);
    Ok(())
}

async fn run(
    client: Client,
    store: Arc<Store>,
    leadership: Leadership,
    image: String,
    address: String,
    mut stop: watch::Receiver<bool>,
) -> Result<(), std::convert::Infallible> {
    let mut states = store.subscribe();
    let mut leader = leadership.subscribe();
    // What was applied per Gateway: unchanged ones are not written again.
    let mut applied: HashMap<(String, String), [Value; 3]> = HashMap::new();
    loop {
        if leadership.is_leader() {
            let state = store.current();
            for d in deployed(&state.loaded.bundle) {
                let objects = objects(&d, &image, &address);
                let key = (d.namespace.clone(), d.name.clone());
                if applied.get(&key) == Some(&objects) {
                    continue;
                }
                match apply(&client, &d.namespace, &objects).await {
                    Ok(()) => {
                        log::info!("Gateway {}/{}: deployed as {}", d.namespace, d.name, d.object_name());
                        applied.insert(key, objects);
                    }
                    Err(e) => log::warn!("Gateway {}/{}: deploying {}: {e}", d.namespace, d.name, d.object_name()),
                }
            }
        }
        tokio::select! {
            _ = until_stopped(&mut stop) => return Ok(()),
            _ = states.changed() => {}
            // A new term writes everything once (another leader may have written).
            _ = leader.changed() => applied.clear(),
        }
    }
}

async fn apply(
    client: &Client,
    namespace: &str,
    [account, deployment, service]: &[Value; 3],
) -> Result<(), kube::Error> {
    let name = |v: &Value| v["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), namespace);
    crate::controller::apply(&accounts, &name(account), account).await?;
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
    crate::controller::apply(&deployments, &name(deployment), deployment).await?;
    let services = Api::<Service>::namespaced(client.clone(), namespace);
    crate::controller::apply(&services, &name(service), service).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(yaml: &str) -> Bundle {
        let mut loaded = strait_config::Loaded::default();
        strait_config::bundle::load_text(&mut loaded, "test.yaml", yaml);
        loaded.bundle
    }

    const CLASSES: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: strait}\nspec: {controllerName: strait.io/gateway-controller}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: other}\nspec: {controllerName: example.com/other}\n";

    fn gateway(name: &str, class: &str, extra: &str) -> String {
        format!("---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: edge, uid: u-{name}}}\nspec:\n  gatewayClassName: {class}\n  listeners:\n  - {{name: http, port: 80, protocol: HTTP}}\n  - {{name: https, port: 443, protocol: HTTPS, tls: {{certificateRefs: [{{name: c}}]}}}}\n  - {{name: https-2, port: 443, protocol: HTTPS, hostname: b.example.com, tls: {{certificateRefs: [{{name: c}}]}}}}\n{extra}")
    }

    #[test]
    fn gateways_of_strait_classes_are_deployed_unless_by_hand() {
        let yaml = [
            CLASSES.to_string(),
            gateway(
                "web",
                "strait",
                "  infrastructure: {labels: {team: shop}, annotations: {a: b}}\n",
            ),
            gateway("theirs", "other", ""),
            gateway(
                "manual",
                "strait",
                "  addresses: [{type: Hostname, value: gw.edge.svc.cluster.local}]\n",
            ),
        ]
        .concat();
        let list = deployed(&bundle(&yaml));
        assert_eq!(list.len(), 1, "{list:?}");
        let d = &list[0];
        assert_eq!(d.object_name(), "web-strait");
        assert_eq!(d.uid.as_deref(), Some("u-web"));
        assert_eq!(d.ports, [(80, "http".to_string()), (443, "https".to_string())]);
        assert_eq!(d.labels.get("team").map(String::as_str), Some("shop"));

        let [account, deployment, service] = objects(d, "registry.example.com/strait:1", "ctl:15010");
        assert_eq!(account["metadata"]["ownerReferences"][0]["uid"], "u-web");
        let pod = &deployment["spec"]["template"];
        assert_eq!(pod["metadata"]["labels"][GATEWAY_NAME_LABEL], "web");
        assert_eq!(pod["metadata"]["labels"]["team"], "shop");
        let args = &pod["spec"]["containers"][0]["args"];
        assert_eq!(args[0], "--controller=ctl:15010");
        assert_eq!(args[1], "--labels=gateway.networking.k8s.io/gateway-name=web");
        assert_eq!(deployment["spec"]["selector"]["matchLabels"][GATEWAY_NAME_LABEL], "web");
        let ports: Vec<(i64, &str)> = service["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .map(|p| (p["port"].as_i64().unwrap_or(0), p["name"].as_str().unwrap_or("")))
            .collect();
        assert_eq!(ports, [(80, "http-80"), (443, "https-443"), (15021, "status-port")]);
    }
}
