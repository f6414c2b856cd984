//! TCP and TLS-passthrough routes: connections spliced to backends by weight
//! (TCP) or by the SNI of the ClientHello (TLS, which the gateway never opens).

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;

use crate::support::*;

const CONFIG: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: ["*.example.com"]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp, namespace: default}
spec:
  hosts: ["*"]
  gateways: [gw]
  tcp:
  - match: [{port: 31400}]
    route:
    - {destination: {host: tcp-a.internal}, weight: 50}
    - {destination: {host: tcp-b.internal}, weight: 50}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tls, namespace: default}
spec:
  hosts: [a.example.com, b.example.com]
  gateways: [gw]
  tls:
  - match: [{port: 443, sniHosts: [a.example.com]}]
    route: [{destination: {host: tls-a.internal}}]
  - match: [{port: 443, sniHosts: [b.example.com]}]
    route: [{destination: {host: tls-b.internal}}]
"#;

/// A backend that greets with its name, then echoes lines; over TLS when given a certificate.
pub(crate) async fn backend(name: &'static str, cert: Option<&TestCert>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let acceptor = cert.map(|c| {
        let key = rustls::pki_types::PrivateKeyDer::try_from(
            rustls_pemfile::private_key(&mut c.key_pem.as_bytes())
                .expect("pem")
                .expect("key")
                .secret_der()
                .to_vec(),
        )
        .expect("key der");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![rustls::pki_types::CertificateDer::from(c.der.clone())], key)
            .expect("server config");
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match acceptor {
                    Some(a) => {
                        if let Ok(tls) = a.accept(tcp).await {
                            greet_and_echo(name, tls).await;
                        }
                    }
                    None => greet_and_echo(name, tcp).await,
                }
            });
        }
    });
    port
}

async fn greet_and_echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(name: &str, io: S) {
    let mut io = BufReader::new(io);
    if io.get_mut().write_all(format!("{name}\n").as_bytes()).await.is_err() {
        return;
    }
    let mut line = String::new();
    while io.read_line(&mut line).await.is_ok_and(|n| n > 0) {
        if io.get_mut().write_all(line.as_bytes()).await.is_err() {
            return;
        }
        line.clear();
    }
}

/// Greeting, then one echoed line.
pub(crate) async fn talk<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(io: S) -> (String, String) {
    let mut io = BufReader::new(io);
    let mut name = String::new();
    io.read_line(&mut name).await.expect("greeting");
    io.get_mut().write_all(b"ping\n").await.expect("write");
    let mut echo = String::new();
    io.read_line(&mut echo).await.expect("echo");
    (name.trim().to_string(), echo.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_by_weight_and_tls_passthrough_by_sni() {
    let (cert_a, cert_b) = (TestCert::new(&["a.example.com"]), TestCert::new(&["b.example.com"]));
    let config = CONFIG.to_string()
        + &service_entry("tcp-a.internal", "TCP", &[backend("tcp-a", None).await])
        + &service_entry("tcp-b.internal", "TCP", &[backend("tcp-b", None).await])
        + &service_entry("tls-a.internal", "TLS", &[backend("tls-a", Some(&cert_a)).await])
        + &service_entry("tls-b.internal", "TLS", &[backend("tls-b", Some(&cert_b)).await]);
    let [tcp_port] = free_ports::<1>();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("l4.yaml"), config).expect("write");
    let gw = Gateway::start(dir.path(), &[&format!("--port-map=31400={tcp_port}")]);

    let mut hits = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..40 {
        let tcp = TcpStream::connect(("127.0.0.1", tcp_port)).await.expect("connect");
        let (name, echo) = talk(tcp).await;
        assert_eq!(echo, "ping");
        *hits.entry(name).or_default() += 1;
    }
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert!(hits.values().all(|n| *n >= 8), "50/50 over 40 connections: {hits:?}");

    // End-to-end TLS: the client verifies the backend's own certificate.
    for (sni, cert, name) in [("a.example.com", &cert_a, "tls-a"), ("b.example.com", &cert_b, "tls-b")] {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(cert.der.clone()))
            .expect("root");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(("127.0.0.1", gw.https)).await.expect("connect");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(rustls::pki_types::ServerName::try_from(sni).expect("name"), tcp)
            .await
            .unwrap_or_else(|e| panic!("TLS to {sni} through the gateway: {e}"));
        assert_eq!(talk(tls).await, (name.to_string(), "ping".to_string()));
    }
}
