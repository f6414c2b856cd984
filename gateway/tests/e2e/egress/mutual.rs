//! Mutual TLS originated towards an external HTTPS server that requires a client
//! certificate: from files named in the DestinationRule or from a Secret
//! (`credentialName`); without one, the server refuses the handshake.

use crate::support::*;

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

/// The mTLS server, and a gateway routing files.example.com, secret.example.com
/// and none.example.com to it through the subsets `files`, `secret` and `none`.
struct Mutual {
    gw: Gateway,
    c: reqwest::Client,
    _dirs: [tempfile::TempDir; 2],
}

impl Mutual {
    async fn start() -> Mutual {
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
        let (gw, dir) = start_with(&[("out.yaml", &config), ("secret.yaml", &secret)]);
        let hosts = ["files.example.com", "secret.example.com", "none.example.com"].map(|h| (h, gw.http));
        let c = client(&hosts, &[]);
        Mutual {
            gw,
            c,
            _dirs: [certs, dir],
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_files_or_a_secret_is_presented() {
    let s = Mutual::start().await;
    for host in ["files.example.com", "secret.example.com"] {
        let resp =
            s.c.get(format!("http://{host}:{}/", s.gw.http))
                .send()
                .await
                .expect("request");
        assert_eq!(resp.status(), 200, "{host}");
        assert_eq!(resp.text().await.expect("body"), "mtls-ok");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_client_certificate_the_server_refuses_the_handshake() {
    let s = Mutual::start().await;
    let resp =
        s.c.get(format!("http://none.example.com:{}/", s.gw.http))
            .send()
            .await
            .expect("request");
    assert_eq!(resp.status(), 503);
}
