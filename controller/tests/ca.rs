//! The controller's CA against a real API server, as a workload meets it: a
//! service account token from the TokenRequest API, a CSR sent with
//! `strait_push::ca_client` over real TLS to the `strait-controller` binary's TLS
//! port, the chain checked as a TLS peer checks it (rustls-webpki) against the root
//! the controller published in the namespace's `istio-ca-root-cert` ConfigMap.

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{Controller, Ports, Proxy, GATEWAY};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use kube::api::{Api, PostParams};
use rustls::pki_types::{CertificateDer, UnixTime};
use strait_controller::testing::ApiServer;
use strait_push::ca_client::CaClient;
use strait_push::csr::{spiffe_id, workload_csr};
use strait_push::proto;
use x509_parser::extensions::GeneralName;

const SERVER_NAME: &str = "strait-controller.istio-system.svc";

/// Polls `check` every 50 ms for up to 20 s.
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "{what} never happened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts `strait-controller --kubeconfig` with `flags` besides its ports; does not
/// wait.
fn spawn(kubeconfig: &Path, flags: &[&str]) -> Controller {
    let ports = Ports::free();
    Controller::spawn(ports.command().arg("--kubeconfig").arg(kubeconfig).args(flags), ports)
}

/// Waits until `controller` has read the cluster and its TLS port accepts.
async fn ready(mut controller: Controller) -> Controller {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(controller.is_ready() && TcpStream::connect(("127.0.0.1", controller.secure)).is_ok()) {
        assert!(Instant::now() < deadline, "the controller did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    controller
}

/// Starts `strait-controller --kubeconfig` with `flags`; returns once it is ready.
async fn start(kubeconfig: &Path, flags: &[&str]) -> Controller {
    ready(spawn(kubeconfig, flags)).await
}

/// The address of `controller`'s TLS port.
fn addr(controller: &Controller) -> String {
    format!("127.0.0.1:{}", controller.secure)
}

/// The API server with namespaces `istio-system` and `shop`, and service accounts
/// `web` and `other` in `shop`.
async fn cluster() -> ApiServer {
    let server = ApiServer::start().await.expect("the API server starts");
    let objects = "apiVersion: v1\nkind: Namespace\nmetadata: {name: istio-system}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: web, namespace: shop}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: other, namespace: shop}\n";
    server.kubectl(&["apply", "-f", "-"], objects).expect("applied");
    server
}

/// A token of `namespace/account` from the TokenRequest API, for `audience` (None:
/// the API server's own).
async fn token(server: &ApiServer, namespace: &str, account: &str, audience: Option<&str>) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(server.client(), namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(audience.map(|a| vec![a.to_string()]).unwrap_or_default()),
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    accounts
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .expect("a token")
        .status
        .and_then(|s| s.token)
        .expect("a token in the status")
}

/// The root the controller published in `namespace`.
async fn published_root(server: &ApiServer, namespace: &str) -> String {
    let config_maps: Api<ConfigMap> = Api::namespaced(server.client(), namespace);
    eventually(&format!("the root ConfigMap in {namespace}"), async || {
        let config_map = config_maps.get_opt("istio-ca-root-cert").await.ok()??;
        config_map.data?.get("root-cert.pem").cloned()
    })
    .await
}

fn ders(pem: &str) -> Vec<CertificateDer<'static>> {
    strait_push::tls::certificates(pem).expect("PEM certificates")
}

/// Checks `chain` (leaf first) as a TLS peer would, trusting `root_pem` only.
fn verify(chain: &[String], root_pem: &str) -> Result<(), webpki::Error> {
    let roots = ders(root_pem);
    let anchors: Vec<_> = roots
        .iter()
        .map(|r| webpki::anchor_from_trusted_cert(r).expect("a trust anchor"))
        .collect();
    let leaf = ders(&chain[0]).remove(0);
    let intermediates: Vec<CertificateDer<'static>> = chain[1..].iter().flat_map(|p| ders(p)).collect();
    let leaf = webpki::EndEntityCert::try_from(&leaf)?;
    for usage in [webpki::KeyUsage::client_auth(), webpki::KeyUsage::server_auth()] {
        leaf.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            UnixTime::now(),
            usage,
            None,
            None,
        )?;
    }
    Ok(())
}

/// The leaf's URI SANs and its remaining validity in seconds.
fn leaf_facts(chain: &[String]) -> (Vec<String>, i64) {
    let der = ders(&chain[0]).remove(0);
    let (_, leaf) = x509_parser::parse_x509_certificate(&der).expect("X.509");
    let names = leaf
        .subject_alternative_name()
        .expect("a well-formed SAN")
        .map(|san| {
            san.value
                .general_names
                .iter()
                .map(|n| match n {
                    GeneralName::URI(uri) => format!("URI:{uri}"),
                    other => format!("{other:?}"),
                })
                .collect()
        })
        .unwrap_or_default();
    let remaining = leaf.validity().not_after.timestamp() - time::OffsetDateTime::now_utc().unix_timestamp();
    (names, remaining)
}

fn assert_close(seconds: i64, expected: u64) {
    let expected = i64::try_from(expected).expect("small");
    assert!(
        (expected - 60..=expected).contains(&seconds),
        "{seconds}s, expected {expected}s"
    );
}

/// A CSR for `namespace/account` in the default trust domain.
fn csr_for(namespace: &str, account: &str) -> String {
    workload_csr(&spiffe_id("cluster.local", namespace, account))
        .expect("a CSR")
        .csr_pem
}

/// The same JWT with its payload's `web` turned into `other`: the API server's
/// signature no longer holds.
fn tampered(token: &str) -> String {
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let payload = String::from_utf8(engine.decode(&parts[1]).expect("base64url")).expect("JSON");
    assert!(payload.contains("system:serviceaccount:shop:web"), "{payload}");
    parts[1] = engine.encode(
        payload
            .replace("shop:web", "shop:other")
            .replace("\"web\"", "\"other\""),
    );
    parts.join(".")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_gets_a_certificate_for_its_own_identity_only() {
    let server = cluster().await;
    let controller = start(server.kubeconfig(), &["--max-workload-cert-ttl=48h"]).await;
    let root = published_root(&server, "shop").await;
    let ca = CaClient::connect(&addr(&controller), &root, SERVER_NAME)
        .await
        .expect("the TLS port answers for its service name");
    let web = token(&server, "shop", "web", Some("istio-ca")).await;
    let hour = Duration::from_secs(3600);

    let chain = ca.sign(&web, &csr_for("shop", "web"), hour).await.expect("signed");
    assert_eq!(chain.len(), 2, "leaf and root: {chain:?}");
    assert_eq!(chain[1], root, "the chain ends at the published root");
    verify(&chain, &root).expect("the chain verifies against the published root");
    let (names, remaining) = leaf_facts(&chain);
    assert_eq!(names, ["URI:spiffe://cluster.local/ns/shop/sa/web"]);
    assert_close(remaining, 3600);
    // Not what another CA's root vouches for.
    let (other_root, _) = strait_controller::ca::authority::generate_root().expect("a root");
    assert!(verify(&chain, &other_root).is_err());

    // Longer than the maximum: shortened to it; none asked: the default (24h).
    let capped = ca
        .sign(&web, &csr_for("shop", "web"), Duration::from_secs(200 * 86_400))
        .await
        .expect("signed");
    assert_close(leaf_facts(&capped).1, 48 * 3600);
    let default = ca
        .sign(&web, &csr_for("shop", "web"), Duration::ZERO)
        .await
        .expect("signed");
    assert_close(leaf_facts(&default).1, 24 * 3600);

    // A token of the API server's own audience (a Pod's default token) is accepted.
    let default_audience = token(&server, "shop", "web", None).await;
    ca.sign(&default_audience, &csr_for("shop", "web"), hour)
        .await
        .expect("the default audience is accepted");

    // Another identity than the token's: refused.
    let refused = ca
        .sign(&web, &csr_for("shop", "other"), hour)
        .await
        .expect_err("web asking for other");
    assert_eq!(refused.code(), Some(tonic::Code::PermissionDenied), "{refused}");
    assert!(refused.to_string().contains("sa/other"), "{refused}");
    let refused = ca
        .sign(&web, &csr_for("elsewhere", "web"), hour)
        .await
        .expect_err("another namespace");
    assert_eq!(refused.code(), Some(tonic::Code::PermissionDenied), "{refused}");

    // Tokens the API server does not vouch for: refused, whatever they claim.
    for bad in ["garbage".to_string(), tampered(&web)] {
        let refused = ca
            .sign(&bad, &csr_for("shop", "other"), hour)
            .await
            .expect_err("a bad token");
        assert_eq!(refused.code(), Some(tonic::Code::Unauthenticated), "{refused}");
    }
    let foreign = token(&server, "shop", "web", Some("some-other-service")).await;
    let refused = ca
        .sign(&foreign, &csr_for("shop", "web"), hour)
        .await
        .expect_err("a token for another audience");
    assert_eq!(refused.code(), Some(tonic::Code::Unauthenticated), "{refused}");

    let refused = ca.sign(&web, "garbage", hour).await.expect_err("no CSR");
    assert_eq!(refused.code(), Some(tonic::Code::InvalidArgument), "{refused}");

    let metrics = controller.metrics();
    for line in [
        "citadel_server_csr_count 10",
        "citadel_server_success_cert_issuance_count 4",
        "citadel_server_authentication_failure_count 3",
        "citadel_server_csr_parsing_err_count 1",
        "strait_ca_refused_total{reason=\"identity\"} 2",
        "strait_ca_refused_total{reason=\"token\"} 3",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }

    // The mesh config's trust domain names the identities from then on.
    let mesh = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n    trustDomain: example.org\n";
    server.kubectl(&["apply", "-f", "-"], mesh).expect("applied");
    let in_example_org = workload_csr(&spiffe_id("example.org", "shop", "web"))
        .expect("a CSR")
        .csr_pem;
    let chain = eventually("the new trust domain", async || {
        ca.sign(&web, &in_example_org, hour).await.ok()
    })
    .await;
    assert_eq!(leaf_facts(&chain).0, ["URI:spiffe://example.org/ns/shop/sa/web"]);
    let refused = ca
        .sign(&web, &csr_for("shop", "web"), hour)
        .await
        .expect_err("the old trust domain");
    assert_eq!(refused.code(), Some(tonic::Code::PermissionDenied), "{refused}");

    drop(controller);
    server.stop().expect("the API server stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_port_serves_the_push_service_and_the_root_is_kept_in_every_namespace() {
    let server = cluster().await;
    server.kubectl(&["apply", "-f", "-"], GATEWAY).expect("applied");
    let controller = start(
        server.kubeconfig(),
        &[
            "--tls-ip-addresses=127.0.0.1",
            "--tls-dns-names=localhost,strait.example",
        ],
    )
    .await;
    let root = published_root(&server, "istio-system").await;

    // A proxy's Hello over TLS, checked under the IP address, gets its Config.
    let channel = strait_push::tls::connect(&addr(&controller), &root, "127.0.0.1")
        .await
        .expect("TLS under the IP address");
    let mut proxy = Proxy::over(channel, "gw-tls").await;
    let config = proxy.config().await;
    assert!(
        config
            .documents
            .iter()
            .any(|d| d.file == "kubernetes/Gateway/istio-system/gw"),
        "{:?}",
        config.documents.iter().map(|d| &d.file).collect::<Vec<_>>()
    );

    // The certificate names the extra DNS names; not a name it lacks, and not for a
    // client trusting another root.
    strait_push::tls::connect(&addr(&controller), &root, "strait.example")
        .await
        .expect("an extra DNS name");
    let wrong_name = strait_push::tls::connect(&addr(&controller), &root, "elsewhere.example").await;
    assert!(wrong_name.is_err(), "a name the certificate lacks");
    let (other_root, _) = strait_controller::ca::authority::generate_root().expect("a root");
    let wrong_root = strait_push::tls::connect(&addr(&controller), &other_root, SERVER_NAME).await;
    assert!(wrong_root.is_err(), "a client trusting another root");
    // The plaintext port is still there.
    proto::push_client::PushClient::connect(format!("http://127.0.0.1:{}", controller.push))
        .await
        .expect("plaintext push port");

    // A namespace made later gets the root; a deleted or edited ConfigMap comes back.
    server
        .kubectl(&["create", "namespace", "late"], "")
        .expect("a namespace");
    assert_eq!(published_root(&server, "late").await, root);
    server
        .kubectl(&["delete", "configmap", "istio-ca-root-cert", "-n", "shop"], "")
        .expect("deleted");
    assert_eq!(published_root(&server, "shop").await, root);
    let config_maps: Api<ConfigMap> = Api::namespaced(server.client(), "shop");
    let mut edited = config_maps.get("istio-ca-root-cert").await.expect("there");
    edited
        .data
        .get_or_insert_default()
        .insert("root-cert.pem".into(), "not a root".into());
    config_maps
        .replace("istio-ca-root-cert", &PostParams::default(), &edited)
        .await
        .expect("edited");
    eventually("the edited root put back", async || {
        let now = config_maps.get("istio-ca-root-cert").await.ok()?;
        (now.data?.get("root-cert.pem")? == &root).then_some(())
    })
    .await;
    // Not in Kubernetes' own lease namespace.
    let leases: Api<ConfigMap> = Api::namespaced(server.client(), "kube-node-lease");
    assert!(leases.get_opt("istio-ca-root-cert").await.expect("read").is_none());

    drop(controller);
    server.stop().expect("the API server stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_root_and_a_restart_keeps_it() {
    let server = cluster().await;
    // Two replicas at once: both try to create istio-ca-secret; one wins.
    let first = spawn(server.kubeconfig(), &[]);
    let second = spawn(server.kubeconfig(), &[]);
    let (first, second) = (ready(first).await, ready(second).await);
    let secrets: Api<Secret> = Api::namespaced(server.client(), "istio-system");
    let secret = secrets.get("istio-ca-secret").await.expect("the CA's Secret");
    let data = secret.data.expect("data");
    let stored = String::from_utf8(data["ca-cert.pem"].0.clone()).expect("PEM");
    assert!(data.contains_key("ca-key.pem"));
    let root = published_root(&server, "shop").await;
    assert_eq!(root, stored);

    let web = token(&server, "shop", "web", Some("istio-ca")).await;
    let sign = async |controller: &Controller| {
        let ca = CaClient::connect(&addr(controller), &root, SERVER_NAME)
            .await
            .expect("TLS with the stored root");
        ca.sign(&web, &csr_for("shop", "web"), Duration::from_secs(600))
            .await
            .expect("signed")
    };
    for controller in [&first, &second] {
        let chain = sign(controller).await;
        assert_eq!(chain.last(), Some(&stored), "every replica signs under the stored root");
        verify(&chain, &stored).expect("verifies");
    }

    drop((first, second));
    let restarted = start(server.kubeconfig(), &[]).await;
    let chain = sign(&restarted).await;
    assert_eq!(chain.last(), Some(&stored), "the same root after a restart");
    let after = secrets.get("istio-ca-secret").await.expect("the CA's Secret");
    assert_eq!(after.metadata.resource_version, secret.metadata.resource_version);

    drop(restarted);
    server.stop().expect("the API server stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_creating_the_root_at_once_end_with_the_one_stored() {
    let server = cluster().await;
    // Each skips the look-up and creates: all but one meet a conflict and read back.
    let create = || strait_controller::ca::secrets::create_self_signed(server.client(), "istio-system");
    let outcomes = futures_util::future::join_all((0..4).map(|_| create())).await;
    let secrets: Api<Secret> = Api::namespaced(server.client(), "istio-system");
    let stored = secrets.get("istio-ca-secret").await.expect("the CA's Secret");
    let stored = String::from_utf8(stored.data.expect("data")["ca-cert.pem"].0.clone()).expect("PEM");
    let mut created = 0;
    for outcome in outcomes {
        let (authority, origin) = outcome.expect("a CA, created or read back");
        assert_eq!(authority.roots_pem(), stored);
        created += usize::from(origin == strait_controller::ca::secrets::Origin::Created);
    }
    assert_eq!(created, 1, "one replica created the root");
    server.stop().expect("the API server stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugged_in_cacerts_signs_as_its_intermediate() {
    let server = cluster().await;
    // The operator's root (ECDSA) and intermediate (RSA, PKCS#1 as Istio's samples).
    let root_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Example Corp");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Example root CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let root = params.self_signed(&root_key).expect("root");
    let intermediate_key_pem = include_str!("fixtures/ca/rsa-pkcs1-key.pem");
    let intermediate_key = strait_controller::ca::keys::key_pair(intermediate_key_pem).expect("PKCS#1");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Example Corp");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Example mesh intermediate");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    params.use_authority_key_identifier_extension = true;
    let intermediate = params
        .signed_by(&intermediate_key, &root, &root_key)
        .expect("intermediate");
    let (root_pem, intermediate_pem) = (root.pem(), intermediate.pem());
    let cacerts = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("cacerts".into()),
            namespace: Some("istio-system".into()),
            ..Default::default()
        },
        string_data: Some(
            [
                ("ca-cert.pem", intermediate_pem.clone()),
                ("ca-key.pem", intermediate_key_pem.to_string()),
                ("root-cert.pem", root_pem.clone()),
                ("cert-chain.pem", format!("{intermediate_pem}{root_pem}")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        ),
        ..Default::default()
    };
    let secrets: Api<Secret> = Api::namespaced(server.client(), "istio-system");
    secrets.create(&PostParams::default(), &cacerts).await.expect("cacerts");

    let controller = start(server.kubeconfig(), &[]).await;
    let published = published_root(&server, "shop").await;
    assert_eq!(published, root_pem, "the operator's root is published");
    let ca = CaClient::connect(&addr(&controller), &published, SERVER_NAME)
        .await
        .expect("the serving certificate chains to the operator's root");
    let web = token(&server, "shop", "web", Some("istio-ca")).await;
    let chain = ca
        .sign(&web, &csr_for("shop", "web"), Duration::from_secs(3600))
        .await
        .expect("signed");
    assert_eq!(chain.len(), 3, "leaf, intermediate, root: {chain:?}");
    assert_eq!(chain[1], intermediate_pem);
    assert_eq!(chain[2], root_pem);
    verify(&chain, &root_pem).expect("the chain verifies against the operator's root");
    // The leaf is the intermediate's, not a root's of the controller's own making.
    verify(&chain[..1], &root_pem).expect_err("the leaf alone does not reach the root");
    assert!(
        secrets.get_opt("istio-ca-secret").await.expect("read").is_none(),
        "no self-signed root is made when cacerts exists"
    );

    drop(controller);
    server.stop().expect("the API server stops cleanly");
}
