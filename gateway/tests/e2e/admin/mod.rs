//! The admin port: `/config_dump` per part (certificates without keys), `/stats`
//! after known traffic, `/logging` changing what the running gateway logs, and
//! `straitctl`'s proxy-config and proxy-status (its library) against real gateways.
//! The scenarios share one configuration (`config`, `Setup`).

mod config_dump;
mod logging;
mod stats;
mod straitctl;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

const CLUSTER: &str = "outbound|80||backend.default.svc.cluster.local";

/// HTTP on 80 and HTTPS on 443 for app.example.com, two routes to `backend`.
fn config(cert: &TestCert, backend_port: u16) -> Vec<(&'static str, String)> {
    let hosts = ["app.example.com"];
    let gateway = gateway("gw", &[http_server(&hosts), https_server(&hosts, "app-tls")])
        + &virtual_service(
            "app",
            &hosts,
            &["gw"],
            "- match: [{uri: {prefix: /api}, headers: {x-user: {exact: bob}}}]\n  route: [{destination: {host: backend}}]\n- route: [{destination: {host: backend}}]\n",
        );
    vec![
        ("gw.yaml", gateway),
        ("backend.yaml", backend_entry(&[("v1", backend_port)])),
        ("secret.yaml", cert.secret_yaml("app-tls", "default")),
    ]
}

fn start(files: &[(&str, String)]) -> (Gateway, tempfile::TempDir) {
    let refs: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    start_with(&refs)
}

/// One HTTP/1.1 request on a fresh connection: (status, body).
fn request(port: u16, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect admin");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut buf = String::new();
    s.read_to_string(&mut buf).expect("read");
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {buf:?}"));
    (
        status,
        buf.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    )
}

fn section(admin: u16, resource: &str) -> (String, Value) {
    let (status, body) = request(admin, "GET", &format!("/config_dump?resource={resource}"));
    assert_eq!(status, 200, "{resource}: {body}");
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{resource} is not JSON ({e}): {body}"));
    (body, json)
}

fn stats(admin: u16) -> std::collections::HashMap<String, u64> {
    let (status, body) = request(admin, "GET", "/stats");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .map(|l| {
            let (name, value) = l
                .rsplit_once(": ")
                .unwrap_or_else(|| panic!("not `name: value`: {l:?}"));
            (
                name.to_string(),
                value.parse().unwrap_or_else(|_| panic!("not a number: {l:?}")),
            )
        })
        .collect()
}

fn wait_for(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out waiting for {what}");
}

/// A gateway on `config`, with its backend, certificate and folder.
struct Setup {
    gw: Gateway,
    cert: TestCert,
    backend: strait_gateway::echo::EchoServer,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn start() -> Setup {
        let backend = echo("backend", "v1").await;
        let cert = TestCert::new(&["app.example.com"]);
        let (gw, dir) = start(&config(&cert, backend.addr.port()));
        Setup { gw, cert, backend, dir }
    }
}

/// The SHA-256 of a certificate, as `/config_dump` and `straitctl` show it.
fn fingerprint(cert: &TestCert) -> String {
    ring::digest::digest(&ring::digest::SHA256, &cert.der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
