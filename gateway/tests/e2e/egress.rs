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
    let config = http_gateway(&["out.example.com"])
        + &virtual_service("out", &["out.example.com"], &["gw"], &route_to("api.unknown.test"));
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

/// An HTTPS server that requires a client certificate signed by `client_ca` and
/// answers `mtls-ok` to any request.
async fn mtls_server(server: &TestCert, client_ca: &TestCert) -> u16 {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(client_ca.der.clone()))
        .expect("root");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .expect("verifier");
    let key = rustls_pemfile::private_key(&mut server.key_pem.as_bytes())
        .expect("pem")
        .expect("key");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![rustls::pki_types::CertificateDer::from(server.der.clone())], key)
        .expect("config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    let body = "mtls-ok";
                    let reply = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                    if tls.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_origination_with_files_and_a_secret() {
    let server = TestCert::new(&["mtls.external.test"]);
    let client_cert = TestCert::new(&["gateway.client"]);
    let port = mtls_server(&server, &client_cert).await;
    let certs = tempfile::tempdir().expect("tempdir");
    let file = |name: &str, pem: &str| {
        let p = certs.path().join(name);
        std::fs::write(&p, pem).expect("write");
        p.display().to_string()
    };
    let (ca, crt, key) = (
        file("ca.pem", &server.cert_pem),
        file("client.pem", &client_cert.cert_pem),
        file("client.key", &client_cert.key_pem),
    );
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: client-credential, namespace: default}}\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}  ca.crt: |\n{}",
        indent(&client_cert.cert_pem),
        indent(&client_cert.key_pem),
        indent(&server.cert_pem)
    );
    let config = http_gateway(&["files.example.com", "secret.example.com", "none.example.com"])
        + &format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: out, namespace: default}}
spec:
  hosts: [files.example.com, secret.example.com, none.example.com]
  gateways: [gw]
  http:
  - match: [{{authority: {{prefix: files.example.com}}}}]
    route: [{{destination: {{host: mtls.external.test, subset: files}}}}]
  - match: [{{authority: {{prefix: secret.example.com}}}}]
    route: [{{destination: {{host: mtls.external.test, subset: secret}}}}]
  - route: [{{destination: {{host: mtls.external.test, subset: none}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: mtls, namespace: default}}
spec:
  hosts: [mtls.external.test]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 443, name: https, protocol: HTTPS}}]
  endpoints: [{{address: 127.0.0.1, ports: {{https: {port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: mtls, namespace: default}}
spec:
  host: mtls.external.test
  subsets:
  - name: files
    trafficPolicy:
      tls: {{mode: MUTUAL, clientCertificate: {crt}, privateKey: {key}, caCertificates: {ca}}}
  - name: secret
    trafficPolicy:
      tls: {{mode: MUTUAL, credentialName: client-credential}}
  - name: none
    trafficPolicy:
      tls: {{mode: SIMPLE, caCertificates: {ca}}}
"#
        );
    let (gw, _dir) = start_with(&[("out.yaml", &config), ("secret.yaml", &secret)]);
    let hosts = ["files.example.com", "secret.example.com", "none.example.com"].map(|h| (h, gw.http));
    let c = client(&hosts, &[]);
    for host in ["files.example.com", "secret.example.com"] {
        let resp = c
            .get(format!("http://{host}:{}/", gw.http))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200, "{host}");
        assert_eq!(resp.text().await.expect("body"), "mtls-ok");
    }
    // Without a client certificate the server refuses the handshake.
    let resp = c
        .get(format!("http://none.example.com:{}/", gw.http))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 503);
}
