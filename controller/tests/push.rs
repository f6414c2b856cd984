//! The `strait-controller` binary on a folder, with a proxy speaking the push
//! protocol over a real connection (this test is that proxy: it answers as it
//! likes, which a gateway would not), and `straitctl proxy-status --controller`
//! reading what the controller knows; then the binary reading a real API server
//! (`--kubeconfig`). Gateways following a real controller are tested in the
//! gateway crate (`tests/e2e/controller.rs`, `controller_kube.rs`).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{
    controller_kubeconfig, files, http_get, jsonpath, lease_holder, published_root, virtual_service, wait_for,
    Controller, Proxy, BACKEND, GATEWAY, ISTIO_SYSTEM,
};
use strait_push::proto;
use strait_push::proto::controller_message::Kind as Incoming;
use strait_push::proto::proxy_message::Kind as Outgoing;

/// The istio ConfigMap: one trusted proxy in front of the gateways.
const MESH: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n    defaultConfig: {gatewayTopology: {numTrustedProxies: 1}}\n";

/// VirtualService `app` for `host` and the ServiceEntry it routes to.
fn vs(host: &str) -> String {
    format!("{}---\n{BACKEND}", virtual_service("app", host, "backend.example.com"))
}

/// Starts `strait-controller` on a folder.
fn on_folder(dir: &Path) -> Controller {
    Controller::start(["--config-dir".as_ref(), dir.as_os_str()])
}

/// `straitctl proxy-status --controller` on `controller`'s HTTP port.
fn straitctl_status(controller: &Controller) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_straitctl"))
        .args([
            "proxy-status",
            "--controller",
            &format!("127.0.0.1:{}", controller.http),
        ])
        .output()
        .expect("run straitctl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `straitctl proxy-status` shows `proxy` as `state`; returns the output.
fn wait_for_status(controller: &Controller, proxy: &str, state: &str) -> String {
    wait_for(state, Duration::from_secs(10), || {
        let s = straitctl_status(controller);
        s.lines()
            .any(|l| l.starts_with(proxy) && l.contains(state))
            .then_some(s)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_pushes_the_folder_and_shows_the_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("gateway.yaml"), GATEWAY).expect("write");
    std::fs::write(dir.path().join("app.yaml"), vs("a.example.com")).expect("write");
    let controller = on_folder(dir.path());
    let mut proxy = Proxy::connect(controller.push, "gw-test").await;

    let config = proxy.config().await;
    assert_eq!(files(&config), ["app.yaml", "gateway.yaml"]);
    assert_eq!(config.mesh_config, None);
    proxy
        .answer(Outgoing::Ack(proto::Ack {
            version: config.version,
        }))
        .await;
    let status = wait_for_status(&controller, "gw-test", "SYNCED");
    assert!(status.contains(&format!("{} (config)", config.version)), "{status}");

    std::fs::write(dir.path().join("app.yaml"), vs("b.example.com")).expect("write");
    let changed = proxy.config().await;
    assert!(changed.version > config.version);
    // After an ACK, a change is sent as a delta: the changed file only.
    assert_eq!(changed.base_version, config.version);
    assert_eq!(files(&changed), ["app.yaml"]);
    assert!(changed.removed.is_empty());
    let diagnostic = "app.yaml:1:1: error[invalid-certificate] refused by this proxy";
    proxy
        .answer(Outgoing::Nack(proto::Nack {
            version: changed.version,
            diagnostics: vec![diagnostic.into()],
        }))
        .await;
    let status = wait_for_status(&controller, "gw-test", "NACK");
    assert!(
        status.contains(&format!("gw-test refused version {}:\n  {diagnostic}", changed.version)),
        "{status}"
    );
    let metrics = controller.metrics();
    assert!(
        metrics.contains("pilot_total_xds_rejects{type=\"config\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("pilot_xds 1"), "{metrics}");
    assert!(metrics.contains("pilot_xds_pushes{type=\"config\"} 2"), "{metrics}");

    drop(proxy);
    wait_for("the proxy gone", Duration::from_secs(10), || {
        let (_, body) = http_get(controller.http, "/debug/proxies")?;
        let report: serde_json::Value = serde_json::from_str(&body).ok()?;
        report["proxies"].as_array().is_some_and(Vec::is_empty).then_some(body)
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_reads_the_cluster_a_kubeconfig_names() {
    let server = strait_controller::testing::ApiServer::start()
        .await
        .expect("the API server starts");
    let applied = [ISTIO_SYSTEM, MESH, GATEWAY, &vs("a.example.com")].join("\n---\n");
    server.kubectl(&["apply", "-f", "-"], &applied).expect("applied");
    let controller = Controller::start(["--kubeconfig".as_ref(), server.kubeconfig().as_os_str()]);
    let mut proxy = Proxy::connect(controller.push, "gw-kube").await;

    let config = proxy.config().await;
    let files = files(&config);
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
    let changed = proxy.config().await;
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
    let applied = [ISTIO_SYSTEM, rbac, MESH, GATEWAY, &vs("a.example.com")].join("\n---\n");
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
    let kubeconfig = controller_kubeconfig(&server);
    // Ready means every kind was listed: with a missing right it would not be.
    let controller = Controller::start(["--kubeconfig".as_ref(), kubeconfig.as_os_str()]);
    let mut proxy = Proxy::connect(controller.push, "gw-rbac").await;
    let config = proxy.config().await;
    let files = files(&config);
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
    let root = wait_for("the root ConfigMap in default", Duration::from_secs(10), || {
        published_root(&server, "default")
    });
    strait_push::tls::connect(
        &format!("127.0.0.1:{}", controller.secure),
        &root,
        "strait-controller.istio-system.svc",
    )
    .await
    .expect("the TLS port answers with a certificate of the published root");
    // With these rights it holds the Lease and writes status.
    wait_for("the Lease held", Duration::from_secs(10), || {
        Some(lease_holder(&server)).filter(|holder| !holder.is_empty())
    });
    wait_for("status on the VirtualService", Duration::from_secs(10), || {
        jsonpath(
            &server,
            &["get", "virtualservice", "app", "-n", "istio-system"],
            "{.status.conditions[0].type}",
        )
        .filter(|t| t == "Reconciled")
    });
    // It watches that ConfigMap (a watch by name): deleted, it comes back.
    server
        .kubectl(&["delete", "configmap", "istio-ca-root-cert", "-n", "default"], "")
        .expect("deleted");
    let restored = wait_for("the root ConfigMap back in default", Duration::from_secs(10), || {
        published_root(&server, "default")
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
    let controller = on_folder(dir.path());
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
    assert_eq!(files(whole), ["a.yaml", "b.yaml", "c.yaml", "gateway.yaml"]);
    let a = std::fs::read(dir.path().join("a.yaml")).expect("read");
    assert_eq!(whole.documents[0].text, a);
    // Acknowledged as one version, once whole.
    proxy
        .answer(Outgoing::Ack(proto::Ack {
            version: parts[0].version,
        }))
        .await;
    wait_for_status(&controller, "gw-parts", "SYNCED");
}
