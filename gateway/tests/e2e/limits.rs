//! Edge limits: too many or too large request headers get 431; a client that
//! stalls while sending headers is disconnected.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::*;

/// A Gateway `gw` for every host on port 80, and a route on `gateways` (`gw` and
/// any other) that the gateway answers with `ok` itself.
fn answered_ok(gateways: &[&str]) -> String {
    http_gateway(&["*"])
        + &virtual_service(
            "ok",
            &["*"],
            gateways,
            "- directResponse: {status: 200, body: {string: ok}}\n",
        )
}

fn request(headers: usize, value_len: usize) -> Vec<u8> {
    let mut r = String::from("GET / HTTP/1.1\r\nHost: app.example.com\r\n");
    let value = "v".repeat(value_len);
    for i in 1..headers {
        r.push_str(&format!("x-h{i}: {value}\r\n"));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

#[test]
fn header_limits_and_slow_clients() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ok.yaml"), answered_ok(&["gw"])).expect("write");
    let gw = Gateway::start(dir.path(), &["--request-header-timeout", "1"]);

    assert_eq!(raw_status(gw.http, &request(100, 10)), Some(200), "100 headers pass");
    assert_eq!(raw_status(gw.http, &request(101, 10)), Some(431), "101 headers");
    // 60 headers of 1,040 bytes: ~61 KiB.
    assert_eq!(raw_status(gw.http, &request(61, 1040)), Some(431), "61 KiB of headers");
    assert_eq!(
        raw_status(gw.http, &request(50, 1000)),
        Some(200),
        "~50 KB of headers pass"
    );

    // Headers that never finish: the gateway closes the connection.
    let mut s = TcpStream::connect(("127.0.0.1", gw.http)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(b"GET / HTTP/1.1\r\nHost: app.example.com\r\nx-slow: ")
        .expect("write");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "connection closed without a response");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "closed by the header timeout, not the test's"
    );
    // The gateway still serves others.
    assert_eq!(raw_status(gw.http, &request(2, 1)), Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_with_underscores() {
    let backend = echo("backend", "v1").await;
    let config = http_gateway(&["app.example.com"])
        + &virtual_service("app", &["app.example.com"], &["gw"], &route_to("backend"));
    let backend_yaml = backend_entry(&[("v1", backend.addr.port())]);
    let files = [("app.yaml", config.as_str()), ("backend.yaml", backend_yaml.as_str())];

    // Rejected by default: the classic way to slip `x_user` past a check on `x-user`.
    let (gw, _dir) = start_with(&files);
    let c = client(&[("app.example.com", gw.http)], &[]);
    let url = format!("http://app.example.com:{}/", gw.http);
    let (status, _) = get_json(&c, &url, &[("x_user", "admin")]).await;
    assert_eq!(status, 400);
    let (status, body) = get_json(&c, &url, &[("x-user", "someone")]).await;
    assert_eq!((status, body["headers"]["x-user"].as_str()), (200, Some("someone")));

    // Dropped on request: the request goes on without them.
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).expect("write");
    }
    let gw = Gateway::start(dir.path(), &["--headers-with-underscores", "drop"]);
    let c = client(&[("app.example.com", gw.http)], &[]);
    let (status, body) = get_json(
        &c,
        &format!("http://app.example.com:{}/", gw.http),
        &[("x_user", "admin")],
    )
    .await;
    assert_eq!(status, 200);
    assert!(body["headers"].get("x_user").is_none(), "{body}");
}

/// Sends a request head a byte every 300 ms (never silent for the 1 s a read may
/// wait) and returns how long the gateway let it go on.
fn trickle(mut s: impl Read + Write) -> Duration {
    let started = Instant::now();
    for b in b"GET / HTTP/1.1\r\nHost: app.example.com\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
        if s.write_all(&[*b]).and_then(|_| s.flush()).is_err() {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    // Cut off or not, the head never completed: whatever comes back is the close.
    let mut buf = [0u8; 64];
    let _ = s.read(&mut buf);
    started.elapsed()
}

#[test]
fn a_head_trickled_byte_by_byte_is_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = TestCert::new(&["app.example.com"]);
    std::fs::write(
        dir.path().join("ok.yaml"),
        answered_ok(&["gw", "tls"]) + &gateway("tls", &[https_server(&["*"], "app-tls")]),
    )
    .expect("write");
    std::fs::write(dir.path().join("secret.yaml"), cert.secret_yaml("app-tls", "default")).expect("write");
    let gw = Gateway::start(dir.path(), &["--request-header-timeout", "1"]);

    // Plain HTTP/1.1: the whole head gets 1 s from its first byte, not 1 s per read.
    let s = TcpStream::connect(("127.0.0.1", gw.http)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let took = trickle(s);
    assert!(
        took < Duration::from_secs(5),
        "a trickled head held the connection {took:?}"
    );

    // HTTPS: the same deadline after the handshake.
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots
        .add(tokio_rustls::rustls::pki_types::CertificateDer::from(cert.der.clone()))
        .expect("root");
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("app.example.com").expect("name");
    let conn = tokio_rustls::rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("client");
    let tcp = TcpStream::connect(("127.0.0.1", gw.https)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let took = trickle(tokio_rustls::rustls::StreamOwned::new(conn, tcp));
    assert!(
        took < Duration::from_secs(5),
        "a trickled head held the TLS connection {took:?}"
    );

    // Whole heads are served as before.
    assert_eq!(raw_status(gw.http, &request(2, 1)), Some(200));
}

#[test]
fn kept_alive_connections_outlive_the_head_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ok.yaml"), answered_ok(&["gw"])).expect("write");
    let gw = Gateway::start(dir.path(), &["--request-header-timeout", "2"]);
    let mut s = TcpStream::connect(("127.0.0.1", gw.http)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    // Each head is whole and each pause shorter than the idle timeout, but together
    // they last longer than one head's deadline.
    for i in 0..4 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
            .expect("write");
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).unwrap_or(0);
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "request {i} on the kept connection: {head:?}"
        );
        std::thread::sleep(Duration::from_millis(1200));
    }
}
