//! ACME against Pebble (Let's Encrypt's test CA, the Debian package `pebble`): a
//! certificate for app.example.com through HTTP-01 and one for api.example.com through
//! TLS-ALPN-01, both answered by the gateway itself; the chain verifies against
//! Pebble's root; a restart reuses the stored certificate; an unreachable CA leaves
//! the current certificate serving with the error logged; renewal replaces the
//! certificate without dropping an open connection; replicas sharing the store
//! order once. Each scenario has its own Pebble and ports (`Setup`); those after
//! issuance start from `Issued`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_rustls::rustls;

use crate::support::*;

/// Pebble and its DNS stand-in, killed when dropped.
pub(crate) struct Pebble {
    children: Vec<Child>,
    management: u16,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Pebble {
    /// Starts Pebble on `listen` with its challenges aimed at the gateway's ports, and a
    /// DNS server answering 127.0.0.1 for every name.
    pub(crate) fn start(dir: &Path, listen: u16, http: u16, https: u16, validity_secs: u64) -> Pebble {
        let [management, dns, dns_mgmt] = free_ports::<3>();
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.join("pebble.pem"),
            "privateKey": dir.join("pebble.key"),
            "httpPort": http,
            "tlsPort": https,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity_secs,
        }});
        let config_path = dir.join(format!("pebble-{listen}.json"));
        std::fs::write(&config_path, config.to_string()).expect("write");
        let dns_server = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{dns_mgmt}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv (Debian package pebble) is needed");
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble (Debian package pebble) is needed");
        let p = Pebble {
            children: vec![dns_server, pebble],
            management,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", listen)).is_err() {
            assert!(Instant::now() < deadline, "pebble did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    /// The root Pebble issues under (a new one at every start).
    pub(crate) async fn root(&self, tls_root: &TestCert) -> String {
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(tls_root.cert_pem.as_bytes()).expect("pem"))
            .resolve("localhost", ([127, 0, 0, 1], self.management).into())
            .build()
            .expect("client");
        let url = format!("https://localhost:{}/roots/0", self.management);
        for _ in 0..100 {
            if let Ok(r) = client.get(&url).send().await {
                if r.status() == 200 {
                    return r.text().await.expect("root");
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no root from pebble");
    }
}

pub(crate) fn config(dir: &Path, acme_port: u16) -> (std::path::PathBuf, String) {
    let mesh = format!(
        "acmeIssuers:\n- {{name: pebble-http, directory: 'https://localhost:{acme_port}/dir', email: ops@example.com, caCertificates: {}}}\n- {{name: pebble-alpn, directory: 'https://localhost:{acme_port}/dir', challenge: TLS-ALPN-01, caCertificates: {}}}\n",
        dir.join("pebble.pem").display(),
        dir.join("pebble.pem").display()
    );
    let gateways = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: app
  namespace: default
  annotations: {strait.io/acme: pebble-http}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [app.example.com]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [app.example.com]
    tls: {mode: SIMPLE, credentialName: app-example-com-tls}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: api
  namespace: default
  annotations: {strait.io/acme: pebble-alpn}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https-api, protocol: HTTPS}
    hosts: [api.example.com]
    tls: {mode: SIMPLE, credentialName: api-example-com-tls}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app, namespace: default}
spec:
  hosts: [app.example.com, api.example.com]
  gateways: [app, api]
  http:
  - directResponse: {status: 200, body: {string: hello}}
"#;
    let mesh_path = dir.join("mesh.yaml");
    std::fs::write(&mesh_path, mesh).expect("write");
    (mesh_path, gateways.to_string())
}

/// The certificate chain the gateway serves for `host`, verified against `root`.
pub(crate) async fn served(port: u16, host: &str, root: &str) -> Result<Vec<u8>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut root.as_bytes()) {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
    let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first().cloned());
    leaf.map(|c| c.as_ref().to_vec()).ok_or("no certificate".into())
}

/// Waits until `host` is served a certificate that verifies against `root` and
/// differs from `not`.
pub(crate) async fn wait_served(port: u16, host: &str, root: &str, not: Option<&[u8]>, within: Duration) -> Vec<u8> {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < deadline {
        match served(port, host, root).await {
            Ok(leaf) if Some(leaf.as_slice()) != not => return leaf,
            Ok(_) => last = "the previous certificate".into(),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{host}: no new certificate from the CA: {last}");
}

/// A TLS connection kept open across renewals: sends one request, reads one answer.
struct KeptConnection(BufReader<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>);

impl KeptConnection {
    async fn open(port: u16, root: &str) -> KeptConnection {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut root.as_bytes()) {
            roots.add(cert.expect("pem")).expect("root");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let name = rustls::pki_types::ServerName::try_from("app.example.com").expect("name");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("handshake");
        KeptConnection(BufReader::new(tls))
    }

    async fn get(&mut self) -> String {
        let request = "GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n";
        self.0.get_mut().write_all(request.as_bytes()).await.expect("write");
        let mut status = String::new();
        self.0.read_line(&mut status).await.expect("status");
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            self.0.read_line(&mut line).await.expect("header");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        self.0.read_exact(&mut body).await.expect("body");
        format!("{} {}", status.trim(), String::from_utf8_lossy(&body))
    }
}

pub(crate) fn serial(der: &[u8]) -> String {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c.raw_serial_as_string())
        .unwrap_or_default()
}

/// A config folder, a work folder with Pebble's own TLS certificate, ports for
/// Pebble and the gateway, and the mesh config and Gateways naming Pebble.
struct Setup {
    dir: tempfile::TempDir,
    work: tempfile::TempDir,
    pebble_tls: TestCert,
    ports: [u16; 3],
    mesh: std::path::PathBuf,
    gateways: String,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let work = tempfile::tempdir().expect("tempdir");
        let pebble_tls = TestCert::new(&["localhost"]);
        std::fs::write(work.path().join("pebble.pem"), &pebble_tls.cert_pem).expect("write");
        std::fs::write(work.path().join("pebble.key"), &pebble_tls.key_pem).expect("write");
        let ports = free_ports::<3>();
        let (mesh, gateways) = config(work.path(), ports[0]);
        Setup {
            dir,
            work,
            pebble_tls,
            ports,
            mesh,
            gateways,
        }
    }
}

/// Certificates live 30 s: renewal comes at two thirds, 20 s after issuance.
const VALIDITY_SECS: u64 = 30;

impl Setup {
    /// The gateway's arguments: the mesh config naming Pebble, ACME checks every second.
    fn args(&self) -> Vec<String> {
        vec![
            "--mesh-config".into(),
            self.mesh.display().to_string(),
            "--acme-check-interval".into(),
            "1".into(),
        ]
    }

    /// A gateway on the config folder, on the ports Pebble validates challenges at.
    fn gateway(&self) -> Gateway {
        let [_, http, https] = self.ports;
        let args = self.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Gateway::start_on(self.dir.path(), &args, http, https)
    }

    /// Pebble on its port, issuing certificates valid `validity_secs`.
    fn pebble(&self, validity_secs: u64) -> Pebble {
        let [acme_port, http, https] = self.ports;
        Pebble::start(self.work.path(), acme_port, http, https, validity_secs)
    }
}

/// Pebble, the root it issues under, and a gateway it has issued both Gateways'
/// certificates to (HTTP-01 for app.example.com, TLS-ALPN-01 for api.example.com).
struct Issued {
    pebble: Pebble,
    root: String,
    gw: Gateway,
    /// app.example.com's certificate.
    first: Vec<u8>,
}

impl Issued {
    async fn start(s: &Setup) -> Issued {
        std::fs::write(s.dir.path().join("gateways.yaml"), &s.gateways).expect("write");
        let pebble = s.pebble(VALIDITY_SECS);
        let root = pebble.root(&s.pebble_tls).await;
        let gw = s.gateway();
        let https = s.ports[2];
        let first = wait_served(https, "app.example.com", &root, None, Duration::from_secs(30)).await;
        wait_served(https, "api.example.com", &root, None, Duration::from_secs(30)).await;
        Issued {
            pebble,
            root,
            gw,
            first,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_issued_through_http01_and_tls_alpn01() {
    let s = Setup::new();
    let issued = Issued::start(&s).await;
    let log = issued.gw.log();
    assert!(
        log.contains("a self-signed one is served until ACME issues it"),
        "{log}"
    );
    assert!(log.contains("answered the HTTP-01 challenge"), "{log}");
    assert!(
        log.contains("answered the TLS-ALPN-01 challenge for Some(\"api.example.com\")"),
        "{log}"
    );
    let store = s.dir.path().join("acme");
    assert!(store.join("default.app-example-com-tls.yaml").exists());
    assert!(
        store.join(".account-pebble-http.json").exists(),
        "the account key is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_serves_the_stored_certificate_without_ordering_again() {
    let s = Setup::new();
    let Issued {
        pebble: _pebble,
        root,
        gw,
        first,
    } = Issued::start(&s).await;
    drop(gw);

    let https = s.ports[2];
    let gw = s.gateway();
    assert_eq!(
        serial(&served(https, "app.example.com", &root).await.expect("served")),
        serial(&first)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!gw.log().contains("ordering a certificate"), "{}", gw.log());
    let mut kept = KeptConnection::open(https, &root).await;
    assert_eq!(kept.get().await, "HTTP/1.1 200 OK hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_outlives_an_unreachable_ca_and_keeps_open_connections() {
    let s = Setup::new();
    let Issued {
        pebble,
        root,
        gw,
        first,
    } = Issued::start(&s).await;
    let https = s.ports[2];
    let mut kept = KeptConnection::open(https, &root).await;
    assert_eq!(kept.get().await, "HTTP/1.1 200 OK hello");

    // The CA goes away: at renewal time the error is logged, the certificate stays.
    drop(pebble);
    let deadline = Instant::now() + Duration::from_secs(40);
    while !gw.log().contains("not obtained") {
        assert!(Instant::now() < deadline, "no renewal attempt: {}", gw.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The failure names the issuer and its directory, and is counted by issuer and host.
    let log = gw.log();
    let line = log.lines().find(|l| l.contains("not obtained")).unwrap_or_default();
    assert!(line.contains("from issuer pebble-"), "{line}");
    assert!(
        line.contains(&format!("(https://localhost:{}/dir)", s.ports[0])),
        "{line}"
    );
    let (_, metrics) = raw_get(gw.metrics, "/stats/prometheus").expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("strait_acme_failures_total{host=\"app.example.com\",issuer=\"pebble-http\"}")),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("acme"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        serial(&served(https, "app.example.com", &root).await.expect("still served")),
        serial(&first)
    );

    // The CA is back (a new Pebble: new root, accounts forgotten): renewal replaces
    // the certificate for new handshakes, and the open connection goes on.
    let pebble = s.pebble(VALIDITY_SECS);
    let root = pebble.root(&s.pebble_tls).await;
    let renewed = wait_served(https, "app.example.com", &root, Some(&first), Duration::from_secs(60)).await;
    assert_ne!(serial(&renewed), serial(&first));
    assert_eq!(
        kept.get().await,
        "HTTP/1.1 200 OK hello",
        "the open connection survives the swap"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_the_store_order_once() {
    let s = Setup::new();
    // Only the HTTP-01 Gateway: the CA reaches replica `a` alone, whichever orders.
    let app_only = s
        .gateways
        .split("---\n")
        .filter(|d| !d.contains("name: api"))
        .collect::<Vec<_>>()
        .join("---\n");
    std::fs::write(
        s.dir.path().join("gateways.yaml"),
        app_only.replace("gateways: [app, api]", "gateways: [app]"),
    )
    .expect("write");
    let pebble = s.pebble(3600);
    let root = pebble.root(&s.pebble_tls).await;
    let a = s.gateway();
    let args = s.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let b = Gateway::start(s.dir.path(), &args);

    let from_a = wait_served(a.https, "app.example.com", &root, None, Duration::from_secs(30)).await;
    let from_b = wait_served(b.https, "app.example.com", &root, None, Duration::from_secs(30)).await;
    assert_eq!(serial(&from_a), serial(&from_b), "one certificate for both replicas");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let orders = [a.log(), b.log()]
        .iter()
        .map(|l| l.matches("ordering a certificate").count())
        .sum::<usize>();
    assert_eq!(orders, 1, "A:\n{}\nB:\n{}", a.log(), b.log());
}
