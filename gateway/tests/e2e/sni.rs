//! HTTPS with several certificates on one port: each SNI name gets its own
//! certificate (wildcards included), and a Host that belongs to another
//! certificate gets 421.

use crate::support::*;

const CONFIG: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https-a, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: SIMPLE, credentialName: a-tls}
  - port: {number: 443, name: https-b, protocol: HTTPS}
    hosts: [b.example.com]
    tls: {mode: SIMPLE, credentialName: b-tls}
  - port: {number: 443, name: https-files, protocol: HTTPS}
    hosts: [files.example.com]
    tls: {mode: SIMPLE, serverCertificate: CERT_FILE, privateKey: KEY_FILE}
  - port: {number: 443, name: https-wild, protocol: HTTPS}
    hosts: ["*.wild.example.com"]
    tls: {mode: SIMPLE, credentialName: wild-tls}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: all, namespace: default}
spec:
  hosts: [a.example.com, b.example.com, files.example.com, "*.wild.example.com"]
  gateways: [gw]
  http:
  - route:
    - destination: {host: backend}
"#;

async fn peer_cert(c: &reqwest::Client, url: &str) -> (u16, Vec<u8>) {
    let resp = c.get(url).send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let der = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
        .expect("peer certificate");
    (resp.status().as_u16(), der)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sni_gets_its_certificate_and_mismatch_is_421() {
    let backend = echo("backend", "v1").await;
    let a = TestCert::new(&["a.example.com"]);
    let b = TestCert::new(&["b.example.com"]);
    let w = TestCert::new(&["*.wild.example.com"]);
    let f = TestCert::new(&["files.example.com"]);
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert_file, key_file) = (certs.path().join("tls.crt"), certs.path().join("tls.key"));
    std::fs::write(&cert_file, &f.cert_pem).expect("write");
    std::fs::write(&key_file, &f.key_pem).expect("write");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = CONFIG
        .replace("CERT_FILE", &cert_file.display().to_string())
        .replace("KEY_FILE", &key_file.display().to_string());
    let files = [
        ("gw.yaml", config),
        ("backend.yaml", backend_entry(&[("v1", backend.addr.port())])),
        (
            "secrets.yaml",
            [
                a.secret_yaml("a-tls", "default"),
                b.secret_yaml_base64("b-tls", "default"),
                w.secret_yaml("wild-tls", "default"),
            ]
            .join("---\n"),
        ),
    ];
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    let gw = Gateway::start(dir.path(), &[]);
    let p = gw.https;
    let c = client(
        &[("a.example.com", p), ("b.example.com", p), ("x.wild.example.com", p)],
        &[&a, &b, &w],
    );

    assert_eq!(
        peer_cert(&c, &format!("https://a.example.com:{p}/")).await,
        (200, a.der.clone())
    );
    assert_eq!(
        peer_cert(&c, &format!("https://b.example.com:{p}/")).await,
        (200, b.der.clone())
    );
    assert_eq!(
        peer_cert(&c, &format!("https://x.wild.example.com:{p}/")).await,
        (200, w.der.clone())
    );

    // SNI a.example.com, Host b.example.com: the connection's certificate is a's.
    let h1 = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .resolve("a.example.com", ([127, 0, 0, 1], p).into())
        .add_root_certificate(reqwest::Certificate::from_pem(a.cert_pem.as_bytes()).expect("pem"))
        .build()
        .expect("client");
    let resp = h1
        .get(format!("https://a.example.com:{p}/"))
        .header("host", "b.example.com")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 421);
    let resp = h1
        .get(format!("https://a.example.com:{p}/"))
        .header("host", "a.example.com")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
}
