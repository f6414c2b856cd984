//! Strait as Istio's egress gateway: a Gateway selecting `istio: egressgateway`,
//! a ServiceEntry for the external host resolved by DNS, and TLS originated by a
//! DestinationRule. The "external" service is a second Strait terminating TLS
//! with its own certificate in front of an echo backend.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_gateway_originates_tls_to_a_dns_resolved_service_entry() {
    let backend = echo("external", "v1").await;
    let cert = TestCert::new(&["api.external.test"]);
    let (external, _external_dir) = start_with(&[
        ("external.yaml", EXTERNAL),
        ("backend.yaml", &backend_entry(&[("v1", backend.addr.port())])),
        ("secret.yaml", &cert.secret_yaml("external-tls", "default")),
    ]);

    let ca_dir = tempfile::tempdir().expect("tempdir");
    let ca_file = ca_dir.path().join("ca.pem");
    std::fs::write(&ca_file, &cert.cert_pem).expect("write ca");
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
    let (status, body) = get_json(&c, &format!("http://api.external.test:{}/v1/items", egress.http), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "external");
    assert_eq!(body["path"], "/v1/items");
    assert_eq!(
        body["headers"]["x-forwarded-proto"], "https",
        "the external side was reached over TLS"
    );

    // Without the private CA, the external certificate is not trusted: no request leaves.
    let (status, _) = get_json(&c, &format!("http://untrusted.external.test:{}/", egress.http), &[]).await;
    assert_eq!(status, 503);

    let dump = egress.config_dump();
    let clusters = dump["snapshot"]["clusters"].as_array().expect("clusters");
    let origination = clusters
        .iter()
        .find(|c| c["name"] == "outbound|443||api.external.test")
        .expect("cluster");
    assert_eq!(origination["policy"]["tls"]["sni"], "api.external.test");
    assert_eq!(origination["endpoints"][0]["hostname"], "localhost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_only_refuses_hosts_outside_the_registry() {
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: out, namespace: default}\nspec:\n  hosts: [out.example.com]\n  gateways: [gw]\n  http:\n  - route: [{destination: {host: api.unknown.test}}]\n";
    let config = http_gateway("[out.example.com]") + vs;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("out.yaml"), &config).expect("write");
    let mesh_dir = tempfile::tempdir().expect("tempdir");
    let mesh = mesh_dir.path().join("mesh.yaml");

    // ALLOW_ANY (the default): no cluster for the host, 503.
    let gw = Gateway::start(dir.path(), &[]);
    let c = client(&[("out.example.com", gw.http)], &[]);
    let (status, _) = get_json(&c, &format!("http://out.example.com:{}/", gw.http), &[]).await;
    assert_eq!(status, 503);
    drop(gw);

    // REGISTRY_ONLY: refused as Envoy's BlackHoleCluster does.
    std::fs::write(&mesh, "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n").expect("write");
    let mesh_arg = mesh.display().to_string();
    let gw = Gateway::start(dir.path(), &["--mesh-config", &mesh_arg]);
    let c = client(&[("out.example.com", gw.http)], &[]);
    let (status, _) = get_json(&c, &format!("http://out.example.com:{}/", gw.http), &[]).await;
    assert_eq!(status, 502);
    drop(gw);

    // A bad mesh config stops the start with its position.
    std::fs::write(&mesh, "outboundTrafficPolicy:\n  mode: SOMETIMES\n").expect("write");
    let log = Gateway::try_start(dir.path(), &["--mesh-config", &mesh_arg])
        .err()
        .expect("a bad mesh config is refused");
    assert!(log.contains("mesh.yaml:2:3") && log.contains("SOMETIMES"), "{log}");
}
