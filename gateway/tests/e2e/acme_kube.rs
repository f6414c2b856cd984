//! ACME in Kubernetes mode, against Pebble and a real API server: two controller
//! replicas elect a leader, which orders the certificates the Gateways annotated
//! `strait.io/acme` ask for and writes them to the Secrets their `credentialName`
//! names; each replica has a gateway following it, and both serve the issued
//! certificates. Pebble validates against the gateway of the replica that does not
//! lead (HTTP-01 and TLS-ALPN-01): the answers reach it through the API server.
//! The leader is killed; the other replica takes over and orders again with the
//! account the first one created.

use std::time::{Duration, Instant};

use base64::Engine as _;
use strait_controller::acme::AcmeFlags;
use strait_controller::kube_source::KubeSource;
use strait_controller::leader::LeaderFlags;
use strait_controller::testing::ApiServer;

use crate::acme::{config, serial, wait_served, Pebble};
use crate::controller::ControlPlane;
use crate::support::*;

const ROOT: &str = "istio-system";

/// A controller replica named `name` reading the cluster, in the election, ordering
/// certificates while it leads.
fn replica(server: &ApiServer, name: &str) -> ControlPlane {
    let client = server.client();
    let name = name.to_string();
    ControlPlane::start_with(0, move |store, controller| {
        let kube = KubeSource::new(client.clone(), store);
        controller.add_source("kubernetes", kube.run_until(controller.stop_signal()));
        let lease = LeaderFlags {
            lease_duration: Duration::from_secs(3),
            lease_renew: Duration::from_secs(1),
        };
        controller
            .elect(client.clone(), ROOT, name, &lease)
            .expect("the election starts");
        let acme = AcmeFlags {
            acme_check_interval: Duration::from_secs(1),
            acme_propagation: Duration::from_secs(2),
        };
        strait_controller::acme::start(controller, client, ROOT, &acme).expect("ACME starts");
    })
}

/// The object as JSON, None while it does not exist.
fn get(server: &ApiServer, kind: &str, ns: &str, name: &str) -> Option<serde_json::Value> {
    let json = server.kubectl(&["get", kind, name, "-n", ns, "-o", "json"], "").ok()?;
    serde_json::from_str(&json).ok()
}

fn wait_for<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn leader(server: &ApiServer) -> Option<String> {
    let lease = get(server, "lease", ROOT, "strait-controller")?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_string)
}

/// The leaf (DER) of the certificate in a TLS Secret.
fn secret_leaf(secret: &serde_json::Value) -> Vec<u8> {
    let pem = secret["data"]["tls.crt"]
        .as_str()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .expect("tls.crt");
    let der = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .expect("a certificate")
        .expect("PEM");
    der.as_ref().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_orders_into_secrets_and_every_gateway_answers_and_serves() {
    let server = ApiServer::start().await.expect("the API server starts");
    let work = tempfile::tempdir().expect("tempdir");
    let pebble_tls = TestCert::new(&["localhost"]);
    std::fs::write(work.path().join("pebble.pem"), &pebble_tls.cert_pem).expect("write");
    std::fs::write(work.path().join("pebble.key"), &pebble_tls.key_pem).expect("write");
    let [acme_port] = free_ports::<1>();
    let (mesh_file, gateways) = config(work.path(), acme_port);
    let mesh = std::fs::read_to_string(mesh_file).expect("mesh");
    let indented: String = mesh.lines().map(|l| format!("    {l}\n")).collect();
    server
        .kubectl(
            &["apply", "-f", "-"],
            &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ROOT}}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: {ROOT}}}\ndata:\n  mesh: |\n{indented}"),
        )
        .expect("mesh config applied");

    // Listeners come from the Gateways a gateway starts with, and the CA must be up
    // when the leader first orders: Pebble first, then the resources, then the rest.
    // The CA reaches only the gateway of the replica that does not lead.
    let [http, https] = free_ports::<2>();
    let pebble = Pebble::start(work.path(), acme_port, http, https, 3600);
    let root = pebble.root(&pebble_tls).await;
    server
        .kubectl(&["apply", "-f", "-"], &gateways)
        .expect("Gateways applied");
    let first = replica(&server, "strait-1");
    wait_for("strait-1 leads", Duration::from_secs(20), || {
        (leader(&server).as_deref() == Some("strait-1")).then_some(())
    });
    let second = replica(&server, "strait-2");
    let gw_other = Gateway::follow_on(&second.address(), "gw-2", &[], http, https);
    let gw_leader = Gateway::follow(&first.address(), "gw-1", &[]);

    let issued = wait_served(gw_other.https, "app.example.com", &root, None, Duration::from_secs(60)).await;
    let api = wait_served(gw_other.https, "api.example.com", &root, None, Duration::from_secs(60)).await;
    // Both gateways serve what the Secrets hold.
    let secret = get(&server, "secret", "default", "app-example-com-tls").expect("the Secret is written");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert_eq!(secret["metadata"]["annotations"]["strait.io/acme-managed"], "true");
    assert_eq!(serial(&secret_leaf(&secret)), serial(&issued));
    let from_leader = wait_served(gw_leader.https, "app.example.com", &root, None, Duration::from_secs(10)).await;
    assert_eq!(serial(&from_leader), serial(&issued));
    let api_secret = get(&server, "secret", "default", "api-example-com-tls").expect("the Secret is written");
    assert_eq!(serial(&secret_leaf(&api_secret)), serial(&api));
    let log = gw_other.log();
    assert!(
        log.contains("answered the HTTP-01 challenge"),
        "gw-2 did not answer:\n{log}"
    );
    // Answers are withdrawn once validated; accounts are kept for the next leader.
    wait_for("the challenges Secret is removed", Duration::from_secs(10), || {
        get(&server, "secret", ROOT, "strait-acme-challenges")
            .is_none()
            .then_some(())
    });
    let account = get(&server, "secret", ROOT, "strait-acme-account-pebble-http").expect("the account is kept");
    assert_eq!(account["type"], "strait.io/acme-account");

    // The leader dies; the other replica leads and orders a deleted certificate
    // again, with the same account.
    drop(first);
    server
        .kubectl(&["delete", "secret", "app-example-com-tls", "-n", "default"], "")
        .expect("deleted");
    wait_for("strait-2 leads", Duration::from_secs(20), || {
        (leader(&server).as_deref() == Some("strait-2")).then_some(())
    });
    let again = wait_served(
        gw_other.https,
        "app.example.com",
        &root,
        Some(&issued),
        Duration::from_secs(60),
    )
    .await;
    assert_ne!(serial(&again), serial(&issued));
    let after = get(&server, "secret", ROOT, "strait-acme-account-pebble-http").expect("the account is kept");
    assert_eq!(
        after["metadata"]["resourceVersion"], account["metadata"]["resourceVersion"],
        "the new leader made a new account"
    );
    drop(gw_leader);
    drop(gw_other);
    drop(second);
    drop(pebble);
    server.stop().expect("the API server stops cleanly");
}
