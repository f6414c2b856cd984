//! HTTP/2 abuse at the edge: a rapid-reset flood and a CONTINUATION flood on one
//! connection each, after which the gateway still answers everyone else.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// An HTTPS server for app.example.com that answers `fine` itself.
fn config() -> String {
    let hosts = ["app.example.com"];
    https_gateway(&hosts, "app-tls")
        + &virtual_service(
            "app",
            &hosts,
            &["gw"],
            "- directResponse: {status: 200, body: {string: fine}}\n",
        )
}

async fn still_serving(gw: &Gateway, cert: &TestCert) {
    let c = client(&[("app.example.com", gw.https)], &[cert]);
    let resp = c
        .get(format!("https://app.example.com:{}/", gw.https))
        .send()
        .await
        .expect("a fresh client is served");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body"), "fine");
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_and_continuation_floods() {
    let cert = TestCert::new(&["app.example.com"]);
    let (gw, _dir) = start_with(&[
        ("app.yaml", &config()),
        ("secret.yaml", &cert.secret_yaml("app-tls", "default")),
    ]);

    // Rapid reset (CVE-2023-44487): open streams and cancel them at once, thousands of times.
    let (mut sender, connection) = h2::client::handshake(h2_tls(gw.https, &cert).await).await.expect("h2");
    let driver = tokio::spawn(connection);
    let mut sent = 0;
    for _ in 0..5000 {
        let Ok(ready) = sender.clone().ready().await else { break };
        sender = ready;
        let req = http::Request::get(format!("https://app.example.com:{}/", gw.https))
            .body(())
            .expect("request");
        match sender.send_request(req, false) {
            Ok((_, mut stream)) => {
                stream.send_reset(h2::Reason::CANCEL);
                sent += 1;
            }
            Err(_) => break,
        }
    }
    let outcome = tokio::time::timeout(Duration::from_secs(5), driver).await;
    assert!(sent > 0, "the flood started");
    // Either the gateway cut the connection off (GOAWAY) or absorbed the flood; it serves on.
    drop(outcome);
    still_serving(&gw, &cert).await;

    // CONTINUATION flood: a header block that never ends.
    let mut tls = h2_tls(gw.https, &cert).await;
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("preface");
    tls.write_all(&frame(0x4, 0, 0, &[])).await.expect("settings");
    // :method GET, :scheme https, :path / (static table), no END_HEADERS.
    tls.write_all(&frame(0x1, 0, 1, &[0x82, 0x87, 0x84]))
        .await
        .expect("headers");
    let mut junk = vec![0x00, 7];
    junk.extend_from_slice(b"x-flood");
    junk.push(0x7f);
    junk.push(0x81);
    junk.push(0x07); // value length 127 + 1 + 7*128 = 1024 (HPACK integer)
    junk.extend(std::iter::repeat_n(b'a', 1024));
    let mut closed = false;
    for _ in 0..20_000 {
        if tls.write_all(&frame(0x9, 0, 1, &junk)).await.is_err() {
            closed = true;
            break;
        }
    }
    if !closed {
        // The gateway should have answered with GOAWAY (or reset) and closed.
        let mut buf = vec![0u8; 65536];
        let read = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        closed = read.unwrap_or(false);
    }
    assert!(closed, "a 20 MB header block must not be accepted");
    still_serving(&gw, &cert).await;
}
