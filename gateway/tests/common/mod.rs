//! Helpers shared by the test binaries (`e2e`, the gateway as a process; `engine`,
//! the engine in-process): certificates, echo backends, clients and raw requests,
//! the admin endpoints' JSON, and (re-exported from `strait_gateway::testing`) free
//! ports and the YAML builders. Each binary uses part of them, hence the `allow`.
#![allow(dead_code, unused_imports)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use strait_gateway::echo::{EchoConfig, EchoServer};
pub use strait_gateway::testing::free_ports;
pub use strait_gateway::testing::yaml::*;

/// A self-signed certificate for some DNS names.
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl TestCert {
    pub fn new(names: &[&str]) -> TestCert {
        let key = rcgen::KeyPair::generate().expect("key");
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("params");
        let cert = params.self_signed(&key).expect("sign");
        TestCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A self-signed certificate for `names` that also says it is a CA (basic
    /// constraints CA:TRUE), as `openssl req -x509` makes by default.
    pub fn self_signed_ca(names: &[&str]) -> TestCert {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("sign");
        TestCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// The same Secret with base64 `data` instead of `stringData`.
    pub fn secret_yaml_base64(&self, name: &str, namespace: &str) -> String {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
            b64(&self.cert_pem),
            b64(&self.key_pem)
        )
    }

    /// A kubernetes.io/tls Secret holding this certificate.
    pub fn secret_yaml(&self, name: &str, namespace: &str) -> String {
        let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
            indent(&self.cert_pem),
            indent(&self.key_pem)
        )
    }
}

/// Starts an echo backend on a free loopback port.
pub async fn echo(name: &str, version: &str) -> EchoServer {
    EchoServer::start(
        "127.0.0.1:0".parse().expect("addr"),
        EchoConfig {
            name: name.into(),
            version: version.into(),
        },
    )
    .await
    .expect("echo server")
}

/// The repository's examples folder.
pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// `/config_dump` on admin port `admin`, as JSON.
pub fn config_dump(admin: u16) -> serde_json::Value {
    let (status, body) = raw_get(admin, "/config_dump").expect("admin reachable");
    assert_eq!(status, 200);
    serde_json::from_str(&body).expect("config_dump is JSON")
}

/// The cluster named `name` in `/clusters` on admin port `admin`, as JSON.
pub fn cluster(admin: u16, name: &str) -> serde_json::Value {
    let (status, body) = raw_get(admin, "/clusters").expect("admin reachable");
    assert_eq!(status, 200);
    let all: serde_json::Value = serde_json::from_str(&body).expect("clusters is JSON");
    all["clusters"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no cluster {name} in {body}"))
}

/// A one-shot HTTP/1.1 GET over a fresh connection: (status, body).
pub fn raw_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Sends raw bytes and returns the status of the response (None on EOF/timeout).
pub fn raw_status(port: u16, request: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(request).ok()?;
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).ok()?;
    std::str::from_utf8(&buf[..n])
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// An HTTP(S) client that resolves `hosts` to loopback and trusts `roots`.
pub fn client(hosts: &[(&str, u16)], roots: &[&TestCert]) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .tls_info(true)
        .timeout(Duration::from_secs(10));
    for (h, port) in hosts {
        b = b.resolve(h, SocketAddr::from(([127, 0, 0, 1], *port)));
    }
    for r in roots {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(r.cert_pem.as_bytes()).expect("pem"));
    }
    b.build().expect("client")
}

/// GETs `url` and returns (status, echo JSON or Null).
pub async fn get_json(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let mut req = client.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
}

/// Accepted connections as the stream tonic's server takes.
pub fn tokio_stream_from(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |l| async move {
        let accepted = l.accept().await.map(|(s, _)| s);
        Some((accepted, l))
    })
}

/// A TLS connection to the gateway that negotiated h2.
pub async fn h2_tls(port: u16, cert: &TestCert) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots
        .add(tokio_rustls::rustls::pki_types::CertificateDer::from(cert.der.clone()))
        .expect("root");
    let mut config = tokio_rustls::rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("app.example.com").expect("name");
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls
}
