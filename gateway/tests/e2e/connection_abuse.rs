//! Clients that abuse a connection rather than a request: HTTP/2 streams reset after
//! the gateway forwarded them (CVE-2023-44487 with a delay), connections that never
//! end, and a TLS 1.2 renegotiation attempt that must be refused at once.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::support::*;

/// An HTTP (80) and an HTTPS (443) server for app.example.com, routed to `backend`.
fn config(backend_port: u16) -> String {
    let hosts = ["app.example.com"];
    gateway("gw", &[http_server(&hosts), https_server(&hosts, "app-tls")])
        + &virtual_service("app", &hosts, &["gw"], &route_to("backend.default.svc.cluster.local"))
        + &backend_entry(&[("v1", backend_port)])
}

/// Opens up to `streams` requests on one HTTP/2 connection, ten at a time, resetting
/// each 15 ms after sending it (by then the gateway has forwarded it to the slow
/// backend). Returns how many were sent and how the connection ended.
async fn delayed_reset_flood<T>(io: T, scheme: &str, streams: usize) -> (usize, Option<h2::Error>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = h2::client::handshake(io).await.expect("h2 handshake");
    let driver = tokio::spawn(connection);
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(10));
    let mut sent = 0;
    for _ in 0..streams {
        let permit = in_flight.clone().acquire_owned().await.expect("permit");
        let Ok(ready) = sender.clone().ready().await else { break };
        sender = ready;
        let req = http::Request::get(format!("{scheme}://app.example.com/?key=flood&delay_ms=2000"))
            .body(())
            .expect("request");
        match sender.send_request(req, true) {
            Ok((response, mut stream)) => {
                sent += 1;
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(15)).await;
                    stream.send_reset(h2::Reason::CANCEL);
                    drop((response, permit));
                });
            }
            Err(_) => break,
        }
    }
    drop(sender);
    let ended = tokio::time::timeout(Duration::from_secs(10), driver)
        .await
        .expect("the connection ends once the flood stops")
        .expect("driver task");
    (sent, ended.err())
}

/// How many requests with `key=flood` reached the backend.
async fn flood_requests_seen(client: &reqwest::Client, url: &str) -> u64 {
    let (status, body) = get_json(client, &format!("{url}/?key=flood&peek=1"), &[]).await;
    assert_eq!(status, 200, "{body}");
    body["seen"].as_u64().expect("seen")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_reset_after_forwarding_close_the_connection() {
    let backend = echo("backend", "v1").await;
    let cert = TestCert::new(&["app.example.com"]);
    let (gw, _dir) = start_with(&[
        ("app.yaml", &config(backend.addr.port())),
        ("secret.yaml", &cert.secret_yaml("app-tls", "default")),
    ]);
    let client = client(&[("app.example.com", gw.http)], &[]);
    let plain = format!("http://app.example.com:{}", gw.http);

    // Over TLS (ALPN h2).
    let (sent, ended) = delayed_reset_flood(h2_tls(gw.https, &cert).await, "https", 3000).await;
    let reason = ended.as_ref().and_then(h2::Error::reason);
    assert_eq!(
        reason,
        Some(h2::Reason::ENHANCE_YOUR_CALM),
        "after {sent} reset streams the connection should be closed: {ended:?}"
    );
    let seen_tls = flood_requests_seen(&client, &plain).await;
    assert!(
        seen_tls <= 400,
        "{seen_tls} of {sent} reset streams reached the backend"
    );

    // Over h2c (prior knowledge on the plain port).
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.http))
        .await
        .expect("connect");
    let (sent, ended) = delayed_reset_flood(tcp, "http", 3000).await;
    let reason = ended.as_ref().and_then(h2::Error::reason);
    assert_eq!(
        reason,
        Some(h2::Reason::ENHANCE_YOUR_CALM),
        "h2c after {sent}: {ended:?}"
    );
    let seen_h2c = flood_requests_seen(&client, &plain).await - seen_tls;
    assert!(
        seen_h2c <= 400,
        "{seen_h2c} of {sent} reset streams reached the backend over h2c"
    );
    assert!(gw.log().contains("ENHANCE_YOUR_CALM"), "the close is logged");

    // Everyone else is still served.
    let tls_client = crate::support::client(&[("app.example.com", gw.https)], &[&cert]);
    let (status, body) = get_json(&tls_client, &format!("https://app.example.com:{}/", gw.https), &[]).await;
    assert_eq!((status, body["name"].as_str()), (200, Some("backend")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_carries_a_bounded_number_of_requests() {
    let backend = echo("backend", "v1").await;
    let cert = TestCert::new(&["app.example.com"]);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("app.yaml"), config(backend.addr.port())).expect("write");
    std::fs::write(dir.path().join("secret.yaml"), cert.secret_yaml("app-tls", "default")).expect("write");
    let gw = Gateway::start(dir.path(), &["--max-requests-per-connection=3"]);

    // HTTP/2: three streams are served, then GOAWAY; the fourth is not taken.
    let (mut sender, connection) = h2::client::handshake(h2_tls(gw.https, &cert).await)
        .await
        .expect("h2 handshake");
    let driver = tokio::spawn(connection);
    for i in 0..3 {
        sender = sender.ready().await.expect("ready");
        let req = http::Request::get("https://app.example.com/")
            .body(())
            .expect("request");
        let (response, _) = sender.send_request(req, true).expect("send");
        let response = response.await.unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(response.status(), 200, "request {i}");
    }
    let fourth = async {
        let mut sender = sender.ready().await?;
        let req = http::Request::get("https://app.example.com/")
            .body(())
            .expect("request");
        let (response, _) = sender.send_request(req, true)?;
        response.await
    };
    let fourth = tokio::time::timeout(Duration::from_secs(5), fourth)
        .await
        .expect("answered or refused");
    assert!(fourth.is_err(), "the fourth stream is refused: {fourth:?}");
    let ended = tokio::time::timeout(Duration::from_secs(5), driver)
        .await
        .expect("closed");
    // Not a protocol error. The client may still be writing (the refused fourth
    // stream) when the server closes after its GOAWAY: a broken pipe is then the
    // socket's view of the same clean end.
    assert!(
        !matches!(ended, Ok(Err(ref e)) if !e.is_io() && e.reason() != Some(h2::Reason::NO_ERROR)),
        "{ended:?}"
    );

    // HTTP/1.1 keep-alive: the third response says the connection closes.
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", gw.http)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    for i in 1..=3 {
        write!(conn, "GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n").expect("write");
        let mut head = Vec::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("read");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().expect("length");
            }
            head.push(line.to_ascii_lowercase());
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).expect("body");
        assert!(head[0].contains(" 200 "), "request {i}: {head:?}");
        let closes = head.iter().any(|l| l.starts_with("connection: close"));
        assert_eq!(closes, i == 3, "request {i}: {head:?}");
    }
    let mut rest = Vec::new();
    assert_eq!(
        reader.read_to_end(&mut rest).expect("closed"),
        0,
        "the gateway closed the connection"
    );
}

#[test]
fn tls12_renegotiation_is_refused_at_once() {
    let cert = TestCert::new(&["app.example.com"]);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("app.yaml"), config(9)).expect("write");
    std::fs::write(dir.path().join("secret.yaml"), cert.secret_yaml("app-tls", "default")).expect("write");
    // A long header timeout: the refusal must not wait for the connection to be dropped.
    let gw = Gateway::start(dir.path(), &["--request-header-timeout=60"]);

    let mut client = Command::new("openssl")
        .args(["s_client", "-tls1_2", "-servername", "app.example.com", "-connect"])
        .arg(format!("127.0.0.1:{}", gw.https))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    for out in [
        Box::new(client.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
        Box::new(client.stderr.take().expect("stderr")),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let mut seen = Vec::new();
    let mut wait_for = |what: &str, within: Duration| -> bool {
        let deadline = std::time::Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let found = line.to_ascii_lowercase().contains(what);
                    seen.push(line);
                    if found {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    };
    assert!(
        wait_for("verify return code", Duration::from_secs(10)),
        "handshake done"
    );
    let mut stdin = client.stdin.take().expect("stdin");
    stdin.write_all(b"R\n").expect("ask to renegotiate");
    stdin.flush().expect("flush");
    let refused = wait_for("no renegotiation", Duration::from_secs(5));
    let _ = client.kill();
    let _ = client.wait();
    assert!(refused, "the client got no no_renegotiation alert: {seen:#?}");
}
