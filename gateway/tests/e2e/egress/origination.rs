//! An egress gateway (`istio: egressgateway`) in front of an "external" service:
//! a second Strait terminating TLS with its own certificate in front of an echo
//! backend, reached through a ServiceEntry resolved by DNS (`localhost`), with TLS
//! originated by a DestinationRule that trusts that certificate's CA.

use crate::support::*;

const EXTERNAL: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [api.external.test]
    tls: {mode: SIMPLE, credentialName: external-tls}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: external, namespace: default}
spec:
  hosts: [api.external.test]
  gateways: [edge]
  http:
  - route: [{destination: {host: backend}}]
"#;

const EGRESS: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: egress, namespace: istio-system}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [api.external.test, untrusted.external.test]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external, namespace: istio-system}
spec:
  hosts: [api.external.test, untrusted.external.test]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: https, protocol: HTTPS}]
  endpoints: [{address: localhost, ports: {https: EXTERNAL_PORT}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: via-egress, namespace: istio-system}
spec:
  hosts: [api.external.test, untrusted.external.test]
  gateways: [egress]
  http:
  - match: [{authority: {prefix: api.external.test}}]
    route: [{destination: {host: api.external.test, port: {number: 443}}}]
  - route: [{destination: {host: untrusted.external.test, port: {number: 443}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: originate-tls, namespace: istio-system}
spec:
  host: api.external.test
  trafficPolicy:
    tls: {mode: SIMPLE, caCertificates: CA_FILE, sni: api.external.test}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: system-roots, namespace: istio-system}
spec:
  host: untrusted.external.test
  trafficPolicy:
    tls: {mode: SIMPLE}
"#;

/// The external service and the egress gateway in front of it, with a client that
/// resolves both external names to the egress gateway.
struct Egress {
    egress: Gateway,
    c: reqwest::Client,
    _external: Gateway,
    _backend: strait_gateway::echo::EchoServer,
    _dirs: [tempfile::TempDir; 3],
}

impl Egress {
    async fn start() -> Egress {
        let cert = TestCert::new(&["api.external.test"]);
        let ca = cert.cert_pem.clone();
        Egress::start_with(cert, &ca).await
    }

    /// The external service serving `cert`, the egress gateway trusting `ca_pem`.
    async fn start_with(cert: TestCert, ca_pem: &str) -> Egress {
        let backend = echo("external", "v1").await;
        let (external, external_dir) = start_with(&[
            ("external.yaml", EXTERNAL),
            ("backend.yaml", &backend_entry(&[("v1", backend.addr.port())])),
            ("secret.yaml", &cert.secret_yaml("external-tls", "default")),
        ]);

        let ca_dir = tempfile::tempdir().expect("tempdir");
        let ca_file = ca_dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_pem).expect("write ca");
        let config = EGRESS
            .replace("EXTERNAL_PORT", &external.https.to_string())
            .replace("CA_FILE", &ca_file.display().to_string());
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("egress.yaml"), config).expect("write");
        let egress = Gateway::start(dir.path(), &["--labels", "istio=egressgateway"]);

        let c = client(
            &[
                ("api.external.test", egress.http),
                ("untrusted.external.test", egress.http),
            ],
            &[],
        );
        Egress {
            egress,
            c,
            _external: external,
            _backend: backend,
            _dirs: [external_dir, ca_dir, dir],
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_originated_to_the_dns_resolved_service_entry() {
    let s = Egress::start().await;
    let (status, body) = get_json(
        &s.c,
        &format!("http://api.external.test:{}/v1/items", s.egress.http),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "external");
    assert_eq!(body["path"], "/v1/items");
    assert_eq!(
        body["headers"]["x-forwarded-proto"], "https",
        "the external side was reached over TLS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_private_ca_the_external_certificate_is_not_trusted() {
    let s = Egress::start().await;
    // No request leaves; the answer says why, as Envoy's does.
    let response =
        s.c.get(format!("http://untrusted.external.test:{}/", s.egress.http))
            .send()
            .await
            .expect("an answer");
    assert_eq!(response.status(), 503);
    let body = response.text().await.unwrap_or_default();
    assert!(
        body.starts_with("upstream connect error or disconnect/reset before headers.")
            // The external side has no certificate for that name: it refuses.
            && body.contains(
                "transport failure reason: TLS_error: the server refused the handshake (received fatal alert: AccessDenied)"
            ),
        "{body}\n{}",
        s.egress.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_originating_cluster_shows_its_sni_and_hostname() {
    let s = Egress::start().await;
    let dump = s.egress.config_dump();
    let clusters = dump["snapshot"]["clusters"].as_array().expect("clusters");
    let origination = clusters
        .iter()
        .find(|c| c["name"] == "outbound|443||api.external.test")
        .expect("cluster");
    assert_eq!(origination["policy"]["tls"]["sni"], "api.external.test");
    assert_eq!(origination["endpoints"][0]["hostname"], "localhost");
}

/// `openssl req -x509` makes a self-signed certificate that also says it is a CA;
/// named as its own CA in caCertificates, the server presenting it is accepted (as
/// curl, OpenSSL and Envoy accept it), and another such certificate is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_server_certificate_named_as_its_own_ca_is_trusted() {
    let cert = TestCert::self_signed_ca(&["api.external.test"]);
    let ca = cert.cert_pem.clone();
    let s = Egress::start_with(cert, &ca).await;
    let url = format!("http://api.external.test:{}/pinned", s.egress.http);
    let (status, body) = get_json(&s.c, &url, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["headers"]["x-forwarded-proto"], "https");
    // `--check` and /config_dump say so: the server must present exactly that one.
    let warnings = s.egress.config_dump()["warnings"].to_string();
    assert!(
        warnings.contains("the server's own self-signed certificate"),
        "{warnings}"
    );

    let other = TestCert::self_signed_ca(&["api.external.test"]);
    let s = Egress::start_with(TestCert::self_signed_ca(&["api.external.test"]), &other.cert_pem).await;
    let (status, _) = get_json(&s.c, &format!("http://api.external.test:{}/pinned", s.egress.http), &[]).await;
    assert_eq!(status, 503, "another self-signed certificate is not the one trusted");
}
