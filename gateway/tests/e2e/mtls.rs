//! Client certificates at the gateway (tls.mode MUTUAL and OPTIONAL_MUTUAL, with a
//! CRL), the client identity in AuthorizationPolicy and `x-forwarded-client-cert`,
//! and per-server protocol versions: one gateway with a server of each (`Setup`),
//! a scenario per server and outcome.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod,
    KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use serde_json::Value;

use crate::support::*;

/// A certificate authority issuing server and client certificates.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// An issued certificate and its key.
struct Issued {
    cert_pem: String,
    key_pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("ca");
        Ca { cert, key }
    }

    fn issue(&self, serial: u64, dns: &[&str], uri: Option<&str>, client: bool) -> Issued {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("params");
        if let Some(uri) = uri {
            params
                .subject_alt_names
                .push(SanType::URI(uri.try_into().expect("uri")));
        }
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("issue");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn crl(&self, revoked: &[u64]) -> String {
        let params = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2024, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: rcgen::date_time_ymd(2024, 6, 1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.cert, &self.key)
            .expect("crl")
            .pem()
            .expect("crl pem")
    }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

fn config(dir: &std::path::Path, backend: u16, ca_a: &Ca, ca_b: &Ca, revoked: u64) -> String {
    let server = ca_a.issue(
        1,
        &["mtls.example.com", "optional.example.com", "simple.example.com"],
        None,
        false,
    );
    std::fs::write(dir.join("server.pem"), &server.cert_pem).expect("write");
    std::fs::write(dir.join("server.key"), &server.key_pem).expect("write");
    std::fs::write(dir.join("ca-b.pem"), ca_b.cert.pem()).expect("write");
    let d = dir.display();
    format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: mtls-cred, namespace: default}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{cert}  tls.key: |
{key}  ca.crt: |
{ca}  ca.crl: |
{crl}---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https-mtls, protocol: HTTPS}}
    hosts: [mtls.example.com]
    tls: {{mode: MUTUAL, credentialName: mtls-cred}}
  - port: {{number: 443, name: https-optional, protocol: HTTPS}}
    hosts: [optional.example.com]
    tls: {{mode: OPTIONAL_MUTUAL, serverCertificate: {d}/server.pem, privateKey: {d}/server.key, caCertificates: {d}/ca-b.pem}}
  - port: {{number: 443, name: https-simple, protocol: HTTPS}}
    hosts: [simple.example.com]
    tls: {{mode: SIMPLE, serverCertificate: {d}/server.pem, privateKey: {d}/server.key, minProtocolVersion: TLSV1_3}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: app, namespace: default}}
spec:
  hosts: [mtls.example.com, optional.example.com, simple.example.com]
  gateways: [gw]
  http:
  - route: [{{destination: {{host: backend.default.svc.cluster.local}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: admin-is-web-only, namespace: default}}
spec:
  action: DENY
  rules:
  - from: [{{source: {{notPrincipals: [cluster.local/ns/shop/sa/web]}}}}]
    to: [{{operation: {{paths: [/admin]}}}}]
{backends}"#,
        cert = indent(&server.cert_pem),
        key = indent(&server.key_pem),
        ca = indent(&ca_a.cert.pem()),
        crl = indent(&ca_a.crl(&[revoked])),
        backends = backend_entry(&[("v1", backend)]),
    )
}

fn client(port: u16, ca: &Ca, identity: Option<&Issued>, tls12_only: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .timeout(Duration::from_secs(10))
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert.pem().as_bytes()).expect("root"));
    for host in ["mtls.example.com", "optional.example.com", "simple.example.com"] {
        b = b.resolve(host, ([127, 0, 0, 1], port).into());
    }
    if let Some(id) = identity {
        let pem = format!("{}{}", id.cert_pem, id.key_pem);
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"));
    }
    if tls12_only {
        b = b.max_tls_version(reqwest::tls::Version::TLS_1_2);
    }
    b.build().expect("client")
}

/// (status, upstream x-forwarded-client-cert) or None when the connection was refused.
async fn get(c: &reqwest::Client, url: &str) -> Option<(u16, Option<String>)> {
    let resp = c
        .get(url)
        .header("x-forwarded-client-cert", "By=forged")
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    let body: Value = serde_json::from_str(&resp.text().await.ok()?).unwrap_or(Value::Null);
    Some((
        status,
        body["headers"]["x-forwarded-client-cert"].as_str().map(str::to_string),
    ))
}

/// The gateway with its three servers, the CAs and the client certificates the
/// scenarios present.
struct Setup {
    gw: Gateway,
    /// CA A: the MUTUAL server's (its certificate chain and client CA, with a CRL).
    ca_a: Ca,
    /// `spiffe://cluster.local/ns/shop/sa/web`, from CA A.
    web: Issued,
    /// `spiffe://cluster.local/ns/shop/sa/other`, from CA A.
    other: Issued,
    /// web's identity again, from CA A, revoked by its CRL.
    revoked: Issued,
    /// DNS partner.example.org, from CA B (the OPTIONAL_MUTUAL server's).
    partner: Issued,
    /// From a CA no server trusts.
    stranger: Issued,
    _backend: strait_gateway::echo::EchoServer,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn start() -> Setup {
        let backend = echo("backend", "v1").await;
        let ca_a = Ca::new("ca-a");
        let ca_b = Ca::new("ca-b");
        let stranger_ca = Ca::new("stranger");
        let web = ca_a.issue(10, &[], Some("spiffe://cluster.local/ns/shop/sa/web"), true);
        let other = ca_a.issue(11, &[], Some("spiffe://cluster.local/ns/shop/sa/other"), true);
        let revoked = ca_a.issue(12, &[], Some("spiffe://cluster.local/ns/shop/sa/web"), true);
        let partner = ca_b.issue(20, &["partner.example.org"], None, true);
        let stranger = stranger_ca.issue(30, &["x.example.org"], None, true);

        let dir = tempfile::tempdir().expect("tempdir");
        let yaml = config(dir.path(), backend.addr.port(), &ca_a, &ca_b, 12);
        std::fs::write(dir.path().join("app.yaml"), yaml).expect("write");
        let gw = Gateway::start(dir.path(), &[]);
        Setup {
            gw,
            ca_a,
            web,
            other,
            revoked,
            partner,
            stranger,
            _backend: backend,
            _dir: dir,
        }
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.gw.https)
    }

    /// A client trusting CA A, presenting `identity`, TLS 1.2 only when `tls12_only`.
    fn client(&self, identity: Option<&Issued>, tls12_only: bool) -> reqwest::Client {
        client(self.gw.https, &self.ca_a, identity, tls12_only)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_hands_the_client_identity_to_authorization_and_upstream() {
    let s = Setup::start().await;
    // MUTUAL: the client's SPIFFE identity reaches authorization and the upstream.
    let web_client = s.client(Some(&s.web), false);
    let (status, xfcc) = get(&web_client, &s.url("mtls.example.com", "/admin"))
        .await
        .expect("served");
    assert_eq!(status, 200);
    let xfcc = xfcc.unwrap_or_default();
    assert!(
        xfcc.starts_with("Hash=") && xfcc.contains(";URI=spiffe://cluster.local/ns/shop/sa/web"),
        "{xfcc}"
    );
    let other_client = s.client(Some(&s.other), false);
    assert_eq!(
        get(&other_client, &s.url("mtls.example.com", "/admin"))
            .await
            .map(|r| r.0),
        Some(403),
        "notPrincipals"
    );
    assert_eq!(
        get(&other_client, &s.url("mtls.example.com", "/")).await.map(|r| r.0),
        Some(200)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_refuses_no_certificate_another_servers_ca_an_unknown_ca_and_a_revoked_one() {
    let s = Setup::start().await;
    let anonymous = s.client(None, false);
    for (what, c) in [
        ("no certificate", &anonymous),
        (
            "certificate of the OPTIONAL_MUTUAL server's CA",
            &s.client(Some(&s.partner), false),
        ),
        ("unknown CA", &s.client(Some(&s.stranger), false)),
        ("revoked", &s.client(Some(&s.revoked), false)),
    ] {
        assert_eq!(get(c, &s.url("mtls.example.com", "/")).await, None, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_without_a_certificate_fails_the_handshake_with_certificate_required() {
    let s = Setup::start().await;
    // The SNI selects the MUTUAL server before the handshake: the handshake itself
    // fails, with TLS's certificate_required alert. Over TLS 1.2 the alert comes
    // before the client's handshake ends; over 1.3 the client may have finished and
    // see only the closed connection.
    let refused = s
        .client(None, true)
        .get(s.url("mtls.example.com", "/"))
        .send()
        .await
        .expect_err("no certificate");
    assert!(format!("{refused:?}").contains("CertificateRequired"), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_mutual_admits_anonymous_clients_and_those_of_its_own_ca() {
    let s = Setup::start().await;
    // Anonymous clients pass without an identity (a forged XFCC is removed); its own
    // CA's clients pass with theirs.
    let anonymous = s.client(None, false);
    assert_eq!(
        get(&anonymous, &s.url("optional.example.com", "/")).await,
        Some((200, None))
    );
    let partner_client = s.client(Some(&s.partner), false);
    let (status, xfcc) = get(&partner_client, &s.url("optional.example.com", "/"))
        .await
        .expect("served");
    assert_eq!(status, 200);
    assert!(xfcc.unwrap_or_default().contains(";DNS=partner.example.org"));
    let web_client = s.client(Some(&s.web), false);
    assert_eq!(
        get(&web_client, &s.url("optional.example.com", "/")).await,
        None,
        "a certificate from another server's CA"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_protocol_version_tls13_applies_to_its_server_only() {
    let s = Setup::start().await;
    let tls12 = s.client(None, true);
    assert_eq!(get(&tls12, &s.url("simple.example.com", "/")).await, None);
    let anonymous = s.client(None, false);
    assert_eq!(
        get(&anonymous, &s.url("simple.example.com", "/")).await.map(|r| r.0),
        Some(200)
    );
    assert_eq!(
        get(&tls12, &s.url("optional.example.com", "/")).await.map(|r| r.0),
        Some(200),
        "TLS 1.2 elsewhere"
    );
}
