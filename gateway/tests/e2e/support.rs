//! Test scaffolding: free ports, certificates, echo backends, config folders and
//! the real `strait-gateway` binary, stopped (SIGKILL) when dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strait_gateway::echo::{EchoConfig, EchoServer};

/// Ports that were free a moment ago (all held open together so they differ).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let mut out = [0u16; N];
    for (i, l) in listeners.iter().enumerate() {
        out[i] = l.local_addr().expect("addr").port();
    }
    out
}

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

/// A ServiceEntry `backend` with one STATIC endpoint per (version label, port).
pub fn backend_entry(endpoints: &[(&str, u16)]) -> String {
    let mut s = String::from(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: backend, namespace: default}\nspec:\n  hosts: [backend.default.svc.cluster.local]\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints:\n",
    );
    for (version, port) in endpoints {
        s.push_str(&format!(
            "  - {{address: 127.0.0.1, ports: {{http: {port}}}, labels: {{version: {version}}}}}\n"
        ));
    }
    s
}

/// A Gateway `default/gw` for the ingress gateway with one HTTP server on port 80
/// for `hosts` (a YAML flow list such as `[app.example.com]`), and a `---` after it.
pub fn http_gateway(hosts: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: default}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: {hosts}\n---\n"
    )
}

/// Writes `files` (name, content) to a fresh folder and starts a gateway on it.
pub fn start_with(files: &[(&str, &str)]) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).expect("write config");
    }
    (Gateway::start(dir.path(), &[]), dir)
}

/// A `---` and a STATIC ServiceEntry for `host` with one port (80, of `protocol`)
/// served by `ports` on loopback.
pub fn service_entry(host: &str, protocol: &str, ports: &[u16]) -> String {
    let endpoints: String = ports
        .iter()
        .map(|p| format!("  - {{address: 127.0.0.1, ports: {{p: {p}}}}}\n"))
        .collect();
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {host}, namespace: default}}\nspec:\n  hosts: [{host}]\n  resolution: STATIC\n  ports: [{{number: 80, name: p, protocol: {protocol}}}]\n  endpoints:\n{endpoints}"
    )
}

/// A running gateway process.
pub struct Gateway {
    child: Option<Child>,
    pub http: u16,
    pub https: u16,
    pub admin: u16,
    pub health: u16,
    pub metrics: u16,
    log: PathBuf,
    _logdir: tempfile::TempDir,
}

impl Gateway {
    /// Starts `strait-gateway` on `dir` and waits until it is ready.
    pub fn start(dir: &Path, extra: &[&str]) -> Gateway {
        match Gateway::try_start(dir, extra) {
            Ok(g) => g,
            Err(log) => panic!("gateway did not become ready:\n{log}"),
        }
    }

    /// Like `start`, returning the log when it does not become ready.
    pub fn try_start(dir: &Path, extra: &[&str]) -> Result<Gateway, String> {
        let [http, https] = free_ports::<2>();
        Gateway::try_start_on(dir, extra, http, https)
    }

    /// Like `start`, with Gateway ports 80 and 443 on `http` and `https`.
    pub fn start_on(dir: &Path, extra: &[&str], http: u16, https: u16) -> Gateway {
        match Gateway::try_start_on(dir, extra, http, https) {
            Ok(g) => g,
            Err(log) => panic!("gateway did not become ready:\n{log}"),
        }
    }

    fn try_start_on(dir: &Path, extra: &[&str], http: u16, https: u16) -> Result<Gateway, String> {
        let [admin, health, metrics] = free_ports::<3>();
        let logdir = tempfile::tempdir().expect("tempdir");
        let log = logdir.path().join("gateway.log");
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_strait-gateway"))
            .arg("--config-dir")
            .arg(dir)
            .args([
                "--bind-address",
                "127.0.0.1",
                "--namespace",
                "default",
                "--threads",
                "2",
            ])
            .arg(format!("--port-map=80={http},443={https}"))
            .arg(format!("--admin-port={admin}"))
            .arg(format!("--health-port={health}"))
            .arg(format!("--metrics-port={metrics}"))
            .args(extra)
            .env("RUST_LOG", std::env::var("GW_LOG").unwrap_or("info".into()))
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn strait-gateway");
        let mut gw = Gateway {
            child: Some(child),
            http,
            https,
            admin,
            health,
            metrics,
            log,
            _logdir: logdir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = gw.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(format!("exited with {status}\n{}", gw.log()));
            }
            if raw_get(health, "/healthz/ready").is_some_and(|(s, _)| s == 200) {
                return Ok(gw);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(gw.log())
    }

    /// What the gateway logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `/config_dump` as JSON.
    pub fn config_dump(&self) -> serde_json::Value {
        let (status, body) = raw_get(self.admin, "/config_dump").expect("admin reachable");
        assert_eq!(status, 200);
        serde_json::from_str(&body).expect("config_dump is JSON")
    }

    /// `/clusters` as JSON: the cluster named `name`.
    pub fn cluster(&self, name: &str) -> serde_json::Value {
        let (status, body) = raw_get(self.admin, "/clusters").expect("admin reachable");
        assert_eq!(status, 200);
        let all: serde_json::Value = serde_json::from_str(&body).expect("clusters is JSON");
        all["clusters"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no cluster {name} in {body}"))
    }

    /// The running config version.
    pub fn version(&self) -> u64 {
        self.config_dump()["version"].as_u64().expect("version")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(s) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Polls until `/config_dump` shows a version above `above` (a reload happened).
    pub fn wait_version_above(&self, above: u64, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.version() > above {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // Pingora sets SO_REUSEPORT: a leftover process would keep taking traffic.
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
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
